"""Whether a Deployment already carries its policy's intent: for Audit mode and status."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lameduck_operator.logic.intent import Plan, plan_deployment, pod_spec
from lameduck_operator.logic.merge import KEYED_LISTS, is_subset
from lameduck_operator.logic.selection import DeploymentRef, Selection, select_policy
from lameduck_operator.model import SIDECAR_NAME, SKIP_ANNOTATION, Policy, PolicyRef
from lameduck_operator.settings import Settings


class State(StrEnum):
    COMPLIANT = "Compliant"
    PENDING = "Pending"
    CONFLICT = "Conflict"
    SKIPPED = "Skipped"
    UNMANAGED = "Unmanaged"


@dataclass(frozen=True)
class Verdict:
    deployment: DeploymentRef
    policy: PolicyRef | None
    state: State
    reason: str = ""


@dataclass(frozen=True)
class Evaluation:
    selection: Selection
    verdict: Verdict
    plan: Plan | None = None


def check(deployment: Mapping[str, Any], plan: Plan) -> Verdict:
    """Compliant when every intended field is already in place; else pending or conflict."""
    if plan.conflicts:
        return Verdict(plan.deployment, plan.policy, State.CONFLICT, "; ".join(plan.conflicts))
    differences = missing_fields(deployment, plan)
    if differences:
        return Verdict(plan.deployment, plan.policy, State.PENDING, "; ".join(differences))
    return Verdict(plan.deployment, plan.policy, State.COMPLIANT)


def missing_fields(deployment: Mapping[str, Any], plan: Plan) -> list[str]:
    """Human descriptions of what the intent sets that the Deployment lacks."""
    wanted_spec: Mapping[str, Any] = plan.intent["spec"]
    actual_spec: Mapping[str, Any] = deployment.get("spec") or {}
    wanted_pod: Mapping[str, Any] = wanted_spec["template"]["spec"]
    actual_pod = pod_spec(deployment)
    found: list[str] = []
    for list_name in ("initContainers", "containers"):
        actual_by_name = {c.get("name"): c for c in actual_pod.get(list_name) or []}
        for wanted in wanted_pod.get(list_name) or []:
            name = wanted["name"]
            actual = actual_by_name.get(name)
            if name == SIDECAR_NAME:
                if actual is None:
                    found.append("the lameduck sidecar is missing")
                elif not is_subset(wanted, actual):
                    found.append("the lameduck sidecar differs from the policy")
            elif actual is None or not is_subset(wanted, actual):
                found.append(f'container "{name}" lacks the lameduck preStop hold')
    for key, value in wanted_pod.items():
        if key not in KEYED_LISTS and not is_subset(value, actual_pod.get(key), key):
            found.append(f"{key} is {_shown(actual_pod.get(key))}, the policy needs {_shown(value)}")
    for key, value in wanted_spec.items():
        if key != "template" and actual_spec.get(key) != value:
            found.append(f"{key} is {_shown(actual_spec.get(key))}, the policy needs {_shown(value)}")
    return found


def _shown(value: Any) -> str:
    return "unset" if value is None else json.dumps(value)


def evaluate(
    deployment: Mapping[str, Any],
    policies: Iterable[Policy],
    settings: Settings,
    namespace_labels: Mapping[str, str] | None = None,
) -> Evaluation:
    """Select the governing policy, plan its intent and judge the Deployment against it."""
    selection = select_policy(deployment, policies, namespace_labels, settings.excluded_namespaces)
    if selection.winner is None:
        verdict = Verdict(selection.deployment, None, State.UNMANAGED, "no policy selects it")
        return Evaluation(selection, verdict)
    if selection.opted_out:
        verdict = Verdict(
            selection.deployment, selection.winner.ref, State.SKIPPED, f'opted out with {SKIP_ANNOTATION}: "true"'
        )
        return Evaluation(selection, verdict)
    plan = plan_deployment(deployment, selection.winner, settings)
    return Evaluation(selection, check(deployment, plan), plan)
