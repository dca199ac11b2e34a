"""The operator's view of the fleet and its reconcile loop.

Handlers feed observed objects into Fleet, which keeps them and queues the Deployments they
affect (reconcile_queue). Workers reconcile each by a Reconciler: decide (pure logic), hold a
rollout slot while writing (rollout_slots), carry the decision out (deployment_writes), record it
for the slots, the policies' status (policy_status), the sidecar's access (sidecar_access) and
the holds' starting budget (learned_delays), then tell the Deployment's owners
(deployment_events): each part once, in that order. The workers start once every Deployment is
listed and those rolling out hold their slots. A second loop publishes the sidecar's access and
the policies' status. Nothing here imports kopf or the API client, so tests drive it with a fake
API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from lameduck_operator.deployment_events import DeploymentEvents
from lameduck_operator.deployment_store import DeploymentStore
from lameduck_operator.deployment_writes import DeploymentWrites
from lameduck_operator.l7_routes import L7Routes
from lameduck_operator.logic.budget import BudgetSource
from lameduck_operator.logic.decision import Decision, after_write, decide, holds_through_status, rollout_in_progress
from lameduck_operator.logic.ownership import managers_since
from lameduck_operator.logic.selection import DeploymentRef, carries_or_selected_by, deployment_ref
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.model import HoldSpec, Policy, PolicyRef, PolicySpec
from lameduck_operator.names import GROUP, KIND_NAMESPACED
from lameduck_operator.policy_events import PolicyEvents
from lameduck_operator.policy_status import PolicyState, StatusPublisher
from lameduck_operator.ports import CallLater, FleetApi, call_later_on_running_loop, one_line
from lameduck_operator.reconcile_queue import ReconcileQueue
from lameduck_operator.rollout_slots import RolloutSlots
from lameduck_operator.settings import Settings
from lameduck_operator.sidecar_access import SidecarAccess

log = logging.getLogger("lameduck.fleet")


def policy_ref_of(body: Mapping[str, Any]) -> PolicyRef:
    meta = body.get("metadata") or {}
    kind = str(body.get("kind"))
    return PolicyRef(kind, str(meta.get("name")), meta.get("namespace") if kind == KIND_NAMESPACED else None)


class Fleet:
    def __init__(
        self,
        settings: Settings,
        api: FleetApi,
        metrics: OperatorMetrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        *,
        call_later: CallLater = call_later_on_running_loop,
        workers: int = 1,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        # Timers of retries and re-checks: the running loop's unless a test steps time itself.
        self.call_later = call_later
        self.policies: dict[PolicyRef, PolicyState] = {}
        self.namespaces: dict[str, dict[str, str]] = {}
        # Whole bodies compressed, parsed on demand; labels and lameduck's annotations at hand.
        self.deployments = DeploymentStore(f"{GROUP}/")
        self.decisions: dict[DeploymentRef, Decision] = {}
        self.errors: dict[DeploymentRef, tuple[PolicyRef | None, str]] = {}
        # Managers seen changing a Deployment since it was last judged (to name drift's author).
        self.writers: dict[DeploymentRef, set[str]] = {}
        self.synced = asyncio.Event()
        self.workers = workers
        self.queue = ReconcileQueue(self.reconcile, metrics, self.call_later)
        self.slots = RolloutSlots(self.policy_spec, self.queue.put)
        self.in_flight = self.slots.in_flight  # a policy's rollouts in progress or being applied
        self.status = StatusPublisher(
            api,
            metrics,
            clock,
            policies=self.policies,
            decisions=self.decisions,
            errors=self.errors,
            deployments=self.deployments,
            rolling_counts=self.slots.rolling_counts,
        )
        self.access = SidecarAccess(settings.sidecar, api, metrics, self.deployments, self.call_later)
        # Decision inputs: the maxHold learned (learned_delays.py; set by the runtime), the L7 routes seen.
        self.learned_max_hold: Callable[[DeploymentRef], float | None] = lambda _: None
        # Where each decision's starting budget is published for the holds (learned_delays.py; set
        # by the runtime): told for every decision kept, and None when the Deployment goes.
        self.starting_budget: Callable[[DeploymentRef, float | None], None] = lambda _, __: None
        self.l7 = L7Routes(changed=partial(judge_again_without_reports, self))
        self.reconciler = Reconciler(self, api, metrics, monotonic)

    # ---- what the handlers observe ------------------------------------------------

    def active_policies(self) -> list[Policy]:
        # Copied in one step first: the webhook's thread calls this while the loop adds policies.
        return [s.policy for s in list(self.policies.values()) if s.policy is not None and not s.deleting]

    def policy_seen(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        ref = policy_ref_of(body)
        old = self.policies.get(ref)
        if deleted:
            self.policies.pop(ref, None)
            self._enqueue_affected(ref, old.policy if old else None, None)
            return
        state = PolicyState.observed(ref, body, old)
        self.policies[ref] = state
        self.status.changed(ref)
        generation = (body.get("metadata") or {}).get("generation")
        if (
            old is None
            or (old.body.get("metadata") or {}).get("generation") != generation
            or old.deleting != state.deleting
        ):
            self._enqueue_affected(ref, old.policy if old else None, state.policy)

    def namespace_seen(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        meta = body.get("metadata") or {}
        name = str(meta.get("name"))
        labels = dict(meta.get("labels") or {})
        if deleted:
            self.namespaces.pop(name, None)
            return
        if self.namespaces.get(name) != labels:
            self.namespaces[name] = labels
            for ref in self.deployments.refs():
                if ref.namespace == name:
                    self.enqueue(ref)

    def deployment_seen(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        ref = deployment_ref(body)
        if self.reconciler.held_back(ref, body, deleted):
            return
        if deleted:
            self.deployments.pop(ref)
            self.writers.pop(ref, None)
            gone = self.decisions.pop(ref, None)
            self.starting_budget(ref, None)
            self.errors.pop(ref, None)
            self.slots.gone(ref)
            self.access.recheck([ref.namespace])
            if gone is not None and gone.verdict.policy is not None:
                self.status.changed(gone.verdict.policy)
            return
        if self.deployments.is_older(body) or self.deployments.is_stored(body):
            # Older than the Deployment lameduck last wrote: the watch delivers events from
            # before an apply after the apply's own answer. Storing it would show the rollout
            # the apply started as not begun and free its slot for another. The very one stored:
            # the watch's event of lameduck's own write, whose answer was stored and judged.
            return
        judged = self.deployments.judged(ref)
        if not self.deployments.put_status(body):  # more changed than a status write changes: stored whole
            previous = self.deployments.write_times(ref)
            if previous is not None:
                self.writers.setdefault(ref, set()).update(managers_since(previous, body))
            self.deployments.put(body)
        decision = self.decisions.get(ref)
        self.slots.observed(ref, decision, body)
        if judged != self.deployments.judged(ref) or decision is None or not holds_through_status(decision):
            self.enqueue(ref)
        # Else only its status changed (its rollout's progress, for the slots), which its decision does not read.

    def enqueue(self, ref: DeploymentRef) -> None:
        self.queue.put(ref)

    def _enqueue_affected(self, ref: PolicyRef, before: Policy | None, after: Policy | None) -> None:
        """The Deployments a policy change can affect: governed by it (or lost to another), carrying
        its fields, or selected before or after."""
        excluded = self.settings.excluded_namespaces
        for deployment, meta in self.deployments.metas():
            if ref.namespace is not None and deployment.namespace != ref.namespace:
                continue
            decision = self.decisions.get(deployment)
            governed = decision is not None and ref in (
                decision.verdict.policy,
                *(loss.policy for loss in decision.losses),
            )
            labels = self.namespaces.get(deployment.namespace)
            if governed or carries_or_selected_by(ref, (before, after), meta, labels, excluded):
                self.enqueue(deployment)

    # ---- the reconcile loop -------------------------------------------------------

    @property
    def queued(self) -> frozenset[DeploymentRef]:
        return self.queue.queued

    async def run(self) -> None:
        await self.synced.wait()
        await self.reconciler.count_rollouts_in_progress()
        await self.queue.run(self.workers)

    async def drain(self) -> None:
        """Reconcile until the queue is empty and the Deployments' Events are posted (for tests)."""
        await self.queue.drain()
        await self.reconciler.events.idle()

    async def reconcile(self, ref: DeploymentRef) -> Decision | None:
        """Decide about ref and act; the decision taken, intent included (the one kept for
        status is without it), or None for a Deployment no longer known."""
        return await self.reconciler.reconcile(ref)

    # ---- what the other loops, the runtime and the webhook ask ------------------------

    async def publish_forever(self, interval: float) -> None:
        await self.synced.wait()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.publish()
            except Exception:
                log.exception("publishing policy status failed")

    async def publish(self) -> None:
        await self.access.publish()
        await self.status.publish()

    async def tell_pending(self) -> None:
        """Post the policies' Events still gathering their burst and end the Deployments' posts
        under way (the operator is stopping)."""
        await self.reconciler.events.policies.post_all()
        await self.reconciler.events.idle()

    def recheck_access(self, namespaces: Iterable[str]) -> None:
        self.access.recheck(namespaces)

    def governing_policy(self, ref: DeploymentRef) -> PolicyRef | None:
        decision = self.decisions.get(ref)
        return decision.verdict.policy if decision is not None else None

    def policy_uid(self, ref: PolicyRef) -> str | None:
        state = self.policies.get(ref)
        uid = (state.body.get("metadata") or {}).get("uid") if state is not None else None
        return str(uid) if uid else None

    def policy_spec(self, ref: PolicyRef) -> PolicySpec | None:
        state = self.policies.get(ref)
        return state.policy.spec if state is not None and state.policy is not None else None

    def hold_of(self, ref: DeploymentRef) -> HoldSpec | None:
        """The hold of the policy that governs the Deployment now; None: none does."""
        policy = self.governing_policy(ref)
        spec = self.policy_spec(policy) if policy is not None else None
        return None if spec is None else spec.hold


def judge_again_without_reports(fleet: Fleet, namespace: str) -> None:
    """What the namespace's L7 routes send to changed: judge again its Deployments whose next
    maxHold does not come from reports (only the starting budget depends on routes)."""
    for ref, decision in list(fleet.decisions.items()):
        if ref.namespace == namespace and decision.budget_source in (BudgetSource.L7_BACKEND, BudgetSource.DEFAULT):
            fleet.enqueue(ref)


class Reconciler:
    """One Deployment's reconcile, read top to bottom: decide, hold a rollout slot while the
    decision is written, write, record the decision for the slots, the policies' status, the
    sidecar's access and the holds' starting budget, then tell the Deployment's owners. Each part
    is called once, in that order."""

    def __init__(self, fleet: Fleet, api: FleetApi, metrics: OperatorMetrics, monotonic: Callable[[], float]) -> None:
        self.fleet = fleet
        self.metrics = metrics
        self.monotonic = monotonic
        self.writes = DeploymentWrites(api)
        policy_events = PolicyEvents(api, metrics, monotonic, fleet.call_later, fleet.policy_uid)
        self.events = DeploymentEvents(api, metrics, policy_events)
        # Per Deployment being reconciled, the latest watch event of it meanwhile (body, deleted).
        self.meanwhile: dict[DeploymentRef, tuple[Mapping[str, Any], bool] | None] = {}

    def held_back(self, ref: DeploymentRef, body: Mapping[str, Any], deleted: bool) -> bool:
        """Whether the watch's event waits for ref's reconcile to end: the first event of a write
        mostly comes before its answer and is the write itself, which the answer, stored and
        judged, already is. The latest is kept and seen once the reconcile has ended."""
        if ref not in self.meanwhile:
            return False
        self.meanwhile[ref] = (body, deleted)
        return True

    async def count_rollouts_in_progress(self) -> None:
        """Judge, without writing, every Deployment rolling out that has no decision yet, so that its
        rollout holds its policy's slot before any apply can start another. A standby keeps no
        decisions and so holds no slots: a new leader that went straight to its queue counted the
        rollouts its predecessor left in progress only as it came to them, and started others
        before (21 at once against a limit of 20 in bench.faults). Each is reconciled in its turn."""
        fleet = self.fleet
        for ref in fleet.deployments.refs():
            body = None if ref in fleet.decisions else fleet.deployments.get(ref)
            if body is not None and rollout_in_progress(body):
                decision = decide(
                    body,
                    fleet.active_policies(),
                    fleet.settings,
                    fleet.namespaces.get(ref.namespace),
                    fleet.in_flight,
                    learned_max_hold=fleet.learned_max_hold(ref),
                    l7_backend=fleet.l7.backend(body),
                )
                self._record(ref, decision, None, body)
                fleet.enqueue(ref)
            await asyncio.sleep(0)  # a body parsed each: the watches run between

    async def reconcile(self, ref: DeploymentRef) -> Decision | None:
        """Decide about ref and act; the decision taken, intent included (the one kept for
        status is without it), or None for a Deployment no longer known."""
        self.meanwhile[ref] = None
        try:
            return await self._reconcile(ref)
        finally:
            seen = self.meanwhile.pop(ref, None)
            if seen is not None:
                self.fleet.deployment_seen(*seen)

    async def _reconcile(self, ref: DeploymentRef) -> Decision | None:
        fleet = self.fleet
        body: Mapping[str, Any] | None = fleet.deployments.get(ref)
        if body is None:
            return None
        started = self.monotonic()
        namespace_labels = fleet.namespaces.get(ref.namespace)
        recent_writers = sorted(fleet.writers.pop(ref, ()))
        decision = decide(
            body,
            fleet.active_policies(),
            fleet.settings,
            namespace_labels,
            fleet.in_flight,
            recent_writers=recent_writers,
            learned_max_hold=fleet.learned_max_hold(ref),
            l7_backend=fleet.l7.backend(body),
        )
        previous = fleet.decisions.get(ref)
        # The slot is released before the decision is recorded, unless the write failed.
        with fleet.slots.applying(ref, decision):
            try:
                stored, result = await self.writes.carry_out(ref, body, decision)
                if stored is not None:
                    body = stored
                    fleet.deployments.put(body)
                    fleet.slots.observed(ref, fleet.decisions.get(ref), body)
                fleet.errors.pop(ref, None)
                fleet.queue.succeeded(ref)
            except Exception as err:
                self._failed(ref, decision, previous, body, err)
                return decision
        self._record(ref, decision if stored is None else self._written(ref, decision, body), previous, body)
        self.metrics.reconciles.labels(result=result).inc()
        self.metrics.reconcile_seconds.observe(self.monotonic() - started)
        self.events.tell(ref, decision, body)
        return decision

    def _written(self, ref: DeploymentRef, decision: Decision, body: Mapping[str, Any]) -> Decision:
        """The decision about the Deployment as its write stored it (body), judged without deciding
        again; when body does not carry what was written, it is decided again from the start."""
        written = after_write(decision, body)
        if written is None:
            self.fleet.enqueue(ref)
        return written or decision

    def _failed(
        self, ref: DeploymentRef, decision: Decision, previous: Decision | None, body: Mapping[str, Any], err: Exception
    ) -> None:
        self.metrics.api_errors.labels(operation=decision.action.value.lower()).inc()
        self.fleet.errors[ref] = (decision.verdict.policy, f"{type(err).__name__}: {one_line(err)}")
        self.metrics.reconciles.labels(result="error").inc()
        self.fleet.queue.retry_later(ref)
        self._record(ref, decision, previous, body)
        log.warning("could not %s %s: %s", decision.action.value.lower(), ref, one_line(err))

    def _record(
        self, ref: DeploymentRef, decision: Decision, previous: Decision | None, body: Mapping[str, Any]
    ) -> None:
        """Keep the decision; body is the Deployment as last read or written by this reconcile
        (a newer one from the watch enqueues another reconcile), not parsed again."""
        # Kept for status, slots and policy changes: not the intent nor the patched Deployment (a
        # whole Deployment body each: at fleet scale, most of the operator's memory), which the
        # next reconcile plans anew.
        plan = replace(decision.plan, intent={}) if decision.plan is not None else None
        fleet = self.fleet
        fleet.decisions[ref] = replace(decision, intent=None, plan=plan, patched=None)
        fleet.starting_budget(ref, decision.starting_max_hold)
        fleet.access.recheck([ref.namespace])
        fleet.slots.judged(ref, decision, body if ref in fleet.deployments else None)
        fleet.status.judged(decision, previous)
