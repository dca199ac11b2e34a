"""The operator's view of the fleet and its reconcile loop.

Handlers feed observed objects in; one loop decides (pure logic) and applies through a
FleetApi, one Deployment at a time, and a second loop publishes policy statuses. Nothing
here imports kopf or the API client, so tests drive it with a fake API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from lameduck_operator.deployment_store import DeploymentStore
from lameduck_operator.logic.admitted import admitted_paths, injected, json_patch, reverted
from lameduck_operator.logic.budget import budget_seconds
from lameduck_operator.logic.compliance import Reason, State, Verdict
from lameduck_operator.logic.decision import (
    Action,
    Decision,
    decide,
    revert_intent,
    rollout_in_progress,
)
from lameduck_operator.logic.ownership import managed_by, managers_since, ownership_restore_patch
from lameduck_operator.logic.rbac import service_accounts_needing_access
from lameduck_operator.logic.retry import Backoff
from lameduck_operator.logic.selection import DeploymentRef, deployment_ref, policy_selects
from lameduck_operator.logic.status import invalid_status, policy_status, summarize
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.model import Policy, PolicyInvalid, PolicyRef, PolicySpec, parse_policy
from lameduck_operator.names import FINALIZER, GROUP, KIND_NAMESPACED, POLICY_ANNOTATION
from lameduck_operator.ports import FleetApi, one_line
from lameduck_operator.settings import Settings

MAX_DEPLOYMENT_RETRY_SECONDS = 60.0
# While pods from older templates still hold access that the templates no longer need.
ACCESS_RECHECK_SECONDS = 10.0
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


def _slot_holder(decision: Decision | None, body: Mapping[str, Any]) -> PolicyRef | None:
    """The policy whose rollout slot the Deployment's rollout takes: the governing policy's,
    while a rollout is in progress; a Deployment opted out of it (or not its own) takes none."""
    if decision is None or decision.verdict.state in (State.SKIPPED, State.UNMANAGED):
        return None
    return decision.verdict.policy if rollout_in_progress(body) else None


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
        call_later: Callable[[float, Callable[[], None]], object] | None = None,
        workers: int = 1,
    ) -> None:
        self.settings = settings
        self.api = api
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic
        # Timers of retries and re-checks: the running loop's unless a test steps time itself.
        self.call_later = call_later or (lambda delay, callback: asyncio.get_running_loop().call_later(delay, callback))
        self.policies: dict[PolicyRef, PolicyState] = {}
        self.namespaces: dict[str, dict[str, str]] = {}
        # Whole bodies compressed, parsed on demand; labels and lameduck's annotations at hand.
        self.deployments = DeploymentStore(f"{GROUP}/")
        self.decisions: dict[DeploymentRef, Decision] = {}
        self.errors: dict[DeploymentRef, tuple[PolicyRef | None, str]] = {}
        self.rolling: dict[DeploymentRef, PolicyRef] = {}
        # Per policy, the Deployments waiting for a rollout slot, in the order they began to wait.
        self.waiting: dict[PolicyRef, dict[DeploymentRef, None]] = defaultdict(dict)
        # Managers seen changing a Deployment since it was last judged (to name drift's author).
        self.writers: dict[DeploymentRef, set[str]] = {}
        self.synced = asyncio.Event()
        self._queue: asyncio.Queue[DeploymentRef] = asyncio.Queue()
        self._queued: set[DeploymentRef] = set()
        # Reconciles run `workers` at a time, never two of one Deployment: one that comes up
        # again while it is being reconciled waits in _again for that reconcile to end.
        self.workers = workers
        self._reconciling: set[DeploymentRef] = set()
        self._again: set[DeploymentRef] = set()
        # Applies on their way to the API server hold a rollout slot of their policy.
        self._applying: dict[DeploymentRef, PolicyRef] = {}
        self._retries: Backoff[DeploymentRef] = Backoff(MAX_DEPLOYMENT_RETRY_SECONDS)
        self._dirty: set[PolicyRef] = set()
        self._conflict_posted: dict[DeploymentRef, str] = {}
        # Namespaces where the sidecar's Role and RoleBinding exist, with their subjects.
        self.sidecar_access: dict[str, tuple[str, ...]] = {}
        # Namespaces whose sidecar Role an earlier version wrote with other rules.
        self.outdated_access: set[str] = set()
        self._access_dirty: set[str] = set()
        self._access_retries: Backoff[str] = Backoff(MAX_DEPLOYMENT_RETRY_SECONDS)
        self._access_rechecks: set[str] = set()
        # The status's lateTraffic and overBudget of a policy, from the shutdown observer.
        self.shutdown_status: Callable[[PolicyRef], dict[str, Any]] | None = None

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
        meta = body.get("metadata") or {}
        policy: Policy | None
        invalid: PolicyInvalid | None
        try:
            policy, invalid = parse_policy(body), None
        except PolicyInvalid as err:
            # A bad update must not revert the fleet: the last valid spec stays in force.
            policy, invalid = (old.policy if old else None), err
        state = PolicyState(
            ref=ref,
            body=body,
            policy=policy,
            invalid=invalid,
            deleting=bool(meta.get("deletionTimestamp")),
            has_finalizer=FINALIZER in (meta.get("finalizers") or []),
            published=old.published if old else None,
        )
        self.policies[ref] = state
        self._dirty.add(ref)
        changed = (
            old is None
            or (old.body.get("metadata") or {}).get("generation") != meta.get("generation")
            or old.deleting != state.deleting
        )
        if changed:
            self._enqueue_affected(ref, old.policy if old else None, policy)

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
        if deleted:
            self.deployments.pop(ref)
            self.writers.pop(ref, None)
            gone = self.decisions.pop(ref, None)
            self.errors.pop(ref, None)
            self._set_rolling(ref, None)
            self._access_dirty.add(ref.namespace)
            if gone is not None and gone.verdict.policy is not None:
                self._dirty.add(gone.verdict.policy)
            return
        if self.deployments.is_older(body):
            # Older than the Deployment lameduck last wrote: the watch delivers events from
            # before an apply after the apply's own answer. Storing it would show the rollout
            # the apply started as not begun and free its slot for another.
            return
        previous = self.deployments.write_times(ref)
        if previous is not None:
            self.writers.setdefault(ref, set()).update(managers_since(previous, body))
        self._store(body)
        self.enqueue(ref)

    def _store(self, body: Mapping[str, Any]) -> None:
        ref = self.deployments.put(body)
        self._set_rolling(ref, _slot_holder(self.decisions.get(ref), body))

    def _set_rolling(self, ref: DeploymentRef, policy: PolicyRef | None) -> None:
        before = self.rolling.get(ref)
        if policy is None:
            self.rolling.pop(ref, None)
        else:
            self.rolling[ref] = policy
        if before is not None and before != policy:
            self._release_waiting(before)

    def _release_waiting(self, policy: PolicyRef) -> None:
        """A rollout ended: as many Deployments waiting their turn as there are free slots go,
        the longest waiting first. (Waking them all would judge every waiting Deployment at
        every rollout's end: quadratic in the fleet.)"""
        state = self.policies.get(policy)
        queue = self.waiting.get(policy) or {}
        if state is None or state.policy is None:
            free = len(queue)
        else:
            free = max(0, state.policy.spec.max_concurrent_rollouts - self.in_flight(policy))
        for ref in list(queue)[:free]:
            self.enqueue(ref)

    @property
    def queued(self) -> frozenset[DeploymentRef]:
        return frozenset(self._queued)

    def in_flight(self, policy: PolicyRef) -> int:
        rolling = sum(1 for p in self.rolling.values() if p == policy)
        return rolling + sum(1 for r, p in self._applying.items() if p == policy and r not in self.rolling)

    def enqueue(self, ref: DeploymentRef) -> None:
        if ref not in self._queued:
            self._queued.add(ref)
            self._queue.put_nowait(ref)
            self.metrics.queue_depth.set(len(self._queued))

    def _enqueue_affected(self, ref: PolicyRef, before: Policy | None, after: Policy | None) -> None:
        """The Deployments a policy change can affect: selected before or after, or governed by it."""
        marker = ref.annotation_value
        excluded = self.settings.excluded_namespaces
        for deployment, body in self.deployments.metas():
            if ref.namespace is not None and deployment.namespace != ref.namespace:
                continue
            decision = self.decisions.get(deployment)
            annotations = (body.get("metadata") or {}).get("annotations") or {}
            labels = self.namespaces.get(deployment.namespace)
            if (
                (decision is not None and decision.verdict.policy == ref)
                or (decision is not None and any(loss.policy == ref for loss in decision.losses))
                or annotations.get(POLICY_ANNOTATION) == marker
                or any(p is not None and policy_selects(p, body, labels, excluded) for p in (before, after))
            ):
                self.enqueue(deployment)

    # ---- the reconcile loop -------------------------------------------------------

    async def run(self) -> None:
        await self.synced.wait()
        await asyncio.gather(*(self._work() for _ in range(self.workers)))

    async def _work(self) -> None:
        while True:
            ref = await self._queue.get()
            self._queued.discard(ref)
            self.metrics.queue_depth.set(len(self._queued))
            if ref in self._reconciling:
                self._again.add(ref)
                continue
            self._reconciling.add(ref)
            try:
                await self.reconcile(ref)
            except Exception:  # one bad Deployment never stops the loop
                log.exception("reconcile of %s failed", ref)
                self._retry_later(ref)
            finally:
                self._reconciling.discard(ref)
                if ref in self._again:
                    self._again.discard(ref)
                    self.enqueue(ref)
            # Let the loop run between reconciles. A reconcile that needs no API call never
            # suspends, and neither does getting from a non-empty queue: after a policy change
            # over 5,000 Deployments a worker held the loop for 4.7 s without this, delaying
            # watches, webhook answers and the other workers' finished API calls.
            await asyncio.sleep(0)

    async def drain(self) -> None:
        """Reconcile until the queue is empty (for tests)."""
        while self._queued:
            ref = self._queue.get_nowait()
            self._queued.discard(ref)
            await self.reconcile(ref)

    async def reconcile(self, ref: DeploymentRef) -> Decision | None:
        """Decide about ref and act; the decision taken, intent included (the one kept for
        status is without it), or None for a Deployment no longer known."""
        body = self.deployments.get(ref)
        if body is None:
            return None
        started = self.monotonic()
        decision = decide(
            body,
            self.active_policies(),
            self.settings,
            self.namespaces.get(ref.namespace),
            self.in_flight,
            recent_writers=sorted(self.writers.pop(ref, ())),
        )
        previous = self.decisions.get(ref)
        result = "unchanged"
        if decision.action is Action.APPLY and decision.verdict.policy is not None:
            # Decided and counted before the first await: a concurrent decision sees this slot taken.
            self._applying[ref] = decision.verdict.policy
        try:
            if decision.action is Action.APPLY and decision.intent is not None:
                if admitted_paths(body):
                    # Injected at admission: lameduck keeps to its recorded fields, by JSON patch.
                    patch = json_patch(body, injected(body, decision.intent), guard=True)
                    stored = await self.api.patch_deployment(ref, patch)
                elif decision.replace_prestop:
                    stored = await self.api.take_over_prestops(body, decision.replace_prestop, decision.intent)
                else:
                    # Forced: the plan has checked every field the intent sets against the
                    # other managers' values and found none in the way (or TakeOver allows
                    # it). What others still own there are API defaults their create or
                    # update recorded, such as the grace period of 30s, which lameduck raises.
                    stored = await self.api.apply_deployment(decision.intent, True)
                self._store(stored)
                body = stored
                result = "applied"
            elif decision.action is Action.REVERT:
                stored = body
                if admitted_paths(body):
                    stored = await self.api.patch_deployment(ref, json_patch(body, reverted(body), guard=True))
                    # Then the writers' ownership as it was: a second write, changing no value.
                    ownership = ownership_restore_patch(body, stored)
                    if ownership:
                        stored = await self.api.patch_deployment(ref, ownership)
                if managed_by(stored, operation="Apply"):
                    stored = await self.api.apply_deployment(revert_intent(stored), False)
                self._store(stored)
                body = stored
                result = "reverted"
            elif decision.verdict.state is State.CONFLICT:
                result = "conflict"
            elif decision.verdict.reason is Reason.WAITING_TURN:
                result = "waiting"
            elif decision.verdict.reason is Reason.TEMPLATE_TOO_LARGE:
                result = "too_large"
                log.warning("not judging %s: %s", ref, decision.verdict.message)
            self.errors.pop(ref, None)
            self._retries.succeeded(ref)
        except Exception as err:
            self.metrics.api_errors.labels(operation=decision.action.value.lower()).inc()
            self.errors[ref] = (decision.verdict.policy, f"{type(err).__name__}: {one_line(err)}")
            self.metrics.reconciles.labels(result="error").inc()
            self._retry_later(ref)
            self._record(ref, decision, previous, body)
            log.warning("could not %s %s: %s", decision.action.value.lower(), ref, one_line(err))
            return decision
        finally:
            self._applying.pop(ref, None)
        self._record(ref, decision, previous, body)
        self.metrics.reconciles.labels(result=result).inc()
        self.metrics.reconcile_seconds.observe(self.monotonic() - started)
        await self._tell(ref, decision, body)
        return decision

    def _record(
        self, ref: DeploymentRef, decision: Decision, previous: Decision | None, body: Mapping[str, Any]
    ) -> None:
        """Keep the decision; body is the Deployment as last read or written by this reconcile
        (a newer one from the watch enqueues another reconcile), not parsed again."""
        # Kept for status, slots and policy changes: not the intent (a whole Deployment body each:
        # at fleet scale, most of the operator's memory), which the next reconcile plans anew.
        plan = replace(decision.plan, intent={}) if decision.plan is not None else None
        self.decisions[ref] = replace(decision, intent=None, plan=plan)
        self._access_dirty.add(ref.namespace)
        policy = decision.verdict.policy
        # Deleted meanwhile: it holds no slot.
        self._set_rolling(ref, _slot_holder(decision, body) if ref in self.deployments else None)
        waits = decision.verdict.reason is Reason.WAITING_TURN
        for waiting_for, queue in self.waiting.items():
            if waiting_for != policy or not waits:
                queue.pop(ref, None)
        if policy is not None and waits:
            self.waiting[policy].setdefault(ref, None)  # keeps its place in the line
        for touched in (previous.verdict.policy if previous else None, policy):
            if touched is not None:
                self._dirty.add(touched)
        for loss in decision.losses + (previous.losses if previous else ()):
            self._dirty.add(loss.policy)

    async def _tell(self, ref: DeploymentRef, decision: Decision, body: Mapping[str, Any]) -> None:
        """Post the decision's Event on body (the Deployment as reconciled, not parsed again from the store)."""
        event = decision.event
        if event is None:
            self._conflict_posted.pop(ref, None)
            return
        if decision.action is Action.NONE:
            # Conflicts are told once per distinct reason, not on every resync.
            if self._conflict_posted.get(ref) == event.message:
                return
            self._conflict_posted[ref] = event.message
        try:
            await self.api.post_event(body, event)
        except Exception as err:  # events are best effort
            self.metrics.api_errors.labels(operation="event").inc()
            log.info("could not post event on %s: %s", ref, err)

    def _retry_later(self, ref: DeploymentRef) -> None:
        delay = self._retries.failed(ref)
        self.call_later(delay, partial(self.enqueue, ref))

    # ---- policy status ---------------------------------------------------------------

    async def publish_forever(self, interval: float) -> None:
        await self.synced.wait()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.publish()
            except Exception:
                log.exception("publishing policy status failed")

    async def publish(self) -> None:
        await self._publish_access()
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
            status = policy_status(
                state.policy, summary, budget_seconds(state.policy.spec), existing, self.clock(), shutdown=shutdown
            )
        if status != state.published:
            await self.api.apply_policy_status(state.ref, status)
            state.published = status

    def status_changed(self, ref: PolicyRef) -> None:
        """Something a policy's status shows changed outside the reconcile loop."""
        self._dirty.add(ref)

    def governing_policy(self, ref: DeploymentRef) -> PolicyRef | None:
        decision = self.decisions.get(ref)
        return decision.verdict.policy if decision is not None else None

    def policy_spec(self, ref: PolicyRef) -> PolicySpec | None:
        state = self.policies.get(ref)
        return state.policy.spec if state is not None and state.policy is not None else None

    def recheck_access(self, namespaces: Iterable[str]) -> None:
        self._access_dirty.update(namespaces)

    async def _publish_access(self) -> None:
        """The sidecar's Role and RoleBinding exist exactly where pods run, or will run, the sidecar."""
        dirty, self._access_dirty = self._access_dirty, set()
        for namespace in sorted(dirty):
            try:
                await self._publish_access_in(namespace)
            except Exception as err:
                self.metrics.api_errors.labels(operation="sidecar_rbac").inc()
                delay = self._access_retries.failed(namespace)
                self.call_later(delay, partial(self._access_dirty.add, namespace))
                log.warning(
                    "could not update the sidecar's access in %s (retry in %.0fs): %s", namespace, delay, one_line(err)
                )
            else:
                self._access_retries.succeeded(namespace)

    async def _publish_access_in(self, namespace: str) -> None:
        in_namespace = self.deployments.metas_in(namespace)
        templates = service_accounts_needing_access(in_namespace, self.settings.sidecar)
        granted = self.sidecar_access.get(namespace, ())
        wanted = templates
        if not set(granted) <= set(templates):
            # Pods of older templates (rolling out after a revert or opt-out) may still run the
            # sidecar, and their holds need the access until they are gone. Pods are listed only
            # here, so a namespace whose templates keep their access costs no listing.
            pods = await self.api.list_pods(namespace)
            running = service_accounts_needing_access(in_namespace, self.settings.sidecar, pods)
            wanted = [sa for sa in running if sa in templates or sa in granted]
            if wanted != templates:
                self._recheck_access_later(namespace)
        if wanted and (granted != tuple(wanted) or namespace in self.outdated_access):
            await self.api.apply_sidecar_rbac(namespace, wanted)
            self.sidecar_access[namespace] = tuple(wanted)
            self.outdated_access.discard(namespace)
        elif not wanted and namespace in self.sidecar_access:
            await self.api.delete_sidecar_rbac(namespace)
            del self.sidecar_access[namespace]

    def _recheck_access_later(self, namespace: str) -> None:
        if namespace in self._access_rechecks:
            return
        self._access_rechecks.add(namespace)

        def due() -> None:
            self._access_rechecks.discard(namespace)
            self._access_dirty.add(namespace)

        self.call_later(ACCESS_RECHECK_SECONDS, due)

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
        # Every policy in force has a series, 0 when none of its Deployments is rolling out.
        rolling: dict[str, int] = {str(ref): 0 for ref, state in self.policies.items() if state.policy is not None}
        for ref in self.rolling.values():
            rolling[str(ref)] = rolling.get(str(ref), 0) + 1
        self.metrics.rollouts_in_flight.clear()
        for name, count in rolling.items():
            self.metrics.rollouts_in_flight.labels(policy=name).set(count)
