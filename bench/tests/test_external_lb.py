"""The simulated external LB's proxying (bench/external_lb.py) with real sockets on loopback:
bytes both ways, round robin, a draining target still chosen, a refused or reset target reset
to the client (never retried elsewhere), and the EndpointSlices read into targets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import pytest

from bench import external_lb
from bench.external_lb import LOOPBACK, ExternalLb, ready_targets
from bench.lb_targets import ConnectFailure, LbSettings, Target

DEADLINE = 10.0  # seconds any step may take before the test fails; never a measured duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def serve(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]], host: str) -> int:
    server = await asyncio.start_server(handler, host, 0)
    SERVERS.append(server)
    return int(server.sockets[0].getsockname()[1])


SERVERS: list[asyncio.Server] = []


def echo_named(name: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """Says its name, then echoes until EOF, then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(name + b":")
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    return handle


async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One request, one answer, then close, as an HTTP server does with `Connection: close`."""
    await reader.read(1024)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    await writer.drain()
    writer.close()


async def reset_on_data(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.fixture
async def lb() -> AsyncIterator[ExternalLb]:
    clock = Clock()
    balancer = ExternalLb(LbSettings(registration_delay=2.0, deregistration_delay=45.0), 2.0, clock)
    await balancer.start()
    yield balancer
    await balancer.close()
    for server in SERVERS:
        server.close()
    SERVERS.clear()


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def register(lb: ExternalLb, *targets: Target) -> None:
    lb.observe(targets)
    assert isinstance(lb.clock, Clock)
    lb.clock.now += lb.table.settings.registration_delay


async def exchange(lb: ExternalLb, payload: bytes) -> bytes:
    """Connect through the LB, send, half-close, read everything back."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, lb.port), DEADLINE)
    try:
        writer.write(payload)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), DEADLINE)
    finally:
        writer.close()


async def refused_by_lb(lb: ExternalLb) -> BaseException | None:
    """What a client sees sending a request through the LB: the error, or None if it read an
    answer (any byte)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, lb.port), DEADLINE)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), DEADLINE)
    except ConnectionResetError as err:
        return err
    finally:
        writer.close()
    return None if data else EOFError()


async def eventually(check: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), DEADLINE)


async def test_relays_bytes_both_ways_and_half_closes() -> None:
    balancer = ExternalLb(LbSettings(registration_delay=0.0), 2.0)
    await balancer.start()
    try:
        port = await serve(echo_named(b"a"), LOOPBACK)
        balancer.observe({Target.of(LOOPBACK, port)})
        payload = bytes(range(256)) * 1000  # larger than one read
        assert await exchange(balancer, payload) == b"a:" + payload
        counters = balancer.take_counters()
        assert counters.accepted == 1
        assert counters.connections == {Target.of(LOOPBACK, port): 1}
        assert balancer.take_counters().accepted == 0  # taken counters start again from zero
    finally:
        await balancer.close()
        for server in SERVERS:
            server.close()
        SERVERS.clear()


async def test_new_connections_go_round_robin(lb: ExternalLb) -> None:
    a = Target.of(LOOPBACK, await serve(echo_named(b"a"), LOOPBACK))
    b = Target.of(LOOPBACK, await serve(echo_named(b"b"), LOOPBACK))
    register(lb, a, b)
    first, second = sorted([a, b])
    names = {a: b"a:", b: b"b:"}
    answers = [await exchange(lb, b"") for _ in range(4)]
    assert answers == [names[first], names[second], names[first], names[second]]
    assert lb.take_counters().connections == {a: 2, b: 2}


async def test_a_target_not_yet_registered_takes_nothing(lb: ExternalLb) -> None:
    a = Target.of(LOOPBACK, await serve(echo_named(b"a"), LOOPBACK))
    lb.observe({a})  # registration delay not passed
    assert isinstance(await refused_by_lb(lb), ConnectionResetError)
    assert lb.take_counters().no_target == 1


async def test_a_draining_target_still_takes_new_connections_until_deregistered(lb: ExternalLb) -> None:
    a = Target.of(LOOPBACK, await serve(echo_named(b"a"), LOOPBACK))
    register(lb, a)
    lb.observe(set())  # its endpoint turned not ready
    assert isinstance(lb.clock, Clock)
    lb.clock.now += 44.0
    assert await exchange(lb, b"x") == b"a:x"
    counters = lb.take_counters()
    assert counters.while_draining == {a: 1}
    lb.clock.now += 1.0  # the deregistration delay has passed
    assert isinstance(await refused_by_lb(lb), ConnectionResetError)
    assert lb.take_counters().no_target == 1


async def test_a_refused_connect_resets_the_client_and_is_not_retried(lb: ExternalLb) -> None:
    gone = Target.of(LOOPBACK, free_port())
    alive = Target.of(LOOPBACK, await serve(answer_once, LOOPBACK))
    register(lb, gone, alive)
    seen = [await refused_by_lb(lb), await refused_by_lb(lb)]  # one connection to each, round robin
    assert sum(isinstance(e, ConnectionResetError) for e in seen) == 1
    assert seen.count(None) == 1
    counters = lb.take_counters()
    assert counters.connect_failures == {(gone, ConnectFailure.REFUSED): 1}
    assert counters.connections == {gone: 1, alive: 1}  # the refused one was not sent on to `alive`


async def test_a_reset_from_the_target_resets_the_client(lb: ExternalLb) -> None:
    target = Target.of(LOOPBACK, await serve(reset_on_data, LOOPBACK))
    register(lb, target)
    assert isinstance(await refused_by_lb(lb), ConnectionResetError)
    await eventually(lambda: lb.counters.resets == 1)


def ipv6_loopback() -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        return True
    return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
async def test_relays_to_an_ipv6_target(lb: ExternalLb) -> None:
    target = Target.of("0:0:0:0:0:0:0:1", await serve(echo_named(b"six"), "::1"))
    register(lb, target)
    assert await exchange(lb, b"hello") == b"six:hello"
    assert lb.take_counters().connections == {Target.of("::1", target.port): 1}


def test_ready_targets_from_endpoint_slices() -> None:
    slices: list[dict[str, Any]] = [
        {
            "addressType": "IPv4",
            "ports": [{"name": "metrics", "port": 9090}, {"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": False, "serving": True, "terminating": True}},
                {"addresses": ["10.0.0.3"]},  # ready unset means ready
            ],
        },
        {
            "addressType": "IPv6",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["fd00:0::5"], "conditions": {"ready": True}}],
        },
        {"addressType": "IPv4", "ports": [{"name": "other", "port": 1}], "endpoints": [{"addresses": ["10.0.0.9"]}]},
    ]
    assert ready_targets(slices, "http") == {
        Target("10.0.0.1", 8080),
        Target("10.0.0.3", 8080),
        Target("fd00::5", 8080),
    }


class PublishOnce:
    """Stands in for SliceWatch: publishes one fixed set of ready targets when started."""

    targets: ClassVar[set[Target]] = set()

    def __init__(self, *args: Any) -> None:
        self.publish: Callable[[set[Target]], None] = args[3]  # SliceWatch(api, namespace, service, publish, ...)

    def start(self) -> None:
        self.publish(self.targets)

    def stop(self) -> None:
        pass


def test_the_host_serves_each_service_on_its_own_loop_and_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server((LOOPBACK, 0)) as listener:
        PublishOnce.targets = {Target.of(LOOPBACK, listener.getsockname()[1])}
        monkeypatch.setattr(external_lb, "SliceWatch", PublishOnce)

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"hi")

        server = threading.Thread(target=answer, daemon=True)
        server.start()
        host = external_lb.LbHost(object(), "ns", LbSettings(registration_delay=0.0)).start()  # type: ignore[arg-type]
        try:
            port = host.add("demo")
            assert host.lb("demo").view().addresses == (f"{LOOPBACK}:{listener.getsockname()[1]}",)
            with socket.create_connection((LOOPBACK, port), timeout=DEADLINE) as sock:
                assert sock.recv(16) == b"hi"
            server.join(DEADLINE)
            assert host.lb("demo").take_counters().accepted == 1
        finally:
            host.stop()
