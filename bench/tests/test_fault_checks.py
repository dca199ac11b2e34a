"""bench/fault_checks.py: what the holds-outage and webhook-outage phases compute from what they
read (write latencies, the operator's counters across restarts, each pod's end against its grace
period, the hold outcome an outage allows, reports posted plus counted missing)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.fault_checks import (
    EITHER,
    FALLBACK,
    RELEASED,
    ContainerEnd,
    CounterReading,
    TaskExit,
    container_ends,
    container_ids,
    counter_increase,
    epoch,
    expected_outcome,
    grace_verdict,
    lameduck_changes,
    latency_summary,
    metric_sum,
    outcome_problem,
    ready_with_sidecar,
    report_accounting,
    report_of,
)
from bench.fault_checks import task_exits as parse_task_exits

# -- write latencies ------------------------------------------------------------------------------


def test_latency_summary_gives_inclusive_percentiles_and_the_max_in_milliseconds() -> None:
    summary = latency_summary([i / 1000 for i in range(1, 101)])  # 1 ms .. 100 ms
    assert summary == {"count": 100, "p50": 50.5, "p90": 90.1, "p99": 99.0, "max": 100.0}


def test_latency_summary_of_one_write_is_that_write_and_of_none_is_empty() -> None:
    assert latency_summary([0.25]) == {"count": 1, "p50": 250.0, "p90": 250.0, "p99": 250.0, "max": 250.0}
    assert latency_summary([]) == {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}


# -- the operator's counters ----------------------------------------------------------------------

EXPOSITION = """# HELP lameduck_hold_reports_missing_total Reports not posted.
# TYPE lameduck_hold_reports_missing_total counter
lameduck_hold_reports_missing_total{namespace="faults-holds",policy="holds"} 3.0
lameduck_hold_reports_missing_total{namespace="faults",policy="faults"} 40.0
# HELP lameduck_hold_reports_missing_created Reports not posted.
# TYPE lameduck_hold_reports_missing_created gauge
lameduck_hold_reports_missing_created{namespace="faults-holds",policy="holds"} 1.7e+09
# HELP lameduck_pods_killed_total Killed.
# TYPE lameduck_pods_killed_total counter
"""


def test_metric_sum_counts_only_the_namespace_asked_for_and_not_the_created_stamps() -> None:
    assert metric_sum(EXPOSITION, "lameduck_hold_reports_missing_total", "faults-holds") == 3.0
    assert metric_sum(EXPOSITION, "lameduck_hold_reports_missing_total", "faults") == 40.0
    assert metric_sum(EXPOSITION, "lameduck_hold_reports_missing_total", None) == 43.0


def test_a_declared_counter_without_samples_is_zero_and_an_undeclared_one_is_absent() -> None:
    assert metric_sum(EXPOSITION, "lameduck_pods_killed_total", "faults-holds") == 0.0
    assert metric_sum(EXPOSITION, "lameduck_something_else_total", "faults-holds") is None
    assert metric_sum("", "lameduck_hold_reports_missing_total", "faults-holds") is None


def test_a_sample_without_a_namespace_label_is_counted() -> None:
    text = "# TYPE lameduck_hold_reports_missing_total counter\nlameduck_hold_reports_missing_total 2.0\n"
    assert metric_sum(text, "lameduck_hold_reports_missing_total", "faults-holds") == 2.0


def test_counter_increase_is_the_difference_on_a_replica_that_did_not_restart() -> None:
    before = {"op-a": CounterReading(2.0, 0), "op-b": CounterReading(0.0, 0)}
    after = {"op-a": CounterReading(5.0, 0), "op-b": CounterReading(1.0, 0)}
    assert counter_increase(before, after) == 4.0


def test_a_count_every_replica_keeps_whole_grows_by_the_highest_replica_not_the_sum() -> None:
    # the leader restarted (its ledger gone, counted 1 after); the standby counted all 4 pods
    before = {"op-a": CounterReading(4.0, 1), "op-b": CounterReading(0.0, 0)}
    after = {"op-a": CounterReading(1.0, 2), "op-b": CounterReading(4.0, 0)}
    assert counter_increase(before, after, every_replica=True) == 4.0
    assert counter_increase(before, after) == 5.0


def test_counter_increase_counts_a_restarted_or_new_replica_from_zero() -> None:
    before = {"op-a": CounterReading(7.0, 0), "op-b": CounterReading(1.0, 0)}
    after = {"op-a": CounterReading(2.0, 1), "op-b": CounterReading(1.0, 0), "op-c": CounterReading(3.0, 0)}
    assert counter_increase(before, after) == 5.0


def test_counter_increase_counts_a_restarted_replica_from_zero_even_when_it_has_counted_past_before() -> None:
    assert counter_increase({"op-a": CounterReading(1.0, 0)}, {"op-a": CounterReading(3.0, 1)}) == 3.0


def test_counter_increase_counts_a_reading_lower_than_before_from_zero() -> None:
    # a restart the restart count missed (the pod replaced under the same name) resets the counter
    assert counter_increase({"op-a": CounterReading(7.0, 0)}, {"op-a": CounterReading(2.0, 0)}) == 2.0


def test_counter_increase_is_none_when_no_replica_declares_the_metric_afterwards() -> None:
    before = {"op-a": CounterReading(None, 0)}
    assert counter_increase(before, {"op-a": CounterReading(None, 0, "")}) is None
    assert counter_increase(before, {"op-a": CounterReading(None, 0, "CalledProcessError: ...")}) is None
    assert counter_increase(before, {}) is None


def test_counter_increase_skips_a_replica_that_could_not_be_read() -> None:
    after = {"op-a": CounterReading(4.0, 0), "op-b": CounterReading(None, 0, "unreachable")}
    assert counter_increase({"op-a": CounterReading(1.0, 0), "op-b": CounterReading(9.0, 0)}, after) == 3.0


def test_reports_posted_plus_counted_missing_must_equal_the_pods_deleted() -> None:
    deleted = {"u1", "u2", "u3", "u4"}
    record, problems = report_accounting(deleted, {"u1", "u2", "other-pod"}, 2.0)
    assert record == {"deleted": 4, "posted": 2, "missing_counted": 2.0, "balanced": True}
    assert problems == []
    record, problems = report_accounting(deleted, {"u1", "u2"}, 1.0)
    assert record["balanced"] is False
    assert problems == ["2 reports posted + 1 counted missing != 4 pods deleted"]
    record, problems = report_accounting(deleted, {"u1", "u2"}, 3.0)  # counted twice is wrong too
    assert problems == ["2 reports posted + 3 counted missing != 4 pods deleted"]


def test_without_the_metric_the_accounting_is_null_and_says_the_metric_is_absent() -> None:
    record, problems = report_accounting({"u1"}, {"u1"}, None)
    assert record == {"deleted": 1, "posted": 1, "missing_counted": None, "balanced": None}
    assert problems == ["metric absent"]


# -- containerd's task exits ----------------------------------------------------------------------

APP_ID = "a" * 64
SIDECAR_ID = "b" * 64


def exit_line(payload: dict[str, Any], topic: str = "/tasks/exit") -> str:
    return f"2026-05-01 10:00:05.5 +0000 UTC k8s.io {topic} {json.dumps(payload)}"


def test_task_exits_read_ctr_events_lines_of_containerd_1_and_2() -> None:
    lines = [
        exit_line({"container_id": APP_ID, "id": APP_ID, "pid": 10, "exited_at": "2026-05-01T10:00:05.123456789Z"}),
        exit_line(
            {
                "container_id": SIDECAR_ID,
                "id": SIDECAR_ID,
                "exit_status": 137,
                "exited_at": {"seconds": 100, "nanos": 5},
            }
        ),
    ]
    found = parse_task_exits(lines)
    # a zero exit status is left out of the JSON
    assert found[APP_ID] == TaskExit(epoch("2026-05-01T10:00:05.123456Z") or 0, 0)
    assert found[SIDECAR_ID] == TaskExit(100 + 5e-9, 137)


def test_task_exits_skip_other_topics_execs_and_garbage() -> None:
    lines = [
        exit_line({"container_id": APP_ID, "id": "exec-1", "exit_status": 1, "exited_at": "2026-05-01T10:00:01Z"}),
        exit_line({"container_id": APP_ID, "pid": 10}, topic="/tasks/start"),
        "not an event",
        "2026-05-01 10:00:05 +0000 UTC k8s.io /tasks/exit {broken",
    ]
    assert parse_task_exits(lines) == {}


# -- a deleted pod's end ------------------------------------------------------------------------


def pod(app: dict[str, Any], sidecar: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "holds-1", "uid": "u1", **metadata},
        "status": {
            "initContainerStatuses": [{"name": "lameduck", "containerID": f"containerd://{SIDECAR_ID}", **sidecar}],
            "containerStatuses": [{"name": "app", "containerID": f"containerd://{APP_ID}", **app}],
        },
    }


def terminated(finished: str, code: int) -> dict[str, Any]:
    return {"state": {"terminated": {"finishedAt": finished, "exitCode": code}}}


RUNNING = {"state": {"running": {"startedAt": "2026-05-01T09:00:00Z"}}}


def test_container_ids_name_every_container_without_the_runtime_scheme() -> None:
    assert container_ids(pod(RUNNING, RUNNING)) == {"lameduck": SIDECAR_ID, "app": APP_ID}


def test_container_ends_come_from_the_pod_and_else_from_containerd() -> None:
    body = pod(terminated("2026-05-01T10:00:20Z", 0), RUNNING)
    exits = {SIDECAR_ID: TaskExit(1000.5, 0), APP_ID: TaskExit(999.0, 0)}
    ends = container_ends(body, {"app": APP_ID, "lameduck": SIDECAR_ID}, exits)
    assert ends["app"] == ContainerEnd(epoch("2026-05-01T10:00:20Z"), 0, "api")
    assert ends["lameduck"] == ContainerEnd(1000.5, 0, "containerd")


def test_a_container_end_nobody_saw_is_unobserved() -> None:
    ends = container_ends(None, {"app": APP_ID}, {})
    assert ends == {"app": ContainerEnd(None, None, "")}


def test_a_terminated_state_of_another_container_id_is_not_taken() -> None:
    body = pod(terminated("2026-05-01T10:00:20Z", 0), RUNNING)
    body["status"]["containerStatuses"][0]["containerID"] = "containerd://" + "c" * 64  # restarted since
    assert container_ends(body, {"app": APP_ID}, {})["app"].at is None


DELETED_AT = 1000.0  # deletion asked for; grace period 45 s


def test_a_pod_that_ended_within_its_grace_period_has_no_problem() -> None:
    ends = {"app": ContainerEnd(1020.0, 0, "api"), "lameduck": ContainerEnd(1021.3, 0, "containerd")}
    verdict = grace_verdict("holds-1", DELETED_AT, DELETED_AT + 45, ends)
    assert (verdict.seconds, verdict.within_grace, verdict.sigkilled, verdict.problems) == (21.3, True, (), ())


def test_a_sigkilled_container_is_a_problem_even_within_the_grace_period() -> None:
    ends = {"app": ContainerEnd(1044.0, 137, "api"), "lameduck": ContainerEnd(1044.5, 0, "api")}
    verdict = grace_verdict("holds-1", DELETED_AT, DELETED_AT + 45, ends)
    assert verdict.within_grace is True
    assert verdict.sigkilled == ("app",)
    assert verdict.problems == ("holds-1: app was SIGKILLed (exit 137) 44.0 s after its deletion (grace period 45 s)",)


def test_a_pod_that_ended_after_its_grace_period_is_a_problem() -> None:
    ends = {"app": ContainerEnd(1040.0, 0, "api"), "lameduck": ContainerEnd(1046.5, 0, "containerd")}
    verdict = grace_verdict("holds-1", DELETED_AT, DELETED_AT + 45, ends)
    assert verdict.within_grace is False
    assert verdict.problems == ("holds-1: ended 46.5 s after its deletion, past its grace period of 45 s",)
    # the API server's whole seconds: one second over is not taken as late
    ends["lameduck"] = ContainerEnd(1046.0, 0, "api")
    assert grace_verdict("holds-1", DELETED_AT, DELETED_AT + 45, ends).within_grace is True


def test_a_pod_whose_end_was_not_observed_is_neither_within_nor_past_its_grace_period() -> None:
    ends = {"app": ContainerEnd(1020.0, 0, "api"), "lameduck": ContainerEnd(None, None, "")}
    verdict = grace_verdict("holds-1", DELETED_AT, DELETED_AT + 45, ends)
    assert (verdict.seconds, verdict.within_grace) == (None, None)
    assert verdict.problems == ("holds-1: the end of lameduck was not observed",)


# -- the hold's outcome ---------------------------------------------------------------------------

STOP_BEGAN, DOWN = 2000.0, 2001.5


@pytest.mark.parametrize(
    ("stage1_end", "expected"),
    [
        (2001.5, FALLBACK),  # still in stage 1 once the API server was down
        (2010.0, FALLBACK),
        (1997.9, RELEASED),  # ended on the slices more than the spread before the stop began
        (1998.5, EITHER),  # within the estimate's spread of the stop
        (2001.0, EITHER),  # while the API server stopped
        (None, EITHER),
    ],
)
def test_the_outcome_a_hold_may_have_depends_on_when_its_stage_1_ended(stage1_end: float | None, expected: str) -> None:
    assert expected_outcome(stage1_end, STOP_BEGAN, DOWN) == expected


def test_outcome_problems_name_a_hold_that_contradicts_the_outage() -> None:
    assert outcome_problem("p", "fallback", FALLBACK) is None
    assert (
        outcome_problem("p", "quiet", FALLBACK)
        == "p: hold quiet, though its stage 1 lasted into the outage (expected fallback)"
    )
    assert outcome_problem("p", "quiet", RELEASED) is None
    assert (
        outcome_problem("p", "fallback", RELEASED)
        == "p: hold fell back, though its stage 1 had ended before the outage"
    )
    assert outcome_problem("p", "quiet", EITHER) is None
    assert outcome_problem("p", None, FALLBACK) is None  # no report: the accounting counts it


def test_report_of_reads_the_reason_and_the_hold_fields() -> None:
    message = {"version": 1, "outcome": "fallback", "holdSeconds": 12.5, "stage1Seconds": 0.8, "stage2Seconds": 11.7}
    event = {
        "reason": "HoldFellBack",
        "metadata": {"creationTimestamp": "2026-05-01T10:01:00Z"},
        "message": json.dumps(message),
    }
    assert report_of(event) == {
        "reason": "HoldFellBack",
        "posted_at": "2026-05-01T10:01:00Z",
        "outcome": "fallback",
        "holdSeconds": 12.5,
        "stage1Seconds": 0.8,
        "stage2Seconds": 11.7,
        "appExitSeconds": None,
        "gracePeriodSeconds": None,
    }
    assert report_of({"reason": "HoldReleased", "message": "not json"})["outcome"] is None


# -- pods and Deployments ---------------------------------------------------------------------------


def test_a_pod_is_up_with_its_sidecar_when_ready_not_deleting_and_its_sidecar_started() -> None:
    body = pod(RUNNING, {"started": True, **RUNNING})
    body["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert ready_with_sidecar(body)
    deleting = {**body, "metadata": {**body["metadata"], "deletionTimestamp": "2026-05-01T10:00:00Z"}}
    assert not ready_with_sidecar(deleting)
    not_ready = pod(RUNNING, {"started": True, **RUNNING})
    not_ready["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    assert not ready_with_sidecar(not_ready)
    body["status"]["initContainerStatuses"] = []  # no sidecar
    assert not ready_with_sidecar(body)


def deployment(**template_spec: Any) -> dict[str, Any]:
    spec = {"containers": [{"name": "app", "image": "pause"}], **template_spec}
    return {"metadata": {"name": "d"}, "spec": {"template": {"metadata": {}, "spec": spec}}}


def test_lameduck_changes_are_none_for_a_deployment_admitted_unchanged() -> None:
    assert lameduck_changes(deployment(terminationGracePeriodSeconds=30)) == []


def test_lameduck_changes_name_the_sidecar_the_prestop_and_lameducks_annotations() -> None:
    injected = deployment(
        initContainers=[{"name": "lameduck", "restartPolicy": "Always"}],
        containers=[{"name": "app", "lifecycle": {"preStop": {"httpGet": {"path": "/hold/app"}}}}],
    )
    injected["spec"]["template"]["metadata"]["annotations"] = {"lameduck.dev/policy": "faults/faults", "other": "x"}
    assert lameduck_changes(injected) == ["sidecar", "preStop", "annotation lameduck.dev/policy"]
