"""The termination budget: how long a pod may take from deletion to SIGKILL, and the maxHold in
force within it: the policy's, or with hold.learnedBudget, the learned one or the starting one."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from lameduck_operator.model import BUDGET_MARGIN_SECONDS, HoldSpec, PolicySpec, whole_seconds

# A hold cut off at maxHold needs more, by how much it cannot tell: twice what it held covers a
# data plane up to twice as slow from the next rollout on (logic/learning.py). The starting
# budget of an L7 backend is what one such cut-off first rollout would teach, without its loss.
CUT_OFF_FACTOR = 2.0


class BudgetSource(StrEnum):
    """Where the maxHold in force for a Deployment comes from (what its holds take as they start,
    and its next rollout's template carries), under a policy with hold.learnedBudget."""

    REPORTS = "Reports"  # learned from its trusted hold reports (logic/learning.py)
    L7_BACKEND = "L7Backend"  # no history, and an L7 hop sends to it: the starting budget
    DEFAULT = "Default"  # no history, no L7 hop seen: the policy's maxHold


@dataclass(frozen=True, slots=True)
class MaxHold:
    """The maxHold a Deployment's pods get, and where it comes from; source None: the policy does
    not learn budgets, and it is the policy's maxHold."""

    seconds: float
    source: BudgetSource | None = None


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


def starting_max_hold(hold: HoldSpec) -> float:
    """The maxHold a Deployment with no history starts at when an L7 hop sends to it:
    CUT_OFF_FACTOR times the policy's maxHold, never above its maxHoldCap (nor below maxHold).
    Not the whole cap: a hold that never sees its busy connections go quiet (a client pinned
    through kube-proxy) lasts its whole maxHold, so the cap at every first rollout would cost the
    most where nothing was lost; one doubling is the step learning would take anyway."""
    budget = hold.learned_budget
    if budget is None:
        return hold.max_hold
    return max(hold.max_hold, min(budget.max_hold_cap, hold.max_hold * CUT_OFF_FACTOR))


def max_hold_for(hold: HoldSpec, learned: float | None, l7_backend: bool) -> MaxHold:
    """The maxHold in force for a Deployment, and why: the one decision's (Decision.max_hold),
    which the template carries from the next admission and lameduck-learned gives the holds as
    they start (learned_delays.py). `learned`: the maxHold learned from its reports (None: no
    history); `l7_backend`: whether the caller saw an L7 hop send to it (logic/l7_backends.py).
    Once anything is learned, the reports decide alone."""
    if hold.learned_budget is None:
        return MaxHold(hold.max_hold)
    if learned is not None:
        return MaxHold(max_hold_in_force(hold, learned), BudgetSource.REPORTS)
    if l7_backend:
        return MaxHold(starting_max_hold(hold), BudgetSource.L7_BACKEND)
    return MaxHold(hold.max_hold, BudgetSource.DEFAULT)


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
