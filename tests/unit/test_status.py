"""What a policy's status tells users: counts, the non-compliant Deployments, and its conditions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from lameduck_operator.logic.compliance import Reason, State, Verdict
from lameduck_operator.logic.selection import DeploymentRef, Loss
from lameduck_operator.logic.status import PolicySummary, invalid_status, policy_status, summarize
from lameduck_operator.model import CONDITION_MESSAGE_MAX_LENGTH, FieldError, Policy, PolicyInvalid, PolicyRef
from tests.unit.builders import policy

OURS = PolicyRef("GracefulPolicy", "p", "shop")
OTHER = PolicyRef("GracefulPolicy", "q", "shop")
CLUSTER = PolicyRef("ClusterGracefulPolicy", "base")
NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
STAMP = "2026-03-04T05:06:07Z"
EARLIER = "2026-01-01T00:00:00Z"


def ref(name: str, namespace: str = "shop") -> DeploymentRef:
    return DeploymentRef(namespace, name)


def generation(n: int) -> Policy:
    return replace(policy(), generation=n)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}


REASON_OF = {
    State.COMPLIANT: Reason.IN_PLACE,
    State.PENDING: Reason.OUTDATED,
    State.CONFLICT: Reason.CONFLICTING_FIELDS,
    State.SKIPPED: Reason.OPTED_OUT,
    State.UNMANAGED: Reason.NO_POLICY,
}


def v(deployment: DeploymentRef, policy: PolicyRef | None, state: State, message: str) -> Verdict:
    return Verdict(deployment, policy, state, REASON_OF[state], message)


# --- summarize ------------------------------------------------------------------------------------


def test_the_summary_counts_each_state_of_this_policys_deployments() -> None:
    verdicts = [
        v(ref("c1"), OURS, State.COMPLIANT, ""),
        v(ref("c2"), OURS, State.COMPLIANT, ""),
        v(ref("p1"), OURS, State.PENDING, "waits for the next rollout: outdated"),
        v(ref("p2"), OURS, State.PENDING, "waits for the next rollout: outdated"),
        v(ref("x1"), OURS, State.CONFLICT, "clash"),
        v(ref("x2"), OURS, State.CONFLICT, "clash"),
        v(ref("s1"), OURS, State.SKIPPED, "opted out"),
        v(ref("s2"), OURS, State.SKIPPED, "opted out"),
        v(ref("u1"), None, State.UNMANAGED, "no policy selects it"),
        v(ref("o1"), OTHER, State.PENDING, "someone else's"),
        v(ref("c3"), OURS, State.COMPLIANT, ""),
    ]
    summary = summarize(OURS, verdicts, [], {})
    assert (summary.matched, summary.compliant, summary.pending, summary.conflicting, summary.skipped) == (
        7,
        3,
        2,
        2,
        2,
    )


def test_non_compliant_deployments_are_listed_sorted_with_their_state_and_reason() -> None:
    verdicts = [
        v(ref("b", "shop"), OURS, State.CONFLICT, "clash"),
        v(ref("a", "zoo"), OURS, State.PENDING, "outdated"),
        v(ref("a", "shop"), OURS, State.PENDING, "missing"),
        v(ref("ok", "shop"), OURS, State.COMPLIANT, ""),
        v(ref("skip", "shop"), OURS, State.SKIPPED, "opted out"),
    ]
    assert summarize(OURS, verdicts, [], {}).non_compliant == [
        {"namespace": "shop", "name": "a", "state": "Pending", "reason": "Outdated", "message": "missing"},
        {"namespace": "shop", "name": "b", "state": "Conflict", "reason": "ConflictingFields", "message": "clash"},
        {"namespace": "zoo", "name": "a", "state": "Pending", "reason": "Outdated", "message": "outdated"},
    ]


def test_at_most_twenty_non_compliant_deployments_are_listed_but_all_are_counted() -> None:
    verdicts = [v(ref(f"d{i:02d}"), OURS, State.PENDING, "outdated") for i in range(25)]
    summary = summarize(OURS, verdicts, [], {})
    assert summary.pending == 25
    assert [d["name"] for d in summary.non_compliant] == [f"d{i:02d}" for i in range(20)]


def test_losses_and_errors_of_other_policies_are_left_out() -> None:
    losses = [
        (ref("a"), Loss(OURS, OTHER, "higher priority")),
        (ref("b"), Loss(OURS, OTHER, "higher priority")),
        (ref("c"), Loss(OURS, CLUSTER, "?")),
        (ref("d"), Loss(OTHER, OURS, "?")),
    ]
    errors = {ref("a"): (OURS, "forbidden"), ref("b"): (OTHER, "conflict"), ref("c"): (None, "?")}
    summary = summarize(OURS, [], losses, errors)
    assert summary.lost_to == {OTHER: [ref("a"), ref("b")], CLUSTER: [ref("c")]}
    assert summary.errors == {ref("a"): "forbidden"}


# --- policy_status ----------------------------------------------------------------------------------


def test_a_valid_policys_status_in_full() -> None:
    summary = PolicySummary(matched=3, compliant=1, pending=1, conflicting=1, skipped=2, non_compliant=[{"name": "x"}])
    status = policy_status(generation(7), summary, 65, None, NOW)
    assert status == {
        "observedGeneration": 7,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Enforced",
                "message": "enforced: 1 of 3 matched Deployments compliant",
                "lastTransitionTime": STAMP,
                "observedGeneration": 7,
            },
            {
                "type": "Conflict",
                "status": "True",
                "reason": "DeploymentConflicts",
                "message": "1 Deployment(s) in conflict",
                "lastTransitionTime": STAMP,
                "observedGeneration": 7,
            },
            {
                "type": "Degraded",
                "status": "False",
                "reason": "AsExpected",
                "message": "all Deployments evaluated",
                "lastTransitionTime": STAMP,
                "observedGeneration": 7,
            },
        ],
        "matched": 3,
        "compliant": 1,
        "pending": 1,
        "conflicting": 1,
        "skipped": 2,
        "budgetSeconds": 65,
        "nonCompliant": [{"name": "x"}],
    }


def test_an_audit_policy_is_ready_as_audited() -> None:
    audit = policy(spec={"mode": "Audit"})
    status = policy_status(audit, PolicySummary(matched=2, compliant=2), 65, None, NOW)
    assert conditions(status)["Ready"] == ("True", "Audited", "audited: 2 of 2 matched Deployments compliant")


@pytest.mark.parametrize(
    ("summary", "condition"),
    [
        pytest.param(PolicySummary(), ("False", "NoConflicts", "no conflicts"), id="none"),
        pytest.param(
            PolicySummary(conflicting=2), ("True", "DeploymentConflicts", "2 Deployment(s) in conflict"), id="own"
        ),
        pytest.param(
            PolicySummary(lost_to={OTHER: [ref("a"), ref("b"), ref("c"), ref("d")]}),
            ("True", "Overlap", "lost to GracefulPolicy shop/q on 4 Deployment(s) (shop/a, shop/b, shop/c)"),
            id="at most three examples of an overlap",
        ),
        pytest.param(
            PolicySummary(conflicting=1, lost_to={OTHER: [ref("a")], CLUSTER: [ref("b"), ref("c")]}),
            (
                "True",
                "Overlap",
                "1 Deployment(s) in conflict; "
                "lost to ClusterGracefulPolicy base on 2 Deployment(s) (shop/b, shop/c); "
                "lost to GracefulPolicy shop/q on 1 Deployment(s) (shop/a)",
            ),
            id="conflicts and every winning policy, sorted by name",
        ),
    ],
)
def test_the_conflict_condition_says_what_is_in_conflict(
    summary: PolicySummary, condition: tuple[str, str, str]
) -> None:
    assert conditions(policy_status(policy(), summary, 65, None, NOW))["Conflict"] == condition


def test_apply_errors_degrade_the_policy_naming_at_most_five_deployments_in_order() -> None:
    errors = {ref(f"d{i}"): f"error {7 - i}" for i in (6, 2, 4, 1, 5, 3)}
    status = policy_status(policy(), PolicySummary(errors=errors), 65, None, NOW)
    assert conditions(status)["Degraded"] == (
        "True",
        "ApplyErrors",
        "shop/d1: error 6; shop/d2: error 5; shop/d3: error 4; shop/d4: error 3; shop/d5: error 2",
    )


def test_the_previous_conditions_keep_their_transition_times_while_unchanged() -> None:
    existing = {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Enforced", "lastTransitionTime": EARLIER},
            {"type": "Conflict", "status": "True", "reason": "Overlap", "lastTransitionTime": EARLIER},
            {"type": "Degraded", "status": "False", "reason": "AsExpected"},
        ]
    }
    status = policy_status(generation(3), PolicySummary(), 65, existing, NOW)
    times = {c["type"]: c["lastTransitionTime"] for c in status["conditions"]}
    assert times == {
        "Ready": EARLIER,  # status unchanged
        "Conflict": STAMP,  # True -> False
        "Degraded": STAMP,  # no time recorded before
    }
    assert [c["observedGeneration"] for c in status["conditions"]] == [3, 3, 3]


# --- invalid_status ---------------------------------------------------------------------------------

INVALID = PolicyInvalid([FieldError("spec.hold.maxHold", "must be positive")])


def test_a_message_longer_than_the_crd_stores_is_cut_to_fit() -> None:
    """A policy stored before a stricter CRD can have more errors than a condition's message holds."""
    many = PolicyInvalid([FieldError(f"spec.containers[{i}]", "x" * 100) for i in range(1000)])
    status = invalid_status(many, 1, None, NOW)
    assert {len(c["message"]) for c in status["conditions"] if c["reason"] == "InvalidSpec"} == {
        CONDITION_MESSAGE_MAX_LENGTH
    }


def test_an_invalid_policys_status_in_full() -> None:
    status = invalid_status(INVALID, 4, None, NOW)
    message = "spec.hold.maxHold: must be positive"
    stamp = {"lastTransitionTime": STAMP, "observedGeneration": 4}
    assert status == {
        "observedGeneration": 4,
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": message, **stamp},
            {"type": "Conflict", "status": "False", "reason": "NoConflicts", "message": "not evaluated", **stamp},
            {"type": "Degraded", "status": "True", "reason": "InvalidSpec", "message": message, **stamp},
        ],
        "matched": 0,
        "compliant": 0,
        "pending": 0,
        "conflicting": 0,
        "skipped": 0,
        "nonCompliant": [],
    }


def test_an_invalid_update_says_which_earlier_generation_stays_in_force() -> None:
    existing = {
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": EARLIER},
            {"type": "Conflict", "status": "False", "lastTransitionTime": EARLIER},
        ]
    }
    status = invalid_status(INVALID, 5, existing, NOW, still_enforced=generation(4))
    message = "spec.hold.maxHold: must be positive; generation 4, the last valid one, stays in force"
    assert conditions(status)["Ready"] == ("False", "InvalidSpec", message)
    assert conditions(status)["Degraded"] == ("True", "InvalidSpec", message)
    times = {c["type"]: c["lastTransitionTime"] for c in status["conditions"]}
    assert times == {"Ready": STAMP, "Conflict": EARLIER, "Degraded": STAMP}
