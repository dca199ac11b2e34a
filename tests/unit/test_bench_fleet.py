"""bench.fleet reads the operator's stalls by cause from its metrics text."""

from __future__ import annotations

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
