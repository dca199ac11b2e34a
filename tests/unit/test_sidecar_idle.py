"""The idle sidecar (lameduck_sidecar.idle): the port served without asyncio until the first call to
the hold, which hands every connection over to the hold's server (lameduck_sidecar.serving)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lameduck_sidecar import idle
from lameduck_sidecar.config import load_config
from lameduck_sidecar.endpoint import HoldCall, OwnConnections
from lameduck_sidecar.hold import HoldSettings
from lameduck_sidecar.idle import Handover, IdleServer, Signals
from lameduck_sidecar.metrics import SidecarMetrics
from lameduck_sidecar.serving import HoldServer, before_exit, holder_for
from lameduck_sidecar.traffic import Snapshot, Work

FAST = HoldSettings(propagation_delay=0.1, quiet_period=0.1, max_hold=2.0, api_timeout=0.5, fallback_delay=0.2)
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


class Idle:
    """An IdleServer on 127.0.0.1 in a thread of its own, and what its run returned."""

    def __init__(self) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self.metrics = SidecarMetrics()
        self.own = OwnConnections()
        self.signals = Signals()
        self.server = IdleServer([listener], self.metrics, self.own, self.signals)
        self.result: Handover | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.result = self.server.run()

    def connect(self) -> socket.socket:
        client = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return client

    def stop(self) -> Handover | None:
        if self.thread.is_alive():
            self.signals.note()
        self.thread.join(5)
        assert not self.thread.is_alive(), "the idle loop ended"
        return self.result


@pytest.fixture
def port() -> Iterator[Idle]:
    served = Idle()
    yield served
    handover = served.stop()
    for sock in served.server.listeners + ([c.sock for c in handover.clients] if handover else []):
        sock.close()


# Bytes read past an answer (the next pipelined one), by socket.
_READ_AHEAD: dict[int, bytes] = {}


def received(client: socket.socket) -> bytes:
    data = client.recv(65536)
    assert data, "the sidecar closed the connection without an answer"
    return data


def answered(client: socket.socket, request: bytes) -> bytes:
    """The next answer on client, after sending request: its head and its content-length's body."""
    client.sendall(request)
    data = _READ_AHEAD.pop(client.fileno(), b"")
    while b"\r\n\r\n" not in data:
        data += received(client)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        body += received(client)
    _READ_AHEAD[client.fileno()] = body[length:]
    return head + b"\r\n\r\n" + body[:length]


def test_probes_and_scrapes_are_answered_and_each_connection_counted(port: Idle) -> None:
    with port.connect() as first, port.connect() as second:
        assert answered(first, HEALTHZ).endswith(b"\r\n\r\nok\n")
        assert answered(first, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"ok\n")
        metrics = answered(second, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"lameduck_sidecar_holds_in_flight 0.0\n" in metrics
    assert port.stop() is None, "a signal ends the idle loop with nothing to hand over"
    assert port.own() == 2, "connections, not requests"


def test_a_refused_name_is_answered_while_idle(port: Idle) -> None:
    with port.connect() as client:
        assert answered(client, b"GET /hold/App HTTP/1.1\r\nHost: x\r\n\r\n").endswith(
            b'{"error": "invalid_container"}'
        )
        assert answered(client, HEALTHZ).endswith(b"ok\n"), "and the loop goes on"
    assert 'answer="invalid_container"} 1.0' in port.metrics.exposition().decode()


def test_a_connection_that_stays_silent_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idle, "IDLE_SECONDS", 0.2)
    served = Idle()
    try:
        with served.connect() as client:
            assert client.recv(1) == b"", "closed by the sidecar"
    finally:
        served.stop()
        served.server.listeners[0].close()


def test_a_call_to_the_hold_hands_every_connection_over(port: Idle) -> None:
    keep_alive = port.connect()
    assert answered(keep_alive, HEALTHZ).endswith(b"ok\n")
    caller = port.connect()
    caller.sendall(b"GET /hold/app HTTP/1.1\r\nHost: x\r\n\r\n")
    port.thread.join(5)
    handover = port.result
    assert handover is not None
    assert handover.call == HoldCall("app")
    assert {c.sock.getpeername() for c in handover.clients} == {keep_alive.getsockname(), caller.getsockname()}
    assert handover.caller.sock.getpeername() == caller.getsockname()
    assert (handover.metrics, handover.own, handover.signals) == (port.metrics, port.own, port.signals)
    keep_alive.close()
    caller.close()


class Quiet:
    def observe(self, now: float, snapshot: Snapshot) -> Work:
        return Work(0, ())


async def test_the_hold_server_answers_the_call_and_serves_what_was_handed_over(port: Idle, tmp_path: Path) -> None:
    """The caller gets its hold's answer, the other connections and the port are served on."""
    keep_alive = port.connect()
    assert answered(keep_alive, HEALTHZ).endswith(b"ok\n")
    caller = port.connect()
    caller.sendall(b"GET /hold/app HTTP/1.1\r\nHost: x\r\n\r\n" + HEALTHZ)  # and a request after it
    await asyncio.to_thread(port.thread.join, 5)
    handover = port.result
    assert handover is not None
    config = replace(load_config({"LAMEDUCK_POD_NAME": "web-1"}), hold=FAST, api_url=None)
    holder = holder_for(config, handover.metrics, lambda: Snapshot(None, 0, 0, []), Quiet)
    server = HoldServer(holder, handover.metrics, handover.own)
    for client in handover.clients:
        call = handover.call if client is handover.caller else None
        await server.adopt(client.sock, client.http, bytes(client.outgoing), call)
    await server.listen(handover.listeners)
    try:
        answer = await asyncio.to_thread(answered, caller, b"")
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["outcome"] == "fallback", "no API address here"
        assert (await asyncio.to_thread(answered, caller, b"")).endswith(b"ok\n"), "the request after the call"
        assert (await asyncio.to_thread(answered, keep_alive, HEALTHZ)).endswith(b"ok\n")
        with port.connect() as later:
            assert (await asyncio.to_thread(answered, later, HEALTHZ)).endswith(b"ok\n")
        assert port.own() == 3, "the hold server counts on from the idle loop's count"
    finally:
        await server.close()
        keep_alive.close()
        caller.close()


async def test_a_sigterm_right_after_the_hand_over_still_answers_the_call(port: Idle) -> None:
    """A classic sidecar gets its SIGTERM with the app's preStop call: the call is answered by its
    hold before the sidecar exits, as aiohttp's runner let a request in progress finish."""
    caller = port.connect()
    caller.sendall(b"GET /hold/app HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.to_thread(port.thread.join, 5)
    handover = port.result
    assert handover is not None
    config = replace(load_config({"LAMEDUCK_POD_NAME": "web-1", "LAMEDUCK_NATIVE": "false"}), hold=FAST, api_url=None)
    holder = holder_for(config, handover.metrics, lambda: Snapshot(None, 0, 0, []), Quiet)
    server = HoldServer(holder, handover.metrics, handover.own)
    await server.adopt(handover.caller.sock, handover.caller.http, b"", handover.call)
    await before_exit(holder, native=False)  # nothing to wait for yet: the hold has not started
    await server.close()
    answer = await asyncio.to_thread(answered, caller, b"")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["outcome"] == "fallback"
    caller.close()
