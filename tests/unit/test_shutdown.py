"""Shutdown as observed: hold reports, terminations, late traffic and what it recommends."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from lameduck_operator.logic.shutdown import (
    DeploymentShutdown,
    HoldOutcome,
    HoldReport,
    KilledCause,
    MalformedReason,
    ReportMalformed,
    TerminationOutcome,
    deployment_of,
    late_traffic,
    parse_hold_report,
    policy_from_annotation,
    recommended_max_hold,
    shutdown_status,
    termination_of,
)
from lameduck_operator.model import PolicyRef

WEB_POLICY = PolicyRef("GracefulPolicy", "web", "shop")
CLUSTER_POLICY = PolicyRef("ClusterGracefulPolicy", "all")


def report_event(**fields: Any) -> dict[str, Any]:
    message = {
        "version": 1,
        "outcome": "quiet",
        "holdSeconds": 4.2,
        "stage1Seconds": 0.8,
        "stage2Seconds": 3.4,
        "lateTrafficSeconds": 1.5,
        "maxHoldSeconds": 30.0,
        "gracePeriodSeconds": 65,
        "policy": "GracefulPolicy/shop/web",
        "replicaSet": "web-7d9f8c",
        "podTemplateHash": "7d9f8c",
    } | fields
    return {
        "metadata": {
            "uid": "e1",
            "namespace": "shop",
            "labels": {"lameduck.dev/report": "hold"},
            "creationTimestamp": "2026-11-21T10:00:05Z",
        },
        "involvedObject": {"kind": "Pod", "name": "web-7d9f8c-abcde", "namespace": "shop", "uid": "p1"},
        "message": json.dumps({k: v for k, v in message.items() if v is not ...}),
    }


def test_a_hold_report_is_read_from_its_event() -> None:
    report = parse_hold_report(report_event())
    assert report == HoldReport(
        event_uid="e1",
        namespace="shop",
        pod="web-7d9f8c-abcde",
        pod_uid="p1",
        deployment="web",
        policy=WEB_POLICY,
        outcome=HoldOutcome.QUIET,
        hold_seconds=4.2,
        stage1_seconds=0.8,
        stage2_seconds=3.4,
        late_traffic_seconds=1.5,
        max_hold_seconds=30.0,
        grace_period_seconds=65.0,
        involved_namespace="shop",
        created_at=datetime(2026, 11, 21, 10, 0, 5, tzinfo=UTC).timestamp(),
    )


# What a sidecar of issue 22 adds, measured after release (the report is posted once the app exited).
AFTER_RELEASE = {
    "lostAfterRelease": 3,
    "pooledQuietSeconds": 2.5,
    "pinnedUntilClosed": 1,
    "learnedDelaySeconds": None,
    "appExitSeconds": 0.4,
}


def test_what_was_measured_after_release_is_read_and_absent_from_older_sidecars() -> None:
    report = parse_hold_report(report_event(**AFTER_RELEASE))
    assert (report.lost_after_release, report.pooled_quiet_seconds, report.pinned_until_closed) == (3, 2.5, 1)
    assert (report.learned_delay_seconds, report.app_exit_seconds) == (None, 0.4)
    assert parse_hold_report(report_event(learnedDelaySeconds=1.5)).learned_delay_seconds == 1.5
    older = parse_hold_report(report_event())
    assert (older.lost_after_release, older.pooled_quiet_seconds, older.pinned_until_closed) == (None, None, 0)
    assert (older.learned_delay_seconds, older.app_exit_seconds) == (None, None)


@pytest.mark.parametrize(
    "fields",
    [
        {"lostAfterRelease": -1},
        {"lostAfterRelease": 1.5},
        {"lostAfterRelease": True},
        {"lostAfterRelease": "3"},
        {"pinnedUntilClosed": -2},
        {"pooledQuietSeconds": -0.1},
        {"pooledQuietSeconds": "2"},
        {"learnedDelaySeconds": False},
        {"appExitSeconds": -5},
    ],
    ids=str,
)
def test_a_bad_value_measured_after_release_makes_the_report_malformed(fields: dict[str, Any]) -> None:
    with pytest.raises(ReportMalformed) as raised:
        parse_hold_report(report_event(**fields))
    assert raised.value.reason is MalformedReason.BAD_VALUE


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            {"metadata": {"namespace": "shop"}, "involvedObject": {"kind": "Pod", "name": "p"}, "message": "held 3s"},
            MalformedReason.NOT_JSON,
        ),
        (report_event(version=2), MalformedReason.UNKNOWN_VERSION),
        (report_event(outcome="sleeping"), MalformedReason.BAD_VALUE),
        (report_event(holdSeconds=-1), MalformedReason.BAD_VALUE),
        (report_event(lateTrafficSeconds=None), MalformedReason.BAD_VALUE),
        (report_event(stage1Seconds=True), MalformedReason.BAD_VALUE),
        (report_event(holdSeconds=...), MalformedReason.MISSING_FIELD),
        ({**report_event(), "involvedObject": {"kind": "Deployment", "name": "web"}}, MalformedReason.MISSING_FIELD),
        # Any pod can post an Event: JSON nested past the decoder's recursion limit is no report either.
        ({**report_event(), "message": "[" * 100_000}, MalformedReason.NOT_JSON),
    ],
    ids=[
        "not-json",
        "newer-version",
        "unknown-outcome",
        "negative",
        "late-missing",
        "bool",
        "absent",
        "not-a-pod",
        "nested-too-deep",
    ],
)
def test_a_malformed_report_names_why(event: dict[str, Any], reason: MalformedReason) -> None:
    with pytest.raises(ReportMalformed) as raised:
        parse_hold_report(event)
    assert raised.value.reason is reason


@pytest.mark.parametrize(
    ("value", "ref"),
    [
        ("GracefulPolicy/shop/web", WEB_POLICY),
        ("ClusterGracefulPolicy/all", CLUSTER_POLICY),
        ("GracefulPolicy/web", None),
        ("ClusterGracefulPolicy/shop/all", None),
        ("Deployment/shop/web", None),
        ("", None),
        (None, None),
    ],
)
def test_a_policy_is_named_as_its_annotation_value(value: object, ref: PolicyRef | None) -> None:
    assert policy_from_annotation(value) == ref
    if ref is not None:
        assert ref.annotation_value == value


@pytest.mark.parametrize(
    ("replica_set", "template_hash", "deployment"),
    [
        ("web-7d9f8c", "7d9f8c", "web"),
        ("my-web-app-5b6c", "5b6c", "my-web-app"),
        ("web-7d9f8c", "other", None),
        ("7d9f8c", "7d9f8c", None),
        (None, "7d9f8c", None),
        ("web-", "", None),
    ],
)
def test_a_deployment_is_found_from_its_replica_set(
    replica_set: object, template_hash: object, deployment: str | None
) -> None:
    assert deployment_of(replica_set, template_hash) == deployment


def pod(
    *exits: tuple[int, str, str | None],
    deleted: str | None = "2026-11-21T10:00:30Z",
    grace: int = 30,
    sidecar_policy: str | None = "GracefulPolicy/shop/web",
) -> dict[str, Any]:
    """A pod of Deployment web whose app containers ended as given: (exit code, finishedAt, reason)."""
    metadata: dict[str, Any] = {
        "name": "web-7d9f8c-abcde",
        "namespace": "shop",
        "uid": "p1",
        "labels": {"pod-template-hash": "7d9f8c"},
        "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d9f8c"}],
    }
    if deleted is not None:
        metadata |= {"deletionTimestamp": deleted, "deletionGracePeriodSeconds": grace}
    sidecar = {"name": "lameduck", "env": [{"name": "LAMEDUCK_POLICY", "value": sidecar_policy}]}
    statuses = [
        {"name": f"app{i}", "state": {"terminated": {"exitCode": code, "finishedAt": at, "reason": reason}}}
        for i, (code, at, reason) in enumerate(exits)
    ]
    return {
        "metadata": metadata,
        "spec": {
            "initContainers": [sidecar] if sidecar_policy else [],
            "containers": [{"name": f"app{i}"} for i in range(len(exits))],
        },
        "status": {"containerStatuses": statuses},
    }


# Deleted at 10:00:00 with a 30 s grace period (deletionTimestamp = deletion + grace).
@pytest.mark.parametrize(
    ("exits", "outcome", "seconds"),
    [
        ([(0, "2026-11-21T10:00:07Z", "Completed")], TerminationOutcome.CLEAN, 7.0),
        ([(143, "2026-11-21T10:00:05Z", "Error")], TerminationOutcome.CLEAN, 5.0),
        ([(1, "2026-11-21T10:00:05Z", "Error")], TerminationOutcome.ERROR, 5.0),
        ([(137, "2026-11-21T10:00:30Z", "Error")], TerminationOutcome.KILLED, 30.0),
        ([(137, "2026-11-21T10:00:29Z", "Error")], TerminationOutcome.KILLED, 29.0),
        ([(137, "2026-11-21T10:00:04Z", "Error")], TerminationOutcome.ERROR, 4.0),
        ([(137, "2026-11-21T10:00:30Z", "OOMKilled")], TerminationOutcome.ERROR, 30.0),
        ([(0, "2026-11-21T10:00:03Z", None), (137, "2026-11-21T10:00:30Z", None)], TerminationOutcome.KILLED, 30.0),
        ([(0, "2026-11-21T10:00:03Z", None), (2, "2026-11-21T10:00:09Z", None)], TerminationOutcome.ERROR, 9.0),
    ],
    ids=[
        "exit-0",
        "died-of-sigterm",
        "error",
        "killed-at-grace",
        "killed-clock-slack",
        "early-137",
        "oom",
        "one-of-two-killed",
        "worst-of-two",
    ],
)
def test_a_termination_is_judged_by_how_its_app_containers_ended(
    exits: list[tuple[int, str, str | None]], outcome: TerminationOutcome, seconds: float
) -> None:
    termination = termination_of(pod(*exits))
    assert termination is not None
    assert (termination.outcome, termination.seconds, termination.grace_period_seconds) == (outcome, seconds, 30.0)
    assert (termination.deployment, termination.policy) == ("web", WEB_POLICY)


# Deleted at 10:00:00; the app container started at startedAt.
@pytest.mark.parametrize(
    ("started", "cause"),
    [
        ("2026-11-21T09:59:58Z", KilledCause.SIGTERM_LIKELY_LOST),
        ("2026-11-21T09:59:55.5Z", KilledCause.SIGTERM_LIKELY_LOST),
        ("2026-11-21T09:59:55Z", KilledCause.OVER_BUDGET),
        ("2026-11-21T09:00:00Z", KilledCause.OVER_BUDGET),
        (None, KilledCause.OVER_BUDGET),
    ],
    ids=["deleted-2s-after-start", "just-under-5s", "5s-after-start", "an-hour-after-start", "start-unknown"],
)
def test_a_kill_says_whether_the_sigterm_was_likely_lost_to_an_early_deletion(
    started: str | None, cause: KilledCause
) -> None:
    killed = pod((137, "2026-11-21T10:00:30Z", "Error"))
    if started is not None:
        killed["status"]["containerStatuses"][0]["state"]["terminated"]["startedAt"] = started
    termination = termination_of(killed)
    assert termination is not None
    assert (termination.outcome, termination.killed_cause) == (TerminationOutcome.KILLED, cause)


def test_only_a_kill_has_a_cause() -> None:
    clean = termination_of(pod((0, "2026-11-21T10:00:07Z", "Completed")))
    assert clean is not None
    assert clean.killed_cause is None


def test_a_forced_deletion_is_no_kill_for_want_of_budget() -> None:
    forced = termination_of(pod((137, "2026-11-21T10:00:00Z", "Error"), deleted="2026-11-21T10:00:00Z", grace=0))
    assert forced is not None
    assert forced.outcome is TerminationOutcome.ERROR


def test_no_termination_until_every_app_container_has_exited() -> None:
    running = pod((0, "2026-11-21T10:00:07Z", None), (0, "2026-11-21T10:00:08Z", None))
    running["status"]["containerStatuses"][1]["state"] = {"running": {"startedAt": "2026-11-21T09:00:00Z"}}
    assert termination_of(running) is None


def test_a_pod_not_being_deleted_or_done_before_its_deletion_is_no_termination() -> None:
    assert termination_of(pod((0, "2026-11-21T10:00:07Z", None), deleted=None)) is None
    assert termination_of(pod((0, "2026-11-21T09:50:00Z", None))) is None, "a finished Job-like pod, deleted later"


def test_the_sidecars_policy_is_preferred_else_the_one_given() -> None:
    ended = (0, "2026-11-21T10:00:07Z", None)
    with_sidecar = termination_of(pod(ended), CLUSTER_POLICY)
    without = termination_of(pod(ended, sidecar_policy=None), CLUSTER_POLICY)
    assert with_sidecar is not None
    assert without is not None
    assert (with_sidecar.policy, without.policy) == (WEB_POLICY, CLUSTER_POLICY)


def reports(*late: float, outcome: HoldOutcome = HoldOutcome.QUIET, max_hold: float = 30.0) -> list[HoldReport]:
    return [
        HoldReport(
            f"e{i}", "shop", f"p{i}", f"u{i}", "web", WEB_POLICY, outcome, 5.0, 1.0, 4.0, seconds, max_hold, 65.0
        )
        for i, seconds in enumerate(late)
    ]


def test_late_traffic_summarises_the_recent_holds() -> None:
    late = late_traffic(reports(*[0.1 * i for i in range(1, 21)]), quiet_period=1.0, drain_timeout=30.0)
    assert late is not None
    assert (late.holds, round(late.p50, 2), round(late.max, 2)) == (20, 1.05, 2.0)
    assert 1.9 < late.p99 <= 2.0
    assert late.recommended_max_hold == 4, "2.0 s x 1.25 + 1 s quiet = 3.5 s, in whole seconds"
    assert late.recommended_budget == 39, "4 s + 30 s drain + 5 s margin"
    assert not late.max_hold_too_short


def test_a_max_hold_below_the_late_traffic_observed_is_warned_about() -> None:
    late = late_traffic(reports(1.0, 6.5, 2.0, max_hold=5.0), quiet_period=1.0, drain_timeout=0.0)
    assert late is not None
    assert late.max_hold_too_short
    status = shutdown_status([DeploymentShutdown("shop", "web", late, terminations=3, killed=0)])
    (entry,) = status["lateTraffic"]
    assert entry["recommendedMaxHold"] == "10s"
    assert entry["warning"] == "maxHold 5s is below the late traffic observed (6.5s): raise it to 10s"
    assert status["overBudget"] == []


def test_no_reports_no_late_traffic() -> None:
    assert late_traffic([], 1.0, 0.0) is None


@pytest.mark.parametrize(
    ("seen", "quiet", "recommended"),
    [(0.0, 1.0, 1), (0.0, 0.0, 1), (3.0, 1.0, 5), (10.0, 2.0, 15), (12500.0, 1.0, 600), (480.0, 60.0, 600)],
    ids=["none", "none-no-quiet", "small", "with-quiet", "capped-at-the-largest-maxHold", "capped-with-quiet"],
)
def test_recommended_max_hold(seen: float, quiet: float, recommended: int) -> None:
    assert recommended_max_hold(seen, quiet) == recommended


def test_status_lists_too_short_holds_first_and_kills_by_count() -> None:
    def late(seconds: float, max_hold: float) -> Any:
        return late_traffic(reports(seconds, max_hold=max_hold), 1.0, 0.0)

    status = shutdown_status(
        [
            DeploymentShutdown("shop", "api", late(9.0, 30.0), terminations=4, killed=1),
            DeploymentShutdown("shop", "cart", late(3.0, 2.0), terminations=2, killed=0),
            DeploymentShutdown("shop", "web", None, terminations=5, killed=3),
        ]
    )
    assert [e["name"] for e in status["lateTraffic"]] == ["cart", "api"]
    assert status["overBudget"] == [
        {"namespace": "shop", "name": "web", "terminations": 5, "killed": 3},
        {"namespace": "shop", "name": "api", "terminations": 4, "killed": 1},
    ]
