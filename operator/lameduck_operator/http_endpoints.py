"""The operator's own HTTP endpoints on every replica: /metrics for Prometheus, /healthz and
/readyz for kubelet's probes."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lameduck_operator.metrics import OperatorMetrics


async def serve_http(
    metrics: OperatorMetrics, port: int, *, healthy: Callable[[], bool], ready: Callable[[], bool]
) -> web.AppRunner:
    """Serve on all interfaces (kubelet probes and Prometheus reach the pod IP); the runner, to clean up."""

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok = healthy()
        return web.Response(status=200 if ok else 500, text="ok\n" if ok else "reconcile loop stopped\n")

    async def readyz(_: web.Request) -> web.Response:
        is_ready = ready()
        return web.Response(status=200 if is_ready else 503, text="ready\n" if is_ready else "syncing\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
