"""The sidecar's Prometheus metrics and their text exposition, written by hand.

A dozen counters, a gauge and three histograms need no library: prometheus-client adds 14 MiB
on its own (it loads ssl, http.server, email and more; docs/sidecar.md#memory). The text
is what prometheus-client's `generate_latest` writes for the same metrics, `_created` series
included (tests/unit/test_sidecar_metrics.py compares the two), in text format 0.0.4.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator

BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 300)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


def go_float(value: float) -> str:
    """A value as Prometheus (Go) prints it, as prometheus-client writes it."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


def _escape(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def sample(name: str, labels: Labels, value: float) -> str:
    pairs = ",".join(f'{key}="{_escape(val)}"' for key, val in sorted(labels))
    return f"{name}{{{pairs}}} {go_float(value)}\n" if pairs else f"{name} {go_float(value)}\n"


class Child:
    """One series (one set of label values) of a counter, gauge or histogram."""

    def __init__(self, buckets: tuple[float, ...] = ()) -> None:
        self.value = 0.0  # a counter's or gauge's value; a histogram's sum
        self.counts = [0] * len(buckets)  # per bucket, not cumulative
        self.observed = 0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class CounterChild(Child):
    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class Metric(ABC):
    """A metric family: its series by label values, each made on first use as prometheus-client
    does (a family without labels has its one series from the start)."""

    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.children: dict[Labels, Child] = {}
        if not labelnames:
            self.children[()] = self._child()

    def _child(self) -> Child:
        return Child()

    def labels(self, **values: str) -> Child:
        if set(values) != set(self.labelnames):
            raise ValueError(f"{self.name} takes the labels {self.labelnames}, got {sorted(values)}")
        key = tuple((name, str(values[name])) for name in self.labelnames)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = self._child()
        return found

    def _only(self) -> Child:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels: use .labels()")
        return self.children[()]

    @abstractmethod
    def samples(self, labels: Labels, child: Child) -> Iterator[str]:
        """The sample lines of one series, as prometheus-client writes them for this kind."""

    def exposition(self) -> str:
        """The family, then its `_created` series as a gauge family, as prometheus-client writes them."""
        help_text = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        shown = self.name + "_total" if self.kind == "counter" else self.name
        lines = [f"# HELP {shown} {help_text}\n", f"# TYPE {shown} {self.kind}\n"]
        created = []
        for labels, child in self.children.items():
            lines.extend(self.samples(labels, child))
            if self.kind != "gauge":
                created.append(sample(self.name + "_created", labels, child.created))
        if created:
            lines += [f"# HELP {self.name}_created {help_text}\n", f"# TYPE {self.name}_created gauge\n", *created]
        return "".join(lines)


class Counter(Metric):
    kind = "counter"

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        # prometheus-client's name for the family: without _total, which each sample adds back
        super().__init__(name.removesuffix("_total"), documentation, labelnames)

    def _child(self) -> Child:
        return CounterChild()

    def inc(self, amount: float = 1.0) -> None:
        self._only().inc(amount)

    def samples(self, labels: Labels, child: Child) -> Iterator[str]:
        yield sample(self.name + "_total", labels, child.value)


class Gauge(Metric):
    kind = "gauge"

    def inc(self, amount: float = 1.0) -> None:
        self._only().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._only().dec(amount)

    def samples(self, labels: Labels, child: Child) -> Iterator[str]:
        yield sample(self.name, labels, child.value)


class Histogram(Metric):
    kind = "histogram"

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = (*(float(b) for b in buckets), math.inf)
        super().__init__(name, documentation)

    def _child(self) -> Child:
        return Child(self.buckets)

    def observe(self, amount: float) -> None:
        child = self._only()
        child.value += amount
        child.observed += 1
        child.counts[next(i for i, bound in enumerate(self.buckets) if amount <= bound)] += 1

    def samples(self, labels: Labels, child: Child) -> Iterator[str]:
        cumulative = 0
        for bound, count in zip(self.buckets, child.counts, strict=True):
            cumulative += count
            yield sample(self.name + "_bucket", (*labels, ("le", go_float(bound))), cumulative)
        yield sample(self.name + "_count", labels, child.observed)
        yield sample(self.name + "_sum", labels, child.value)


class SidecarMetrics:
    def __init__(self) -> None:
        self.hold_seconds = Histogram("lameduck_sidecar_hold_seconds", "Whole preStop hold.")
        self.stage1_seconds = Histogram(
            "lameduck_sidecar_stage1_seconds",
            "From hold start until every EndpointSlice showed the pod not ready (slice propagation).",
        )
        self.stage2_seconds = Histogram(
            "lameduck_sidecar_stage2_seconds",
            "From stage 1's end until the app saw no new connection for the quiet period (data-plane propagation).",
        )
        self.connections_after_stage1 = Counter(
            "lameduck_sidecar_connections_after_stage1_total",
            "New inbound connections to the app after the slices had let go.",
        )
        self.reused_after_stage1 = Counter(
            "lameduck_sidecar_reused_connections_after_stage1_total",
            "Open connections to the app that received new data after the slices had let go, once per poll.",
        )
        self.pinned_after_stage1 = Counter(
            "lameduck_sidecar_pinned_connections_after_stage1_total",
            "Connections busy without a pause since before stage 1 that no longer kept the hold, once per poll.",
        )
        self.holds_by_history = Counter(
            "lameduck_sidecar_learned_holds_total",
            "Holds by the Deployment's history: learned (a learned delay was read) or learning (none).",
            ("state",),
        )
        self.fallbacks = Counter(
            "lameduck_sidecar_fallbacks_total",
            "Holds whose stage 1 could not watch the slices, by reason.",
            ("reason",),
        )
        self.holds = Counter("lameduck_sidecar_holds_total", "Holds by outcome.", ("outcome",))
        self.calls = Counter(
            "lameduck_sidecar_hold_calls_total",
            "Calls to /hold by answer (calls.Answer): hold, fallback, not_deleting, invalid_container.",
            ("answer",),
        )
        self.api_requests = Counter(
            "lameduck_sidecar_api_requests_total",
            "Requests made to the Kubernetes API (only when a call to the hold comes).",
        )
        self.reports = Counter(
            "lameduck_sidecar_hold_reports_total",
            "Hold reports (an Event on the pod at the end of a hold) by result: posted, posted_after_retry "
            "(stored by a later attempt), failed (given up).",
            ("result",),
        )
        self.in_flight = Gauge("lameduck_sidecar_holds_in_flight", "Holds in progress.")

    def families(self) -> list[Metric]:
        """In the order they were made, as a registry lists them."""
        return [m for m in vars(self).values() if isinstance(m, Metric)]

    def exposition(self) -> bytes:
        """What /metrics serves."""
        return "".join(m.exposition() for m in self.families()).encode()
