"""Whether a Deployment is the backend of an L7 hop the operator can see: some Service that selects
its pods is named as a backend by an Ingress, an HTTPRoute or a GRPCRoute. Pure.

Such a proxy keeps pooled connections to the pods it balances over and learns of a deletion on
its own schedule, so a Deployment with no history behind it starts at the policy's starting
budget (logic/budget.py) rather than its plain maxHold.

What is read of each route, and nothing else:
- Ingress (networking.k8s.io/v1): spec.defaultBackend.service.name and
  spec.rules[].http.paths[].backend.service.name, in the Ingress's namespace (a `resource`
  backend is no Service);
- HTTPRoute and GRPCRoute (gateway.networking.k8s.io): spec.rules[].backendRefs[] whose group is
  "" (the core group, the default) and kind Service (the default), in their `namespace`, else the
  route's own.
Deliberately not read, each erring towards "a backend" (which costs at most a longer first
maxHold, where the opposite error costs requests): the port a route names (a port the Service
lacks makes a broken route, not a missing hop), a backendRef's weight, whether a ReferenceGrant
allows a reference into another namespace, and whether any Gateway or ingress controller serves
the route.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lameduck_operator.logic.readiness import ServiceView

INGRESS_GROUP = "networking.k8s.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"
# The version the operator lists and watches HTTPRoutes and GRPCRoutes at (GRPCRoute is v1 from
# Gateway API v1.1); the fields read are the same in v1beta1 and v1alpha2.
GATEWAY_VERSION = "v1"
# A backendRef without group or kind names a Service of the core group.
CORE_GROUP = ""
SERVICE_KIND = "Service"


class RouteKind(StrEnum):
    INGRESS = "Ingress"
    HTTP_ROUTE = "HTTPRoute"
    GRPC_ROUTE = "GRPCRoute"


# The API group of each kind, as a manifest's apiVersion names it (before the version).
ROUTE_GROUPS = {
    RouteKind.INGRESS: INGRESS_GROUP,
    RouteKind.HTTP_ROUTE: GATEWAY_GROUP,
    RouteKind.GRPC_ROUTE: GATEWAY_GROUP,
}
ROUTE_KINDS = frozenset(kind.value for kind in RouteKind)


@dataclass(frozen=True, slots=True)
class ServiceKey:
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Route:
    """One route: which Services it sends to."""

    kind: RouteKind
    namespace: str
    name: str
    backends: frozenset[ServiceKey]


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: object) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _name(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _meta(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = _mapping(body.get("metadata"))
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def ingress_route(body: Mapping[str, Any]) -> Route:
    namespace, name = _meta(body)
    spec = _mapping(body.get("spec"))
    backends = [_mapping(spec.get("defaultBackend"))]
    for rule in _items(spec.get("rules")):
        backends += [_mapping(path.get("backend")) for path in _items(_mapping(rule.get("http")).get("paths"))]
    names = {_name(_mapping(backend.get("service")).get("name")) for backend in backends}
    return Route(
        RouteKind.INGRESS, namespace, name, frozenset(ServiceKey(namespace, n) for n in names if n is not None)
    )


def gateway_route(body: Mapping[str, Any], kind: RouteKind) -> Route:
    """An HTTPRoute or a GRPCRoute: both name their backends alike."""
    namespace, name = _meta(body)
    found: set[ServiceKey] = set()
    for rule in _items(_mapping(body.get("spec")).get("rules")):
        for ref in _items(rule.get("backendRefs")):
            service = _name(ref.get("name"))
            # null, as a manifest may give it, is the default as much as absent is
            group, ref_kind = ref.get("group") or CORE_GROUP, ref.get("kind") or SERVICE_KIND
            if service is None or group != CORE_GROUP or ref_kind != SERVICE_KIND:
                continue
            found.add(ServiceKey(_name(ref.get("namespace")) or namespace, service))
    return Route(kind, namespace, name, frozenset(found))


def route_kind_of(body: Mapping[str, Any]) -> RouteKind | None:
    """Which route an object is, by its kind and its apiVersion's group; None for any other."""
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api_version, str) or kind not in ROUTE_KINDS:
        return None
    route_kind = RouteKind(kind)
    return route_kind if api_version.rpartition("/")[0] == ROUTE_GROUPS[route_kind] else None


def route(body: Mapping[str, Any], kind: RouteKind) -> Route:
    return ingress_route(body) if kind is RouteKind.INGRESS else gateway_route(body, kind)


def route_of(body: Mapping[str, Any]) -> Route | None:
    """The route an object is; None for any other object."""
    kind = route_kind_of(body)
    return None if kind is None else route(body, kind)


def is_service(body: Mapping[str, Any]) -> bool:
    """A core Service (not another group's kind of that name, such as Knative's)."""
    return body.get("kind") == SERVICE_KIND and body.get("apiVersion") == "v1"


def selects(service: ServiceView, namespace: str, pod_labels: Mapping[str, str]) -> bool:
    """Whether the Service sends to pods of the namespace with these labels. A Service without a
    selector (or of type ExternalName: service_view leaves its selector empty) selects none."""
    # items() <= items(): every (key, value) of the selector among the labels, in C.
    return bool(service.selector) and service.namespace == namespace and service.selector.items() <= pod_labels.items()


def l7_backend(
    namespace: str,
    pod_labels: Mapping[str, str],
    services: Mapping[str, ServiceView],
    routed: Collection[str],
) -> bool:
    """Whether pods of the namespace with these labels are an L7 backend. services: the
    namespace's Services by name; routed: the names of those a route sends to
    (routed_services). Linear in `routed`, which is usually far shorter than `services`."""
    for name in routed:
        service = services.get(name)
        if service is not None and selects(service, namespace, pod_labels):
            return True
    return False


def routed_services(routes: Iterable[Route], namespace: str) -> frozenset[str]:
    """The names of the namespace's Services that some route sends to."""
    return frozenset(key.name for route in routes for key in route.backends if key.namespace == namespace)


def template_labels(deployment: Mapping[str, Any]) -> dict[str, str]:
    """The labels of the pods the Deployment creates."""
    meta = _mapping(_mapping(_mapping(deployment.get("spec")).get("template")).get("metadata"))
    return {str(k): str(v) for k, v in _mapping(meta.get("labels")).items()}


def deployment_is_l7_backend(
    deployment: Mapping[str, Any], namespace: str, services: Iterable[ServiceView], routes: Iterable[Route]
) -> bool:
    """The whole question, from the observed objects: is some Service of the Deployment's
    namespace that selects its pods named by some route?"""
    in_namespace = {s.name: s for s in services if s.namespace == namespace}
    return l7_backend(namespace, template_labels(deployment), in_namespace, routed_services(routes, namespace))
