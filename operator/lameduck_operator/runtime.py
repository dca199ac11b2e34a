"""Start-up and shutdown of the operator's parts: API client, fleet loops, HTTP endpoints."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiohttp import web
from kubernetes import client
from kubernetes import config as kube_config
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lameduck_operator.config import OperatorConfig
from lameduck_operator.fleet import Fleet
from lameduck_operator.k8s.api import KubeApi
from lameduck_operator.metrics import OperatorMetrics

log = logging.getLogger("lameduck.operator")


def kube_api_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the current kubeconfig."""
    configuration = client.Configuration()
    try:
        kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kube_config.ConfigException:
        kube_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


@dataclass
class Runtime:
    config: OperatorConfig
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    fleet: Fleet | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    http: web.AppRunner | None = None

    async def start(self) -> None:
        api = KubeApi(kube_api_client())
        fleet = Fleet(self.config.settings, api, self.metrics)
        self.fleet = fleet
        await self._serve_http()
        # Policies and namespaces are known before any Deployment is judged, so a
        # Deployment is never reverted for want of a policy that simply was not listed yet.
        for policy in await asyncio.to_thread(api.list_policies):
            fleet.policy_seen(policy)
        for namespace in await asyncio.to_thread(api.list_namespaces):
            fleet.namespace_seen(namespace)
        fleet.sidecar_access = await asyncio.to_thread(api.list_sidecar_access)
        fleet.recheck_access(fleet.sidecar_access)
        fleet.synced.set()
        self.tasks = [
            asyncio.create_task(fleet.run(), name="lameduck-reconcile"),
            asyncio.create_task(fleet.publish_forever(self.config.status_interval_seconds), name="lameduck-status"),
        ]
        log.info(
            "lameduck operator started: %d policies, sidecar %s (%s), excluded namespaces %s",
            len(fleet.policies),
            self.config.settings.sidecar.image,
            "native" if self.config.settings.sidecar.native else "classic",
            ",".join(sorted(self.config.settings.excluded_namespaces)),
        )

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.cleanup()

    def healthy(self) -> bool:
        return bool(self.tasks) and not any(t.done() for t in self.tasks)

    async def _serve_http(self) -> None:
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        async def healthz(_: web.Request) -> web.Response:
            ok = self.fleet is not None and (not self.fleet.synced.is_set() or self.healthy())
            return web.Response(status=200 if ok else 500, text="ok\n" if ok else "reconcile loop stopped\n")

        async def readyz(_: web.Request) -> web.Response:
            ready = self.fleet is not None and self.fleet.synced.is_set()
            return web.Response(status=200 if ready else 503, text="ready\n" if ready else "syncing\n")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        self.http = web.AppRunner(app, access_log=None)
        await self.http.setup()
        # All interfaces: kubelet probes and Prometheus reach the pod IP.
        await web.TCPSite(self.http, "0.0.0.0", self.config.http_port).start()
