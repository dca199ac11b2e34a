"""A policy's status: counts, conditions and the non-compliant Deployments, from decisions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lameduck_operator.logic.budget import BudgetSource
from lameduck_operator.logic.compliance import State, Verdict
from lameduck_operator.logic.selection import DeploymentRef, Loss
from lameduck_operator.model import (
    CONDITION_MESSAGE_MAX_LENGTH,
    Mode,
    Policy,
    PolicyInvalid,
    PolicyRef,
    format_seconds,
)

MAX_LISTED = 20


@dataclass
class PolicySummary:
    matched: int = 0
    compliant: int = 0
    pending: int = 0
    conflicting: int = 0
    skipped: int = 0
    non_compliant: list[dict[str, str]] = field(default_factory=list)
    lost_to: dict[PolicyRef, list[DeploymentRef]] = field(default_factory=dict)
    errors: dict[DeploymentRef, str] = field(default_factory=dict)


def summarize(
    ref: PolicyRef,
    verdicts: Iterable[Verdict],
    losses: Iterable[tuple[DeploymentRef, Loss]],
    errors: Mapping[DeploymentRef, tuple[PolicyRef | None, str]],
) -> PolicySummary:
    """Count this policy's Deployments by state; note where it lost to another policy."""
    summary = PolicySummary()
    for verdict in sorted(verdicts, key=lambda v: (v.deployment.namespace, v.deployment.name)):
        deployment, state = verdict.deployment, verdict.state
        if verdict.policy != ref:
            continue
        if state is State.SKIPPED:
            summary.skipped += 1
            continue
        if state is State.UNMANAGED:
            continue
        summary.matched += 1
        if state is State.COMPLIANT:
            summary.compliant += 1
            continue
        if state is State.PENDING:
            summary.pending += 1
        elif state is State.CONFLICT:
            summary.conflicting += 1
        if len(summary.non_compliant) < MAX_LISTED:
            summary.non_compliant.append(
                {
                    "namespace": deployment.namespace,
                    "name": deployment.name,
                    "state": state.value,
                    "reason": verdict.reason.value,
                    "message": verdict.message,
                }
            )
    for deployment, loss in losses:
        if loss.policy == ref:
            summary.lost_to.setdefault(loss.winner, []).append(deployment)
    summary.errors = {d: message for d, (policy, message) in errors.items() if policy == ref}
    return summary


def starting_budgets(starting: Iterable[tuple[DeploymentRef, float]]) -> list[dict[str, str]]:
    """status.startingBudgets: up to MAX_LISTED of a policy's Deployments at the starting budget
    (no history, an L7 hop sends to them), by namespace and name. starting: each such Deployment
    the policy governs, with the starting budget its decision gave it (Decision.starting_max_hold)."""
    return [
        {
            "namespace": ref.namespace,
            "name": ref.name,
            "learnedMaxHold": format_seconds(seconds),
            "learnedFrom": BudgetSource.L7_BACKEND.value,
        }
        for ref, seconds in sorted(starting, key=lambda each: (each[0].namespace, each[0].name))[:MAX_LISTED]
    ]


def _condition(kind: str, true: bool, reason: str, message: str) -> dict[str, Any]:
    if len(message) > CONDITION_MESSAGE_MAX_LENGTH:  # the API server would refuse the whole status
        message = message[: CONDITION_MESSAGE_MAX_LENGTH - 3] + "..."
    return {"type": kind, "status": "True" if true else "False", "reason": reason, "message": message}


def _with_times(
    new: list[dict[str, Any]], existing: Iterable[Mapping[str, Any]], now: datetime, generation: int
) -> list[dict[str, Any]]:
    """lastTransitionTime moves only when a condition's status changes."""
    before = {c.get("type"): c for c in existing}
    stamped = []
    for condition in new:
        old = before.get(condition["type"])
        if old is None or old.get("status") != condition["status"] or not old.get("lastTransitionTime"):
            when = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            when = old["lastTransitionTime"]
        stamped.append({**condition, "lastTransitionTime": when, "observedGeneration": generation})
    return stamped


def _overlap_message(lost_to: Mapping[PolicyRef, list[DeploymentRef]]) -> str:
    parts = []
    for winner, deployments in sorted(lost_to.items(), key=lambda item: str(item[0])):
        example = ", ".join(str(d) for d in deployments[:3])
        parts.append(f"lost to {winner} on {len(deployments)} Deployment(s) ({example})")
    return "; ".join(parts)


def policy_status(
    policy: Policy,
    summary: PolicySummary,
    budget_seconds: int,
    existing: Mapping[str, Any] | None,
    now: datetime,
    *,
    shutdown: Mapping[str, Any] | None = None,
    starting: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The status subresource of a valid policy; shutdown: what its Deployments' recent holds
    and terminations showed (lateTraffic, overBudget); starting: with hold.learnedBudget, its
    Deployments starting at the starting budget (starting_budgets)."""
    mode = "audited" if policy.spec.mode is Mode.AUDIT else "enforced"
    ready = _condition(
        "Ready",
        True,
        "Audited" if policy.spec.mode is Mode.AUDIT else "Enforced",
        f"{mode}: {summary.compliant} of {summary.matched} matched Deployments compliant",
    )
    conflict_parts = []
    if summary.conflicting:
        conflict_parts.append(f"{summary.conflicting} Deployment(s) in conflict")
    if summary.lost_to:
        conflict_parts.append(_overlap_message(summary.lost_to))
    conflict = _condition(
        "Conflict",
        bool(conflict_parts),
        ("Overlap" if summary.lost_to else "DeploymentConflicts") if conflict_parts else "NoConflicts",
        "; ".join(conflict_parts) or "no conflicts",
    )
    degraded = _condition(
        "Degraded",
        bool(summary.errors),
        "ApplyErrors" if summary.errors else "AsExpected",
        "; ".join(f"{d}: {m}" for d, m in sorted(summary.errors.items(), key=lambda i: str(i[0]))[:5])
        or "all Deployments evaluated",
    )
    previous = (existing or {}).get("conditions") or []
    return {
        "observedGeneration": policy.generation,
        "conditions": _with_times([ready, conflict, degraded], previous, now, policy.generation),
        "matched": summary.matched,
        "compliant": summary.compliant,
        "pending": summary.pending,
        "conflicting": summary.conflicting,
        "skipped": summary.skipped,
        "budgetSeconds": budget_seconds,
        "nonCompliant": summary.non_compliant,
        **(shutdown or {}),
        **({"startingBudgets": starting} if policy.spec.hold.learned_budget is not None else {}),
    }


def invalid_status(
    error: PolicyInvalid,
    generation: int,
    existing: Mapping[str, Any] | None,
    now: datetime,
    still_enforced: Policy | None = None,
) -> dict[str, Any]:
    """What a policy the API server let through but lameduck cannot use reports.

    Nothing new is applied; when an earlier generation was valid, it stays in force.
    """
    message = str(error)
    if still_enforced is not None:
        message += f"; generation {still_enforced.generation}, the last valid one, stays in force"
    conditions = [
        _condition("Ready", False, "InvalidSpec", message),
        _condition("Conflict", False, "NoConflicts", "not evaluated"),
        _condition("Degraded", True, "InvalidSpec", message),
    ]
    previous = (existing or {}).get("conditions") or []
    return {
        "observedGeneration": generation,
        "conditions": _with_times(conditions, previous, now, generation),
        "matched": 0,
        "compliant": 0,
        "pending": 0,
        "conflicting": 0,
        "skipped": 0,
        "nonCompliant": [],
    }
