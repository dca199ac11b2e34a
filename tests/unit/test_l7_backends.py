"""Whether a Deployment is an L7 backend: some Service selecting its pods is named by an Ingress,
HTTPRoute or GRPCRoute (logic/l7_backends.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lameduck_operator.logic.l7_backends import (
    Route,
    RouteKind,
    ServiceKey,
    deployment_is_l7_backend,
    gateway_route,
    ingress_route,
    l7_backend,
    route_of,
    routed_services,
    template_labels,
)
from lameduck_operator.logic.readiness import ServiceView, service_view
from tests.unit.builders import deployment

WEB = deployment()  # web in shop, pods labelled app=web


def service(name: str = "web", selector: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    chosen = {"app": "web"} if selector is None else selector
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": spec.pop("namespace", "shop")},
        "spec": {"selector": chosen, "ports": [{"port": 80}], **spec},
    }


def ingress(*paths: str, default: str | None = None, namespace: str = "shop") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "rules": [
            {
                "host": "shop.example",
                "http": {"paths": [{"path": "/", "backend": {"service": {"name": p}}} for p in paths]},
            }
        ]
    }
    if default is not None:
        spec["defaultBackend"] = {"service": {"name": default, "port": {"number": 80}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": spec,
    }


def http_route(*refs: dict[str, Any], kind: str = "HTTPRoute", namespace: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": list(refs)}]},
    }


def decided(services: list[dict[str, Any]], routes: list[dict[str, Any]], body: dict[str, Any] = WEB) -> bool:
    parsed = [r for r in (route_of(b) for b in routes) if r is not None]
    return deployment_is_l7_backend(body, "shop", [service_view(s) for s in services], parsed)


@pytest.mark.parametrize(
    ("services", "routes", "expected"),
    [
        ([service()], [ingress("web")], True),
        ([service()], [ingress(default="web")], True),
        ([service()], [http_route({"name": "web", "port": 80})], True),
        ([service()], [http_route({"name": "web"}, kind="GRPCRoute")], True),
        ([service()], [http_route({"name": "web", "group": "", "kind": "Service"})], True),
        ([service()], [http_route({"name": "web", "namespace": "shop"}, namespace="edge")], True),
        ([service()], [http_route({"name": "web", "weight": 0})], True),
        ([service("front")], [ingress("front")], True),
        ([service()], [], False),
        ([], [ingress("web")], False),
        ([service()], [ingress("other")], False),
        ([service(selector={"app": "admin"})], [ingress("web")], False),
        ([service(selector={"app": "web", "tier": "gold"})], [ingress("web")], False),
        ([service(selector={})], [ingress("web")], False),
        ([service(type="ExternalName", externalName="web.example")], [ingress("web")], False),
        ([service(namespace="edge")], [ingress("web", namespace="edge")], False),
        ([service()], [ingress("web", namespace="edge")], False),
        ([service()], [http_route({"name": "web"}, namespace="edge")], False),
        ([service()], [http_route({"name": "web", "kind": "ServiceImport", "group": "multicluster.x-k8s.io"})], False),
        ([service()], [http_route({"name": "web", "group": "example.com"})], False),
        ([service()], [http_route({"name": "web"}, kind="TLSRoute")], False),
        ([service()], [{**ingress("web"), "apiVersion": "example.com/v1"}], False),
    ],
    ids=[
        "ingress-rule",
        "ingress-default-backend",
        "httproute",
        "grpcroute",
        "httproute-core-group-and-kind-spelled-out",
        "httproute-in-another-namespace-naming-ours",
        "httproute-weight-0-still-counts",
        "service-named-otherwise-selecting-the-pods",
        "no-route",
        "no-service",
        "route-to-another-service",
        "service-selecting-other-pods",
        "selector-asking-more-than-the-pods-carry",
        "service-without-selector",
        "externalname-service",
        "service-and-route-in-another-namespace",
        "ingress-in-another-namespace",
        "httproute-in-another-namespace-defaults-to-its-own",
        "backendref-of-another-kind",
        "backendref-of-another-group",
        "a-route-kind-not-read",
        "an-ingress-of-another-group",
    ],
)
def test_a_deployment_is_an_l7_backend_when_a_route_names_a_service_selecting_its_pods(
    services: list[dict[str, Any]], routes: list[dict[str, Any]], expected: bool
) -> None:
    assert decided(services, routes) is expected


def test_what_is_read_of_each_route() -> None:
    assert ingress_route(ingress("a", "b", default="c")).backends == {ServiceKey("shop", n) for n in "abc"}
    resource_backend = ingress()
    resource_backend["spec"]["defaultBackend"] = {"resource": {"kind": "Bucket", "name": "static"}}
    assert ingress_route(resource_backend).backends == frozenset()
    refs = http_route({"name": "a"}, {"name": "b", "namespace": "edge"}, {"name": "c", "kind": "Backend"})
    assert gateway_route(refs, RouteKind.HTTP_ROUTE).backends == {ServiceKey("shop", "a"), ServiceKey("edge", "b")}
    assert route_of(http_route({"name": "a"}, kind="GRPCRoute")) == Route(
        RouteKind.GRPC_ROUTE, "shop", "shop", frozenset({ServiceKey("shop", "a")})
    )
    assert route_of(service()) is None
    assert template_labels(WEB) == {"app": "web"}


@pytest.mark.parametrize(
    "garbage",
    [
        {"kind": "Ingress", "apiVersion": "networking.k8s.io/v1", "spec": "x"},
        {"kind": "Ingress", "apiVersion": "networking.k8s.io/v1", "spec": {"rules": [1, {"http": {"paths": [None]}}]}},
        {"kind": "Ingress", "apiVersion": "networking.k8s.io/v1", "spec": {"defaultBackend": {"service": {"name": 7}}}},
        {"kind": "HTTPRoute", "apiVersion": "gateway.networking.k8s.io/v1", "spec": {"rules": {"backendRefs": []}}},
        {"kind": "HTTPRoute", "apiVersion": "gateway.networking.k8s.io/v1", "spec": {"rules": [{"backendRefs": [3]}]}},
        {"kind": "HTTPRoute", "apiVersion": "gateway.networking.k8s.io/v1", "metadata": None},
    ],
)
def test_a_malformed_route_names_no_backend_and_raises_nothing(garbage: dict[str, Any]) -> None:
    route = route_of(garbage)
    assert route is not None
    assert route.backends == frozenset()


# ---- properties ---------------------------------------------------------------------------------

LABEL = st.sampled_from(["app", "tier", "track"])
VALUE = st.sampled_from(["web", "admin", "gold"])
LABELS = st.dictionaries(LABEL, VALUE, max_size=3)
NAMES = st.sampled_from(["web", "front", "admin", "api"])
SERVICES = st.dictionaries(NAMES, LABELS, max_size=4).map(
    lambda found: {name: ServiceView("shop", name, selector) for name, selector in found.items()}
)


def _selects(view: ServiceView, labels: dict[str, str]) -> bool:
    return bool(view.selector) and view.selector.items() <= labels.items()


@given(LABELS, SERVICES, st.frozensets(NAMES))
def test_a_backend_exactly_when_a_routed_service_selects_the_pods(
    labels: dict[str, str], services: dict[str, ServiceView], routed: frozenset[str]
) -> None:
    expected = any(_selects(services[name], labels) for name in routed if name in services)
    assert l7_backend("shop", labels, services, routed) is expected


@given(LABELS, SERVICES, st.frozensets(NAMES), NAMES, LABELS)
def test_a_service_whose_selector_does_not_match_never_makes_it_a_backend(
    labels: dict[str, str],
    services: dict[str, ServiceView],
    routed: frozenset[str],
    extra: str,
    selector: dict[str, str],
) -> None:
    # Another Service, routed to, that does not select these pods: the answer is what it was
    # without it (as though it did not exist).
    if _selects(ServiceView("shop", extra, selector), labels):
        selector = {**selector, "never": "carried"}
    before = l7_backend("shop", labels, {k: v for k, v in services.items() if k != extra}, routed - {extra})
    after = l7_backend("shop", labels, {**services, extra: ServiceView("shop", extra, selector)}, routed | {extra})
    assert after is before


@given(LABELS, SERVICES, st.frozensets(NAMES), st.frozensets(NAMES))
def test_more_routes_never_take_a_backend_away(
    labels: dict[str, str], services: dict[str, ServiceView], routed: frozenset[str], more: frozenset[str]
) -> None:
    if l7_backend("shop", labels, services, routed):
        assert l7_backend("shop", labels, services, routed | more)


@given(st.lists(st.tuples(NAMES, st.sampled_from(["shop", "edge"])), max_size=6))
def test_routed_services_are_those_named_in_the_namespace(refs: list[tuple[str, str]]) -> None:
    route = Route(RouteKind.HTTP_ROUTE, "edge", "r", frozenset(ServiceKey(ns, name) for name, ns in refs))
    assert routed_services([route], "shop") == {name for name, ns in refs if ns == "shop"}
