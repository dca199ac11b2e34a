"""Prometheus metrics of the operator, on a registry of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lameduck_operator.logic.report_ledger import MAX_PODS, REPORT_WINDOW_SECONDS
from lameduck_operator.logic.report_trust import Untrusted

# Holds and terminations take from well under a second to the whole grace period.
SHUTDOWN_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 300)
BUDGET_RATIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1, 1.1)
# Per-Deployment series: one per Deployment with a termination observed, at most this many
# (see docs/observability.md); the rest are counted in the per-namespace series only.
DEPLOYMENT_LABELS = ["namespace", "deployment", "policy"]


@dataclass(frozen=True, slots=True)
class DeploymentShutdownSample:
    """One Deployment's late traffic, as the per-Deployment series show it."""

    namespace: str
    deployment: str
    policy: str
    p50: float
    p99: float
    max: float
    max_hold: float | None
    recommended_max_hold: float
    lost_after_release: int = 0  # over its recent holds
    learned_delay: float | None = None
    learned_max_hold: float | None = None  # with hold.learnedBudget: the maxHold its next rollout gets


class DeploymentShutdownCollector(Collector):
    """The per-Deployment series, from `source` at each scrape (empty until the shutdown
    observer sets it, and while this replica does not lead)."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[DeploymentShutdownSample]] = lambda: ()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        late = GaugeMetricFamily(
            "lameduck_deployment_late_traffic_seconds",
            "Late traffic of a Deployment's recent holds: quantile 0.5, 0.99 and 1 (the maximum).",
            labels=[*DEPLOYMENT_LABELS, "quantile"],
        )
        max_hold = GaugeMetricFamily(
            "lameduck_deployment_max_hold_seconds",
            "The maxHold a Deployment's pods were held with, from its latest hold report.",
            labels=DEPLOYMENT_LABELS,
        )
        recommended = GaugeMetricFamily(
            "lameduck_deployment_recommended_max_hold_seconds",
            "The maxHold a Deployment's observed late traffic calls for.",
            labels=DEPLOYMENT_LABELS,
        )
        lost = GaugeMetricFamily(
            "lameduck_deployment_requests_lost_after_release",
            "Connection attempts refused and connections reset on a Deployment's pods after their holds "
            "released, over its recent holds: the requests the holds could not save.",
            labels=DEPLOYMENT_LABELS,
        )
        learned = GaugeMetricFamily(
            "lameduck_deployment_learned_delay_seconds",
            "The pooled delay a Deployment's next holds wait for busy reused connections after stage 1, "
            "learned from its recent holds (0: they are taken as pinned after propagationDelay).",
            labels=DEPLOYMENT_LABELS,
        )
        learned_max_hold = GaugeMetricFamily(
            "lameduck_deployment_learned_max_hold_seconds",
            "With the policy's hold.learnedBudget: the maxHold a Deployment's next rollout gets, learned from "
            "its recent holds, between the policy's maxHold and its maxHoldCap.",
            labels=DEPLOYMENT_LABELS,
        )
        for sample in self.source():
            labels = [sample.namespace, sample.deployment, sample.policy]
            for quantile, value in (("0.5", sample.p50), ("0.99", sample.p99), ("1", sample.max)):
                late.add_metric([*labels, quantile], value)
            if sample.max_hold is not None:
                max_hold.add_metric(labels, sample.max_hold)
            recommended.add_metric(labels, sample.recommended_max_hold)
            lost.add_metric(labels, sample.lost_after_release)
            if sample.learned_delay is not None:
                learned.add_metric(labels, sample.learned_delay)
            if sample.learned_max_hold is not None:
                learned_max_hold.add_metric(labels, sample.learned_max_hold)
        yield late
        yield max_hold
        yield recommended
        yield lost
        yield learned
        yield learned_max_hold


class LoopHealthMetrics:
    """How late the operator's event loop ran its timers, what stalled it, and what the garbage
    collector took of it (loop_health.py)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Histogram(
            "lameduck_event_loop_lag_seconds",
            "How late the event loop ran a timer due every 0.1 s: time the loop spent stalled by work "
            "that did not yield.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.lag_max = Gauge(
            "lameduck_event_loop_lag_max_seconds",
            "The longest event loop stall since the operator started.",
            registry=registry,
        )
        self.stalls = Counter(
            "lameduck_event_loop_stalls_total",
            "Event loop stalls of a second or more, by what held the loop: gc, loop_busy (code that "
            "did not yield), other_threads, not_scheduled (no CPU for the process).",
            ["cause"],
            registry=registry,
        )
        self.gc_seconds = Counter(
            "lameduck_gc_seconds_total",
            "Time spent in Python's cyclic garbage collector, which holds every thread meanwhile.",
            registry=registry,
        )
        self.gc_pause_max = Gauge(
            "lameduck_gc_pause_max_seconds",
            "The longest single garbage collection since the operator started.",
            registry=registry,
        )


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_resident_memory_bytes, process_cpu_seconds_total: what fleet-scale runs watch.
        ProcessCollector(registry=self.registry)
        self.reconciles = Counter(
            "lameduck_reconciles_total",
            "Deployment reconciles by result (applied, reverted, unchanged, waiting, conflict, too_large, no_room, "
            "error).",
            ["result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "lameduck_reconcile_duration_seconds",
            "Time to decide and apply for one Deployment.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.managed = Gauge(
            "lameduck_managed_deployments",
            "Deployments by governing policy and state.",
            ["policy", "state"],
            registry=self.registry,
        )
        self.learned_budget_sources = Gauge(
            "lameduck_learned_budget_deployments",
            "Deployments governed by a policy with hold.learnedBudget, by where the maxHold their holds take "
            "comes from (learned_from: Reports, learned from their hold reports; L7Backend, no history and an L7 "
            "hop sends to them: the starting budget; Default, no history: the policy's maxHold).",
            ["policy", "learned_from"],
            registry=self.registry,
        )
        self.rollouts_in_flight = Gauge(
            "lameduck_rollouts_in_flight",
            "Deployments of a policy currently rolling out.",
            ["policy"],
            registry=self.registry,
        )
        self.api_errors = Counter(
            "lameduck_api_errors_total",
            "Failed API requests by operation.",
            ["operation"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "lameduck_queue_depth", "Deployments waiting to be reconciled.", registry=self.registry
        )
        self.leader = Gauge(
            "lameduck_leader",
            "1 while this replica holds the leader Lease and reconciles; 0 while it only serves the webhook.",
            registry=self.registry,
        )
        self.webhook_requests = Counter(
            "lameduck_webhook_requests_total",
            "Admission reviews by result (patched, unchanged, conflict, no_room, skipped, too_large, body_too_large, "
            "timeout, invalid, error).",
            ["result"],
            registry=self.registry,
        )
        self.webhook_seconds = Histogram(
            "lameduck_webhook_duration_seconds",
            "Time to answer one admission review, from the request read to the answer.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self.webhook_certificate_reload_failures = Counter(
            "lameduck_webhook_certificate_reload_failures_total",
            "Certificate and key pairs the webhook found in its mounted files and could not load (mismatched, "
            "malformed or unreadable), each counted once: it kept serving the pair it had.",
            registry=self.registry,
        )
        self.readiness_writes = Counter(
            "lameduck_readiness_condition_writes_total",
            "Writes of the pod condition lameduck.dev/endpoints-ready, by status and reason "
            "(True EndpointsListed or NoService, False NotListed).",
            ["status", "reason"],
            registry=self.registry,
        )
        # ---- shutdown, from the sidecars' hold reports and the pods' terminations ----------
        shutdown = ["namespace", "policy"]
        self.hold_reports = Counter(
            "lameduck_hold_reports_total",
            "Hold reports (Events the sidecars post at the end of a hold) read, by result (recorded, "
            "malformed, untrusted).",
            ["result"],
            registry=self.registry,
        )
        # Labelled by a fixed set of reasons only: a forged report must not be able to add series.
        self.untrusted_hold_reports = Counter(
            "lameduck_hold_reports_untrusted_total",
            "Hold reports not believed, by reason (UnknownPod, NamespaceMismatch, UnknownDeployment, "
            "NotSelected, OutOfBounds, Duplicate): forged, or about a pod this operator did not see deleted.",
            ["reason"],
            registry=self.registry,
        )
        # From the operator's own pod watch (logic/report_ledger.py): namespaces of pods it saw deleted.
        self.hold_reports_missing = Counter(
            "lameduck_hold_reports_missing_total",
            "Pods deleted with lameduck's sidecar hold whose hold report never came: none within "
            f"{REPORT_WINDOW_SECONDS:g} s of the pod's removal (the sidecar gave up posting it, or could not post). "
            "Not of pods deleted with their namespace (the API server refuses their reports). "
            "Counted by every replica, leader or not: read with max over replicas.",
            ["namespace"],
            registry=self.registry,
        )
        self.hold_reports_late = Counter(
            "lameduck_hold_reports_late_total",
            "Hold reports that came after their pod had been counted missing (it stays counted missing). "
            "Counted by every replica.",
            ["namespace"],
            registry=self.registry,
        )
        self.hold_reports_forgotten = Counter(
            "lameduck_hold_reports_forgotten_total",
            f"Pods awaiting their hold report that the operator stopped waiting for, to keep at most {MAX_PODS:,} "
            "(the first seen deleted first): counted neither received nor missing. Counted by every replica.",
            registry=self.registry,
        )
        # Every series from the start: what a report can add is counts, never series.
        for result in ("recorded", "malformed", "untrusted"):
            self.hold_reports.labels(result=result)
        for reason in Untrusted:
            self.untrusted_hold_reports.labels(reason=reason.value)
        self.holds = Counter(
            "lameduck_holds_total",
            "Holds of managed pods by outcome (quiet, not_in_any_slice, timeout, fallback).",
            [*shutdown, "outcome"],
            registry=self.registry,
        )
        self.hold_seconds = Histogram(
            "lameduck_hold_duration_seconds",
            "Whole preStop hold of a managed pod.",
            shutdown,
            buckets=SHUTDOWN_BUCKETS,
            registry=self.registry,
        )
        self.slice_propagation_seconds = Histogram(
            "lameduck_hold_slice_propagation_seconds",
            "Stage 1: from the hold's start until no EndpointSlice showed the pod ready.",
            shutdown,
            buckets=SHUTDOWN_BUCKETS,
            registry=self.registry,
        )
        self.dataplane_propagation_seconds = Histogram(
            "lameduck_hold_dataplane_propagation_seconds",
            "Stage 2: from stage 1's end until no new work reached the pod for the quiet period.",
            shutdown,
            buckets=SHUTDOWN_BUCKETS,
            registry=self.registry,
        )
        self.late_traffic_seconds = Histogram(
            "lameduck_hold_late_traffic_seconds",
            "From the hold's start until the last new connection or request reached the pod (0: none).",
            shutdown,
            buckets=SHUTDOWN_BUCKETS,
            registry=self.registry,
        )
        self.requests_lost_after_release = Counter(
            "lameduck_requests_lost_after_release_total",
            "Connection attempts refused and connections reset on managed pods after their holds released "
            "(from trusted hold reports): the requests the holds could not save.",
            shutdown,
            registry=self.registry,
        )
        self.terminations = Counter(
            "lameduck_terminations_total",
            "Terminations of managed pods by how the app containers ended (clean, error, killed).",
            [*shutdown, "outcome"],
            registry=self.registry,
        )
        self.pods_killed = Counter(
            "lameduck_pods_killed_total",
            "Managed pods SIGKILLed at the end of their grace period, by likely cause: sigterm_likely_lost "
            "(deleted within seconds of the app starting: the SIGTERM probably came before the app handled it) "
            "or over_budget (the app needed longer than its grace period).",
            [*shutdown, "cause"],
            registry=self.registry,
        )
        self.termination_seconds = Histogram(
            "lameduck_termination_duration_seconds",
            "From the pod's deletion until its last app container exited.",
            shutdown,
            buckets=SHUTDOWN_BUCKETS,
            registry=self.registry,
        )
        self.termination_budget_ratio = Histogram(
            "lameduck_termination_budget_ratio",
            "Termination duration as a fraction of the grace period the pod was deleted with.",
            shutdown,
            buckets=BUDGET_RATIO_BUCKETS,
            registry=self.registry,
        )
        self.loop = LoopHealthMetrics(self.registry)
        # Per Deployment: computed at each scrape from the observer's state (no per-series objects).
        self.deployment_shutdown = DeploymentShutdownCollector()
        self.registry.register(self.deployment_shutdown)
