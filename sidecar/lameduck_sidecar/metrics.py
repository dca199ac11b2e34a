"""The sidecar's Prometheus metrics, on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 300)


class SidecarMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.hold_seconds = Histogram(
            "lameduck_sidecar_hold_seconds", "Whole preStop hold.", buckets=BUCKETS, registry=self.registry
        )
        self.stage1_seconds = Histogram(
            "lameduck_sidecar_stage1_seconds",
            "From hold start until every EndpointSlice showed the pod not ready (slice propagation).",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.stage2_seconds = Histogram(
            "lameduck_sidecar_stage2_seconds",
            "From stage 1's end until the app saw no new connection for the quiet period (data-plane propagation).",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.connections_after_stage1 = Counter(
            "lameduck_sidecar_connections_after_stage1_total",
            "New inbound connections to the app after the slices had let go.",
            registry=self.registry,
        )
        self.reused_after_stage1 = Counter(
            "lameduck_sidecar_reused_connections_after_stage1_total",
            "Open connections to the app that received new data after the slices had let go, once per poll.",
            registry=self.registry,
        )
        self.pinned_after_stage1 = Counter(
            "lameduck_sidecar_pinned_connections_after_stage1_total",
            "Connections busy without a pause since before stage 1 that no longer kept the hold, once per poll.",
            registry=self.registry,
        )
        self.holds_by_history = Counter(
            "lameduck_sidecar_learned_holds_total",
            "Holds by the Deployment's history: learned (a learned delay was read) or learning (none).",
            ["state"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "lameduck_sidecar_fallbacks_total",
            "Holds whose stage 1 could not watch the slices, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.holds = Counter("lameduck_sidecar_holds_total", "Holds by outcome.", ["outcome"], registry=self.registry)
        self.calls = Counter(
            "lameduck_sidecar_hold_calls_total",
            "Calls to /hold by answer (calls.Answer): hold, fallback, not_deleting, invalid_container.",
            ["answer"],
            registry=self.registry,
        )
        self.api_requests = Counter(
            "lameduck_sidecar_api_requests_total",
            "Requests made to the Kubernetes API (only when a call to the hold comes).",
            registry=self.registry,
        )
        self.reports = Counter(
            "lameduck_sidecar_hold_reports_total",
            "Hold reports (an Event on the pod at the end of a hold) by result (posted, failed).",
            ["result"],
            registry=self.registry,
        )
        self.in_flight = Gauge("lameduck_sidecar_holds_in_flight", "Holds in progress.", registry=self.registry)
