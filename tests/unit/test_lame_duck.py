"""The app's lame-duck mode: the policy field, what the operator injects, how the sidecar asks
and judges the answer, what the hold makes of it, and the demo app that offers it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lameduck_operator.model import LameDuck, PolicyInvalid, parse_spec
from lameduck_sidecar.after_release import LossCount
from lameduck_sidecar.config import ConfigError, load_config
from lameduck_sidecar.hold import Hold, HoldSettings
from lameduck_sidecar.holder import ask_lame_duck
from lameduck_sidecar.lame_duck import LameDuckState, LameDuckTarget, judge, parse_target, request
from lameduck_sidecar.slices import headless
from lameduck_sidecar.traffic import Probe

REPO = Path(__file__).resolve().parents[2]
DEMO_APP = REPO / "examples" / "demo-app" / "server.py"
SETTINGS = HoldSettings(propagation_delay=2.0, quiet_period=1.0, max_hold=30.0)


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("8080/lameduck", LameDuckTarget(8080, "/lameduck")),
        ("1/", LameDuckTarget(1, "/")),
        ("65535/a?b=c", LameDuckTarget(65535, "/a?b=c")),
        ("0/lameduck", None),
        ("65536/lameduck", None),
        ("8080", None),
        ("8080/has space", None),
        ("/lameduck", None),
        ("8080/" + "x" * 256, None),
    ],
)
def test_the_target_as_the_operator_sets_it(text: str, target: LameDuckTarget | None) -> None:
    assert parse_target(text) == target


def test_a_malformed_target_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError):
        load_config({"LAMEDUCK_LAME_DUCK": "http://x/"})
    assert load_config({}).lame_duck is None


def test_the_request_closes_its_connection() -> None:
    assert request(LameDuckTarget(8080, "/ld")) == (
        b"GET /ld HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("status_line", "state"),
    [
        (b"HTTP/1.1 200 OK\r\n", LameDuckState.ON),
        (b"HTTP/1.0 204 No Content\r\n", LameDuckState.ON),
        (b"HTTP/1.1 299\r\n", LameDuckState.ON),
        (b"HTTP/1.1 404 Not Found\r\n", LameDuckState.REFUSED),
        (b"HTTP/1.1 403 Forbidden\r\n", LameDuckState.REFUSED),
        (b"HTTP/1.1 500 Oops\r\n", LameDuckState.REFUSED),
        (b"SSH-2.0-OpenSSH\r\n", LameDuckState.FAILED),
        (b"", LameDuckState.FAILED),
        (None, LameDuckState.FAILED),
    ],
)
def test_the_answer_is_judged_by_its_status(status_line: bytes | None, state: LameDuckState) -> None:
    assert judge(status_line) is state


def busy_for(hold: Hold, start: float, until: float) -> None:
    """One connection busy from `start`, observed every 100 ms until `until`."""
    now = start
    while now <= until:
        hold.traffic(now, 0, (start,))
        now = round(now + 0.1, 3)


@pytest.mark.parametrize(
    ("learned", "lame_duck", "released_by"),
    [
        # Learned 0, no lame-duck mode: the busy connection is taken as pinned after
        # propagationDelay, and the hold ends then.
        (0.0, LameDuckState.OFF, 3.0),
        # The app tried and refused, or never answered: as without it.
        (0.0, LameDuckState.REFUSED, 3.0),
        (0.0, LameDuckState.FAILED, 3.0),
        # In lame-duck mode the same connection keeps the hold until it goes quiet: the app
        # closes it after each response, so a busy one is a data plane still choosing the pod.
        (0.0, LameDuckState.ON, None),
    ],
)
def test_in_lame_duck_mode_no_busy_connection_is_taken_as_pinned(
    learned: float, lame_duck: LameDuckState, released_by: float | None
) -> None:
    hold = Hold(SETTINGS, 0.0, learned, lame_duck)
    hold.slices_released(0.5, listed=True)
    busy_for(hold, 0.0, 8.0)
    result = hold.result(8.0)
    if released_by is None:
        assert result is None, "still busy: the hold goes on"
        assert hold.result(9.0) is not None, "quiet for quietPeriod: released"
    else:
        assert result is not None
        assert result.lame_duck is lame_duck


def test_the_last_loss_is_when_the_count_last_grew() -> None:
    loss = LossCount(probes=(Probe(8080, 10.0),))
    loss.observe(0.0, 100, frozenset({8080}))
    loss.observe(1.0, 100, frozenset({8080}))
    assert loss.last_loss_at() is None
    loss.observe(2.0, 103, frozenset({8080}))
    loss.observe(3.0, 104, frozenset({8080}))
    loss.observe(4.0, 104, frozenset({8080}))
    assert (loss.lost(), loss.last_loss_at()) == (4, 3.0)
    # The app stopped listening: the probe's refusal is no loss, and no later time.
    loss.observe(5.0, 105, frozenset())
    assert (loss.lost(), loss.last_loss_at()) == (4, 3.0)


def test_the_policy_field_parses_and_is_checked() -> None:
    spec = parse_spec({"selector": {}, "hold": {"lameDuck": {"port": 8080, "path": "/lameduck"}}}, cluster=False)
    assert spec.hold.lame_duck == LameDuck(8080, "/lameduck")
    assert parse_spec({"selector": {}}, cluster=False).hold.lame_duck is None
    for bad, field in [
        ({"port": 0, "path": "/x"}, "spec.hold.lameDuck.port"),
        ({"port": 8080, "path": "x"}, "spec.hold.lameDuck.path"),
        ({"port": 8080, "path": "/a b"}, "spec.hold.lameDuck.path"),
        ({"path": "/x"}, "spec.hold.lameDuck.port"),
        ({"port": 8080}, "spec.hold.lameDuck.path"),
        ({"port": 8080, "path": "/x", "host": "evil"}, "spec.hold.lameDuck.host"),
    ]:
        with pytest.raises(PolicyInvalid) as raised:
            parse_spec({"selector": {}, "hold": {"lameDuck": bad}}, cluster=False)
        assert field in {e.path for e in raised.value.errors}, bad


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def demo_app() -> Iterator[int]:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "LATENCY_MS": "0", "CLOSE_NOTICE_SECONDS": "0", "DRAIN_SECONDS": "1"}
    proc = subprocess.Popen([sys.executable, str(DEMO_APP)], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def keep_alive_response(port: int) -> bytes:
    """The headers of the answer to an HTTP/1.1 request, which keeps its connection unless told."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        return (await reader.readuntil(b"\r\n\r\n")).lower()
    finally:
        writer.close()


async def test_the_sidecar_turns_the_demo_app_lame_duck(demo_app: int) -> None:
    assert b"connection: close" not in await keep_alive_response(demo_app)
    assert await ask_lame_duck(LameDuckTarget(demo_app, "/lameduck"), "web-1") is LameDuckState.ON
    # Still accepting new connections, but each closed after its response.
    assert b"connection: close" in await keep_alive_response(demo_app)


async def test_nothing_is_asked_without_the_field() -> None:
    assert await ask_lame_duck(None, "web-1") is LameDuckState.OFF


async def test_no_listener_fails_and_a_non_2xx_answer_refuses() -> None:
    assert await ask_lame_duck(LameDuckTarget(free_port(), "/lameduck"), "web-1") is LameDuckState.FAILED

    async def not_found(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_found, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await ask_lame_duck(LameDuckTarget(port, "/nope"), "web-1") is LameDuckState.REFUSED


async def silent_server() -> AsyncIterator[int]:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_an_app_that_never_answers_costs_the_hold_at_most_the_answer_timeout() -> None:
    async for port in silent_server():
        started = time.monotonic()
        assert await ask_lame_duck(LameDuckTarget(port, "/lameduck"), "web-1") is LameDuckState.FAILED
        assert time.monotonic() - started < 3.0


def endpoint_slice(service: str, pod_uid: str, *, headless: bool) -> dict[str, object]:
    labels = {"kubernetes.io/service-name": service}
    if headless:
        labels["service.kubernetes.io/headless"] = ""
    return {
        "metadata": {"labels": labels},
        "endpoints": [{"targetRef": {"kind": "Pod", "uid": pod_uid}, "conditions": {"ready": False}}],
    }


@pytest.mark.parametrize(
    ("slices", "expected"),
    [
        ([endpoint_slice("web", "p1", headless=False)], False),
        ([endpoint_slice("web", "p1", headless=False), endpoint_slice("web-headless", "p1", headless=True)], True),
        ([endpoint_slice("web-headless", "p2", headless=True)], False),  # another pod's
        ([{"metadata": {"labels": {"service.kubernetes.io/headless": ""}}, "endpoints": []}], False),
    ],
    ids=["cluster-ip-only", "headless-lists-it", "headless-lists-another-pod", "no-service-label"],
)
def test_a_headless_services_slice_listing_the_pod_is_seen(slices: list[dict[str, object]], expected: bool) -> None:
    assert headless(slices, "p1", "web-1", "10.0.0.1") is expected
