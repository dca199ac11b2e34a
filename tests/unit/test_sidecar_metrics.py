"""The sidecar's hand-written metrics (lameduck_sidecar.metrics) read as prometheus-client's would:
the same text for the same metrics and the same updates, and a parser takes it."""

from __future__ import annotations

import math
import re

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as ClientCounter
from prometheus_client import Gauge as ClientGauge
from prometheus_client import Histogram as ClientHistogram
from prometheus_client.parser import text_string_to_metric_families

from lameduck_sidecar.metrics import Counter, Gauge, Histogram, Metric, SidecarMetrics, go_float

# The _created series carry the time each series was made: the two sides differ there only.
CREATED = re.compile(r"^(\S+_created(?:\{[^}]*\})?) \S+$", re.M)


def twin(metrics: SidecarMetrics) -> tuple[CollectorRegistry, dict[str, object]]:
    """The same metrics, defined on prometheus-client."""
    registry = CollectorRegistry()
    made: dict[str, object] = {}
    for family in metrics.families():
        if isinstance(family, Histogram):
            made[family.name] = ClientHistogram(
                family.name, family.documentation, buckets=family.buckets[:-1], registry=registry
            )
        elif isinstance(family, Counter):
            made[family.name] = ClientCounter(family.name, family.documentation, family.labelnames, registry=registry)
        else:
            assert isinstance(family, Gauge)
            made[family.name] = ClientGauge(family.name, family.documentation, family.labelnames, registry=registry)
    return registry, made


def same_text(ours: bytes, theirs: bytes) -> tuple[str, str]:
    return CREATED.sub(r"\1 T", ours.decode()), CREATED.sub(r"\1 T", theirs.decode())


def update(family: Metric, other: object, step: int) -> None:
    """One update on both sides: an observation, an increment by label, a gauge going up and down."""
    if isinstance(family, Histogram):
        for amount in (0.05, 0.1, 2.5, 7.5, 1000.0, step * 0.3):
            family.observe(amount)
            other.observe(amount)  # type: ignore[attr-defined]
    elif family.labelnames:
        for label in ("quiet", 'odd "one"\\\n', "api"):
            family.labels(**{family.labelnames[0]: label}).inc(step)
            other.labels(**{family.labelnames[0]: label}).inc(step)  # type: ignore[attr-defined]
    elif isinstance(family, Gauge):
        family.inc(3)
        family.dec()
        other.inc(3)  # type: ignore[attr-defined]
        other.dec()  # type: ignore[attr-defined]
    else:
        assert isinstance(family, Counter)
        family.inc(step)
        other.inc(step)  # type: ignore[attr-defined]


def test_the_idle_text_is_prometheus_clients() -> None:
    metrics = SidecarMetrics()
    registry, _ = twin(metrics)
    ours, theirs = same_text(metrics.exposition(), generate_latest(registry))
    assert ours == theirs
    assert "lameduck_sidecar_hold_seconds_count 0.0" in ours
    assert "# TYPE lameduck_sidecar_holds_total counter" in ours, "a labelled family is listed before its first series"


def test_after_updates_the_text_is_prometheus_clients() -> None:
    metrics = SidecarMetrics()
    registry, made = twin(metrics)
    for step in (1, 2):
        for family in metrics.families():
            update(family, made[family.name], step)
    ours, theirs = same_text(metrics.exposition(), generate_latest(registry))
    assert ours == theirs
    assert 'lameduck_sidecar_hold_calls_total{answer="quiet"} 3.0' in ours


def test_a_parser_reads_every_series() -> None:
    metrics = SidecarMetrics()
    metrics.holds.labels(outcome="quiet").inc()
    metrics.hold_seconds.observe(1.5)
    metrics.in_flight.inc()
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    assert [s.value for s in families["lameduck_sidecar_holds"].samples if s.name.endswith("_total")] == [1.0]
    buckets = {s.labels["le"]: s.value for s in families["lameduck_sidecar_hold_seconds"].samples if "le" in s.labels}
    assert (buckets["1.0"], buckets["2.0"], buckets["+Inf"]) == (0.0, 1.0, 1.0)
    assert families["lameduck_sidecar_holds_in_flight"].samples[0].value == 1.0


def test_counters_only_go_up_and_labels_are_checked() -> None:
    metrics = SidecarMetrics()
    with pytest.raises(ValueError, match="only goes up"):
        metrics.api_requests.inc(-1)
    with pytest.raises(ValueError, match="only goes up"):
        metrics.holds.labels(outcome="quiet").inc(-1)
    with pytest.raises(ValueError, match="takes the labels"):
        metrics.holds.labels(result="posted")
    with pytest.raises(ValueError, match="has labels"):
        metrics.holds.inc()


@pytest.mark.parametrize(
    ("value", "text"),
    [(1, "1.0"), (0.25, "0.25"), (2.5e6, "2.5e+06"), (1.7e9, "1.7e+09"), (math.inf, "+Inf"), (-0.5, "-0.5")],
)
def test_values_are_written_as_go_writes_them(value: float, text: str) -> None:
    assert go_float(value) == text
