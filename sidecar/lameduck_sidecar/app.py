"""`lameduck-sidecar`: the HTTP endpoint the app containers' preStop calls."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Collection
from pathlib import Path

from aiohttp import web

from lameduck_sidecar.calls import READ_INTERVAL, Answer, valid_container
from lameduck_sidecar.config import ConfigError, SidecarConfig, load_config
from lameduck_sidecar.holder import Holder
from lameduck_sidecar.k8s import NamespaceApi
from lameduck_sidecar.metrics import CONTENT_TYPE, SidecarMetrics
from lameduck_sidecar.names import HOLD_ROUTE
from lameduck_sidecar.sockdiag import Address
from lameduck_sidecar.tcp import KernelView, node_addresses
from lameduck_sidecar.traffic import Snapshot, Traffic, TrafficCounter

HOLDER = web.AppKey("holder", Holder)
# Beyond the report's own api_timeout: the watch after release notices the signal at its next poll.
REPORT_WAIT_MARGIN = 0.5
METRICS = web.AppKey("metrics", SidecarMetrics)


class OwnConnections:
    """Connections the sidecar's own server accepted: the pod's connections that are not
    the app's traffic (kubelet's preStop calls and probes of the sidecar, scrapes)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count

    def counting(self, factory: Callable[[], asyncio.BaseProtocol]) -> Callable[[], asyncio.BaseProtocol]:
        def protocol() -> asyncio.BaseProtocol:
            self.count += 1
            return factory()

        return protocol


def listening_sockets(port: int) -> list[socket.socket]:
    """The sidecar's port on every address of both families the pod has: kubelet calls the
    preStop hook and the readiness probe on the pod IP, IPv4 or IPv6. A family the pod lacks
    is left out; none at all is an error."""
    found: list[socket.socket] = []
    errors = []
    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as err:
            errors.append(f"{address}: {err}")
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            errors.append(f"{address}: {err}")
            continue
        found.append(sock)
    if not found:
        raise OSError(f"cannot listen on port {port}: " + "; ".join(errors))
    return found


async def hold(request: web.Request) -> web.Response:
    container = request.match_info["container"]
    if not valid_container(container):  # no container has that name: refused before the API is asked
        request.app[METRICS].calls.labels(answer=Answer.INVALID_CONTAINER.value).inc()
        return web.json_response({"error": Answer.INVALID_CONTAINER.value}, status=web.HTTPBadRequest.status_code)
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
    return web.Response(body=request.app[METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE})


def traffic_for(config: SidecarConfig, node: Collection[Address]) -> Callable[[], TrafficCounter]:
    return lambda: TrafficCounter(
        config.app_ports, config.port, config.probes, frozenset(node), config.hold.quiet_period
    )


def holder_for(
    config: SidecarConfig,
    sidecar_metrics: SidecarMetrics,
    snapshot: Callable[[], Snapshot],
    traffic: Callable[[], Traffic],
    *,
    read_interval: float = READ_INTERVAL,
) -> Holder:
    """The pod's hold runner, asking the API (when it has an address) only when a call comes."""
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
        snapshot,
        traffic,
        None if api is None else api.slices,
        own_pod=None if api is None else api.own_pod,
        post_event=None if api is None else api.post_event,
        learned=None if api is None else api.learned,
        read_interval=read_interval,
    )


def build_app(holder: Holder, sidecar_metrics: SidecarMetrics) -> web.Application:
    app = web.Application()
    app[HOLDER] = holder
    app[METRICS] = sidecar_metrics
    app.router.add_get(HOLD_ROUTE, hold)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def before_exit(holder: Holder, *, native: bool) -> None:
    """On the sidecar's own SIGTERM. A native sidecar gets it only once the app containers
    have exited: its watch after release ends at once and it posts the hold report. A classic
    sidecar gets it together with the app: it first finishes the holds the app may still be
    waiting on, then watches until the app no longer listens (at most drainTimeout) and posts."""
    holder.terminate()
    settings = holder.config.hold
    waited_on = holder.waited_on()  # the hold, or fallback holds
    if not native and waited_on:
        await asyncio.wait(waited_on, timeout=settings.max_hold)
    if holder.report_task is not None:  # the hold report is posted before the sidecar exits
        watching = 0.0 if native else settings.drain_timeout
        await asyncio.wait({holder.report_task}, timeout=watching + settings.api_timeout + REPORT_WAIT_MARGIN)


async def serve(config: SidecarConfig) -> None:
    sidecar_metrics = SidecarMetrics()
    own = OwnConnections()
    proc = Path(config.proc_net)
    node = node_addresses(config.host_ip, proc)
    view = KernelView(config.port, own, node, proc)
    holder = holder_for(config, sidecar_metrics, view.snapshot, traffic_for(config, node))
    runner = web.AppRunner(build_app(holder, sidecar_metrics), access_log=None)
    await runner.setup()
    assert runner.server is not None, "set up above"
    loop = asyncio.get_running_loop()
    sockets = listening_sockets(config.port)
    servers = [await loop.create_server(own.counting(runner.server), sock=sock) for sock in sockets]
    logging.getLogger("lameduck.sidecar").info(
        json.dumps(
            {
                "event": "start",
                "pod": config.pod_name,
                "port": config.port,
                "native": config.native,
                "listening": [str(s.getsockname()[0]) for s in sockets],
                "node_addresses": sorted(str(a) for a in node),
                "probes": [f"{p.port}:{p.period:g}" for p in config.probes],
            }
        )
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await before_exit(holder, native=config.native)
    for server in servers:
        server.close()
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
