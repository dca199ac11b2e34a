"""Rollout slots: at most a policy's maxConcurrentRollouts of its Deployments roll out at once.

A Deployment holds a slot of its governing policy while its rollout is in progress, and while
an apply that starts one is on its way to the API server. One whose turn has not come waits in
its policy's line; a rollout's end lets as many go as there are free slots, longest waiting first.
A slot is held by a Deployment's decision, which only the leader takes: a new leader judges the
rollouts in progress before its first apply (Reconciler.count_rollouts_in_progress in fleet.py).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from lameduck_operator.logic.compliance import Reason, State
from lameduck_operator.logic.decision import Action, Decision, rollout_in_progress
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.model import PolicyRef, PolicySpec


def slot_holder(decision: Decision | None, body: Mapping[str, Any]) -> PolicyRef | None:
    """The policy whose rollout slot the Deployment's rollout takes: the governing policy's,
    while a rollout is in progress; a Deployment opted out of it (or not its own) takes none."""
    if decision is None or decision.verdict.state in (State.SKIPPED, State.UNMANAGED):
        return None
    return decision.verdict.policy if rollout_in_progress(body) else None


class RolloutSlots:
    """Who is rolling out, the applies in flight and the waiting lines, per policy.

    `spec_of` gives a policy's spec in force (None: not known, then its whole line may go);
    `wake` sends a waiting Deployment back to be judged."""

    def __init__(
        self, spec_of: Callable[[PolicyRef], PolicySpec | None], wake: Callable[[DeploymentRef], None]
    ) -> None:
        self.spec_of = spec_of
        self.wake = wake
        self.rolling: dict[DeploymentRef, PolicyRef] = {}
        # How many of rolling each policy holds: in_flight is asked at every decision, and counting
        # rolling each time made a burst's decisions quadratic in its rollouts.
        self._rolling_counts: dict[PolicyRef, int] = defaultdict(int)
        # Per policy, the Deployments waiting for a rollout slot, in the order they began to wait.
        self.waiting: dict[PolicyRef, dict[DeploymentRef, None]] = defaultdict(dict)
        # Applies on their way to the API server hold a rollout slot of their policy.
        self._applying: dict[DeploymentRef, PolicyRef] = {}

    def in_flight(self, policy: PolicyRef) -> int:
        applying = sum(1 for r, p in self._applying.items() if p == policy and r not in self.rolling)
        return self._rolling_counts.get(policy, 0) + applying

    @contextlib.contextmanager
    def applying(self, ref: DeploymentRef, decision: Decision) -> Iterator[None]:
        """While the decision's apply is on its way. Entered before the first await, so a
        concurrent decision sees this slot taken."""
        if decision.action is Action.APPLY and decision.verdict.policy is not None:
            self._applying[ref] = decision.verdict.policy
        try:
            yield
        finally:
            self._applying.pop(ref, None)

    def observed(self, ref: DeploymentRef, decision: Decision | None, body: Mapping[str, Any]) -> None:
        """The Deployment as now stored, judged by decision."""
        self._set_rolling(ref, slot_holder(decision, body))

    def gone(self, ref: DeploymentRef) -> None:
        self._set_rolling(ref, None)

    def judged(self, ref: DeploymentRef, decision: Decision, body: Mapping[str, Any] | None) -> None:
        """A reconcile's decision about the Deployment (body None: deleted meanwhile, it holds no
        slot): its slot, and its place in a waiting line."""
        self._set_rolling(ref, slot_holder(decision, body) if body is not None else None)
        policy = decision.verdict.policy
        waits = decision.verdict.reason is Reason.WAITING_TURN
        for waiting_for, line in self.waiting.items():
            if waiting_for != policy or not waits:
                line.pop(ref, None)
        if policy is not None and waits:
            self.waiting[policy].setdefault(ref, None)  # keeps its place in the line

    def rolling_counts(self, policies: Iterable[PolicyRef]) -> dict[str, int]:
        """Deployments rolling out per policy: every one of `policies` counted, 0 when none is."""
        counts = {str(ref): 0 for ref in policies}
        for ref in self.rolling.values():
            counts[str(ref)] = counts.get(str(ref), 0) + 1
        return counts

    def _set_rolling(self, ref: DeploymentRef, policy: PolicyRef | None) -> None:
        before = self.rolling.get(ref)
        if before == policy:
            return
        if policy is None:
            del self.rolling[ref]
        else:
            self.rolling[ref] = policy
            self._rolling_counts[policy] += 1
        if before is not None:
            self._rolling_counts[before] -= 1
            if not self._rolling_counts[before]:
                del self._rolling_counts[before]
            self._release_waiting(before)

    def _release_waiting(self, policy: PolicyRef) -> None:
        """A rollout ended: as many Deployments waiting their turn as there are free slots go,
        the longest waiting first. (Waking them all would judge every waiting Deployment at
        every rollout's end: quadratic in the fleet.)"""
        spec = self.spec_of(policy)
        line = self.waiting.get(policy) or {}
        free = len(line) if spec is None else max(0, spec.max_concurrent_rollouts - self.in_flight(policy))
        for ref in list(line)[:free]:
            self.wake(ref)
