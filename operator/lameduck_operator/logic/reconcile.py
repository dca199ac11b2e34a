"""What the operator does to one Deployment: apply the intent, revert, or leave it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from lameduck_operator.logic.compliance import State, Verdict, check, missing_fields
from lameduck_operator.logic.intent import HANDLER_KINDS, Plan, is_lameduck_hold, plan_deployment, pod_spec
from lameduck_operator.logic.ownership import foreign_view, latest_other_manager, managed_by, owners
from lameduck_operator.logic.selection import DeploymentRef, Loss, deployment_ref, select_policy
from lameduck_operator.model import (
    GROUP,
    POLICY_ANNOTATION,
    SKIP_ANNOTATION,
    ApplyStrategy,
    ConflictStrategy,
    Mode,
    Policy,
    PolicyRef,
)
from lameduck_operator.settings import Settings

INTENT_ANNOTATION = f"{GROUP}/intent"
READINESS_GATE_UNSERVED = (
    "readinessGate.enabled: this version of lameduck does not yet set the condition "
    "lameduck.dev/endpoints-ready, so pods with the gate would never become Ready"
)


class Action(StrEnum):
    APPLY = "Apply"
    REVERT = "Revert"
    NONE = "None"


@dataclass(frozen=True)
class DeploymentEvent:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Decision:
    deployment: DeploymentRef
    action: Action
    verdict: Verdict
    losses: tuple[Loss, ...] = ()
    intent: dict[str, Any] | None = None
    # App containers whose own preStop handler must go before lameduck's can be applied.
    replace_prestop: tuple[str, ...] = ()
    starts_rollout: bool = False
    event: DeploymentEvent | None = None
    budget_seconds: int | None = None


def intent_digest(intent: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(intent, sort_keys=True).encode()).hexdigest()[:16]


def with_digest(intent: Mapping[str, Any]) -> dict[str, Any]:
    """The intent, marked with its digest so a later change of intent is recognised."""
    digest = intent_digest(intent)
    meta = dict(intent["metadata"])
    meta["annotations"] = {**meta.get("annotations", {}), INTENT_ANNOTATION: digest}
    return {**intent, "metadata": meta}


def rollout_in_progress(deployment: Mapping[str, Any]) -> bool:
    """As `kubectl rollout status` judges it; a rollout past its deadline no longer counts."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return False
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return True
    wanted = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    return bool(updated < wanted or status.get("replicas", 0) > updated or status.get("availableReplicas", 0) < updated)


def _applied(deployment: Mapping[str, Any]) -> tuple[bool, str | None]:
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    ours = managed_by(deployment) or POLICY_ANNOTATION in annotations
    return ours, annotations.get(INTENT_ANNOTATION)


def _foreign_prestops(foreign: Mapping[str, Any], containers: Iterable[str], settings: Settings) -> tuple[str, ...]:
    by_name = {c.get("name"): c for c in pod_spec(foreign).get("containers") or []}
    replaced = []
    for name in containers:
        handler = ((by_name.get(name) or {}).get("lifecycle") or {}).get("preStop")
        if handler and any(k in handler for k in HANDLER_KINDS) and not is_lameduck_hold(handler, settings.sidecar):
            replaced.append(name)
    return tuple(replaced)


def _name_owners(plan: Plan, deployment: Mapping[str, Any]) -> Plan:
    """Conflicts say who set the value in the way, as managedFields tell it."""
    named = {}
    for reason, path in plan.field_paths:
        who = owners(deployment, path)
        if who:
            named[reason] = f"{reason}, set by {', '.join(who)}"
    if not named:
        return plan
    return replace(
        plan,
        conflicts=tuple(named.get(c, c) for c in plan.conflicts),
        taken_over=tuple(named.get(t, t) for t in plan.taken_over),
    )


def decide(
    deployment: Mapping[str, Any],
    policies: Iterable[Policy],
    settings: Settings,
    namespace_labels: Mapping[str, str] | None,
    rollouts_in_flight: Callable[[PolicyRef], int],
    *,
    recent_writers: Sequence[str] = (),
) -> Decision:
    """Select, plan, judge, and choose the one action for this Deployment now.

    recent_writers: the managers seen changing the Deployment since it was last judged.
    """
    ref = deployment_ref(deployment)
    selection = select_policy(deployment, policies, namespace_labels, settings.excluded_namespaces)
    ours, applied_digest = _applied(deployment)
    winner = selection.winner
    if winner is None or selection.opted_out:
        state, why = (
            (State.SKIPPED, f'opted out with {SKIP_ANNOTATION}: "true"')
            if selection.opted_out
            else (State.UNMANAGED, "no policy selects it")
        )
        verdict = Verdict(ref, winner.ref if winner else None, state, why)
        if not ours:
            return Decision(ref, Action.NONE, verdict, selection.losses)
        event = DeploymentEvent("Reverted", f"lameduck removed its fields: {why}")
        return Decision(ref, Action.REVERT, verdict, selection.losses, starts_rollout=True, event=event)

    spec = winner.spec
    foreign = foreign_view(deployment)
    plan = _name_owners(plan_deployment(foreign, winner, settings), deployment)
    verdict = check(deployment, plan)
    intent = with_digest(plan.intent)
    base = Decision(ref, Action.NONE, verdict, selection.losses, intent, budget_seconds=plan.budget_seconds)
    if spec.mode is Mode.AUDIT:
        return base
    if spec.readiness_gate:
        # Pods would wait forever on a condition nobody sets: refuse rather than break them.
        reason = f"{READINESS_GATE_UNSERVED}; lameduck does not apply this policy"
        refused = Verdict(ref, winner.ref, State.CONFLICT, reason)
        return replace(base, verdict=refused, event=DeploymentEvent("Conflict", reason, warning=True))
    if plan.conflicts:
        message = f"{winner.ref}: {verdict.reason}"
        return replace(base, event=DeploymentEvent("Conflict", message, warning=True))
    digest = intent["metadata"]["annotations"][INTENT_ANNOTATION]
    if verdict.state is State.COMPLIANT and applied_digest == digest:
        return base
    if spec.apply is ApplyStrategy.ON_NEXT_ROLLOUT:
        pending = Verdict(ref, winner.ref, State.PENDING, f"waits for the next rollout: {verdict.reason or 'outdated'}")
        return replace(base, verdict=pending)

    starts_rollout = verdict.state is not State.COMPLIANT
    if starts_rollout and not rollout_in_progress(deployment):
        in_flight = rollouts_in_flight(winner.ref)
        if in_flight >= spec.max_concurrent_rollouts:
            waiting = Verdict(
                ref,
                winner.ref,
                State.PENDING,
                f"waits its turn: {in_flight} of at most {spec.max_concurrent_rollouts} rollouts in progress",
            )
            return replace(base, verdict=waiting)

    if ours and applied_digest == digest:
        who = (
            ", ".join(recent_writers) or latest_other_manager(deployment) or "a client that left no managedFields entry"
        )
        what = "; ".join(missing_fields(deployment, plan))
        event = DeploymentEvent("DriftRestored", f"{who} changed lameduck's fields ({what}); restored", warning=True)
    elif ours:
        event = DeploymentEvent("Updated", f"{winner.ref}: intent updated")
    else:
        holds = ", ".join(plan.app_containers)
        event = DeploymentEvent(
            "Injected", f"{winner.ref}: preStop hold on {holds}, termination budget {plan.budget_seconds}s"
        )
    take_over = spec.on_conflict is ConflictStrategy.TAKE_OVER
    return Decision(
        ref,
        Action.APPLY,
        verdict,
        selection.losses,
        intent,
        replace_prestop=_foreign_prestops(foreign, plan.app_containers, settings) if take_over else (),
        starts_rollout=starts_rollout,
        event=event,
        budget_seconds=plan.budget_seconds,
    )


def revert_intent(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """Applying this with lameduck's field manager removes every field only lameduck owns."""
    ref = deployment_ref(deployment)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": ref.name, "namespace": ref.namespace},
    }
