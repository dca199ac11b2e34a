"""Policy status: each policy's status and finalizer written when something it shows changed, and
the fleet's gauges (Deployments per policy and state, rollouts in flight) set at each publish.

The finalizer holds a deleted policy until no Deployment carries fields applied for it, so its
reverts land before it is gone.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lameduck_operator.deployment_store import DeploymentStore
from lameduck_operator.logic.budget import budget_seconds
from lameduck_operator.logic.compliance import Verdict
from lameduck_operator.logic.decision import Decision
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.logic.status import invalid_status, policy_status, starting_budgets, summarize
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.model import Policy, PolicyInvalid, PolicyRef, parse_policy
from lameduck_operator.names import FINALIZER, POLICY_ANNOTATION
from lameduck_operator.ports import FleetApi, one_line

log = logging.getLogger("lameduck.fleet")


@dataclass
class PolicyState:
    ref: PolicyRef
    body: Mapping[str, Any]
    policy: Policy | None
    invalid: PolicyInvalid | None
    deleting: bool
    has_finalizer: bool
    published: dict[str, Any] | None = None

    @classmethod
    def observed(cls, ref: PolicyRef, body: Mapping[str, Any], old: PolicyState | None) -> PolicyState:
        """The policy as now observed; old, as observed before (what it published is kept)."""
        meta = body.get("metadata") or {}
        policy: Policy | None
        invalid: PolicyInvalid | None
        try:
            policy, invalid = parse_policy(body), None
        except PolicyInvalid as err:
            # A bad update must not revert the fleet: the last valid spec stays in force.
            policy, invalid = (old.policy if old else None), err
        return cls(
            ref=ref,
            body=body,
            policy=policy,
            invalid=invalid,
            deleting=bool(meta.get("deletionTimestamp")),
            has_finalizer=FINALIZER in (meta.get("finalizers") or []),
            published=old.published if old else None,
        )


class StatusPublisher:
    """Reads the fleet's policies, decisions and errors (the fleet's own dicts, never copied) and
    the Deployments rolling out; writes only statuses and finalizers."""

    def __init__(
        self,
        api: FleetApi,
        metrics: OperatorMetrics,
        clock: Callable[[], datetime],
        *,
        policies: Mapping[PolicyRef, PolicyState],
        decisions: Mapping[DeploymentRef, Decision],
        errors: Mapping[DeploymentRef, tuple[PolicyRef | None, str]],
        deployments: DeploymentStore,
        rolling_counts: Callable[[list[PolicyRef]], dict[str, int]],
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.clock = clock
        self.policies = policies
        self.decisions = decisions
        self.errors = errors
        self.deployments = deployments
        self.rolling_counts = rolling_counts
        self._dirty: set[PolicyRef] = set()
        # The status's lateTraffic and overBudget of a policy, from the shutdown observer.
        self.shutdown_status: Callable[[PolicyRef], dict[str, Any]] | None = None

    def changed(self, ref: PolicyRef) -> None:
        """Something the policy's status shows changed: publish it again."""
        self._dirty.add(ref)

    def judged(self, decision: Decision, previous: Decision | None) -> None:
        """A Deployment was judged: the policies that governed it, before and now, and those that
        lost it to another, show it differently."""
        for touched in (previous.verdict.policy if previous else None, decision.verdict.policy):
            if touched is not None:
                self._dirty.add(touched)
        for loss in decision.losses + (previous.losses if previous else ()):
            self._dirty.add(loss.policy)

    async def publish(self) -> None:
        dirty, self._dirty = self._dirty, set()
        verdicts = [d.verdict for d in self.decisions.values()]
        losses = [(r, loss) for r, d in self.decisions.items() for loss in d.losses]
        self._update_gauges()
        for ref in sorted(dirty, key=str):
            state = self.policies.get(ref)
            if state is None:
                continue
            try:
                await self._publish_one(state, verdicts, losses)
            except Exception as err:
                self.metrics.api_errors.labels(operation="status").inc()
                self._dirty.add(ref)
                log.warning("could not publish status of %s: %s", ref, one_line(err))

    async def _publish_one(
        self,
        state: PolicyState,
        verdicts: list[Verdict],
        losses: list[tuple[DeploymentRef, Any]],
    ) -> None:
        if state.deleting:
            if state.has_finalizer and not self._carries(state.ref):
                await self.api.set_policy_finalizer(state.ref, False)
                state.has_finalizer = False
            elif state.has_finalizer:
                self._dirty.add(state.ref)  # check again once reverts have landed
            return
        if not state.has_finalizer:
            await self.api.set_policy_finalizer(state.ref, True)
            state.has_finalizer = True
        existing = state.published or dict(state.body.get("status") or {})
        generation = int((state.body.get("metadata") or {}).get("generation") or 0)
        if state.invalid is not None:
            status = invalid_status(state.invalid, generation, existing, self.clock(), still_enforced=state.policy)
        elif state.policy is None:
            return
        else:
            summary = summarize(state.ref, verdicts, losses, self.errors)
            shutdown = self.shutdown_status(state.ref) if self.shutdown_status else None
            starting = starting_budgets(self._starting(state.ref))
            status = policy_status(
                state.policy,
                summary,
                budget_seconds(state.policy.spec),
                existing,
                self.clock(),
                shutdown=shutdown,
                starting=starting,
            )
        if status != state.published:
            await self.api.apply_policy_status(state.ref, status)
            state.published = status

    def _starting(self, ref: PolicyRef) -> list[tuple[DeploymentRef, float]]:
        """The Deployments the policy governs that are at the starting budget, with it."""
        return [
            (deployment, d.starting_max_hold)
            for deployment, d in self.decisions.items()
            if d.verdict.policy == ref and d.starting_max_hold is not None
        ]

    def _carries(self, ref: PolicyRef) -> bool:
        """Whether any Deployment still carries lameduck fields applied for this policy."""
        marker = ref.annotation_value
        return any(
            ((d.get("metadata") or {}).get("annotations") or {}).get(POLICY_ANNOTATION) == marker
            for _, d in self.deployments.metas()
        )

    def _update_gauges(self) -> None:
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for decision in self.decisions.values():
            if decision.verdict.policy is not None:
                counts[(str(decision.verdict.policy), decision.verdict.state.value)] += 1
        self.metrics.managed.clear()
        for (policy, state), count in counts.items():
            self.metrics.managed.labels(policy=policy, state=state).set(count)
        # Bounded: a series per policy learning budgets and source (three at most).
        sources: dict[tuple[str, str], int] = defaultdict(int)
        for decision in self.decisions.values():
            if decision.verdict.policy is not None and decision.budget_source is not None:
                sources[(str(decision.verdict.policy), decision.budget_source.value)] += 1
        self.metrics.learned_budget_sources.clear()
        for (policy, source), count in sources.items():
            self.metrics.learned_budget_sources.labels(policy=policy, learned_from=source).set(count)
        # Every policy in force has a series, 0 when none of its Deployments is rolling out.
        in_force = [ref for ref, state in self.policies.items() if state.policy is not None]
        self.metrics.rollouts_in_flight.clear()
        for name, count in self.rolling_counts(in_force).items():
            self.metrics.rollouts_in_flight.labels(policy=name).set(count)
