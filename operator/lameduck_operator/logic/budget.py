"""The termination budget: how long a pod may take from deletion to SIGKILL."""

from __future__ import annotations

from lameduck_operator.model import BUDGET_MARGIN_SECONDS, PolicySpec, whole_seconds


def budget_seconds(spec: PolicySpec) -> int:
    """maxHold + drainTimeout + margin, unless the policy states the grace period itself."""
    if spec.termination_grace_period_seconds is not None:
        return spec.termination_grace_period_seconds
    return whole_seconds(spec.hold.max_hold + spec.drain_timeout) + BUDGET_MARGIN_SECONDS


def sleep_seconds(spec: PolicySpec) -> int:
    """The fixed hold of the Sleep method: the whole of maxHold."""
    return whole_seconds(spec.hold.max_hold)


def min_ready_seconds(spec: PolicySpec) -> int | None:
    """minReadySeconds to require, if any: stated, or propagationDelay when the gate is on."""
    if spec.min_ready_seconds is not None:
        return spec.min_ready_seconds
    if spec.readiness_gate:
        return whole_seconds(spec.hold.propagation_delay)
    return None


def grace_period_to_apply(budget: int, existing: int | None) -> int | None:
    """The grace period lameduck must own, or None: it never lowers a larger value."""
    if existing is not None and existing >= budget:
        return None
    return budget
