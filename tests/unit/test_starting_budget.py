"""How a Deployment with no history starts under a policy with hold.learnedBudget: at the starting
budget when an L7 hop sends to it, else at maxHold; once reports exist, they decide alone. An input
of the one decision (l7_backend), applied at a rollout and never causing one."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from lameduck_operator.cli import EXIT_INVALID_OBJECTS, main
from lameduck_operator.fleet import Fleet
from lameduck_operator.learned_delays import LearnedDelays
from lameduck_operator.logic.admitted import injected
from lameduck_operator.logic.annotation_room import annotations_of
from lameduck_operator.logic.budget import CUT_OFF_FACTOR, BudgetSource, MaxHold, max_hold_for, starting_max_hold
from lameduck_operator.logic.compliance import State
from lameduck_operator.logic.decision import Action, Decision, Moment, decide
from lameduck_operator.logic.intent import carried_max_hold
from lameduck_operator.logic.l7_backends import RouteKind, route_kind_of
from lameduck_operator.logic.learning import Learned, learned_value
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.logic.status import MAX_LISTED, starting_budgets
from lameduck_operator.model import HoldSpec, Policy, PolicyRef
from lameduck_operator.names import ANNOTATIONS_MAX_BYTES, LEARNED_CONFIGMAP
from lameduck_sidecar.learned import learned_delay, learned_max_hold
from lameduck_sidecar.learned import max_hold_in_force as sidecar_max_hold
from tests.unit.builders import deployment, policy
from tests.unit.fake_api import FakeApi, policy_body
from tests.unit.test_annotation_room import BOUNDARY, assert_no_room, filled_to, lameducks, size
from tests.unit.test_l7_backends import http_route, ingress, service
from tests.unit.test_l7_routes import WEB, fleet_with_route
from tests.unit.test_learned_budget import LEARNING, SETTINGS, SPECS, learning_policy, max_hold_of
from tests.unit.test_learning import hold, report
from tests.unit.test_shutdown_observer import sample


@pytest.mark.parametrize(
    ("spec", "learned", "l7", "expected"),
    [
        (hold(30.0), None, True, MaxHold(30.0)),
        (hold(30.0), 90.0, True, MaxHold(30.0)),
        (hold(30.0, cap=120.0), None, False, MaxHold(30.0, BudgetSource.DEFAULT)),
        (hold(30.0, cap=120.0), None, True, MaxHold(60.0, BudgetSource.L7_BACKEND)),
        (hold(30.0, cap=45.0), None, True, MaxHold(45.0, BudgetSource.L7_BACKEND)),
        (hold(30.0, cap=30.0), None, True, MaxHold(30.0, BudgetSource.L7_BACKEND)),
        (hold(30.0, cap=120.0), 30.0, True, MaxHold(30.0, BudgetSource.REPORTS)),
        (hold(30.0, cap=120.0), 90.0, False, MaxHold(90.0, BudgetSource.REPORTS)),
        (hold(30.0, cap=120.0), 600.0, True, MaxHold(120.0, BudgetSource.REPORTS)),
    ],
    ids=[
        "policy-does-not-learn",
        "policy-does-not-learn-ignores-what-was-learned",
        "no-history-no-l7-hop-maxhold",
        "no-history-l7-hop-twice-maxhold",
        "starting-budget-within-the-cap",
        "cap-equal-to-maxhold",
        "reports-decide-once-there-are-any-even-below-the-start",
        "reports-without-l7-hop",
        "reports-within-the-cap",
    ],
)
def test_the_max_hold_and_where_it_comes_from(
    spec: HoldSpec, learned: float | None, l7: bool, expected: MaxHold
) -> None:
    assert max_hold_for(spec, learned, l7) == expected


@given(SPECS)
def test_the_starting_budget_is_one_doubling_within_the_policys_bounds(spec: HoldSpec) -> None:
    assert spec.learned_budget is not None
    start = starting_max_hold(spec)
    assert spec.max_hold <= start <= spec.learned_budget.max_hold_cap
    assert start == min(spec.learned_budget.max_hold_cap, spec.max_hold * CUT_OFF_FACTOR)
    assert starting_max_hold(dataclasses.replace(spec, learned_budget=None)) == spec.max_hold


@given(SPECS, st.floats(0, 2000), st.booleans())
def test_once_anything_is_learned_the_l7_hop_changes_nothing(spec: HoldSpec, learned: float, l7: bool) -> None:
    assert max_hold_for(spec, learned, l7) == max_hold_for(spec, learned, not l7)
    assert max_hold_for(spec, learned, l7).source is BudgetSource.REPORTS


# ---- the one decision -------------------------------------------------------------------------


def admitted(p: Policy, *, l7: bool, learned: float | None = None, body: dict[str, Any] | None = None) -> Decision:
    return decide(
        body or deployment(),
        [p],
        SETTINGS,
        {},
        lambda _: 0,
        moment=Moment.ADMISSION,
        learned_max_hold=learned,
        l7_backend=l7,
    )


def written(decision: Decision, body: dict[str, Any] | None = None) -> dict[str, Any]:
    assert decision.action is Action.APPLY
    assert decision.intent is not None
    return injected(body or deployment(), decision.intent)


@pytest.mark.parametrize(
    ("l7", "learned", "expected", "source"),
    [
        # The grace period leaves room for the cap whatever the maxHold (2m + 10s + 5s).
        (True, None, (60.0, 135), BudgetSource.L7_BACKEND),
        (False, None, (30.0, 135), BudgetSource.DEFAULT),
        (True, 45.0, (45.0, 135), BudgetSource.REPORTS),
        (True, 30.0, (30.0, 135), BudgetSource.REPORTS),
    ],
    ids=["l7-backend-no-history", "no-l7-hop", "history-decides", "history-below-the-start-decides"],
)
def test_admission_starts_an_l7_backend_with_no_history_at_the_starting_budget(
    l7: bool, learned: float | None, expected: tuple[float, int], source: BudgetSource
) -> None:
    decision = admitted(learning_policy(), l7=l7, learned=learned)
    assert max_hold_of(decision) == expected
    assert decision.budget_seconds == expected[1]
    assert decision.budget_source is source


def test_a_policy_that_does_not_learn_budgets_ignores_the_l7_hop() -> None:
    plain = policy("web", "shop", {"drainTimeout": "10s"})
    with_hop, without = admitted(plain, l7=True), admitted(plain, l7=False)
    assert with_hop.intent == without.intent
    assert with_hop.budget_source is None


def test_no_policy_no_source() -> None:
    other = policy("web", "shop", {**LEARNING, "selector": {"matchLabels": {"tier": "gold"}}})
    decision = admitted(other, l7=True)
    assert (decision.action, decision.verdict.state, decision.budget_source) == (Action.NONE, State.UNMANAGED, None)


@pytest.mark.parametrize("apply", ["Immediate", "OnNextRollout"])
@pytest.mark.parametrize("l7_at_creation", [True, False], ids=["hop-seen-at-creation", "hop-seen-later"])
def test_the_l7_hop_seen_or_gone_between_rollouts_makes_no_deployment_outdated_nor_rolls_it_out(
    apply: str, l7_at_creation: bool
) -> None:
    p = learning_policy(apply=apply)
    body = written(admitted(p, l7=l7_at_creation))
    for l7 in (True, False):
        decision = decide(body, [p], SETTINGS, {}, lambda _: 0, l7_backend=l7)
        assert (decision.action, decision.verdict.state) == (Action.NONE, State.COMPLIANT), l7
        assert not decision.starts_rollout
        assert decision.budget_source is (BudgetSource.L7_BACKEND if l7 else BudgetSource.DEFAULT)


def test_the_next_rollout_of_a_deployment_created_before_its_route_starts_at_the_starting_budget() -> None:
    p = learning_policy()
    body = written(admitted(p, l7=False))
    assert max_hold_of(admitted(p, l7=False)) == (30.0, 135)
    changed = copy.deepcopy(body)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "example.com/app:2"
    assert max_hold_of(admitted(p, l7=True, body=changed)) == (60.0, 135)


def test_a_rollout_the_reconciler_starts_anyway_takes_the_starting_budget() -> None:
    """Immediate, a Deployment it never injected: the apply rolls it out, with the starting budget."""
    p = learning_policy(apply="Immediate")
    decision = decide(deployment(), [p], SETTINGS, {}, lambda _: 0, l7_backend=True)
    assert (decision.action, decision.starts_rollout) == (Action.APPLY, True)
    assert max_hold_of(decision) == (60.0, 135)
    assert decision.budget_source is BudgetSource.L7_BACKEND


@pytest.mark.parametrize(("over", "writes"), BOUNDARY)
def test_the_starting_budget_rides_in_the_write_measured_for_room_or_in_none(over: int, writes: bool) -> None:
    """One decision: the webhook's write, measured against the annotations' limit, is the one that
    carries the starting budget; without room nothing is written, and the decision still says
    where the maxHold in force comes from (its holds take it live from lameduck-learned)."""
    p = learning_policy()
    measured = admitted(p, l7=True).patched
    assert measured is not None
    body = filled_to(deployment(), lameducks(measured), over)
    decision = admitted(p, l7=True, body=body)
    assert decision.max_hold == MaxHold(60.0, BudgetSource.L7_BACKEND)
    if writes:
        assert decision.action is Action.APPLY
        assert decision.patched is not None
        assert carried_max_hold(decision.patched) == 60.0
        assert size(annotations_of(decision.patched)) == ANNOTATIONS_MAX_BYTES
    else:
        assert_no_room(decision)
        assert decision.starting_max_hold == 60.0


# ---- where it shows: status and metrics --------------------------------------------------------


def test_status_lists_the_deployments_starting_at_the_starting_budget() -> None:
    starting = [(DeploymentRef("shop", "web"), 60.0), (DeploymentRef("blog", "api"), 45.0)]
    assert starting_budgets(starting) == [
        {"namespace": "blog", "name": "api", "learnedMaxHold": "45s", "learnedFrom": "L7Backend"},
        {"namespace": "shop", "name": "web", "learnedMaxHold": "1m", "learnedFrom": "L7Backend"},
    ]
    many = [(DeploymentRef("shop", f"web-{i:02}"), 60.0) for i in range(MAX_LISTED + 5)]
    assert len(starting_budgets(many)) == MAX_LISTED


@pytest.mark.parametrize(
    ("learned", "l7", "expected"),
    [(None, True, 60.0), (None, False, None), (45.0, True, None)],
    ids=["l7-backend-no-history", "no-l7-hop", "history"],
)
def test_a_decision_names_its_starting_budget_only_when_that_is_where_its_max_hold_comes_from(
    learned: float | None, l7: bool, expected: float | None
) -> None:
    assert admitted(learning_policy(), l7=l7, learned=learned).starting_max_hold == expected
    plain = policy("web", "shop", {"drainTimeout": "10s"})
    assert admitted(plain, l7=l7, learned=learned).starting_max_hold is None


async def test_a_policy_shows_its_starting_deployments_and_counts_each_source() -> None:
    fleet, api = fleet_with_route(apply="OnNextRollout")
    fleet.learned_max_hold = {DeploymentRef("shop", "admin"): 45.0}.get
    fleet.l7.route_seen(ingress("web"), RouteKind.INGRESS)
    for name in ("web", "admin", "search"):
        fleet.deployment_seen(api.add(deployment(name)))
    await fleet.drain()
    await fleet.publish()
    status = api.statuses[PolicyRef("GracefulPolicy", "web", "shop")]
    assert status["startingBudgets"] == [
        {"namespace": "shop", "name": "web", "learnedMaxHold": "1m", "learnedFrom": "L7Backend"}
    ]
    text = generate_latest(fleet.metrics.registry).decode()
    series = 'lameduck_learned_budget_deployments{learned_from="%s",policy="GracefulPolicy shop/web"}'
    assert [sample(text, series % source) for source in ("L7Backend", "Reports", "Default")] == [1, 1, 1]


async def test_a_policy_that_does_not_learn_budgets_shows_no_starting_budgets() -> None:
    fleet, api = fleet_with_route()
    fleet.policy_seen(policy_body("web", "shop", {"drainTimeout": "10s"}))
    fleet.l7.route_seen(ingress("web"), RouteKind.INGRESS)
    fleet.deployment_seen(api.add(deployment()))
    await fleet.drain()
    await fleet.publish()
    assert "startingBudgets" not in api.statuses[PolicyRef("GracefulPolicy", "web", "shop")]
    assert "lameduck_learned_budget_deployments{" not in generate_latest(fleet.metrics.registry).decode()


# ---- webhook, reconciler and CLI: the same decision given the same observations ----------------


def cli(*docs: dict[str, Any], command: str = "render") -> tuple[int, str, list[dict[str, Any]]]:
    out = io.StringIO()
    code = main([command, "-f", "-"], stdin=io.StringIO(yaml.safe_dump_all(list(docs))), out=out)
    return code, out.getvalue(), [d for d in yaml.safe_load_all(out.getvalue()) if d and command == "render"]


def learning_policy_body(apply: str = "OnNextRollout") -> dict[str, Any]:
    return {
        "apiVersion": "lameduck.dev/v1alpha1",
        "kind": "GracefulPolicy",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {**LEARNING, "apply": apply},
    }


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        ([ingress("web")], 60.0),
        ([http_route({"name": "web"})], 60.0),
        ([http_route({"name": "web"}, kind="GRPCRoute")], 60.0),
        ([], 30.0),
        ([ingress("admin")], 30.0),
    ],
    ids=["ingress", "httproute", "grpcroute", "no-route", "route-to-another-service"],
)
async def test_the_webhook_the_reconciler_and_the_cli_start_a_deployment_alike(
    routes: list[dict[str, Any]], expected: float
) -> None:
    p = learning_policy(apply="Immediate")
    code, _, (rendered,) = cli(learning_policy_body("Immediate"), deployment(), service(), *routes)
    assert code == 0
    assert carried_max_hold(rendered) == expected
    assert rendered["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 135, "room for the cap"

    l7 = expected == 60.0
    assert written(admitted(p, l7=l7)) == rendered, "the webhook, given the same observations"

    fleet, api = fleet_with_route(apply="Immediate")
    for body in routes:
        fleet.l7.route_seen(body, route_kind_of(body) or RouteKind.INGRESS)
    fleet.deployment_seen(api.add(deployment()))
    decision = await fleet.reconcile(DeploymentRef("shop", "web"))
    assert decision is not None
    assert decision.intent is not None
    assert injected(deployment(), decision.intent) == rendered, "the reconciler, given the same observations"


def test_the_cli_decides_with_what_was_learned_first() -> None:
    learned = {
        "kind": "ConfigMap",
        "metadata": {"name": LEARNED_CONFIGMAP, "namespace": "shop"},
        "data": {"web": learned_value(Learned(0.0, 1, 45.0))},
    }
    _, _, (rendered,) = cli(learning_policy_body(), deployment(), service(), ingress("web"), learned)
    assert carried_max_hold(rendered) == 45.0


def test_the_cli_reads_only_core_services_and_the_route_groups_it_knows() -> None:
    knative = {**service(), "apiVersion": "serving.knative.dev/v1"}
    other_ingress = {**ingress("web"), "apiVersion": "example.com/v1"}
    _, _, (rendered,) = cli(learning_policy_body(), deployment(), knative, ingress("web"))
    assert carried_max_hold(rendered) == 30.0
    _, _, (rendered,) = cli(learning_policy_body(), deployment(), service(), other_ingress)
    assert carried_max_hold(rendered) == 30.0


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        ({**service(), "spec": {"selector": ["app", "web"]}}, "spec.selector: must be of type object"),
        (
            {**ingress(), "spec": {"rules": [{"http": {"paths": [{"backend": {"service": {"name": 7}}}]}}]}},
            "spec.rules[0].http.paths[0].backend.service.name: must be of type string",
        ),
        ({**http_route(), "spec": {"rules": [{"backendRefs": {"name": "web"}}]}}, "spec.rules[0].backendRefs: must"),
        ({**service(), "metadata": {"name": "Not_A_Name"}}, "Service Not_A_Name: metadata.name: "),
    ],
    ids=["service-selector-not-a-map", "ingress-backend-name-not-a-string", "backendrefs-not-a-list", "bad-name"],
)
def test_a_service_or_route_the_api_server_would_refuse_is_an_invalid_object(
    obj: dict[str, Any], path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(learning_policy_body(), deployment(), obj, command="check")
    assert (code, out) == (EXIT_INVALID_OBJECTS, "")
    err = capsys.readouterr().err
    assert f"{obj['kind']} " in err
    assert path in err


# ---- how it reaches the holds: the template at admission, lameduck-learned as a hold starts -----


def wired(fleet: Fleet, api: FakeApi) -> LearnedDelays:
    """The learned delays as the runtime wires them to the fleet."""
    delays = LearnedDelays(
        api, fleet.metrics, known=fleet.deployments.__contains__, hold_of=fleet.hold_of, history_changed=fleet.enqueue
    )
    fleet.learned_max_hold = delays.learned_max_hold
    fleet.starting_budget = delays.starting_budget
    return delays


def taken_by_a_hold(api: FakeApi, carried: float) -> tuple[float, float | None]:
    """What a hold of web's pods, made with maxHold `carried` and the policy's cap as
    LAMEDUCK_MAX_HOLD_CAP, takes from lameduck-learned as it starts: its maxHold and learned delay."""
    config_map = {"data": api.learned.get("shop", {})}
    return sidecar_max_hold(carried, 120.0, learned_max_hold(config_map, "web")), learned_delay(config_map, "web")


async def test_the_pods_of_a_deployment_created_before_its_route_hold_with_the_starting_budget() -> None:
    """Helm creates an Ingress after the Deployments it sends to, so their pods are made with
    maxHold. Once the route is seen, the reconciler's decision publishes the starting budget,
    which the holds of those very pods take as they start: their grace period has room for the
    cap. The template keeps maxHold until the next rollout: nothing is rolled out for it."""
    fleet, api = fleet_with_route(apply="Immediate")
    delays = wired(fleet, api)
    fleet.deployment_seen(api.add(deployment()))
    await fleet.drain()
    await delays.publish()
    assert carried_max_hold(api.view("shop", "web")) == 30.0
    assert api.view("shop", "web")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 135
    assert taken_by_a_hold(api, 30.0) == (30.0, None)

    fleet.l7.route_seen(ingress("web"), RouteKind.INGRESS)
    await fleet.drain()
    decision = fleet.decisions[WEB]
    assert (decision.action, decision.verdict.state, decision.budget_source) == (
        Action.NONE,
        State.COMPLIANT,
        BudgetSource.L7_BACKEND,
    )
    await delays.publish()
    assert json.loads(api.learned["shop"]["web"]) == {"version": 1, "reports": 0, "learnedMaxHoldSeconds": 60.0}
    assert taken_by_a_hold(api, 30.0) == (60.0, None), "the starting budget, and no learned delay"
    assert carried_max_hold(api.view("shop", "web")) == 30.0, "no rollout for it"

    fleet.l7.route_seen(ingress("web"), RouteKind.INGRESS, deleted=True)
    await fleet.drain()
    await delays.publish()
    assert "web" not in api.learned["shop"], "no L7 hop: the holds keep their own maxHold"


async def test_reports_replace_the_starting_budget_and_a_gone_deployment_takes_it_along() -> None:
    fleet, api = fleet_with_route(apply="Immediate")
    delays = wired(fleet, api)
    fleet.l7.route_seen(ingress("web"), RouteKind.INGRESS)
    fleet.deployment_seen(api.add(deployment()))
    await fleet.drain()
    assert carried_max_hold(api.view("shop", "web")) == 60.0, "the route was there: the template carries it too"
    await delays.publish()
    assert taken_by_a_hold(api, 60.0) == (60.0, None)

    delays.reports_changed(WEB, [report()], hold(30.0, cap=120.0))
    await fleet.drain()
    assert fleet.decisions[WEB].budget_source is BudgetSource.REPORTS
    await delays.publish()
    assert json.loads(api.learned["shop"]["web"])["reports"] == 1
    assert taken_by_a_hold(api, 60.0) == (60.0, 0.0), "a learned 30 s never lowers the pod's own 60 s"

    delays.forget(WEB)
    await fleet.drain()
    await delays.publish()
    assert taken_by_a_hold(api, 30.0) == (60.0, None), "no reports left: back at the starting budget"

    body = api.view("shop", "web")
    fleet.deployment_seen(body, deleted=True)
    await delays.publish()
    assert api.learned["shop"] == {}
