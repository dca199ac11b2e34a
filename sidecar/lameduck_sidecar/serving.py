"""The sidecar from the first call to the hold on: the hold's machinery (asyncio, the API client,
the kernel's view) loaded, the port served on asyncio with the answers idle.py gave (endpoint.py)
and a hold for each hold call, until the sidecar's own SIGTERM; then what before_exit waits for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import time
from collections.abc import Callable, Collection
from http import HTTPStatus
from pathlib import Path
from typing import Any

from lameduck_sidecar.calls import READ_INTERVAL
from lameduck_sidecar.config import SidecarConfig
from lameduck_sidecar.endpoint import (
    IDLE_SECONDS,
    READ_SIZE,
    Connection,
    HoldCall,
    OwnConnections,
    Request,
    Response,
    answer,
    error,
    json_response,
)
from lameduck_sidecar.holder import Holder
from lameduck_sidecar.idle import Handover
from lameduck_sidecar.k8s import NamespaceApi
from lameduck_sidecar.metrics import SidecarMetrics
from lameduck_sidecar.sockdiag import Address
from lameduck_sidecar.tcp import KernelView
from lameduck_sidecar.traffic import Snapshot, Traffic, TrafficCounter

# How long, at exit, a call being answered may still take (aiohttp's runner's shutdown_timeout).
SHUTDOWN_SECONDS = 60.0
# Beyond the report's own api_timeout: the watch after release notices the signal at its next poll.
REPORT_WAIT_MARGIN = 0.5
log = logging.getLogger("lameduck.sidecar")


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


async def before_exit(holder: Holder, *, native: bool) -> None:
    """On the sidecar's own SIGTERM. A native sidecar gets it only once the app containers
    have exited: its watch after release ends at once and it posts the hold report. A classic
    sidecar gets it together with the app: it first finishes the holds the app may still be
    waiting on, then watches until the app no longer listens (at most drainTimeout) and posts.
    A post that failed is retried (report_retry.py) at most until the pod's grace period ends."""
    holder.terminate()
    settings = holder.config.hold
    waited_on = holder.waited_on()  # the hold, or fallback holds
    if not native and waited_on:
        # a hold may have taken a learned maxHold up to the cap (learned.max_hold_in_force)
        await asyncio.wait(waited_on, timeout=max(settings.max_hold, settings.max_hold_cap or 0.0))
    if holder.report_task is not None:  # the hold report is posted before the sidecar exits
        watching = 0.0 if native else settings.drain_timeout
        timeout = watching + settings.api_timeout
        ends_by = None if holder.reporter is None else holder.reporter.posting_ends_by()
        if ends_by is not None:  # its retries end in time on their own
            timeout = max(timeout, ends_by - holder.clock())
        await asyncio.wait({holder.report_task}, timeout=timeout + REPORT_WAIT_MARGIN)


class HoldServer:
    """The port on asyncio: each connection's requests in order, a hold call answered by the hold."""

    def __init__(self, holder: Holder, metrics: SidecarMetrics, own: OwnConnections) -> None:
        self.holder = holder
        self.metrics = metrics
        self.own = own
        self.servers: list[asyncio.Server] = []
        self.connections: set[asyncio.Task[None]] = set()
        self.answering: set[asyncio.Task[None]] = set()  # between a request and its answer's end
        self.closing = False

    async def listen(self, listeners: list[socket.socket]) -> None:
        for sock in listeners:
            self.servers.append(await asyncio.start_server(self._accepted, sock=sock))

    async def adopt(self, sock: socket.socket, http: Connection, outgoing: bytes, call: HoldCall | None) -> None:
        """A connection idle.py accepted: what it had still to send, then its call, then the rest."""
        reader, writer = await asyncio.open_connection(sock=sock)
        task = asyncio.create_task(self._serve(reader, writer, http, outgoing, call))
        self.connections.add(task)
        task.add_done_callback(self.connections.discard)
        if call is not None:  # being answered from now on, even before the task first runs
            self.answering.add(task)

    async def close(self) -> None:
        """Stop listening, drop the connections waiting for a request, give those answering one
        up to SHUTDOWN_SECONDS (as aiohttp's runner did), then drop them too."""
        self.closing = True
        for server in self.servers:
            server.close()
        for task in self.connections - self.answering:
            task.cancel()
        if self.answering:
            await asyncio.wait(set(self.answering), timeout=SHUTDOWN_SECONDS)
        for task in self.connections:
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.own.count += 1
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        task.add_done_callback(self.connections.discard)
        if self.closing:
            writer.close()
            return
        await self._serve(reader, writer, Connection(), b"", None)

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        http: Connection,
        outgoing: bytes,
        call: HoldCall | None,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            writer.write(outgoing)
            if call is not None:
                self.answering.add(task)
                writer.write(http.respond(await self._hold(call)))
                await writer.drain()
                self.answering.discard(task)
            while not http.closed and not self.closing:
                item = http.next_request()
                if item is None:
                    if http.closed:
                        break
                    try:
                        async with asyncio.timeout(IDLE_SECONDS):
                            data = await reader.read(READ_SIZE)
                    except TimeoutError:
                        break
                    http.receive(data)
                    continue
                self.answering.add(task)
                response = await self._answer(item) if isinstance(item, Request) else item
                writer.write(http.respond(response))
                await writer.drain()
                self.answering.discard(task)
        except OSError:  # the client went away
            pass
        finally:
            self.answering.discard(task)
            writer.close()

    async def _answer(self, request: Request) -> Response:
        found = answer(request, self.metrics)
        return found if isinstance(found, Response) else await self._hold(found)

    async def _hold(self, call: HoldCall) -> Response:
        try:
            result = await self.holder.hold(call.container)
        except Exception:  # a bug of ours: the caller gets a 500, as from aiohttp before
            log.exception("a call to the hold failed")
            return error(HTTPStatus.INTERNAL_SERVER_ERROR)
        body: dict[str, Any] = {
            "outcome": result.outcome.value,
            "seconds": round(result.total, 3),
            "stage1": result.stage1,
            "stage2": result.stage2,
        }
        return json_response(body)


async def serve(config: SidecarConfig, handover: Handover, node: Collection[Address]) -> None:
    """From the hand-over to the sidecar's exit."""
    metrics, own = handover.metrics, handover.own
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if handover.signals.received:  # between the idle loop's end and these handlers
        stop.set()
    view = KernelView(config.port, own, node, Path(config.proc_net))
    holder = holder_for(config, metrics, view.snapshot, traffic_for(config, node))
    server = HoldServer(holder, metrics, own)
    caller = handover.caller
    await server.adopt(caller.sock, caller.http, bytes(caller.outgoing), handover.call)
    for client in handover.clients:
        if client is not caller:
            await server.adopt(client.sock, client.http, bytes(client.outgoing), None)
    await server.listen(handover.listeners)
    log.info(
        json.dumps(
            {
                "event": "holds_served",
                "pod": config.pod_name,
                "loaded_seconds": round(time.monotonic() - handover.at, 3),
            }
        )
    )
    await stop.wait()
    await before_exit(holder, native=config.native)
    await server.close()


def run(config: SidecarConfig, handover: Handover, node: Collection[Address]) -> None:
    asyncio.run(serve(config, handover, node))
