"""The L7 routes listed at start-up: Ingresses, and HTTPRoutes and GRPCRoutes where the cluster
serves Gateway API (a 404 for their resource means its CRD is not installed: none)."""

from __future__ import annotations

from functools import partial
from typing import Any

from kubernetes.client.exceptions import ApiException

from lameduck_operator.k8s.clients import ApiClients
from lameduck_operator.logic.l7_backends import GATEWAY_GROUP, GATEWAY_VERSION, RouteKind

GATEWAY_PLURALS = {RouteKind.HTTP_ROUTE: "httproutes", RouteKind.GRPC_ROUTE: "grpcroutes"}
NOT_FOUND = 404


class RouteLists(ApiClients):
    def list_l7_routes(self) -> list[tuple[RouteKind, dict[str, Any]]]:
        """Every route, with its kind."""
        found = [(RouteKind.INGRESS, item) for item in self._list_all(self.networking.list_ingress_for_all_namespaces)]
        for kind, plural in GATEWAY_PLURALS.items():
            lister = partial(self.custom.list_cluster_custom_object, GATEWAY_GROUP, GATEWAY_VERSION, plural)
            try:
                found += [(kind, item) for item in self._list_all(lister)]
            except ApiException as err:
                if err.status != NOT_FOUND:
                    raise
        return found
