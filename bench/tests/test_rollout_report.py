"""The rollout benchmark's summaries: what counts against a disruption, the endpoints a data
plane had, and the spread of a figure."""

from __future__ import annotations

from typing import Any

import pytest

from bench.rollout_objects import STOPS, endpoints_target
from bench.rollout_report import (
    errors_from_disruption,
    live_endpoints_during,
    print_table,
    spread,
    summarize,
    summarize_all,
)


def run(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "condition": "normal",
        "stop": "restart",
        "variant": "lameduck",
        "round": 1,
        "requests": 100,
        "errors": {},
        "errors_by_second": {},
        "disrupted_at": 3.2,
        "duration_seconds": 10.0,
        "termination_seconds": [4.0, 5.0],
        "old_pods": {},
        "new_pods": [],
        "endpoints": {},
        "endpoints_target": 3,
    }
    return {**base, **overrides}


def test_errors_sent_before_the_second_of_the_disruption_do_not_count_against_it() -> None:
    assert errors_from_disruption(run(errors_by_second={"1": 4, "2": 1, "3": 2, "9": 1})) == 3


A, B, C, D = "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.4:8080"


def sampled(programmed: list[tuple[float, list[str]]], ready: list[tuple[float, list[str]]]) -> dict[str, Any]:
    def series(points: list[tuple[float, list[str]]]) -> dict[str, Any]:
        return {"points": [[t, len(a)] for t, a in points], "addresses": [a for _, a in points]}

    return run(endpoints={"programmed": series(programmed), "slices_ready": series(ready)})


@pytest.mark.parametrize(
    ("programmed", "ready", "expected"),
    [
        pytest.param(
            [(0.0, [A, B, C]), (8.0, [B, C, D])],
            [(0.0, [A, B, C]), (4.0, [B, C, D]), (8.0, [B, C, D])],
            (2, 4.0),
            id="a rule to a pod that is no longer ready counts for nothing until the data plane drops it",
        ),
        pytest.param(
            [(0.0, [A, B, C]), (4.0, [B, C, D])],
            [(0.0, [A, B, C]), (4.0, [B, C, D]), (9.0, [B, C, D])],
            (3, 0.0),
            id="a data plane in step with the slices never drops below the target",
        ),
        pytest.param(
            [(0.0, [A, B, C]), (5.0, [])],
            [(0.0, [A, B, C]), (5.0, [A, B, C]), (7.0, [A, B, C])],
            (0, 2.0),
            id="nothing programmed",
        ),
        pytest.param(
            [(0.0, [A]), (2.0, [A, B, C]), (6.0, [A, B, C])],
            [(0.0, [A, B, C]), (6.0, [A, B, C])],
            (3, 0.0),
            id="what came before the disruption is left out",
        ),
    ],
)
def test_live_endpoints_during_the_disruption(
    programmed: list[tuple[float, list[str]]], ready: list[tuple[float, list[str]]], expected: tuple[int, float]
) -> None:
    assert live_endpoints_during(sampled(programmed, ready)) == expected


def test_a_run_without_a_programmed_series_has_no_figure() -> None:
    assert live_endpoints_during(run()) == (None, 0.0)


def test_spread_is_median_min_and_max_and_none_for_nothing() -> None:
    assert spread([3.0, None, 1.0, 10.0]) == {"median": 3.0, "min": 1.0, "max": 10.0}
    assert spread([None]) is None


def test_endpoints_target_is_replicas_less_what_may_be_unavailable() -> None:
    assert endpoints_target(STOPS["restart"]) == 3
    assert endpoints_target(STOPS["drain"]) == 2
    assert endpoints_target(STOPS["scale-down"]) == 2


def test_a_summary_keeps_every_run_s_errors_and_the_spread_of_durations() -> None:
    runs = [
        run(errors={"timeout": 2}, errors_by_second={"1": 1, "5": 1}, duration_seconds=12.0),
        run(round=2, duration_seconds=10.0),
        run(round=3, duration_seconds=11.0),
    ]
    summary = summarize(runs)
    assert summary["errors_from_disruption_per_run"] == [1, 0, 0]
    assert summary["errors_per_run"] == [2, 0, 0]
    assert summary["duration_seconds"] == {"median": 11.0, "min": 10.0, "max": 12.0}
    assert summary["rounds"] == [1, 2, 3]


def test_a_summary_of_external_lb_runs_carries_the_lb_s_counters_per_run() -> None:
    def lb(draining: int, refused: int, unreachable: int) -> dict[str, Any]:
        failures = {A: {"refused": refused}, B: {"unreachable": unreachable}}
        return {
            "accepted": 100,
            "no_target": 0,
            "connections": {A: 50, B: 50},
            "connections_while_draining": {A: draining, B: 1},
            "connect_failures": failures,
            "connect_failures_total": refused + unreachable,
            "resets": 2,
        }

    summary = summarize(
        [
            run(condition="external-lb", external_lb=lb(draining=10, refused=3, unreachable=1)),
            run(condition="external-lb", external_lb=lb(draining=20, refused=0, unreachable=4), round=2),
        ]
    )
    assert summary["external_lb"] == {
        "connections_while_draining_per_run": [11, 21],
        "connect_failures_per_run": [4, 4],
        "connect_failure_kinds": {"refused": 3, "unreachable": 5},
        "no_target_per_run": [0, 0],
        "resets_per_run": [2, 2],
    }
    assert "external_lb" not in summarize([run()])


def held(*lost: int | None) -> dict[str, Any]:
    """A run's phases (bench/rollout_phases.py) where each stopped pod's hold report counted
    `lost` after release (None: the report carries no count)."""
    return {f"pod-{i}": {"hold": 3.4, "outcome": "quiet", "lost_after_release": n} for i, n in enumerate(lost)}


def test_a_summary_sums_what_the_sidecars_counted_lost_after_release_per_run() -> None:
    summary = summarize([run(phases=held(0, 3, 0)), run(round=2, phases=held(2, None, 0))])
    assert summary["lost_after_release"] == 5
    assert summary["lost_after_release_per_run"] == [3, 2]
    assert (summary["lost_after_release_pods_counted"], summary["stopped_pods"]) == (5, 6)


def table_column(capsys: pytest.CaptureFixture[str], runs: list[dict[str, Any]], heading: str) -> dict[str, str]:
    """One column of the printed rollout table, by variant title; checks that it stands beside
    the load generator's errors."""
    print_table(summarize_all({"runs": runs}))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    column = header.index(heading)
    assert header[column - 1] == "errors from the disruption on (per run)"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]  # after the rule
    return {cells[0]: cells[column] for cells in rows}


SIDECARS = "lost after release, as the sidecars counted (per run)"


def test_the_table_shows_the_sidecars_count_per_variant(capsys: pytest.CaptureFixture[str]) -> None:
    runs = [
        run(errors_by_second={"5": 4}, phases=held(0, 3, 0)),
        run(round=2, phases=held(1, 0, 0)),
        run(variant="lameduck-learned", phases=held(2, None, 0)),
        run(variant="none", phases={"pod-0": {"deletion_to_gone": 1.0}}),
    ]
    column = table_column(capsys, runs, SIDECARS)
    assert column == {
        "(d) lameduck defaults": "**4** (3, 1)",
        "(j) lameduck, learned budget (cap 2m)": "**2** (2), 2 of 3 pods counted",
        "(a) no policy": "-",
    }


def test_a_result_file_from_before_the_count_was_kept_still_prints(capsys: pytest.CaptureFixture[str]) -> None:
    runs = [
        run(),  # no phases at all
        run(round=2, phases={"pod-0": {"hold": 3.4, "outcome": "quiet"}}),  # phases without the count
        run(variant="sleep5"),
    ]
    assert table_column(capsys, runs, SIDECARS) == {"(d) lameduck defaults": "n/a", "(b) preStop sleep 5s": "-"}
