"""spec.hold.learnedBudget: what is learned (from trusted reports only, within the policy's bounds),
how the one decision applies it (at a rollout, never causing one), and where it is shown."""

from __future__ import annotations

import copy
import dataclasses
import io
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from lameduck_operator.cli import main
from lameduck_operator.learned_delays import LearnedDelays
from lameduck_operator.logic.admitted import injected
from lameduck_operator.logic.budget import CUT_OFF_FACTOR, budget_seconds, max_hold_in_force
from lameduck_operator.logic.compliance import State
from lameduck_operator.logic.decision import Action, Decision, Moment, decide
from lameduck_operator.logic.intent import carried_max_hold
from lameduck_operator.logic.learning import (
    Learned,
    cut_off,
    learn,
    learn_max_hold,
    learned_value,
    parse_learned,
)
from lameduck_operator.logic.shutdown import HoldOutcome, HoldReport
from lameduck_operator.model import HoldSpec, Policy
from lameduck_operator.names import LEARNED_CONFIGMAP, SIDECAR_NAME, SidecarEnv
from lameduck_operator.settings import Settings
from tests.unit.builders import deployment, policy
from tests.unit.fake_api import FakeApi
from tests.unit.test_learning import hold
from tests.unit.test_learning import report as quiet_report
from tests.unit.test_shutdown import WEB_POLICY, pod, report_event
from tests.unit.test_shutdown_observer import WEB, Harness, sample

SETTINGS = Settings()
LEARNING: dict[str, Any] = {"hold": {"maxHold": "30s", "learnedBudget": {"maxHoldCap": "2m"}}, "drainTimeout": "10s"}


def timed_out(
    hold_s: float = 30.0, late: float = 29.8, lost: int | None = 0, last_loss: float | None = None
) -> HoldReport:
    """A hold that ended at maxHold (30s by default) with late traffic `late` s after it began."""
    return dataclasses.replace(
        quiet_report(hold=hold_s, lost=lost, last_loss=last_loss),
        outcome=HoldOutcome.TIMEOUT,
        late_traffic_seconds=late,
    )


def late(seconds: float) -> HoldReport:
    return dataclasses.replace(quiet_report(hold=seconds + 1.0), late_traffic_seconds=seconds)


# ---- what is learned --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reports", "spec", "expected"),
    [
        ([timed_out()], hold(30.0), None),
        ([late(2.0)], hold(30.0, cap=120.0), 30.0),
        ([late(25.0)], hold(30.0, cap=120.0), 33.0),
        ([timed_out()], hold(30.0, cap=120.0), 60.0),
        ([timed_out(hold_s=30.0, late=10.0, lost=0)], hold(30.0, cap=120.0), 30.0),
        ([timed_out(hold_s=30.0, late=10.0, lost=12, last_loss=4.0)], hold(30.0, cap=120.0), 60.0),
        ([timed_out(hold_s=60.0, late=59.5, lost=3, last_loss=20.0)], hold(30.0, cap=300.0), 120.0),
        ([timed_out(hold_s=30.0, late=29.8, lost=3, last_loss=40.0)], hold(30.0, cap=300.0), 89.0),
        ([timed_out()], hold(30.0, cap=45.0), 45.0),
        ([timed_out(hold_s=5.0, late=4.9)], hold(30.0, cap=120.0), 30.0),
        ([timed_out(), late(47.0), late(46.0)], hold(30.0, cap=120.0), 60.0),
        ([late(47.0), late(40.0)], hold(30.0, cap=120.0), 60.0),
        ([late(5.0), late(4.0)], hold(30.0, cap=120.0), 30.0),
        ([late(0.0)], hold(30.5, cap=120.0), 30.5),
    ],
    ids=[
        "policy-does-not-learn",
        "little-late-traffic-keeps-max-hold",
        "late-traffic-near-max-hold-raises-it",
        "cut-off-doubles-what-it-held",
        "timeout-long-after-the-last-late-traffic-is-no-cut-off",
        "timeout-with-loss-is-a-cut-off",
        "loss-after-a-learned-hold-doubles-it-again",
        "late-loss-asks-for-more-than-doubling",
        "never-above-the-cap",
        "grace-shortened-hold-never-lowers-below-max-hold",
        "the-cut-off-stays-while-its-report-is-recent",
        "quiet-holds-at-the-learned-budget-keep-it",
        "comes-down-once-the-recent-holds-need-less",
        "never-below-a-fractional-max-hold",
    ],
)
def test_the_learned_max_hold(reports: list[HoldReport], spec: HoldSpec, expected: float | None) -> None:
    assert learn_max_hold(reports, spec) == expected


def test_a_cut_off_is_a_timeout_with_work_still_arriving() -> None:
    assert cut_off(timed_out(late=28.5), quiet_period=1.0)
    assert not cut_off(timed_out(late=27.0), quiet_period=1.0)
    assert cut_off(timed_out(late=27.0, lost=1), quiet_period=1.0)
    assert not cut_off(late(29.8), quiet_period=1.0), "a quiet hold was not cut off"


def test_the_learned_max_hold_is_kept_with_the_learned_delay_and_read_back() -> None:
    learned = learn([timed_out()], hold(30.0, cap=120.0))
    assert learned is not None
    assert learned.max_hold_seconds == 60.0
    assert parse_learned(learned_value(learned)) == learned
    assert parse_learned(learned_value(Learned(1.0, 1))) == Learned(1.0, 1), "absent: not learned"
    assert parse_learned('{"version":1,"pooledDelaySeconds":1,"reports":1,"learnedMaxHoldSeconds":-1}') is None


SPECS = st.builds(
    lambda max_hold, extra, quiet: hold(float(max_hold), cap=float(max_hold + extra), quiet=quiet),
    st.integers(1, 600),
    st.integers(0, 600),
    st.sampled_from([0.0, 1.0, 5.0]),
)
REPORTS = st.builds(
    lambda outcome, hold_s, late_s, lost, last_loss: dataclasses.replace(
        quiet_report(hold=hold_s, lost=lost, last_loss=last_loss),
        outcome=outcome,
        late_traffic_seconds=min(late_s, hold_s),
    ),
    st.sampled_from(list(HoldOutcome)),
    st.floats(0, 600),
    st.floats(0, 600),
    st.none() | st.integers(0, 100),
    st.none() | st.floats(0, 600),
)


@given(st.lists(REPORTS, min_size=1, max_size=20), SPECS)
def test_never_below_max_hold_never_above_the_cap(reports: list[HoldReport], spec: HoldSpec) -> None:
    learned = learn_max_hold(reports, spec)
    assert spec.learned_budget is not None
    assert learned is not None
    assert spec.max_hold <= learned <= spec.learned_budget.max_hold_cap
    learned_delay = learn(reports, spec)
    assert learned_delay is not None
    assert learned_delay.pooled_delay_seconds <= learned


@given(st.lists(REPORTS, min_size=1, max_size=19), SPECS, REPORTS)
def test_a_cut_off_hold_never_lowers_it_and_asks_for_more_than_it_held(
    reports: list[HoldReport], spec: HoldSpec, extra: HoldReport
) -> None:
    cut = dataclasses.replace(extra, outcome=HoldOutcome.TIMEOUT, lost_after_release=1)
    before, after = learn_max_hold(reports, spec), learn_max_hold([*reports, cut], spec)
    assert before is not None
    assert after is not None
    assert spec.learned_budget is not None
    assert after >= before
    assert after >= min(cut.hold_seconds * CUT_OFF_FACTOR, spec.learned_budget.max_hold_cap)


@given(st.floats(0, 2000) | st.none(), SPECS)
def test_in_force_is_within_the_policys_bounds_whatever_was_stored(learned: float | None, spec: HoldSpec) -> None:
    assert spec.learned_budget is not None
    in_force = max_hold_in_force(spec, learned)
    assert spec.max_hold <= in_force <= spec.learned_budget.max_hold_cap
    assert max_hold_in_force(dataclasses.replace(spec, learned_budget=None), learned) == spec.max_hold


# ---- only trusted reports teach it ----------------------------------------------------------


def cut_off_event(uid: str = "e1") -> dict[str, Any]:
    event = report_event(
        outcome="timeout", holdSeconds=30.0, lateTrafficSeconds=29.8, lostAfterRelease=40, lastLossSeconds=0.5
    )
    event["metadata"] |= {"uid": uid, "creationTimestamp": "2026-11-21T10:00:31Z"}
    return event


def learning_harness() -> tuple[Harness, LearnedDelays]:
    h = Harness()
    h.specs[WEB_POLICY] = policy("web", "shop", LEARNING).spec
    h.wall += 30
    learned = LearnedDelays(
        FakeApi(), h.metrics, known=h.known.__contains__, hold_of=lambda _: h.specs[WEB_POLICY].hold
    )
    h.observer.learned = learned
    return h, learned


def test_a_trusted_cut_off_hold_raises_the_budget_and_shows_in_status_and_metric() -> None:
    h, learned = learning_harness()
    h.observer.lead()
    h.observer.pod_seen(pod(deleted="2026-11-21T10:01:00Z"))  # deleted at 10:00:30 with its 30s grace period
    event = cut_off_event()
    event["metadata"]["creationTimestamp"] = "2026-11-21T10:01:01Z"
    h.wall += 30
    h.observer.report_seen(event)
    assert learned.learned_max_hold(WEB) == 60.0
    (entry,) = h.observer.status_of(WEB_POLICY)["lateTraffic"]
    assert (entry["learnedMaxHold"], entry["maxHold"], entry["lostAfterRelease"]) == ("1m", "30s", 40)
    assert entry["learnedFrom"] == "Reports"
    series = 'deployment="web",namespace="shop",policy="GracefulPolicy shop/web"'
    text = generate_latest(h.metrics.registry).decode()
    assert sample(text, f"lameduck_deployment_learned_max_hold_seconds{{{series}}}") == 60
    assert sample(text, f"lameduck_deployment_requests_lost_after_release{{{series}}}") == 40


@pytest.mark.parametrize(
    "forge",
    [
        lambda e: e,  # its pod was never seen being deleted
        lambda e: e | {"involvedObject": {**e["involvedObject"], "namespace": "attacker"}},
    ],
    ids=["unknown-pod", "other-namespace"],
)
def test_an_untrusted_report_teaches_nothing(forge: Any) -> None:
    h, learned = learning_harness()
    h.observer.lead()
    h.observer.pod_seen(pod(deleted="2026-11-21T10:01:00Z") | {"metadata": {**pod()["metadata"], "uid": "other"}})
    h.observer.report_seen(forge(cut_off_event()))
    assert learned.learned_max_hold(WEB) is None
    assert h.observer.status_of(WEB_POLICY)["lateTraffic"] == []


# ---- the one decision: an input, applied at a rollout, never causing one --------------------


def learning_policy(**spec: Any) -> Policy:
    return policy("web", "shop", {**LEARNING, **spec})


def max_hold_of(decision: Decision) -> tuple[float | None, int | None]:
    """The maxHold the decision's intent gives the sidecar, and its grace period."""
    assert decision.intent is not None
    written = injected(deployment(), decision.intent)
    return carried_max_hold(written), written["spec"]["template"]["spec"].get("terminationGracePeriodSeconds")


def admitted_with(learned: float | None, p: Policy, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Deployment as the webhook admitted it with this learned maxHold."""
    body = body or deployment()
    decision = decide(body, [p], SETTINGS, {}, lambda _: 0, moment=Moment.ADMISSION, learned_max_hold=learned)
    assert decision.action is Action.APPLY
    assert decision.intent is not None
    return injected(body, decision.intent)


def reconciled(body: dict[str, Any], p: Policy, learned: float | None) -> Decision:
    return decide(body, [p], SETTINGS, {}, lambda _: 0, learned_max_hold=learned)


@pytest.mark.parametrize(
    ("learned", "expected"),
    # The grace period leaves room for the cap whatever was learned: a hold started before the
    # template carries a new value reads it live (LAMEDUCK_MAX_HOLD_CAP), up to the cap.
    [(None, (30.0, 135)), (60.0, (60.0, 135)), (600.0, (120.0, 135)), (5.0, (30.0, 135))],
    ids=["nothing-learned", "learned", "capped", "never-below-max-hold"],
)
def test_admission_applies_the_learned_max_hold_and_its_grace_period(
    learned: float | None, expected: tuple[float, int]
) -> None:
    decision = decide(
        deployment(), [learning_policy()], SETTINGS, {}, lambda _: 0, moment=Moment.ADMISSION, learned_max_hold=learned
    )
    assert max_hold_of(decision) == expected
    assert decision.budget_seconds == expected[1]


def test_a_policy_that_does_not_learn_ignores_what_was_learned() -> None:
    plain = policy("web", "shop", {"drainTimeout": "10s"})
    with_learned = decide(deployment(), [plain], SETTINGS, {}, lambda _: 0, learned_max_hold=90.0)
    without = decide(deployment(), [plain], SETTINGS, {}, lambda _: 0)
    assert with_learned.intent == without.intent


def test_a_stated_grace_period_stands_while_it_covers_the_learned_hold() -> None:
    spec = learning_policy(terminationGracePeriodSeconds=100).spec
    assert (budget_seconds(spec), budget_seconds(spec, 60.0), budget_seconds(spec, 95.0)) == (100, 100, 110)


@pytest.mark.parametrize("apply", ["Immediate", "OnNextRollout"])
def test_a_new_learned_value_makes_no_deployment_outdated_nor_rolls_it_out(apply: str) -> None:
    p = learning_policy(apply=apply)
    body = admitted_with(60.0, p)
    for learned in (None, 60.0, 90.0, 120.0):
        decision = reconciled(body, p, learned)
        assert (decision.action, decision.verdict.state) == (Action.NONE, State.COMPLIANT), learned
        assert not decision.starts_rollout


def test_the_next_rollout_applies_the_new_value() -> None:
    p = learning_policy()
    body = admitted_with(60.0, p)
    changed = copy.deepcopy(body)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "example.com/app:2"
    decision = decide(changed, [p], SETTINGS, {}, lambda _: 0, moment=Moment.ADMISSION, learned_max_hold=90.0)
    assert decision.action is Action.APPLY
    assert max_hold_of(decision) == (90.0, 135)


def test_a_rollout_the_reconciler_starts_anyway_takes_the_learned_value() -> None:
    """Immediate, and the policy's propagationDelay changed since admission: the apply rolls the
    Deployment out, so it carries the learned maxHold too."""
    body = admitted_with(60.0, learning_policy())
    changed = learning_policy(apply="Immediate", hold={**LEARNING["hold"], "propagationDelay": "3s"})
    decision = reconciled(body, changed, 90.0)
    assert (decision.action, decision.starts_rollout) == (Action.APPLY, True)
    assert max_hold_of(decision) == (90.0, 135)


def test_a_carried_budget_the_policy_no_longer_allows_is_not_kept() -> None:
    body = admitted_with(90.0, learning_policy())
    lowered = learning_policy(apply="Immediate", hold={"maxHold": "30s", "learnedBudget": {"maxHoldCap": "45s"}})
    decision = reconciled(body, lowered, 90.0)
    assert decision.action is Action.APPLY
    assert max_hold_of(decision) == (45.0, 60)


# ---- webhook, reconciler and CLI: the same decision given the same observations --------------


def cli_render(p: Policy, learned: float | None) -> dict[str, Any]:
    """`lameduck render` of the policy and Deployment, with the namespace's lameduck-learned."""
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "lameduck.dev/v1alpha1",
            "kind": "GracefulPolicy",
            "metadata": {"name": p.ref.name, "namespace": "shop"},
            "spec": {**LEARNING, "apply": p.spec.apply.value},
        },
        deployment(),
    ]
    if learned is not None:
        value = learned_value(Learned(0.0, 1, learned))
        docs.append(
            {"kind": "ConfigMap", "metadata": {"name": LEARNED_CONFIGMAP, "namespace": "shop"}, "data": {"web": value}}
        )
    out = io.StringIO()
    assert main(["render", "-f", "-"], stdin=io.StringIO(yaml.safe_dump_all(docs)), out=out) == 0
    (rendered,) = [d for d in yaml.safe_load_all(out.getvalue()) if d]
    return dict(rendered)


@given(st.none() | st.floats(0, 900, allow_nan=False))
def test_the_webhook_the_reconciler_and_the_cli_give_a_new_deployment_the_same_budget(learned: float | None) -> None:
    p = learning_policy(apply="Immediate")
    at_admission = decide(
        deployment(), [p], SETTINGS, {}, lambda _: 0, moment=Moment.ADMISSION, learned_max_hold=learned
    )
    at_reconcile = reconciled(deployment(), p, learned)
    assert at_reconcile.action is Action.APPLY
    assert at_admission.action is Action.APPLY
    assert at_admission.intent == at_reconcile.intent
    assert cli_render(p, learned) == injected(deployment(), at_admission.intent or {})


def test_the_sidecar_env_carries_the_value_the_webhook_chose() -> None:
    body = admitted_with(75.0, learning_policy())
    pod_spec = body["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod_spec["initContainers"] if c["name"] == SIDECAR_NAME]
    assert {"name": SidecarEnv.MAX_HOLD, "value": "1m15s"} in sidecar["env"]
    assert {"name": SidecarEnv.MAX_HOLD_CAP, "value": "2m"} in sidecar["env"]
    assert pod_spec["terminationGracePeriodSeconds"] == 135, "room for the cap"


def test_a_policy_without_a_learned_budget_gives_no_cap_and_a_grace_period_for_its_max_hold() -> None:
    body = admitted_with(None, policy("web", "shop", {"hold": {"maxHold": "30s"}, "drainTimeout": "10s"}))
    pod_spec = body["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod_spec["initContainers"] if c["name"] == SIDECAR_NAME]
    assert SidecarEnv.MAX_HOLD_CAP not in {e["name"] for e in sidecar["env"]}
    assert pod_spec["terminationGracePeriodSeconds"] == 45


@pytest.mark.parametrize(
    ("grace_in_template", "stated_by_policy", "expected_grace", "conflicts"),
    [
        (None, None, 135, 0),  # lameduck sets it: room for the cap
        (30, None, 135, 0),  # Kubernetes' default counts as unset
        (100, None, 100, 0),  # another manager's covers the hold in force (30 s + 10 s): it stands
        (40, None, 45, 1),  # below the hold in force: a conflict, as without a learned budget
        (None, 100, 100, 0),  # the policy states one that covers the hold in force
    ],
)
def test_room_for_the_cap_only_where_lameduck_sets_the_grace_period(
    grace_in_template: int | None, stated_by_policy: int | None, expected_grace: int, conflicts: int
) -> None:
    body = deployment()
    if grace_in_template is not None:
        body["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = grace_in_template
    extra = {} if stated_by_policy is None else {"terminationGracePeriodSeconds": stated_by_policy}
    decision = decide(
        body, [learning_policy(**extra)], SETTINGS, {}, lambda _: 0, moment=Moment.ADMISSION, learned_max_hold=None
    )
    if conflicts:
        assert decision.action is not Action.APPLY
        return
    assert decision.action is Action.APPLY
    assert decision.intent is not None
    written = injected(body, decision.intent)
    assert written["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == expected_grace
