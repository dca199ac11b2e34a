"""A simulated external (cloud) load balancer on this machine, for the rollout benchmark's
`external-lb` condition: an L4 proxy on 127.0.0.1 that sends each new client connection to a
pod IP it learned from the Service's EndpointSlices, and keeps sending new connections to a
pod for `deregistration_delay` after its endpoint turned not ready, as an AWS NLB/ALB with IP
targets or a GCP NEG does while its deregistration propagates. Which target, when, and the
counters: bench/lb_targets.py (pure).

    host = LbHost(api_client, "lameduck-bench", LbSettings(registration_delay=2, deregistration_delay=45))
    host.start()
    port = host.add("demo-lameduck")  # a listener on 127.0.0.1:<port> for that Service
    ...                               # load to http://127.0.0.1:<port>/
    host.lb("demo-lameduck").take_counters().as_dict()
    host.stop()

    python -m bench.external_lb --kubeconfig K --namespace lameduck-bench --service demo-lameduck

Like an NLB it relays bytes both ways and does not retry: when the connection to the target it
picked fails (refused: the app has exited; unreachable or timed out: the pod is gone), it
resets the client's connection, so the client sees the error a real LB's client would. Pod IPs
must be reachable from this machine (they are on the local cluster, hack/cluster.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes import client, config, watch

from bench.dataplane import View, slice_endpoints
from bench.lb_targets import LbCounters, LbSettings, Phase, Target, TargetTable, connect_failure
from harness.kube import wait_until

LOOPBACK = "127.0.0.1"
READ_SIZE = 65536
# Each relayed connection takes two descriptors in the benchmark's process, beside the load
# generator's own; while a gone pod's connects time out they pile up for the timeout.
WANTED_OPEN_FILES = 16384


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST, as a connection to a target that failed reaches its client."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Copy one direction until EOF, then half-close the other side as TCP does. True if it
    ended in an error (a reset) rather than an EOF."""
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        return True
    return False


async def relay(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target_reader: asyncio.StreamReader,
    target_writer: asyncio.StreamWriter,
) -> bool:
    """Both directions until both end; a reset on either side resets the other. True if reset."""
    up = asyncio.create_task(_pump(client_reader, target_writer))
    down = asyncio.create_task(_pump(target_reader, client_writer))
    try:
        pending: set[asyncio.Task[bool]] = {up, down}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(task.result() for task in done):
                _reset(client_writer)
                _reset(target_writer)
                return True
        return False
    finally:
        for task in (up, down):
            task.cancel()


class ExternalLb:
    """One listener in front of one Service's targets. observe(), rotation(), settled() and
    take_counters() may be called from any thread."""

    def __init__(
        self, settings: LbSettings, connect_timeout: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.table = TargetTable(settings)
        self.connect_timeout = connect_timeout
        self.clock = clock
        self.counters = LbCounters()
        self._lock = threading.Lock()  # the table and counters, between the loop and the watch's thread
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str = LOOPBACK, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- what the watch and the benchmark call ---------------------------------------------

    def observe(self, ready: Iterable[Target]) -> None:
        with self._lock:
            self.table.observe(self.clock(), ready)

    def rotation(self) -> tuple[Target, ...]:
        with self._lock:
            return self.table.rotation(self.clock())

    def view(self) -> View:
        """The targets in rotation, for a bench.dataplane.Sampler (addresses as the slices' view writes them)."""
        return View(tuple(t.address for t in self.rotation()))

    def phases(self) -> dict[Target, Phase]:
        with self._lock:
            return self.table.phases(self.clock())

    def settled(self) -> bool:
        with self._lock:
            return self.table.settled(self.clock())

    def take_counters(self) -> LbCounters:
        """The counters since the last call, and zero them."""
        with self._lock:
            taken, self.counters = self.counters, LbCounters()
        return taken

    # -- one client connection ---------------------------------------------------------------

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._proxy(client_reader, client_writer)
        finally:
            self._handlers.discard(task)
            client_writer.close()

    async def _proxy(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.counters.accepted += 1
            pick = self.table.pick(self.clock())
            if pick is None:
                self.counters.no_target += 1
            else:
                self.counters.connections[pick.target] += 1
                if pick.draining:
                    self.counters.while_draining[pick.target] += 1
        if pick is None:
            _reset(client_writer)
            return
        try:
            target_reader, target_writer = await asyncio.wait_for(
                asyncio.open_connection(pick.target.ip, pick.target.port), self.connect_timeout
            )
        except OSError as err:  # TimeoutError is an OSError too
            with self._lock:
                self.counters.connect_failures[(pick.target, connect_failure(err))] += 1
            _reset(client_writer)  # no retry on another target: the client sees the failure
            return
        try:
            if await relay(client_reader, client_writer, target_reader, target_writer):
                with self._lock:
                    self.counters.resets += 1
        finally:
            target_writer.close()


def ready_targets(slices: list[dict[str, Any]], port_name: str) -> set[Target]:
    """The ready endpoints of a Service's EndpointSlices (API JSON), on the port named port_name."""
    return {
        Target.of(e.ip, e.port) for e in slice_endpoints(slices, port_name) if e.ready and e.port is not None and e.ip
    }


class SliceWatch:
    """One Service's EndpointSlices, listed then watched in a thread of its own; every change
    hands the ready targets to `publish`."""

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        service: str,
        publish: Callable[[set[Target]], None],
        port_name: str = "http",
    ) -> None:
        self.discovery = client.DiscoveryV1Api(api_client)
        self.namespace, self.port_name, self.publish = namespace, port_name, publish
        self.selector = f"kubernetes.io/service-name={service}"
        self._slices: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lb-slices-{service}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._list_and_watch()
            except Exception as err:  # an expired or broken watch: list again
                print(f"  (LB slice watch restarted: {type(err).__name__} {getattr(err, 'status', '')})", flush=True)
                self._stop.wait(0.5)

    def _list_and_watch(self) -> None:
        # a fresh list on every start, so a slice deleted while no watch ran is forgotten
        listed: Any = self.discovery.list_namespaced_endpoint_slice(
            self.namespace, label_selector=self.selector, _preload_content=False, _request_timeout=10
        )
        body = json.loads(listed.data)
        self._slices = {item["metadata"]["name"]: item for item in body["items"]}
        self.publish(ready_targets(list(self._slices.values()), self.port_name))
        stream = watch.Watch()
        for event in stream.stream(
            self.discovery.list_namespaced_endpoint_slice,
            self.namespace,
            label_selector=self.selector,
            resource_version=body["metadata"]["resourceVersion"],
            timeout_seconds=30,
        ):
            if self._stop.is_set():
                stream.stop()
                return
            kind, item = event["type"], event["raw_object"]
            if kind == "ERROR":
                return  # e.g. 410 Gone: list again
            name = item["metadata"]["name"]
            if kind == "DELETED":
                self._slices.pop(name, None)
            else:
                self._slices[name] = item
            self.publish(ready_targets(list(self._slices.values()), self.port_name))


class LbHost:
    """Listeners of the simulated LB, one per Service, on an event loop in a thread of their
    own, so neither the load generator's loop nor the LB's waits on the other's work."""

    def __init__(
        self, api_client: client.ApiClient, namespace: str, settings: LbSettings, connect_timeout: float = 2.0
    ) -> None:
        self.api_client, self.namespace = api_client, namespace
        self.settings, self.connect_timeout = settings, connect_timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="external-lb", daemon=True)
        self._lbs: dict[str, ExternalLb] = {}
        self._watches: list[SliceWatch] = []

    def start(self) -> LbHost:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < WANTED_OPEN_FILES:
            raised = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, WANTED_OPEN_FILES)
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, raised), hard))
        self._thread.start()
        return self

    def add(self, service: str, port_name: str = "http") -> int:
        """A listener on 127.0.0.1 for `service`, fed by a watch of its EndpointSlices; its port."""
        lb = ExternalLb(self.settings, self.connect_timeout)
        port = asyncio.run_coroutine_threadsafe(lb.start(), self.loop).result(timeout=10)
        self._lbs[service] = lb
        slices = SliceWatch(self.api_client, self.namespace, service, lb.observe, port_name)
        slices.start()
        self._watches.append(slices)
        return port

    def lb(self, service: str) -> ExternalLb:
        return self._lbs[service]

    def wait_settled(self, service: str) -> None:
        """Until the LB of `service` has deregistered the pods that left and registered the
        new ones (a benchmark run must not start with connections to pods already gone)."""
        limit = self.settings.registration_delay + self.settings.deregistration_delay + 120
        wait_until(self.lb(service).settled, limit, f"the external LB of {service} sends only to ready pods", 0.5)

    def record(self) -> dict[str, Any]:
        """Its settings, for a result file."""
        return {
            "registration_delay": self.settings.registration_delay,
            "deregistration_delay": self.settings.deregistration_delay,
            "connect_timeout": self.connect_timeout,
            "listen": LOOPBACK,
        }

    def stop(self) -> None:
        for slices in self._watches:
            slices.stop()
        for lb in self._lbs.values():
            asyncio.run_coroutine_threadsafe(lb.close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--port-name", default="http", help="the Service's port, as named in its EndpointSlices")
    parser.add_argument("--listen-port", type=int, default=0, help="on 127.0.0.1 (default: a free one)")
    parser.add_argument("--registration-delay", type=float, default=LbSettings().registration_delay)
    parser.add_argument("--deregistration-delay", type=float, default=LbSettings().deregistration_delay)
    parser.add_argument("--connect-timeout", type=float, default=2.0)
    args = parser.parse_args()
    settings = LbSettings(args.registration_delay, args.deregistration_delay)
    api_client = config.new_client_from_config(config_file=args.kubeconfig)

    async def serve() -> None:
        lb = ExternalLb(settings, args.connect_timeout)
        port = await lb.start(LOOPBACK, args.listen_port)
        slices = SliceWatch(api_client, args.namespace, args.service, lb.observe, args.port_name)
        slices.start()
        print(f"listening on {LOOPBACK}:{port}; counters every 5 s", flush=True)
        try:
            while True:
                await asyncio.sleep(5)
                phases = {t.address: p.value for t, p in lb.phases().items()}
                print(json.dumps({"targets": phases, **lb.take_counters().as_dict()}), flush=True)
        finally:
            slices.stop()
            await lb.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
