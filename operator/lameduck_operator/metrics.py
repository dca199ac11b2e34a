"""Prometheus metrics of the operator, on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_resident_memory_bytes, process_cpu_seconds_total: what fleet-scale runs watch.
        ProcessCollector(registry=self.registry)
        self.reconciles = Counter(
            "lameduck_reconciles_total",
            "Deployment reconciles by result (applied, reverted, unchanged, waiting, conflict, error).",
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
            "Admission reviews by result (patched, unchanged, conflict, skipped, invalid, error).",
            ["result"],
            registry=self.registry,
        )
        self.webhook_seconds = Histogram(
            "lameduck_webhook_duration_seconds",
            "Time to answer one admission review, from the request read to the answer.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self.readiness_writes = Counter(
            "lameduck_readiness_condition_writes_total",
            "Writes of the pod condition lameduck.dev/endpoints-ready, by status and reason "
            "(True EndpointsListed or NoService, False NotListed).",
            ["status", "reason"],
            registry=self.registry,
        )
