"""The webhook benchmark's arithmetic: histogram buckets from Prometheus text, their deltas and
quantiles interpolated within buckets, and the client-side percentiles."""

from __future__ import annotations

import math
import subprocess

import pytest

from bench.webhook_latency import (
    APISERVER_HISTOGRAM,
    WEBHOOK_NAME,
    Buckets,
    apiserver_buckets_of,
    bucket_delta,
    bucket_quantile,
    client_summary,
    histogram_buckets,
    histogram_summary,
)

INF = math.inf


@pytest.mark.parametrize(
    ("buckets", "q", "expected"),
    [
        ({}, 0.5, None),  # no histogram
        ({0.01: 0, INF: 0}, 0.99, None),  # no observations
        ({0.01: 10, INF: 10}, 0.5, 0.005),  # the first bucket starts at 0
        ({0.001: 10, 0.0025: 90, 0.05: 100, INF: 100}, 0.5, 0.00175),  # 40 of the 80 in (1 ms, 2.5 ms]
        ({0.001: 10, 0.0025: 90, 0.05: 100, INF: 100}, 0.99, 0.04525),  # 9 of the 10 in (2.5 ms, 50 ms]
        ({0.1: 5, 0.2: 10, INF: 10}, 0.5, 0.1),  # a rank at a bucket's top is its bound
        ({0.1: 5, 0.2: 5, 0.3: 10, INF: 10}, 0.75, 0.25),  # empty buckets are passed over
        ({0.025: 90, 0.1: 95, INF: 100}, 0.99, 0.1),  # in the +Inf bucket: the largest finite bound
    ],
)
def test_bucket_quantile_interpolates_linearly_within_the_bucket(buckets: Buckets, q: float, expected: float) -> None:
    found = bucket_quantile(buckets, q)
    assert found == (None if expected is None else pytest.approx(expected))


OPERATOR_TEXT = """\
# TYPE lameduck_webhook_duration_seconds histogram
lameduck_webhook_duration_seconds_bucket{le="0.005"} 3.0
lameduck_webhook_duration_seconds_bucket{le="0.05"} 9.0
lameduck_webhook_duration_seconds_bucket{le="+Inf"} 10.0
lameduck_webhook_duration_seconds_count 10.0
lameduck_webhook_duration_seconds_created 1.7e+09
lameduck_reconcile_duration_seconds_bucket{le="0.005"} 50.0
"""
APISERVER_TEXT = """\
apiserver_admission_webhook_admission_duration_seconds_bucket{name="deployments.lameduck.dev",operation="CREATE",rejected="false",type="admit",le="0.005"} 1
apiserver_admission_webhook_admission_duration_seconds_bucket{name="deployments.lameduck.dev",operation="CREATE",rejected="false",type="admit",le="+Inf"} 2
apiserver_admission_webhook_admission_duration_seconds_bucket{name="deployments.lameduck.dev",operation="UPDATE",rejected="false",type="admit",le="0.005"} 4
apiserver_admission_webhook_admission_duration_seconds_bucket{name="deployments.lameduck.dev",operation="UPDATE",rejected="false",type="admit",le="+Inf"} 5
apiserver_admission_webhook_admission_duration_seconds_bucket{name="other.example.com",operation="UPDATE",rejected="false",type="admit",le="+Inf"} 70
apiserver_admission_webhook_admission_duration_seconds_count{name="deployments.lameduck.dev"} 7
"""  # noqa: E501


@pytest.mark.parametrize(
    ("text", "name", "match", "expected"),
    [
        (OPERATOR_TEXT, "lameduck_webhook_duration_seconds", "", {0.005: 3, 0.05: 9, INF: 10}),
        (APISERVER_TEXT, APISERVER_HISTOGRAM, WEBHOOK_NAME, {0.005: 5, INF: 7}),  # series summed, others left out
        (APISERVER_TEXT, "lameduck_webhook_duration_seconds", "", {}),
    ],
)
def test_histogram_buckets_sums_the_matching_series_by_bound(
    text: str, name: str, match: str, expected: Buckets
) -> None:
    assert histogram_buckets(text, name, match) == expected


def test_bucket_delta_is_what_the_burst_added_and_refuses_a_reset() -> None:
    assert bucket_delta({0.05: 4, INF: 5}, {0.05: 10, INF: 12}) == {0.05: 6, INF: 7}
    assert bucket_delta({}, {0.05: 1, INF: 1}) == {0.05: 1, INF: 1}
    with pytest.raises(AssertionError, match="backwards"):
        bucket_delta({0.05: 4, INF: 5}, {0.05: 1, INF: 1})


@pytest.mark.parametrize(
    ("buckets", "met", "bound"),
    [
        ({0.025: 90, 0.05: 100, INF: 100}, True, True),
        ({0.025: 90, 0.05: 98, 0.1: 100, INF: 100}, False, True),  # 75 ms
        ({0.025: 90, 0.05: 98, INF: 100}, False, True),  # in the +Inf bucket: reads as 50 ms, is above it
        ({0.025: 100, 0.1: 100, INF: 100}, True, False),  # the API server's buckets: an estimate
        ({0.05: 0, INF: 0}, None, True),
    ],
)
def test_histogram_summary_says_whether_the_p99_target_is_met(buckets: Buckets, met: bool | None, bound: bool) -> None:
    summary = histogram_summary(buckets)
    assert summary["target_met"] is met
    assert summary["target_is_a_bucket_bound"] is bound


def test_client_summary_uses_inclusive_quantiles_of_the_milliseconds() -> None:
    summary = client_summary([float(ms) for ms in range(1, 101)])
    assert summary == {"count": 100, "p50_ms": 50.5, "p99_ms": 99.01, "min_ms": 1.0, "max_ms": 100.0}


def test_the_api_servers_histograms_of_several_webhooks_come_from_one_read_of_its_metrics() -> None:
    reads: list[tuple[str, ...]] = []

    class OneMetricsText:
        def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
            reads.append(args)
            return subprocess.CompletedProcess(args, 0, stdout=APISERVER_TEXT)

    found = apiserver_buckets_of(OneMetricsText(), (WEBHOOK_NAME, 'name="other.example.com"', 'name="absent"'))  # type: ignore[arg-type]
    assert found == [{0.005: 5, INF: 7}, {INF: 70}, None]
    assert reads == [("get", "--raw", "/metrics")]
