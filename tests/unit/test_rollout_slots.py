"""Rollout slots: the rollouts a policy has in flight, counted as they start, move and end."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lameduck_operator.logic.compliance import Reason, State, Verdict
from lameduck_operator.logic.decision import Action, Decision
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.model import PolicyRef
from lameduck_operator.rollout_slots import RolloutSlots

POLICIES = [PolicyRef("GracefulPolicy", name, "shop") for name in ("a", "b")]
REFS = [DeploymentRef("shop", f"d{i}") for i in range(4)]
ROLLING = {"spec": {"replicas": 1}, "metadata": {"generation": 2}, "status": {"observedGeneration": 1}}
DONE = {
    "spec": {"replicas": 1},
    "metadata": {"generation": 2},
    "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1},
}


def decision(ref: DeploymentRef, policy: PolicyRef | None, action: Action) -> Decision:
    state = State.COMPLIANT if policy is not None else State.UNMANAGED
    reason = Reason.IN_PLACE if policy is not None else Reason.NO_POLICY
    return Decision(ref, action, Verdict(ref, policy, state, reason))


STEPS = st.tuples(
    st.sampled_from(["observed", "judged", "gone", "applying"]),
    st.sampled_from(REFS),
    st.sampled_from([*POLICIES, None]),
    st.sampled_from([ROLLING, DONE]),
)


def counted_again(slots: RolloutSlots, policy: PolicyRef, applying: dict[DeploymentRef, PolicyRef]) -> int:
    rolling = [ref for ref, holder in slots.rolling.items() if holder == policy]
    return len(rolling) + sum(1 for ref, p in applying.items() if p == policy and ref not in slots.rolling)


@given(steps=st.lists(STEPS, max_size=30))
def test_a_policys_rollouts_in_flight_are_those_rolling_and_those_being_applied(
    steps: list[tuple[str, DeploymentRef, PolicyRef | None, dict[str, Any]]],
) -> None:
    slots = RolloutSlots(lambda _: None, lambda _: None)
    for kind, ref, policy, body in steps:
        if kind == "observed":
            slots.observed(ref, decision(ref, policy, Action.NONE), body)
        elif kind == "judged":
            slots.judged(ref, decision(ref, policy, Action.NONE), body)
        elif kind == "gone":
            slots.gone(ref)
        else:
            with slots.applying(ref, decision(ref, policy, Action.APPLY)):
                applying = {ref: policy} if policy is not None else {}
                assert [slots.in_flight(p) for p in POLICIES] == [counted_again(slots, p, applying) for p in POLICIES]
        assert [slots.in_flight(p) for p in POLICIES] == [counted_again(slots, p, {}) for p in POLICIES]
