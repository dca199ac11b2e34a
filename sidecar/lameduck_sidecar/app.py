"""`lameduck-sidecar`: the HTTP endpoint the app containers' preStop calls."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lameduck_sidecar.config import ConfigError, SidecarConfig, load_config
from lameduck_sidecar.holder import Connections, Holder
from lameduck_sidecar.k8s import NamespaceApi
from lameduck_sidecar.metrics import SidecarMetrics
from lameduck_sidecar.tcp import ConnectionTracker

HOLDER = web.AppKey("holder", Holder)
METRICS = web.AppKey("metrics", SidecarMetrics)


class ServedCount:
    """Requests the sidecar served: connections to the pod that are not the app's traffic."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.count += 1
        response: web.StreamResponse = await handler(request)
        return response


async def hold(request: web.Request) -> web.Response:
    container = request.match_info["container"]
    result = await request.app[HOLDER].hold(container)
    body = {
        "outcome": result.outcome.value,
        "seconds": round(result.total, 3),
        "stage1": result.stage1,
        "stage2": result.stage2,
    }
    return web.json_response(body)


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def metrics(request: web.Request) -> web.Response:
    payload = generate_latest(request.app[METRICS].registry)
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})


def holder_for(
    config: SidecarConfig, sidecar_metrics: SidecarMetrics, connections: Connections, served: ServedCount | None = None
) -> Holder:
    """The pod's hold runner, asking the API (when it has an address) only while holding."""
    api = (
        NamespaceApi(
            config.api_url,
            config.namespace,
            config.pod_name,
            config.token_file,
            config.ca_file,
            on_request=sidecar_metrics.api_requests.inc,
        )
        if config.api_url
        else None
    )
    return Holder(
        config,
        sidecar_metrics,
        connections,
        None if api is None else api.slices,
        own_connections=served if served is not None else ServedCount(),
        own_pod=None if api is None else api.own_pod,
    )


def build_app(
    config: SidecarConfig, holder: Holder, sidecar_metrics: SidecarMetrics, served: ServedCount | None = None
) -> web.Application:
    app = web.Application(middlewares=[served.middleware] if served else [])
    app[HOLDER] = holder
    app[METRICS] = sidecar_metrics
    app.router.add_get("/hold/{container}", hold)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def before_exit(holder: Holder, *, native: bool) -> None:
    """On the sidecar's own SIGTERM. A native sidecar gets it only once the app containers
    have exited: nothing waits on it, so it exits at once. A classic sidecar gets it together
    with the app: it first finishes the hold the app may still be waiting on."""
    if not native and holder.holding and holder.task is not None:
        await asyncio.wait({holder.task}, timeout=holder.config.hold.max_hold)


async def serve(config: SidecarConfig) -> None:
    sidecar_metrics = SidecarMetrics()
    served = ServedCount()
    holder = holder_for(
        config,
        sidecar_metrics,
        ConnectionTracker(config.app_ports, config.port, Path(os.environ.get("LAMEDUCK_PROC_NET", "/proc/net"))),
        served,
    )
    runner = web.AppRunner(build_app(config, holder, sidecar_metrics, served), access_log=None)
    await runner.setup()
    # All interfaces: kubelet calls the preStop hook on the pod IP.
    await web.TCPSite(runner, "0.0.0.0", config.port).start()
    logging.getLogger("lameduck.sidecar").info(
        json.dumps({"event": "start", "pod": config.pod_name, "port": config.port, "native": config.native})
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await before_exit(holder, native=config.native)
    await runner.cleanup()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        config = load_config(os.environ)
    except ConfigError as err:
        print(f"lameduck-sidecar: {err}", file=sys.stderr)
        return 2
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
