"""Where a rollout spends its time: an old pod's termination split by its hold report (built
by the sidecar's own report builder, read by the operator's parser), and the medians."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bench.rollout_phases import latest_reports, lost_after_release, medians, run_phases, termination_phases
from bench.rollout_report import BREAKDOWN_COLUMNS, breakdown_rows
from lameduck_operator.logic.shutdown import parse_hold_report
from lameduck_sidecar.after_release import AfterRelease
from lameduck_sidecar.hold import HoldResult, Outcome
from lameduck_sidecar.report import hold_report_event, report_message

# The run started at 10:00:00.5 (epoch seconds, as bench/rollout.py records started_at).
STARTED = datetime(2026, 12, 7, 10, 0, 0, 500000, tzinfo=UTC).timestamp()


def report_event(
    pod: str,
    *,
    hold: float = 3.4,
    stage1: float | None = 0.4,
    app_exit: float | None = 0.5,
    posted_second: int = 7,
    lost: int | None = 0,
) -> dict[str, Any]:
    """The Event a sidecar posts (run clock: posted at `posted_second` - 0.5, as it stamps whole seconds)."""
    stage2 = None if stage1 is None else round(hold - stage1, 3)
    result = HoldResult(Outcome.QUIET, hold, stage1, stage2, connections_after_stage1=0)
    message = report_message(
        result,
        policy="GracefulPolicy/lameduck-bench/bench-lameduck",
        max_hold=30.0,
        grace_period=37.0,
        pod=None,
        containers=["app"],
        after=AfterRelease(lost, None, 0, app_exit),
    )
    now = datetime(2026, 12, 7, 10, 0, posted_second, tzinfo=UTC)
    return hold_report_event(message, namespace="lameduck-bench", pod_name=pod, pod_uid="uid", now=now)


def held(pod: str = "demo-1", **kwargs: Any) -> tuple[Any, float]:
    return latest_reports([report_event(pod, **kwargs)], [pod])[pod]


@pytest.mark.parametrize(
    ("pod", "report", "expected"),
    [
        pytest.param(
            {"deleted_at": 2.0, "exited_at": 6.1, "gone_at": 6.9},
            held(),
            {
                "anchor": "exit_seen",
                "deletion_to_prestop": 0.2,  # 6.1 - 0.5 - 3.4 - 2.0
                "stage1": 0.4,
                "stage2": 3.0,
                "hold": 3.4,
                "release_to_exit": 0.5,
                "exit_to_gone": 0.8,
                "deletion_to_gone": 4.9,
                "outcome": "quiet",
                "max_hold": 30.0,
                "lost_after_release": 0,
            },
            id="placed from the app exit the watch saw",
        ),
        pytest.param(
            {"deleted_at": 2.0, "exited_at": None, "gone_at": 7.9},
            held(posted_second=7),
            {
                "anchor": "event",
                "deletion_to_prestop": 0.6,  # the Event at 6.5 on the run's clock: 6.5 - 0.5 - 3.4 - 2.0
                "stage1": 0.4,
                "stage2": 3.0,
                "hold": 3.4,
                "release_to_exit": 0.5,
                "exit_to_gone": 1.4,
                "deletion_to_gone": 5.9,
                "outcome": "quiet",
                "max_hold": 30.0,
                "lost_after_release": 0,
            },
            id="without a seen exit, placed from the Event's time",
        ),
        pytest.param(
            {"deleted_at": 2.0, "exited_at": 6.1, "gone_at": 6.9},
            held(app_exit=None, stage1=None),
            {
                "anchor": None,
                "deletion_to_prestop": None,
                "stage1": None,
                "stage2": None,
                "hold": 3.4,
                "release_to_exit": None,
                "exit_to_gone": 0.8,
                "deletion_to_gone": 4.9,
                "outcome": "quiet",
                "max_hold": 30.0,
                "lost_after_release": 0,
            },
            id="the sidecar did not see the exit: the preStop call is not placed",
        ),
        pytest.param(
            {"deleted_at": 2.0, "exited_at": 2.7, "gone_at": 3.5},
            (None, None),
            {"deletion_to_exit": 0.7, "exit_to_gone": 0.8, "deletion_to_gone": 1.5},
            id="no hold report: the total and the exit",
        ),
        pytest.param(
            {"deleted_at": 2.0, "exited_at": None, "gone_at": None},
            (None, None),
            {"deletion_to_exit": None, "exit_to_gone": None, "deletion_to_gone": None},
            id="nothing seen after the deletion",
        ),
    ],
)
def test_termination_phases(pod: dict[str, Any], report: tuple[Any, float | None], expected: dict[str, Any]) -> None:
    assert termination_phases(pod, report[0], report[1], STARTED) == expected


def test_each_pod_s_latest_well_formed_report_is_read_and_others_left_out() -> None:
    bad = {**report_event("demo-1"), "message": "{not json"}
    events = [
        report_event("demo-1", hold=9.0, posted_second=3),
        report_event("demo-1", hold=3.4, posted_second=8),
        report_event("other", hold=1.0),
        bad,
    ]
    found = latest_reports(events, ["demo-1", "demo-2"])
    assert set(found) == {"demo-1"}
    assert found["demo-1"][0].hold_seconds == 3.4
    assert found["demo-1"][0] == parse_hold_report(events[1])


def test_a_run_s_pods_without_a_report_keep_their_totals() -> None:
    old = {
        "demo-1": {"deleted_at": 2.0, "exited_at": 6.1, "gone_at": 6.9},
        "demo-2": {"deleted_at": 2.0, "exited_at": 2.5, "gone_at": 3.0},
    }
    phases = run_phases(old, [report_event("demo-1")], STARTED)
    assert phases["demo-1"]["deletion_to_prestop"] == 0.2
    assert phases["demo-2"] == {"deletion_to_exit": 0.5, "exit_to_gone": 0.5, "deletion_to_gone": 1.0}


def test_a_run_s_loss_after_release_is_the_sidecars_counts_summed_over_its_stopped_pods() -> None:
    old = {f"demo-{i}": {"deleted_at": 2.0, "exited_at": 6.1, "gone_at": 6.9} for i in range(1, 5)}
    events = [report_event("demo-1", lost=3), report_event("demo-2", lost=0), report_event("demo-3", lost=None)]
    phases = run_phases(old, events, STARTED)
    assert [phases[f"demo-{i}"].get("lost_after_release") for i in range(1, 5)] == [3, 0, None, None]
    assert lost_after_release(phases) == {"total": 3, "pods_counted": 2, "pods_reported": 3, "pods": 4}


@pytest.mark.parametrize(
    "phases",
    [
        pytest.param({"a": {"deletion_to_exit": 0.5, "exit_to_gone": 0.5, "deletion_to_gone": 1.0}}, id="no report"),
        pytest.param({"a": {"hold": 3.4, "outcome": "quiet"}}, id="a report from before the count was kept"),
        pytest.param({"a": {"hold": 3.4, "lost_after_release": None}}, id="a sidecar that could not count"),
        pytest.param({}, id="no stopped pod"),
    ],
)
def test_without_any_count_a_run_s_loss_after_release_is_unknown_not_zero(phases: dict[str, Any]) -> None:
    assert lost_after_release(phases)["total"] is None


def lameduck_run(variant: str, deletion_to_prestop: list[float], ready: list[float]) -> dict[str, Any]:
    names = [f"pod-{i}" for i in range(len(deletion_to_prestop))]
    return {
        "condition": "normal",
        "stop": "restart",
        "variant": variant,
        "old_pods": {n: {"deleted_at": 1.0, "gone_at": 9.0, "exited_at": 8.0} for n in names},
        "phases": {
            n: {"deletion_to_prestop": d, "stage1": 1.0, "stage2": 3.0, "hold": 4.0, "deletion_to_gone": 8.0}
            for n, d in zip(names, deletion_to_prestop, strict=True)
        },
        "new_pods": [{"created_at": 3.0, "lameduck_running": 1.0, "app_running": 1.5, "ready": r} for r in ready],
    }


def test_medians_are_per_pod_over_every_run() -> None:
    found = medians([lameduck_run("lameduck", [0.1, 0.2], [2.0]), lameduck_run("lameduck", [0.9], [3.0, 4.0])])
    assert found["deletion_to_prestop"] == 0.2
    assert found["ready"] == 3.0
    assert found["stage2"] == 3.0
    assert (found["old_pods"], found["hold_reports"]) == (3, 3)


def test_a_result_file_without_phases_still_has_its_totals() -> None:
    old_file = {
        "old_pods": {"a": {"deleted_at": 1.0, "gone_at": 2.0}, "b": {"deleted_at": 1.0, "gone_at": 4.0}},
        "new_pods": [{"created_at": 2.0, "app_running": 1.0, "ready": 2.0}],
    }
    found = medians([old_file])
    assert found["deletion_to_gone"] == 2.0
    assert found["app_running"] == 1.0
    assert "stage1" not in found
    assert (found["old_pods"], found["hold_reports"]) == (2, 0)


def test_the_breakdown_has_a_row_per_variant_with_blanks_where_it_has_no_such_phase() -> None:
    none = {
        "condition": "normal",
        "stop": "restart",
        "variant": "none",
        "old_pods": {"a": {"deleted_at": 1.0, "gone_at": 2.5}},
        "new_pods": [{"created_at": 2.0, "app_running": 1.0, "ready": 2.0}],
    }
    rows = breakdown_rows({"runs": [lameduck_run("lameduck", [0.3], [2.5]), none]})
    assert len(rows) == 4
    header, _, first, second = rows
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in (header, first, second)]
    assert all(len(c) == 4 + len(BREAKDOWN_COLUMNS) for c in cells)
    column = {name: 4 + i for i, (name, _) in enumerate(BREAKDOWN_COLUMNS)}
    assert cells[1][2] == "(a) no policy"  # the variants in their benchmark order
    assert cells[1][column["stage1"]] == ""
    assert cells[1][column["deletion_to_gone"]] == "1.50"
    assert cells[2][column["deletion_to_prestop"]] == "0.30"
    assert cells[2][column["ready"]] == "2.50"
    assert cells[2][3] == "1 (1)"
