"""The L7 routes the operator keeps (l7_routes.py), listed at start (k8s/routes.py) and fed by kopf,
and how the reconciler and the webhook pass what they say to the one decision."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from lameduck_operator.config import OperatorConfig
from lameduck_operator.fleet import Fleet
from lameduck_operator.handlers import build_registry
from lameduck_operator.k8s.api import KubeApi
from lameduck_operator.l7_routes import L7Routes
from lameduck_operator.learned_delays import LearnedDelays
from lameduck_operator.logic.admitted import injected
from lameduck_operator.logic.budget import BudgetSource
from lameduck_operator.logic.intent import carried_max_hold
from lameduck_operator.logic.l7_backends import RouteKind
from lameduck_operator.logic.readiness import ServiceView
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.readiness_gate import ReadinessGate
from lameduck_operator.runtime import Runtime
from lameduck_operator.settings import Settings
from tests.unit.api_requests import access_of, echo, recording_client
from tests.unit.builders import deployment
from tests.unit.fake_api import FakeApi, policy_body
from tests.unit.test_l7_backends import http_route, ingress, service
from tests.unit.test_learning import hold, report

WEB = DeploymentRef("shop", "web")
LEARNING: dict[str, Any] = {"hold": {"maxHold": "30s", "learnedBudget": {"maxHoldCap": "2m"}}, "drainTimeout": "10s"}


class Index:
    def __init__(self) -> None:
        self.told: list[str] = []
        self.services: dict[str, dict[str, ServiceView]] = {"shop": {"web": ServiceView("shop", "web", {"app": "web"})}}
        self.routes = L7Routes(changed=self.told.append)
        self.routes.services = lambda namespace: self.services.get(namespace, {})


def test_a_route_is_kept_as_the_names_it_sends_to_and_each_change_is_told() -> None:
    index = Index()
    routes = index.routes
    assert not routes.backend(deployment())
    routes.route_seen(ingress("web"), RouteKind.INGRESS)
    assert routes.routed == {"shop": frozenset({"web"})}
    assert index.told == ["shop"]
    assert routes.backend(deployment())
    assert not routes.backend(deployment("admin")), "pods labelled app=admin: the Service web selects none"
    routes.route_seen(ingress("web"), RouteKind.INGRESS)
    assert index.told == ["shop"], "the same route again changes nothing"
    routes.route_seen(ingress("web", "api"), RouteKind.INGRESS)
    routes.route_seen(http_route({"name": "web"}), RouteKind.HTTP_ROUTE)
    assert routes.routed == {"shop": {"web", "api"}}
    routes.route_seen(ingress("web", "api"), RouteKind.INGRESS, deleted=True)
    assert routes.routed == {"shop": {"web"}}, "the HTTPRoute still sends to web"
    routes.route_seen(http_route({"name": "web"}), RouteKind.HTTP_ROUTE, deleted=True)
    assert routes.routed == {}
    assert not routes.backend(deployment())
    assert index.told == ["shop"] * 4


def test_a_route_in_another_namespace_counts_where_its_services_are() -> None:
    index = Index()
    index.routes.route_seen(http_route({"name": "web", "namespace": "shop"}, namespace="edge"), RouteKind.HTTP_ROUTE)
    assert index.routes.routed == {"shop": {"web"}}
    assert index.routes.backend(deployment())
    moved = http_route({"name": "web", "namespace": "blog"}, namespace="edge")
    index.routes.route_seen(moved, RouteKind.HTTP_ROUTE)
    assert index.routes.routed == {"blog": {"web"}}
    assert index.told == ["shop", "blog", "shop"]


def test_a_service_change_is_told_only_when_a_route_sends_to_it() -> None:
    index = Index()
    index.routes.service_seen("shop", "web")
    index.routes.route_seen(ingress("web"), RouteKind.INGRESS)
    index.told.clear()
    index.routes.service_seen("shop", "admin")
    index.routes.service_seen("blog", "web")
    assert index.told == []
    index.services["shop"]["web"] = ServiceView("shop", "web", {"app": "other"})
    index.routes.service_seen("shop", "web")
    assert index.told == ["shop"]
    assert not index.routes.backend(deployment())


# ---- start-up lists ---------------------------------------------------------------------------


def test_routes_are_listed_at_start_and_gateway_api_absent_is_none() -> None:
    def answer(method: str, url: str, body: Any) -> Any:
        if "gateway.networking.k8s.io" in url:
            raise ApiException(status=404, reason="Not Found")
        if access_of(method, url).resource == "ingresses":
            return {"items": [ingress("web")], "metadata": {}}
        return echo(method, url, body)

    api_client, recorder = recording_client(answer)
    routes = KubeApi(api_client).list_l7_routes()
    assert routes == [(RouteKind.INGRESS, ingress("web"))]
    assert [access_of(s.method, s.url) for s in recorder.sent] == [
        access_of("GET", "/apis/networking.k8s.io/v1/ingresses"),
        access_of("GET", "/apis/gateway.networking.k8s.io/v1/httproutes"),
        access_of("GET", "/apis/gateway.networking.k8s.io/v1/grpcroutes"),
    ]


def test_gateway_routes_are_listed_where_served_and_other_errors_stop_the_start() -> None:
    def served(method: str, url: str, body: Any) -> Any:
        if access_of(method, url).resource == "httproutes":
            return {"items": [http_route({"name": "web"})], "metadata": {}}
        return echo(method, url, body)

    api_client, _ = recording_client(served)
    assert KubeApi(api_client).list_l7_routes() == [(RouteKind.HTTP_ROUTE, http_route({"name": "web"}))]

    def forbidden(method: str, url: str, body: Any) -> Any:
        if "gateway.networking.k8s.io" in url:
            raise ApiException(status=403, reason="Forbidden")
        return echo(method, url, body)

    api_client, _ = recording_client(forbidden)
    with pytest.raises(ApiException):
        KubeApi(api_client).list_l7_routes()


# ---- the reconciler and the webhook ------------------------------------------------------------


def fleet_with_route(**spec: Any) -> tuple[Fleet, FakeApi]:
    api = FakeApi()
    fleet = Fleet(
        Settings(),
        api,
        OperatorMetrics(),
        clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        call_later=lambda _delay, _callback: None,
    )
    fleet.synced.set()
    services = {"web": ServiceView("shop", "web", {"app": "web"})}
    fleet.l7.services = lambda namespace: services if namespace == "shop" else {}
    fleet.policy_seen(policy_body("web", "shop", {**LEARNING, **spec}))
    return fleet, api


async def test_the_reconciler_decides_with_the_routes_it_sees() -> None:
    fleet, api = fleet_with_route(apply="Immediate")
    fleet.l7.route_seen(ingress("web"), RouteKind.INGRESS)
    fleet.deployment_seen(api.add(deployment()))
    decision = await fleet.reconcile(WEB)
    assert decision is not None
    assert decision.budget_source is BudgetSource.L7_BACKEND
    assert carried_max_hold(api.view("shop", "web")) == 60.0


async def test_a_route_change_judges_again_only_deployments_whose_budget_does_not_come_from_reports() -> None:
    fleet, api = fleet_with_route()
    learned: dict[DeploymentRef, float] = {DeploymentRef("shop", "admin"): 45.0}
    fleet.learned_max_hold = learned.get
    for name in ("web", "admin"):
        fleet.deployment_seen(api.add(deployment(name)))
    await fleet.drain()
    sources = {ref.name: d.budget_source for ref, d in fleet.decisions.items()}
    assert sources == {"web": BudgetSource.DEFAULT, "admin": BudgetSource.REPORTS}
    fleet.l7.route_seen(ingress("web"), RouteKind.INGRESS)
    assert fleet.queued == {WEB}
    await fleet.drain()
    assert fleet.decisions[WEB].budget_source is BudgetSource.L7_BACKEND
    fleet.l7.route_seen(ingress("web"), RouteKind.INGRESS, deleted=True)
    assert fleet.queued == {WEB}


async def test_a_first_learned_max_hold_judges_the_deployment_again() -> None:
    fleet, api = fleet_with_route()
    fleet.l7.route_seen(ingress("web"), RouteKind.INGRESS)
    delays = LearnedDelays(
        api,
        fleet.metrics,
        known=fleet.deployments.__contains__,
        hold_of=fleet.hold_of,
        history_changed=fleet.enqueue,
    )
    fleet.learned_max_hold = delays.learned_max_hold
    fleet.deployment_seen(api.add(deployment()))
    await fleet.drain()
    assert fleet.decisions[WEB].budget_source is BudgetSource.L7_BACKEND
    delays.reports_changed(WEB, [report()], hold(30.0, cap=120.0))
    assert fleet.queued == {WEB}
    await fleet.drain()
    assert fleet.decisions[WEB].budget_source is BudgetSource.REPORTS
    delays.reports_changed(WEB, [report(), report()], hold(30.0, cap=120.0))
    assert fleet.queued == frozenset(), "a new learned value changes no source: its next rollout takes it"
    delays.forget(WEB)
    assert fleet.queued == {WEB}


def test_the_history_is_told_when_a_learned_max_hold_comes_or_goes() -> None:
    told: list[DeploymentRef] = []
    delays = LearnedDelays(FakeApi(), OperatorMetrics(), known=lambda _: True, hold_of=lambda _: None)
    delays.history_changed = told.append
    delays.reports_changed(WEB, [report()], hold(30.0))
    assert told == [], "a policy that does not learn budgets learns no maxHold"
    delays.reports_changed(WEB, [report()], hold(30.0, cap=120.0))
    delays.reports_changed(WEB, [report(), report()], hold(30.0, cap=120.0))
    delays.forget(WEB)
    delays.forget(WEB)
    assert told == [WEB, WEB]


def started_runtime() -> tuple[Runtime, Fleet, ReadinessGate]:
    runtime = Runtime(OperatorConfig(Settings(), "lameduck-system", 8080, 1.0, "INFO"))
    fleet, api = fleet_with_route()
    gate = ReadinessGate(api, runtime.metrics)  # type: ignore[arg-type]
    runtime.fleet, runtime.gate = fleet, gate
    fleet.l7.services = lambda namespace: gate.index.services.get(namespace, {})
    return runtime, fleet, gate


async def handle(runtime: Runtime, handler_id: str, event: dict[str, Any]) -> None:
    """One event through the kopf handler of that name."""
    registry = build_registry(runtime)
    (fn,) = [h.fn for h in registry._watching.get_all_handlers() if getattr(h.fn, "__name__", None) == handler_id]
    called: Any = fn  # the handlers take the event and ignore kopf's other arguments
    await called(event=event)


async def test_a_service_event_reaches_the_gate_and_then_the_routes() -> None:
    runtime, fleet, gate = started_runtime()
    told: list[str] = []
    fleet.l7.changed = told.append
    await handle(runtime, "ingress_event", {"type": "ADDED", "object": ingress("web")})
    body = deployment()
    assert not fleet.l7.backend(body), "no Service yet"
    await handle(runtime, "service_event", {"type": "ADDED", "object": service()})
    assert gate.index.services["shop"]["web"].selector == {"app": "web"}
    assert fleet.l7.backend(body)
    await handle(runtime, "service_event", {"type": "DELETED", "object": service()})
    assert not fleet.l7.backend(body)
    await handle(runtime, "http_route_event", {"type": "ADDED", "object": http_route({"name": "api"})})
    await handle(
        runtime, "grpc_route_event", {"type": "ADDED", "object": http_route({"name": "rpc"}, kind="GRPCRoute")}
    )
    assert fleet.l7.routed == {"shop": frozenset({"web", "api", "rpc"})}
    assert told == ["shop"] * 5, "the ingress, the Service routed to twice, each Gateway route"


def test_the_webhook_decides_with_the_routes_this_replica_sees() -> None:
    runtime, fleet, gate = started_runtime()
    gate.service_seen(service())
    assert runtime.judge(deployment()).budget_source is BudgetSource.DEFAULT
    fleet.l7.route_seen(http_route({"name": "web"}), RouteKind.GRPC_ROUTE)
    decision = runtime.judge(deployment())
    assert decision.budget_source is BudgetSource.L7_BACKEND
    assert decision.intent is not None
    assert carried_max_hold(injected(deployment(), decision.intent)) == 60.0
