"""Observes shutdowns across the fleet: the sidecars' hold reports (Events, watched with a
label selector) and the terminations of managed pods (the pod watch the readiness gate
already keeps), into fleet metrics, per-Deployment late traffic and the policies' status.

Every replica keeps the recent observations (a new leader publishes status at once); only
the leader counts them in its metrics, so a fleet's dashboards add up no matter how many
replicas are scraped. What happens while no replica leads (a failover's seconds) is kept
for status but is not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from lameduck_operator.logic.decision import DeploymentEvent
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.logic.shutdown import (
    DeploymentShutdown,
    HoldReport,
    ReportMalformed,
    TerminationOutcome,
    late_traffic,
    parse_hold_report,
    pod_deployment,
    shutdown_status,
    sidecar_policy,
    termination_of,
)
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.model import PolicyRef, PolicySpec

log = logging.getLogger("lameduck.operator")
# Per Deployment, the latest holds and terminations that status and recommendations read.
RECENT = 20
# Per-Deployment metric series: at most this many Deployments (the first seen keep theirs).
MAX_DEPLOYMENT_SERIES = 1000
# Event and pod uids already counted: enough for the terminations of a large rollout.
MAX_REMEMBERED = 20000
# At most one PodsKilled Event per Deployment in this many seconds.
KILLED_EVENT_SECONDS = 60.0
QUANTILES = (("0.5", "p50"), ("0.99", "p99"), ("1", "max"))

PolicyOf = Callable[[DeploymentRef], PolicyRef | None]
SpecOf = Callable[[PolicyRef], PolicySpec | None]
PostEvent = Callable[[Mapping[str, Any], DeploymentEvent], Awaitable[None]]


class Remembered:
    """A bounded set: the oldest entries are forgotten first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> bool:
        """Whether the key is new."""
        if key in self.items:
            return False
        self.items[key] = None
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return True

    def discard(self, key: str) -> None:
        self.items.pop(key, None)


class ShutdownObserver:
    def __init__(
        self,
        metrics: OperatorMetrics,
        policy_of: PolicyOf,
        spec_of: SpecOf,
        *,
        changed: Callable[[PolicyRef], None] = lambda _: None,
        post_event: PostEvent | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.policy_of = policy_of
        self.spec_of = spec_of
        self.changed = changed
        self.post_event = post_event
        self.monotonic = monotonic
        self.recording = False  # while leading: see lead()
        self.reports: dict[DeploymentRef, deque[HoldReport]] = {}
        self.ends: dict[DeploymentRef, deque[TerminationOutcome]] = {}
        self.governing: dict[DeploymentRef, PolicyRef] = {}
        self._reports_seen = Remembered(MAX_REMEMBERED)
        self._pods_done = Remembered(MAX_REMEMBERED)
        self._series: dict[DeploymentRef, PolicyRef] = {}
        self._killed_posted: dict[DeploymentRef, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def lead(self) -> None:
        """Count from now on, and export the per-Deployment series this replica knows."""
        self.recording = True
        for ref, policy in sorted(self.governing.items(), key=lambda item: str(item[0])):
            self._update_series(ref, policy)

    # ---- hold reports ---------------------------------------------------------------------

    def report_seen(self, event: Mapping[str, Any], deleted: bool = False) -> None:
        uid = str((event.get("metadata") or {}).get("uid") or "")
        if deleted or not uid or not self._reports_seen.add(uid):
            return
        try:
            report = parse_hold_report(event)
        except ReportMalformed as err:
            if self.recording:
                self.metrics.hold_reports.labels(result="malformed").inc()
            log.warning("ignoring a malformed hold report %s: %s", uid, err)
            return
        ref = DeploymentRef(report.namespace, report.deployment) if report.deployment else None
        policy = report.policy or (self.policy_of(ref) if ref else None)
        if self.recording:
            self._count(report, policy)
        if ref is None or policy is None:
            return
        self.reports.setdefault(ref, deque(maxlen=RECENT)).append(report)
        self.governing[ref] = policy
        if self.recording:
            self._update_series(ref, policy)
        self.changed(policy)

    def _count(self, report: HoldReport, policy: PolicyRef | None) -> None:
        labels = {"namespace": report.namespace, "policy": str(policy or "")}
        self.metrics.hold_reports.labels(result="recorded").inc()
        self.metrics.holds.labels(**labels, outcome=report.outcome.value).inc()
        self.metrics.hold_seconds.labels(**labels).observe(report.hold_seconds)
        self.metrics.late_traffic_seconds.labels(**labels).observe(report.late_traffic_seconds)
        if report.stage1_seconds is not None:
            self.metrics.slice_propagation_seconds.labels(**labels).observe(report.stage1_seconds)
        if report.stage2_seconds is not None:
            self.metrics.dataplane_propagation_seconds.labels(**labels).observe(report.stage2_seconds)

    # ---- terminations ----------------------------------------------------------------------

    def pod_seen(self, pod: Mapping[str, Any], deleted: bool = False) -> None:
        metadata = pod.get("metadata") or {}
        uid = str(metadata.get("uid") or "")
        if not metadata.get("deletionTimestamp") or not uid or uid in self._pods_done.items:
            if deleted:
                self._pods_done.discard(uid)
            return
        name = pod_deployment(pod)
        ref = DeploymentRef(str(metadata.get("namespace") or ""), name) if name else None
        policy = sidecar_policy(pod.get("spec") or {}) or (self.policy_of(ref) if ref else None)
        if policy is None:
            return  # not a managed pod
        termination = termination_of(pod, policy)
        if termination is None:
            return
        if not deleted:
            self._pods_done.add(uid)
        if self.recording:
            labels = {"namespace": termination.namespace, "policy": str(policy)}
            self.metrics.terminations.labels(**labels, outcome=termination.outcome.value).inc()
            self.metrics.termination_seconds.labels(**labels).observe(termination.seconds)
            if termination.grace_period_seconds > 0:
                self.metrics.termination_budget_ratio.labels(**labels).observe(
                    termination.seconds / termination.grace_period_seconds
                )
        if ref is None:
            return
        self.ends.setdefault(ref, deque(maxlen=RECENT)).append(termination.outcome)
        self.governing[ref] = policy
        self.changed(policy)
        if termination.outcome is TerminationOutcome.KILLED and self.recording:
            self._tell_killed(ref, termination.grace_period_seconds)

    def _tell_killed(self, ref: DeploymentRef, grace: float) -> None:
        now = self.monotonic()
        if self.post_event is None or now - self._killed_posted.get(ref, -KILLED_EVENT_SECONDS) < KILLED_EVENT_SECONDS:
            return
        self._killed_posted[ref] = now
        killed = sum(1 for outcome in self.ends[ref] if outcome is TerminationOutcome.KILLED)
        event = DeploymentEvent(
            "PodsKilled",
            f"{killed} of the last {len(self.ends[ref])} terminated pods were SIGKILLed at the end of their "
            f"{grace:g}s grace period: the app needs longer to stop than its budget gives it",
            warning=True,
        )
        body = {"metadata": {"name": ref.name, "namespace": ref.namespace}}
        task = asyncio.get_running_loop().create_task(self._post(body, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, body: Mapping[str, Any], event: DeploymentEvent) -> None:
        assert self.post_event is not None
        try:
            await self.post_event(body, event)
        except Exception as err:  # an Event is a courtesy: never let it stop the watch
            self.metrics.api_errors.labels(operation="event").inc()
            log.warning("could not post %s on %s: %s", event.reason, body["metadata"]["name"], err)

    # ---- per Deployment ----------------------------------------------------------------------

    def deployment_gone(self, ref: DeploymentRef) -> None:
        policy = self.governing.pop(ref, None)
        self.reports.pop(ref, None)
        self.ends.pop(ref, None)
        self._killed_posted.pop(ref, None)
        self._drop_series(ref)
        if policy is not None:
            self.changed(policy)

    def _summary(self, ref: DeploymentRef, spec: PolicySpec | None) -> DeploymentShutdown:
        ends = self.ends.get(ref) or ()
        late = late_traffic(
            list(self.reports.get(ref) or ()),
            spec.hold.quiet_period if spec else 0.0,
            spec.drain_timeout if spec else 0.0,
        )
        return DeploymentShutdown(
            ref.namespace,
            ref.name,
            late,
            terminations=len(ends),
            killed=sum(1 for outcome in ends if outcome is TerminationOutcome.KILLED),
        )

    def status_of(self, policy: PolicyRef) -> dict[str, Any]:
        """The policy status's lateTraffic and overBudget."""
        spec = self.spec_of(policy)
        refs = sorted((r for r, p in self.governing.items() if p == policy), key=str)
        return shutdown_status([self._summary(ref, spec) for ref in refs])

    def _update_series(self, ref: DeploymentRef, policy: PolicyRef) -> None:
        if ref not in self._series and len(self._series) >= MAX_DEPLOYMENT_SERIES:
            return
        if self._series.get(ref, policy) != policy:
            self._drop_series(ref)
        self._series[ref] = policy
        late = self._summary(ref, self.spec_of(policy)).late
        if late is None:
            return
        labels = {"namespace": ref.namespace, "deployment": ref.name, "policy": str(policy)}
        for quantile, field in QUANTILES:
            self.metrics.deployment_late_traffic.labels(**labels, quantile=quantile).set(getattr(late, field))
        if late.max_hold is not None:
            self.metrics.deployment_max_hold.labels(**labels).set(late.max_hold)
        self.metrics.deployment_recommended_max_hold.labels(**labels).set(late.recommended_max_hold)

    def _drop_series(self, ref: DeploymentRef) -> None:
        policy = self._series.pop(ref, None)
        if policy is None:
            return
        labels = (ref.namespace, ref.name, str(policy))
        for quantile, _ in QUANTILES:
            _remove(self.metrics.deployment_late_traffic, (*labels, quantile))
        _remove(self.metrics.deployment_max_hold, labels)
        _remove(self.metrics.deployment_recommended_max_hold, labels)


def _remove(gauge: Any, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)
