"""The L7 routes the operator sees (Ingresses, HTTPRoutes, GRPCRoutes), kept as the names of the
Services each sends to, and whether a Deployment is an L7 backend (logic/l7_backends.py): an input
of its decision, read by the reconciler and, on its own thread, by the webhook.

Kept small: per route only the Services it names; per namespace the names routed to, as a
frozenset replaced whole (the webhook's thread reads it while the loop changes it). The
Services themselves are the readiness gate's index (`services`, set by the runtime): nothing of
them is kept twice. When what a namespace routes to changes, or a Service routed to changes,
`changed` is told the namespace, and the fleet judges again the Deployments there whose next
maxHold can depend on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lameduck_operator.logic.l7_backends import RouteKind, l7_backend, route, template_labels
from lameduck_operator.logic.readiness import ServiceView

RouteId = tuple[RouteKind, str, str]  # kind, namespace, name


def _no_services(_: str) -> Mapping[str, ServiceView]:
    return {}


class L7Routes:
    def __init__(self, changed: Callable[[str], None] = lambda _: None) -> None:
        # The namespace's Services with a selector, by name (the gate's index, once wired).
        self.services: Callable[[str], Mapping[str, ServiceView]] = _no_services
        self.changed = changed
        # Per Service namespace, per route: the names of that namespace's Services it sends to.
        # Tuples, not sets: most routes name one or two (a quarter of the memory, measured).
        self._by_namespace: dict[str, dict[RouteId, tuple[str, ...]]] = {}
        # Per route, the Service namespaces it sends to (where to look when it changes or goes).
        self._namespaces_of: dict[RouteId, tuple[str, ...]] = {}
        # Per namespace, every name some route sends to: replaced whole, never changed in place.
        self.routed: dict[str, frozenset[str]] = {}

    def route_seen(self, body: Mapping[str, Any], kind: RouteKind, deleted: bool = False) -> None:
        seen = route(body, kind)
        key: RouteId = (kind, seen.namespace, seen.name)
        names: dict[str, set[str]] = {}
        if not deleted:
            for backend in seen.backends:
                names.setdefault(backend.namespace, set()).add(backend.name)
        before = self._namespaces_of.pop(key, ())
        if names:
            self._namespaces_of[key] = tuple(sorted(names))
        for namespace in sorted({*before, *names}):
            routes = self._by_namespace.setdefault(namespace, {})
            if namespace in names:
                routes[key] = tuple(sorted(names[namespace]))
            else:
                routes.pop(key, None)
            if not routes:
                del self._by_namespace[namespace]
            self._refresh(namespace)

    def service_seen(self, namespace: str, name: str) -> None:
        """A Service changed or went (the gate's index already has it as it is now)."""
        if name in self.routed.get(namespace, ()):
            self.changed(namespace)

    def _refresh(self, namespace: str) -> None:
        routes = self._by_namespace.get(namespace, {})
        now = frozenset(name for names in routes.values() for name in names)
        if now == self.routed.get(namespace, frozenset()):
            return
        if now:
            self.routed[namespace] = now
        else:
            self.routed.pop(namespace, None)
        self.changed(namespace)

    def backend(self, deployment: Mapping[str, Any]) -> bool:
        """Whether some Service selecting the Deployment's pods is named by a route."""
        namespace = str((deployment.get("metadata") or {}).get("namespace") or "")
        routed = self.routed.get(namespace)
        if not routed:
            return False
        return l7_backend(namespace, template_labels(deployment), self.services(namespace), routed)
