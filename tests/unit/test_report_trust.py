"""Which hold reports are believed: each case differs from a genuine report in one respect, so
each fails if the check it names is removed."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from lameduck_operator.logic.report_trust import ObservedPod, Trusted, Untrusted, judge_report, observed_pod
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.logic.shutdown import parse_hold_report
from lameduck_operator.model import PolicyRef
from tests.unit.test_shutdown import CLUSTER_POLICY, WEB_POLICY, pod, report_event

WEB = DeploymentRef("shop", "web")
OTHER_NAMESPACE_POLICY = PolicyRef("GracefulPolicy", "all", "small")
# The genuine pod was deleted at 10:00:00 (test_shutdown.pod: deletionTimestamp 10:00:30, grace
# 30 s); its report (test_shutdown.report_event) held 4.2 s and was stored at 10:00:05.
DELETED_AT = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC).timestamp()
GENUINE_POD = ObservedPod("p1", "shop", "web-7d9f8c-abcde", "web", DELETED_AT)
NOW = DELETED_AT + 60


def event(message: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """report_event with message fields and Event parts (metadata, involvedObject) changed."""
    body = report_event(**(message or {}))
    for part, values in changes.items():
        body[part] = {**body[part], **values}
    return body


def judge(
    body: dict[str, Any],
    pod: ObservedPod | None = GENUINE_POD,
    *,
    known: frozenset[DeploymentRef] = frozenset({WEB}),
    governed: dict[DeploymentRef, PolicyRef] | None = None,
    reported: bool = False,
    now: float = NOW,
) -> Trusted | Untrusted:
    policies = {WEB: WEB_POLICY} if governed is None else governed
    return judge_report(
        parse_hold_report(body), pod, known=known.__contains__, policy_of=policies.get, reported=reported, now=now
    )


def test_a_genuine_report_is_believed_under_the_operators_own_deployment_and_policy() -> None:
    verdict = judge(event())
    assert isinstance(verdict, Trusted)
    assert (verdict.deployment, verdict.policy) == (WEB, WEB_POLICY)
    assert (verdict.report.deployment, verdict.report.policy, verdict.report.hold_seconds) == ("web", WEB_POLICY, 4.2)


@pytest.mark.parametrize(
    "body",
    [
        event({"policy": "GracefulPolicy/small/all"}),
        event({"policy": "ClusterGracefulPolicy/everything"}),
        event({"replicaSet": "fake-abc", "podTemplateHash": "abc"}),
        event({"policy": None, "replicaSet": None, "podTemplateHash": None}),
    ],
    ids=["another-namespaces-policy", "a-cluster-policy", "another-deployment", "names-nothing"],
)
def test_what_a_report_names_is_replaced_by_what_the_operator_resolved(body: dict[str, Any]) -> None:
    verdict = judge(body)
    assert isinstance(verdict, Trusted)
    assert (verdict.deployment, verdict.policy) == (WEB, WEB_POLICY)
    assert (verdict.report.deployment, verdict.report.policy) == ("web", WEB_POLICY)


def test_a_cluster_policy_gets_reports_from_any_namespace_it_governs() -> None:
    verdict = judge(event(), governed={WEB: CLUSTER_POLICY})
    assert isinstance(verdict, Trusted)
    assert verdict.policy == CLUSTER_POLICY


LONG_AGO = dataclasses.replace(GENUINE_POD, deleted_at=DELETED_AT - 1000)


@pytest.mark.parametrize(
    ("body", "pod", "options", "reason"),
    [
        # Where the report comes from.
        (event(), None, {}, Untrusted.UNKNOWN_POD),
        (event(), dataclasses.replace(GENUINE_POD, uid="p2"), {}, Untrusted.UNKNOWN_POD),
        (event(involvedObject={"name": "web-7d9f8c-zzzzz"}), GENUINE_POD, {}, Untrusted.UNKNOWN_POD),
        # The attack: an Event in namespace attacker about a pod of shop.
        (
            event(metadata={"namespace": "attacker"}, involvedObject={"namespace": "attacker"}),
            GENUINE_POD,
            {},
            Untrusted.NAMESPACE_MISMATCH,
        ),
        (event(involvedObject={"namespace": "small"}), GENUINE_POD, {}, Untrusted.NAMESPACE_MISMATCH),
        # Whose it is.
        (event(), dataclasses.replace(GENUINE_POD, deployment=None), {}, Untrusted.UNKNOWN_DEPLOYMENT),
        (event(), GENUINE_POD, {"known": frozenset()}, Untrusted.UNKNOWN_DEPLOYMENT),
        (event(), GENUINE_POD, {"governed": {}}, Untrusted.NOT_SELECTED),
        (event(), GENUINE_POD, {"governed": {WEB: OTHER_NAMESPACE_POLICY}}, Untrusted.NOT_SELECTED),
        # What it says: the 208m20s, and each bound on its own.
        (event({"holdSeconds": 12500, "lateTrafficSeconds": 10000}), GENUINE_POD, {}, Untrusted.OUT_OF_BOUNDS),
        (event({"holdSeconds": 7.1}), GENUINE_POD, {}, Untrusted.OUT_OF_BOUNDS),  # stored 5 s after the deletion
        (event(metadata={"creationTimestamp": "2026-11-21T09:59:00Z"}), GENUINE_POD, {}, Untrusted.OUT_OF_BOUNDS),
        (event(), dataclasses.replace(GENUINE_POD, exited_at=DELETED_AT + 2), {}, Untrusted.OUT_OF_BOUNDS),
        (event(), dataclasses.replace(GENUINE_POD, gone_at=DELETED_AT + 2), {}, Untrusted.OUT_OF_BOUNDS),
        (event(metadata={"creationTimestamp": None}), GENUINE_POD, {"now": DELETED_AT + 2}, Untrusted.OUT_OF_BOUNDS),
        (
            event({"holdSeconds": 700, "lateTrafficSeconds": 650}, metadata={"creationTimestamp": None}),
            LONG_AGO,
            {},
            Untrusted.OUT_OF_BOUNDS,
        ),
        (event({"lateTrafficSeconds": 4.5}), GENUINE_POD, {}, Untrusted.OUT_OF_BOUNDS),
        (event({"stage2Seconds": 4.5}), GENUINE_POD, {}, Untrusted.OUT_OF_BOUNDS),
        (event({"maxHoldSeconds": 12500}), GENUINE_POD, {}, Untrusted.OUT_OF_BOUNDS),
        # What it measured after release (the genuine report was stored 5 s after the deletion).
        (event({"pooledQuietSeconds": 6.5}), GENUINE_POD, {}, Untrusted.OUT_OF_BOUNDS),
        (event({"pooledQuietSeconds": 5.5, "stage1Seconds": 2.0}), GENUINE_POD, {}, Untrusted.OUT_OF_BOUNDS),
        (event({"appExitSeconds": 3.0}), GENUINE_POD, {}, Untrusted.OUT_OF_BOUNDS),
        (
            event({"pooledQuietSeconds": 3.0}),
            dataclasses.replace(GENUINE_POD, exited_at=DELETED_AT),
            {},
            Untrusted.OUT_OF_BOUNDS,
        ),
        (event({"learnedDelaySeconds": 12500}), GENUINE_POD, {}, Untrusted.OUT_OF_BOUNDS),
        (event({"lostAfterRelease": 1_000_000}), GENUINE_POD, {}, Untrusted.OUT_OF_BOUNDS),
        (event({"pinnedUntilClosed": 10**9}), GENUINE_POD, {}, Untrusted.OUT_OF_BOUNDS),
        # Once per pod: a forged report out of bounds does not use up the pod's one report.
        (event(), GENUINE_POD, {"reported": True}, Untrusted.DUPLICATE),
        (event({"holdSeconds": 12500}), GENUINE_POD, {"reported": True}, Untrusted.OUT_OF_BOUNDS),
    ],
    ids=[
        "unknown-pod",
        "another-pods-uid",
        "another-pods-name",
        "event-in-another-namespace",
        "involved-object-in-another-namespace",
        "pod-of-no-deployment",
        "unknown-deployment",
        "deployment-of-no-policy",
        "policy-of-another-namespace",
        "absurd-hold",
        "longer-than-until-the-report",
        "report-before-the-deletion",
        "longer-than-until-the-exit",
        "longer-than-until-the-removal",
        "longer-than-until-now",
        "longer-than-any-max-hold",
        "late-traffic-longer-than-the-hold",
        "stage-longer-than-the-hold",
        "max-hold-beyond-any-policy",
        "pooled-quiet-after-the-report",
        "pooled-quiet-counted-after-stage-1",
        "app-exit-after-the-report",
        "pooled-quiet-after-the-exit",
        "learned-delay-beyond-any-max-hold",
        "absurd-loss",
        "absurd-pinned-count",
        "second-report-of-the-pod",
        "out-of-bounds-before-duplicate",
    ],
)
def test_a_report_is_not_believed(
    body: dict[str, Any], pod: ObservedPod | None, options: dict[str, Any], reason: Untrusted
) -> None:
    assert judge(body, pod, **options) is reason


@pytest.mark.parametrize(
    ("body", "pod", "now"),
    [
        (event({"holdSeconds": 6.9, "lateTrafficSeconds": 6.0, "stage2Seconds": 6.1}), GENUINE_POD, NOW),
        (event(), dataclasses.replace(GENUINE_POD, exited_at=DELETED_AT + 3), NOW),
        (event(metadata={"creationTimestamp": None}), GENUINE_POD, DELETED_AT + 3),
        (event({"holdSeconds": 600.004, "lateTrafficSeconds": 590, "maxHoldSeconds": 600}), LONG_AGO, NOW),
        (
            event(
                {
                    "pooledQuietSeconds": 6.0,
                    "stage1Seconds": 0.8,
                    "appExitSeconds": 2.8,
                    "learnedDelaySeconds": 600,
                    "lostAfterRelease": 999_999,
                    "pinnedUntilClosed": 0,
                }
            ),
            GENUINE_POD,
            NOW,
        ),
    ],
    ids=[
        "within-the-clock-slack",
        "exit-within-slack",
        "now-within-slack",
        "the-largest-max-hold",
        "after-release-within-slack",
    ],
)
def test_whole_second_times_and_rounding_are_allowed_for(body: dict[str, Any], pod: ObservedPod, now: float) -> None:
    assert isinstance(judge(body, pod, now=now), Trusted)


def test_a_pod_is_observed_from_its_deletion_with_its_exit() -> None:
    assert observed_pod(pod(deleted=None)) is None
    running = observed_pod(pod())
    assert running == GENUINE_POD
    exited = observed_pod(pod((0, "2026-11-21T10:00:07Z", None)))
    assert exited == dataclasses.replace(GENUINE_POD, exited_at=DELETED_AT + 7)
    shortened = pod(deleted="2026-11-21T10:00:02Z", grace=2)  # a second deletion with less grace
    assert observed_pod(shortened) == GENUINE_POD
