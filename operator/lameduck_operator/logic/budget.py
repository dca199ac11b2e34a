"""The termination budget: how long a pod may take from deletion to SIGKILL."""

from __future__ import annotations

from lameduck_operator.model import BUDGET_MARGIN_SECONDS, HoldSpec, PolicySpec, whole_seconds


def max_hold_in_force(hold: HoldSpec, learned: float | None) -> float:
    """The maxHold a Deployment's pods get: the policy's, or, when the policy learns budgets
    (hold.learnedBudget), what was learned for the Deployment, bounded by the policy as it is now
    (never below its maxHold, never above its cap: a policy changed since the value was learned
    bounds it too). `learned` is an observation the caller passes in; None: nothing learned."""
    budget = hold.learned_budget
    if budget is None or learned is None:
        return hold.max_hold
    return min(max(learned, hold.max_hold), max(budget.max_hold_cap, hold.max_hold))


def max_hold_room(hold: HoldSpec, in_force: float | None) -> float:
    """The longest hold a pod's grace period must leave room for: with hold.learnedBudget the cap,
    since a hold started before a new learned value reached the template reads it live (the
    sidecar's LAMEDUCK_MAX_HOLD_CAP), else the maxHold in force. Sized once for the cap, the grace
    period also stays put while learning moves, so learning never changes it."""
    held = hold.max_hold if in_force is None else in_force
    if hold.learned_budget is None:
        return held
    return max(held, hold.learned_budget.max_hold_cap)


def budget_seconds(spec: PolicySpec, max_hold: float | None = None) -> int:
    """maxHold + drainTimeout + margin, unless the policy states the grace period itself and it
    covers the hold and drainTimeout. max_hold: the one in force (max_hold_in_force); None: the
    policy's, which a stated grace period always covers (the model's rule)."""
    hold = spec.hold.max_hold if max_hold is None else max_hold
    stated = spec.termination_grace_period_seconds
    if stated is not None and stated >= hold + spec.drain_timeout:
        return stated
    return whole_seconds(hold + spec.drain_timeout) + BUDGET_MARGIN_SECONDS


def sleep_seconds(spec: PolicySpec) -> int:
    """The fixed hold of the Sleep method: the whole of maxHold (a Sleep hold learns nothing)."""
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
