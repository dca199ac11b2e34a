"""bench.fleet reads stalls by cause from the operator's metrics; bench.fleet_ab summarises its rounds."""

from __future__ import annotations

from bench import fleet_ab
from bench.fleet import stalls_by_cause


def test_stalls_are_read_by_cause_and_other_series_are_left_out() -> None:
    text = "\n".join(
        [
            "# HELP lameduck_event_loop_stalls_total Event loop stalls",
            'lameduck_event_loop_stalls_total{cause="gc"} 2.0',
            'lameduck_event_loop_stalls_total{cause="loop_busy"} 1.0',
            'lameduck_event_loop_stalls_created{cause="gc"} 1.7e+09',
            "lameduck_event_loop_lag_max_seconds 4.2",
        ]
    )
    assert stalls_by_cause(text) == {"gc": 2, "loop_busy": 1}


def test_an_operator_that_never_stalled_has_no_stalls() -> None:
    assert stalls_by_cause("lameduck_event_loop_lag_max_seconds 0.2\n") == {}


def test_the_ab_summary_keeps_each_round_and_the_median_per_build() -> None:
    def round_of(variant: str, rate: float) -> dict[str, float | str]:
        return {
            "variant": variant,
            "applies_per_second": rate,
            "cpu_ms_per_apply": 10.0,
            "peak_rss_mib": 150.0,
            "loop_lag_max_seconds": 0.5,
            "gc_seconds": 1.0,
            "install_to_audited_seconds": 20.0,
        }

    rounds = [round_of("before", 20), round_of("after", 40), round_of("after", 50), round_of("before", 30)]
    summary = fleet_ab.summary(rounds)
    assert summary["before"]["applies_per_second"] == {"each": [20, 30], "median": 25}
    assert summary["after"]["applies_per_second"] == {"each": [40, 50], "median": 45}


def test_the_ab_webhook_figures_read_the_share_the_api_server_saw_answered_within_100_ms() -> None:
    webhook = {
        "apiserver": {"calls": 500.0, "p50_ms": 60.0, "p99_ms": 420.0, "buckets": {"0.025": 100.0, "0.1": 450.0}},
        "client": {"p50_ms": 90.0, "p99_ms": 700.0},
        "operator": {"p99_ms": 9.5},
    }
    figures = fleet_ab.webhook_figures(webhook)
    assert figures["webhook_apiserver_within_100ms"] == 0.9
    assert (figures["webhook_apiserver_p99_ms"], figures["webhook_handler_p99_ms"]) == (420.0, 9.5)
    rounds = [{"variant": v, "applies_per_second": 1.0, **figures} for v in ("before", "after")]
    assert fleet_ab.summary(rounds)["after"]["webhook_apiserver_within_100ms"] == {"each": [0.9], "median": 0.9}


def test_each_variant_takes_its_turn_forwards_then_backwards() -> None:
    assert fleet_ab.round_order(["after", "plain"], 3) == ["after", "plain", "plain", "after", "after", "plain"]
    assert fleet_ab.round_order(["before", "after", "plain"], 2) == [
        "before",
        "after",
        "plain",
        "plain",
        "after",
        "before",
    ]


def test_the_operators_rate_is_read_against_the_plain_clients_of_the_same_round() -> None:
    rounds: list[dict[str, float | str]] = [
        {"variant": "after", "applies_per_second": 40.0},
        {"variant": "plain", "applies_per_second": 50.0},
        {"variant": "plain", "applies_per_second": 80.0},
        {"variant": "after", "applies_per_second": 60.0},
    ]
    summary = fleet_ab.summary(rounds)
    assert summary["plain"]["applies_per_second"] == {"each": [50.0, 80.0], "median": 65.0}
    assert summary["after"]["share_of_plain_client"] == {"each": [0.8, 0.75], "median": 0.775}
    assert "before" not in summary
