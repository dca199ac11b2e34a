"""Observes shutdowns across the fleet: the sidecars' hold reports (Events, watched with a
label selector) and the terminations of managed pods (the pod watch the readiness gate
already keeps), into fleet metrics, per-Deployment late traffic and the policies' status.

Every replica keeps the recent observations (a new leader publishes status at once); only
the leader counts them in its metrics, so a fleet's dashboards add up no matter how many
replicas are scraped. What happens while no replica leads (a failover's seconds) is kept
for status but is not counted.

A hold report is believed only as logic/report_trust.py decides, against the pods this
operator's own watch saw being deleted: anyone who can create Events can write one. The two
watches are not ordered, so a report whose pod's deletion has not been seen yet waits (a few,
for a minute at most) and is judged when it is; the pods are kept a little after their removal
for reports that come late. Every structure here is bounded whatever reports arrive, and
per-Deployment state exists only for Deployments the operator knows.

The reports that never came are counted too (MissingReports, logic/report_ledger.py), by every
replica from the same two watches, leader or not: a leader that loses the API server exits (it
cannot renew its Lease), and its ledger with it, while the standby that saw the same deletions
goes on. Each replica's count is whole, so it is read with max over replicas, not sum. The
namespace watch tells it which namespaces are being deleted: their pods cannot post a report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from lameduck_operator.deletions_seen import DeletionsSeen
from lameduck_operator.learned_delays import LearnedDelays
from lameduck_operator.logic.decision import DeploymentEvent
from lameduck_operator.logic.report_ledger import (
    Counted,
    PodRef,
    ReportLedger,
    Settled,
    namespace_terminating,
    report_expected,
)
from lameduck_operator.logic.report_trust import ObservedPod, Trusted, Untrusted, judge_report, observed_pod
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.logic.shutdown import (
    DeploymentShutdown,
    HoldReport,
    KilledCause,
    LateTraffic,
    ReportMalformed,
    TerminationOutcome,
    late_traffic,
    parse_hold_report,
    pod_deployment,
    shutdown_status,
    termination_of,
)
from lameduck_operator.metrics import DeploymentShutdownSample, OperatorMetrics
from lameduck_operator.model import PolicyRef, PolicySpec

log = logging.getLogger("lameduck.operator")
# Per Deployment, the latest holds and terminations that status and recommendations read.
RECENT = 20
# Per-Deployment metric series: at most this many Deployments (the first seen keep theirs; the
# status covers them all).
MAX_DEPLOYMENT_SERIES = 1000
# Event and pod uids already counted: enough for the terminations of a large rollout.
MAX_REMEMBERED = 20000
# At most one PodsKilled Event per Deployment in this many seconds.
KILLED_EVENT_SECONDS = 60.0
# How often the pods whose report never came are looked for, besides at each pod event.
MISSING_CHECK_SECONDS = 5.0

PolicyOf = Callable[[DeploymentRef], PolicyRef | None]
Knows = Callable[[DeploymentRef], bool]
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


@dataclass(slots=True)
class Recent:
    """A Deployment's latest holds and terminations (RECENT of each at most)."""

    policy: PolicyRef
    reports: list[HoldReport] = field(default_factory=list)
    ends: list[TerminationOutcome] = field(default_factory=list)
    late: LateTraffic | None = None  # from reports, with the policy's settings when they came


def _keep_recent(items: list[Any], item: Any) -> None:
    items.append(item)
    del items[:-RECENT]


KILLED_WHY = {
    KilledCause.SIGTERM_LIKELY_LOST: "the latest was deleted within seconds of its app starting, so its SIGTERM "
    "probably came before the app handled it (an app running as PID 1 ignores it until then): handle SIGTERM "
    "first thing, or run the app under an init",
    KilledCause.OVER_BUDGET: "the app needs longer to stop than its budget gives it",
}


class KilledPodsNotice:
    """The PodsKilled Event on a Deployment whose pods were SIGKILLed: once a minute at most."""

    def __init__(self, metrics: OperatorMetrics, post_event: PostEvent | None, monotonic: Callable[[], float]) -> None:
        self.metrics = metrics
        self.post_event = post_event
        self.monotonic = monotonic
        self.posted: dict[DeploymentRef, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def tell(self, ref: DeploymentRef, ends: list[TerminationOutcome], grace: float, cause: KilledCause) -> None:
        now = self.monotonic()
        if self.post_event is None or now - self.posted.get(ref, -KILLED_EVENT_SECONDS) < KILLED_EVENT_SECONDS:
            return
        self.posted[ref] = now
        killed = sum(1 for outcome in ends if outcome is TerminationOutcome.KILLED)
        event = DeploymentEvent(
            "PodsKilled",
            f"{killed} of the last {len(ends)} terminated pods were SIGKILLed at the end of their "
            f"{grace:g}s grace period: {KILLED_WHY[cause]}",
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


class MissingReports:
    """The hold reports that never came (logic/report_ledger.py), from the observer's two watches:
    kept and counted on every replica (the module's docstring says why)."""

    def __init__(self, metrics: OperatorMetrics, monotonic: Callable[[], float]) -> None:
        self.metrics = metrics
        self.monotonic = monotonic
        self.ledger = ReportLedger()

    def pod_seen(self, pod: Mapping[str, Any], deleted: bool) -> None:
        expected = report_expected(pod)
        counted = [] if expected is None else self.ledger.deleting(expected)
        if deleted:
            self.ledger.gone(str((pod.get("metadata") or {}).get("uid") or ""), self.monotonic())
        self._count([*counted, *self.ledger.expire(self.monotonic())])

    def namespace_seen(self, namespace: Mapping[str, Any], deleted: bool) -> None:
        """The pods of a namespace being deleted owe no report: the API server refuses them (403)."""
        name = str((namespace.get("metadata") or {}).get("name") or "")
        self._count(self.ledger.namespace_seen(name, not deleted and namespace_terminating(namespace)))

    def report_seen(self, report: HoldReport) -> None:
        """A report as its Event names its pod: an Event about a pod elsewhere names none."""
        if report.pod_uid and report.involved_namespace == report.namespace:
            pod = PodRef(report.pod_uid, report.namespace, report.pod)
            self._count(self.ledger.reported(pod, self.monotonic()))

    async def expire_forever(self, interval: float = MISSING_CHECK_SECONDS) -> None:
        """Windows end while no pod or report comes too: each is counted within `interval` of its end."""
        while True:
            await asyncio.sleep(interval)
            self._count(self.ledger.expire(self.monotonic()))

    def _count(self, counted: list[Counted]) -> None:
        for each in counted:
            if each.settled is Settled.MISSING:
                self.metrics.hold_reports_missing.labels(namespace=each.pod.namespace).inc()
            elif each.settled is Settled.LATE:
                self.metrics.hold_reports_late.labels(namespace=each.pod.namespace).inc()
            elif each.settled is Settled.FORGOTTEN:
                self.metrics.hold_reports_forgotten.inc()


class ShutdownObserver:
    def __init__(
        self,
        metrics: OperatorMetrics,
        policy_of: PolicyOf,
        spec_of: SpecOf,
        *,
        known: Knows,
        changed: Callable[[PolicyRef], None] = lambda _: None,
        post_event: PostEvent | None = None,
        learned: LearnedDelays | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        # What the trusted reports teach the next holds (none learned without it).
        self.learned = learned
        self.policy_of = policy_of
        self.spec_of = spec_of
        self.known = known
        self.changed = changed
        self.monotonic = monotonic
        self.clock = clock
        self.recording = False  # while leading: see lead()
        self.deployments: dict[DeploymentRef, Recent] = {}
        self._reports_seen = Remembered(MAX_REMEMBERED)
        self._pods_done = Remembered(MAX_REMEMBERED)
        # What reports are judged by (report_trust): the pods seen being deleted, with the
        # reports waiting for theirs; the pods whose hold was reported.
        self.deletions = DeletionsSeen(monotonic, clock)
        self._reported = Remembered(MAX_REMEMBERED)
        self.missing = MissingReports(metrics, monotonic)
        self.killed = KilledPodsNotice(metrics, post_event, monotonic)
        metrics.deployment_shutdown.source = self._samples

    def lead(self) -> None:
        """Count from now on, and export the per-Deployment series this replica knows."""
        self.recording = True

    def _recent(self, ref: DeploymentRef, policy: PolicyRef) -> Recent:
        recent = self.deployments.get(ref)
        if recent is None or recent.policy != policy:
            recent = self.deployments[ref] = Recent(policy)
        return recent

    # ---- hold reports ----------------------------------------------------------------------

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
        self.missing.report_seen(report)
        self._forget_expired()
        pod = self.deletions.pod(report.pod_uid)
        if pod is None and report.pod_uid and report.involved_namespace == report.namespace:
            for dropped in self.deletions.wait(report):
                self._reject(Untrusted.DUPLICATE if dropped is report else Untrusted.UNKNOWN_POD)
        else:
            self._judge(report, pod)

    def _judge(self, report: HoldReport, pod: ObservedPod | None) -> None:
        verdict = judge_report(
            report,
            pod,
            known=self.known,
            policy_of=self.policy_of,
            reported=report.pod_uid in self._reported.items,
            now=self.clock(),
        )
        if isinstance(verdict, Untrusted):
            self._reject(verdict)
            log.debug("not believing hold report %s: %s", report.event_uid, verdict.value)
            return
        self._reported.add(report.pod_uid)
        self._record(verdict)

    def _reject(self, reason: Untrusted) -> None:
        if self.recording:
            self.metrics.hold_reports.labels(result="untrusted").inc()
            self.metrics.untrusted_hold_reports.labels(reason=reason.value).inc()

    def _record(self, trusted: Trusted) -> None:
        """A believed report, under the Deployment and policy the operator resolved for its pod."""
        report, ref, policy = trusted.report, trusted.deployment, trusted.policy
        if self.recording:
            count_report(self.metrics, report, policy)
        recent = self._recent(ref, policy)
        _keep_recent(recent.reports, report)
        spec = self.spec_of(policy)
        recent.late = late_traffic(
            recent.reports, spec.hold.quiet_period if spec else 0.0, spec.drain_timeout if spec else 0.0
        )
        if self.learned is not None and spec is not None:
            self.learned.reports_changed(ref, recent.reports, spec.hold)
        self.changed(policy)

    # ---- pods being deleted: what reports are judged by --------------------------------------

    def _forget_expired(self) -> None:
        for _ in self.deletions.forget_expired():
            self._reject(Untrusted.UNKNOWN_POD)

    # ---- terminations ----------------------------------------------------------------------

    def pod_seen(self, pod: Mapping[str, Any], deleted: bool = False) -> None:
        self._forget_expired()  # pod events come often: what expired is let go soon
        observed = observed_pod(pod)
        if observed is not None and observed.deployment is not None:
            for report in self.deletions.saw(observed, deleted):
                self._judge(report, self.deletions.pod(observed.uid))
        self.missing.pod_seen(pod, deleted)
        self._terminated(pod, deleted)

    def _terminated(self, pod: Mapping[str, Any], deleted: bool) -> None:
        metadata = pod.get("metadata") or {}
        uid = str(metadata.get("uid") or "")
        if not metadata.get("deletionTimestamp") or not uid or uid in self._pods_done.items:
            if deleted:
                self._pods_done.discard(uid)
            return
        name = pod_deployment(pod)
        ref = DeploymentRef(str(metadata.get("namespace") or ""), name) if name else None
        # The policy the operator resolves for a Deployment it knows, never one the pod names:
        # a pod's spec is written by whoever can create pods in its namespace.
        policy = self.policy_of(ref) if ref is not None and self.known(ref) else None
        if policy is None:
            return  # not a managed pod
        termination = termination_of(pod, policy)
        if termination is None:
            return
        if not deleted:
            self._pods_done.add(uid)
        labels = {"namespace": termination.namespace, "policy": str(policy)}
        if self.recording:
            self.metrics.terminations.labels(**labels, outcome=termination.outcome.value).inc()
            self.metrics.termination_seconds.labels(**labels).observe(termination.seconds)
            if termination.grace_period_seconds > 0:
                self.metrics.termination_budget_ratio.labels(**labels).observe(
                    termination.seconds / termination.grace_period_seconds
                )
        assert ref is not None
        recent = self._recent(ref, policy)
        _keep_recent(recent.ends, termination.outcome)
        self.changed(policy)
        cause = termination.killed_cause
        if termination.outcome is TerminationOutcome.KILLED and cause is not None and self.recording:
            self.metrics.pods_killed.labels(**labels, cause=cause.value).inc()
            log.info(
                "pod %s/%s was SIGKILLed %.0fs after its deletion (grace period %.0fs, exit codes %s; likely %s)",
                termination.namespace,
                termination.pod,
                termination.seconds,
                termination.grace_period_seconds,
                ",".join(str(code) for code in termination.exit_codes),
                cause.value,
            )
            self.killed.tell(ref, recent.ends, termination.grace_period_seconds, cause)

    # ---- namespaces: the pods of one being deleted owe no report -----------------------------

    def namespace_seen(self, namespace: Mapping[str, Any], deleted: bool = False) -> None:
        self.missing.namespace_seen(namespace, deleted)

    # ---- per Deployment ----------------------------------------------------------------------

    def deployment_gone(self, ref: DeploymentRef) -> None:
        recent = self.deployments.pop(ref, None)
        self.killed.posted.pop(ref, None)
        if self.learned is not None:
            self.learned.forget(ref)
        if recent is not None:
            self.changed(recent.policy)

    def status_of(self, policy: PolicyRef) -> dict[str, Any]:
        """The policy status's lateTraffic and overBudget."""
        return policy_shutdown_status(self.deployments, policy, self._learned_delay, self.learned_max_hold)

    def _learned_delay(self, ref: DeploymentRef) -> float | None:
        learned = self.learned.learned(ref) if self.learned is not None else None
        return None if learned is None else learned.pooled_delay_seconds

    def learned_max_hold(self, ref: DeploymentRef) -> float | None:
        return self.learned.in_force(ref) if self.learned is not None else None

    def _samples(self) -> Iterator[DeploymentShutdownSample]:
        recording = self.recording
        return (
            deployment_samples(self.deployments, self._learned_delay, self.learned_max_hold) if recording else iter(())
        )


def count_report(metrics: OperatorMetrics, report: HoldReport, policy: PolicyRef) -> None:
    """A trusted report in the fleet metrics, under the policy the operator resolved."""
    labels = {"namespace": report.namespace, "policy": str(policy)}
    metrics.hold_reports.labels(result="recorded").inc()
    metrics.holds.labels(**labels, outcome=report.outcome.value).inc()
    metrics.hold_seconds.labels(**labels).observe(report.hold_seconds)
    metrics.late_traffic_seconds.labels(**labels).observe(report.late_traffic_seconds)
    if report.stage1_seconds is not None:
        metrics.slice_propagation_seconds.labels(**labels).observe(report.stage1_seconds)
    if report.stage2_seconds is not None:
        metrics.dataplane_propagation_seconds.labels(**labels).observe(report.stage2_seconds)
    metrics.requests_lost_after_release.labels(**labels).inc(report.lost_after_release or 0)


def policy_shutdown_status(
    deployments: Mapping[DeploymentRef, Recent],
    policy: PolicyRef,
    learned_delay: Callable[[DeploymentRef], float | None],
    learned_max_hold: Callable[[DeploymentRef], float | None] = lambda _: None,
) -> dict[str, Any]:
    """The lateTraffic and overBudget of a policy's status, from its Deployments' recent shutdowns."""
    return shutdown_status(
        [
            DeploymentShutdown(
                ref.namespace,
                ref.name,
                recent.late,
                terminations=len(recent.ends),
                killed=sum(1 for outcome in recent.ends if outcome is TerminationOutcome.KILLED),
                learned_delay=learned_delay(ref),
                learned_max_hold=learned_max_hold(ref),
            )
            for ref, recent in sorted(deployments.items(), key=lambda item: str(item[0]))
            if recent.policy == policy
        ]
    )


def deployment_samples(
    deployments: Mapping[DeploymentRef, Recent],
    learned_delay: Callable[[DeploymentRef], float | None] = lambda _: None,
    learned_max_hold: Callable[[DeploymentRef], float | None] = lambda _: None,
) -> Iterator[DeploymentShutdownSample]:
    """The per-Deployment series (the leader's), for MAX_DEPLOYMENT_SERIES at most."""
    exported = 0
    for ref, recent in deployments.items():
        if recent.late is None:
            continue
        if exported == MAX_DEPLOYMENT_SERIES:
            return
        exported += 1
        late = recent.late
        yield DeploymentShutdownSample(
            ref.namespace,
            ref.name,
            str(recent.policy),
            late.p50,
            late.p99,
            late.max,
            late.max_hold,
            late.recommended_max_hold,
            late.lost_after_release,
            learned_delay(ref),
            learned_max_hold(ref),
        )
