"""Whether a Deployment already carries its plan's intent, and the typed states and reasons.

State and Reason are what users and code read: policy status, `lameduck check`, the
reconciler's rollout slots. Messages are for people only; no code matches them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lameduck_operator.logic.intent import Plan, pod_spec
from lameduck_operator.logic.merge import KEYED_LISTS, is_subset
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.model import PolicyRef
from lameduck_operator.names import SIDECAR_NAME


class State(StrEnum):
    COMPLIANT = "Compliant"
    PENDING = "Pending"
    CONFLICT = "Conflict"
    SKIPPED = "Skipped"
    UNMANAGED = "Unmanaged"


class Reason(StrEnum):
    """Why a Deployment is in its state: one value per distinct cause."""

    IN_PLACE = "InPlace"  # compliant: every intended field is there
    NO_POLICY = "NoPolicy"  # unmanaged
    OPTED_OUT = "OptedOut"  # skipped by its annotation
    OUTDATED = "Outdated"  # fields missing; Immediate applies them now, Audit only reports
    PENDING_NEXT_ROLLOUT = "PendingNextRollout"  # OnNextRollout: injected at the owner's next rollout
    WAITING_TURN = "WaitingTurn"  # Immediate: maxConcurrentRollouts reached
    CONFLICTING_FIELDS = "ConflictingFields"  # other managers' values, or the pod's shape, stand in the way
    TEMPLATE_TOO_LARGE = "TemplateTooLarge"  # skipped: more containers than one decision may take (docs/admission.md)
    # Skipped: with lameduck's annotations the Deployment's would be over the API server's limit.
    NO_ROOM_FOR_ANNOTATIONS = "NoRoomForAnnotations"


@dataclass(frozen=True)
class Verdict:
    deployment: DeploymentRef
    policy: PolicyRef | None
    state: State
    reason: Reason
    message: str = ""
    # What the intent sets that the Deployment lacks, in words (empty when compliant).
    missing: tuple[str, ...] = ()


def check(deployment: Mapping[str, Any], plan: Plan) -> Verdict:
    """Compliant when every intended field is already in place; else pending or conflict."""
    if plan.conflicts:
        return Verdict(
            plan.deployment, plan.policy, State.CONFLICT, Reason.CONFLICTING_FIELDS, "; ".join(plan.conflicts)
        )
    # Kept for every Deployment, and mostly the same words: one string object each, shared.
    differences = tuple(sys.intern(d) for d in missing_fields(deployment, plan))
    if differences:
        message = sys.intern("; ".join(differences))
        return Verdict(plan.deployment, plan.policy, State.PENDING, Reason.OUTDATED, message, differences)
    return Verdict(plan.deployment, plan.policy, State.COMPLIANT, Reason.IN_PLACE)


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
