"""kopf handlers: each passes what it observed to the fleet and returns."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

import kopf

from lameduck_operator.logic.l7_backends import GATEWAY_GROUP, GATEWAY_VERSION, INGRESS_GROUP, RouteKind
from lameduck_operator.names import GROUP, PLURAL_CLUSTER, PLURAL_NAMESPACED, REPORT_SELECTOR, VERSION
from lameduck_operator.ports import one_line
from lameduck_operator.runtime import Runtime

EVENTS = ("", "v1", "events")
LIST_PAGE_SIZE = 100
WORKER_IDLE_SECONDS = 0.5
# A start that failed (the API server unreachable, mostly) is tried again this soon, not after
# kopf's default minute: a replica restarted during an outage is ready soon after it ends.
START_RETRY_SECONDS = 5


class NoDiffBase(kopf.DiffBaseStorage):
    """The diff base kopf builds at every event for on.create/on.update handlers: lameduck has
    event handlers only, which never read it, and building it deep-copies the object twice
    (12% of the event loop's time in a burst of 772 applies, by py-spy)."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def build_registry(runtime: Runtime) -> kopf.OperatorRegistry:
    """Handlers bound to one runtime, in a registry of their own (nothing registers at import)."""
    registry = kopf.OperatorRegistry()

    def fleet_of() -> Any:
        if runtime.fleet is None:
            raise kopf.TemporaryError("operator not started", delay=1)
        return runtime.fleet

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In-cluster service account first, else the kubeconfig: as the API client does."""
        info = kopf.login_with_service_account(**kwargs)
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        if info is not None and host:
            # Address the API server as the pod's environment does, not by kubernetes.default.svc:
            # that needs cluster DNS, which not every cluster runs.
            host = f"[{host}]" if ":" in host else host
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            return dataclasses.replace(info, server=f"https://{host}:{port}")
        return info or kopf.login_with_kubeconfig(**kwargs)

    def gate_of() -> Any:
        if runtime.gate is None:
            raise kopf.TemporaryError("operator not started", delay=1)
        return runtime.gate

    def shutdown_of() -> Any:
        if runtime.shutdown is None:
            raise kopf.TemporaryError("operator not started", delay=1)
        return runtime.shutdown

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        # lameduck posts its own Events; kopf would post one per log line.
        settings.posting.enabled = False
        # Of all Events, only the sidecars' hold reports are asked for (server-side).
        settings.watching.label_selectors[EVENTS] = REPORT_SELECTOR
        settings.watching.server_timeout = 270
        # Memory at fleet scale: lists come in pages, not as one body of every object; kopf's
        # per-object worker holds the object's last body until it idles out, so it idles out soon.
        settings.watching.chunk_size = LIST_PAGE_SIZE
        settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
        settings.persistence.diffbase_storage = NoDiffBase()
        settings.watching.client_timeout = 300
        try:
            await runtime.start()
        except Exception as err:
            raise kopf.TemporaryError(f"could not start: {one_line(err)}", delay=START_RETRY_SECONDS) from err

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await runtime.stop()

    @kopf.on.event(GROUP, VERSION, PLURAL_NAMESPACED, registry=registry)
    async def policy_event(event: kopf.RawEvent, **_: Any) -> None:
        fleet_of().policy_seen(event["object"], deleted=event["type"] == "DELETED")

    @kopf.on.event(GROUP, VERSION, PLURAL_CLUSTER, registry=registry)
    async def cluster_policy_event(event: kopf.RawEvent, **_: Any) -> None:
        fleet_of().policy_seen(event["object"], deleted=event["type"] == "DELETED")

    @kopf.on.event("", "v1", "namespaces", registry=registry)
    async def namespace_event(event: kopf.RawEvent, **_: Any) -> None:
        fleet_of().namespace_seen(event["object"], deleted=event["type"] == "DELETED")
        shutdown_of().namespace_seen(event["object"], deleted=event["type"] == "DELETED")

    # Deployments and Pods are watched by the runtime's own informers (k8s/informer.py).

    # The sidecars' hold reports: Events labelled lameduck.dev/report=hold.
    @kopf.on.event(*EVENTS, registry=registry)
    async def hold_report_event(event: kopf.RawEvent, **_: Any) -> None:
        shutdown_of().report_seen(event["object"], deleted=event["type"] == "DELETED")

    @kopf.on.event("", "v1", "services", registry=registry)
    async def service_event(event: kopf.RawEvent, **_: Any) -> None:
        body = event["object"]
        gate_of().service_seen(body, deleted=event["type"] == "DELETED")
        # After the gate's index, which the L7 routes read the Services from.
        meta = body.get("metadata") or {}
        fleet_of().l7.service_seen(str(meta.get("namespace") or ""), str(meta.get("name") or ""))

    @kopf.on.event("discovery.k8s.io", "v1", "endpointslices", registry=registry)
    async def endpoint_slice_event(event: kopf.RawEvent, **_: Any) -> None:
        gate_of().slice_seen(event["object"], deleted=event["type"] == "DELETED")

    # The L7 routes, for the starting budget of a Deployment with no history (l7_routes.py). A
    # resource the cluster does not serve (Gateway API's CRDs not installed) is not watched:
    # kopf logs it once and starts its watch when the CRD appears.
    def route_seen(event: kopf.RawEvent, kind: RouteKind) -> None:
        fleet_of().l7.route_seen(event["object"], kind, deleted=event["type"] == "DELETED")

    @kopf.on.event(INGRESS_GROUP, "v1", "ingresses", registry=registry)
    async def ingress_event(event: kopf.RawEvent, **_: Any) -> None:
        route_seen(event, RouteKind.INGRESS)

    @kopf.on.event(GATEWAY_GROUP, GATEWAY_VERSION, "httproutes", registry=registry)
    async def http_route_event(event: kopf.RawEvent, **_: Any) -> None:
        route_seen(event, RouteKind.HTTP_ROUTE)

    @kopf.on.event(GATEWAY_GROUP, GATEWAY_VERSION, "grpcroutes", registry=registry)
    async def grpc_route_event(event: kopf.RawEvent, **_: Any) -> None:
        route_seen(event, RouteKind.GRPC_ROUTE)

    return registry
