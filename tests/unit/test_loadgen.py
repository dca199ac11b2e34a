"""harness/loadgen.py's clients against a local aiohttp server (or a bare asyncio one) on loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import pytest
from aiohttp import web

from harness.loadgen import LoadGenerator, LoadResult, main


@dataclass
class Served:
    url: str
    # the client's (address, port) of each request, in order: one per connection it came on
    peers: list[tuple[str, int]] = field(default_factory=list)

    @property
    def connections(self) -> int:
        return len(set(self.peers))


Handler = Callable[[web.Request, Served], Awaitable[web.StreamResponse]]


async def hello(_request: web.Request, _served: Served) -> web.StreamResponse:
    return web.Response(text="hello\n")


@asynccontextmanager
async def server(handler: Handler = hello, **runner: float) -> AsyncIterator[Served]:
    served = Served("")

    async def handle(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        served.peers.append(request.transport.get_extra_info("peername")[:2])
        return await handler(request, served)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    app_runner = web.AppRunner(app, access_log=None, **runner)  # type: ignore[arg-type]
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    port = app_runner.addresses[0][1]
    served.url = f"http://127.0.0.1:{port}/path?q=1"
    try:
        yield served
    finally:
        await app_runner.cleanup()


async def load(generator: LoadGenerator, seconds: float) -> LoadResult:
    running = asyncio.create_task(generator.run())
    await asyncio.sleep(seconds)  # the window of load (not a poll)
    generator.stop()
    return await asyncio.wait_for(running, 10)


async def test_mixed_is_the_default_half_on_a_keepalive_pool_half_on_new_connections() -> None:
    async with server() as served:
        result = await load(LoadGenerator(served.url, rate=100), 1.0)
    assert result.error_count == 0, result.as_dict()
    assert set(result.by_mode) == {"keepalive", "new_connection"}
    keepalive, fresh = result.by_mode["keepalive"]["ok"], result.by_mode["new_connection"]["ok"]
    assert keepalive >= 40
    assert abs(keepalive - fresh) <= 1
    # every new-connection request had its own; the pool's 8 at most add to them
    assert fresh <= served.connections <= fresh + 8
    assert result.reconnects == {}


async def test_new_connections_opens_a_connection_for_every_request() -> None:
    async with server() as served:
        result = await load(LoadGenerator(served.url, rate=100, clients="new-connections"), 1.0)
    assert result.error_count == 0, result.as_dict()
    assert set(result.by_mode) == {"new_connection"}
    assert result.ok == result.by_mode["new_connection"]["ok"] >= 50
    assert served.connections == len(served.peers) == result.requests


async def test_one_keepalive_sends_every_request_on_one_connection_at_the_rate() -> None:
    async with server() as served:
        result = await load(LoadGenerator(served.url, rate=100, clients="one-keepalive"), 1.0)
    assert result.error_count == 0, result.as_dict()
    assert set(result.by_mode) == {"one_keepalive"}
    assert 50 <= result.by_mode["one_keepalive"]["ok"] == result.ok <= 102
    assert served.connections == 1
    assert len(served.peers) == result.requests
    assert result.reconnects == {}
    assert result.as_dict()["reconnects"] == {}


async def test_one_keepalive_opens_a_new_connection_after_connection_close_and_that_is_no_error() -> None:
    async def every_tenth_closes(_request: web.Request, served: Served) -> web.StreamResponse:
        response = web.Response(text="hello\n")
        if len(served.peers) % 10 == 0:
            response.force_close()
        return response

    async with server(every_tenth_closes) as served:
        result = await load(LoadGenerator(served.url, rate=100, clients="one-keepalive"), 1.0)
    assert result.error_count == 0, result.as_dict()
    closes = len(served.peers) // 10
    assert closes >= 8
    assert result.reconnects == {"connection_close": closes}
    assert served.connections == closes + (1 if len(served.peers) % 10 else 0)


async def test_one_keepalive_opens_a_new_connection_when_the_server_closed_the_idle_one() -> None:
    # The server closes a connection idle for 50 ms; the client sends every 200 ms.
    async with server(keepalive_timeout=0.05) as served:
        result = await load(LoadGenerator(served.url, rate=5, clients="one-keepalive"), 1.1)
    assert result.error_count == 0, result.as_dict()
    assert result.ok == result.requests >= 5
    assert result.reconnects == {"closed_between_requests": result.requests - 1}
    assert served.connections == result.requests


async def test_one_keepalive_counts_each_failed_request_as_an_error() -> None:
    async def slow_then_failing(request: web.Request, served: Served) -> web.StreamResponse:
        if len(served.peers) == 3:
            await asyncio.sleep(1)  # longer than the client's timeout
        if len(served.peers) == 5:
            return web.Response(status=503)
        return web.Response(text="hello\n")

    async with server(slow_then_failing) as served:
        generator = LoadGenerator(served.url, rate=20, timeout=0.3, clients="one-keepalive")
        result = await load(generator, 1.0)
    assert result.errors == {"timeout": 1, "http_503": 1}, result.as_dict()
    assert result.by_mode["one_keepalive"]["timeout"] == 1
    assert result.by_mode["one_keepalive"]["http_503"] == 1
    assert [(f["kind"], f["mode"]) for f in result.failures] == [
        ("timeout", "one_keepalive"),
        ("http_503", "one_keepalive"),
    ]
    assert result.failures[0]["phase"] == "sent"
    # the timed-out connection was given up (not an orderly close), the 503 kept its own
    assert result.reconnects == {}
    assert served.connections == 2


OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"


def drop(writer: asyncio.StreamWriter, reset: bool) -> None:
    """Close (reset: reset) a connection whose request is unanswered."""
    if reset:
        sock: socket.socket = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


@asynccontextmanager
async def dropping_server(answered: int, reset: bool) -> AsyncIterator[str]:
    """A bare HTTP/1.1 server: on each connection, answers `answered` requests with keep-alive,
    then takes the next one and closes (reset: resets) the connection without an answer."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(answered):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(OK_RESPONSE)
            await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        drop(writer, reset)

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        listening.close()


@pytest.mark.parametrize(("reset", "kind"), [(False, "server_disconnected"), (True, "connection_reset")])
async def test_one_keepalive_counts_a_request_the_server_drops_as_an_error(reset: bool, kind: str) -> None:
    async with dropping_server(answered=4, reset=reset) as url:
        result = await load(LoadGenerator(url, rate=50, clients="one-keepalive"), 1.0)
    # every fifth request fails; the one after it goes on a new connection
    assert result.requests >= 40
    assert result.errors == {kind: result.requests // 5}, result.as_dict()
    assert result.ok == result.requests - result.requests // 5
    assert {f["phase"] for f in result.failures} == {"sent"}
    assert result.reconnects == {}


@dataclass
class FirstDropped:
    url: str = ""
    # requests read, in all: a request the client sent twice is read twice
    read: int = 0
    dropped: int = 0
    # set once `enough` requests have been read
    done: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def server_dropping_the_first(
    dropped: int, on: Literal["new", "reused"], reset: bool, enough: int
) -> AsyncIterator[FirstDropped]:
    """A bare HTTP/1.1 server, keep-alive: the first `dropped` requests that come on a new
    connection (on="new") or on one that carried a request before (on="reused") it reads and
    then closes (reset: resets) their connection without an answer; every other request it
    answers."""
    served = FirstDropped()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for on_this_connection in itertools.count(1):
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()  # the client closed it
                return
            served.read += 1
            if served.read >= enough:
                served.done.set()
            reused = on_this_connection > 1
            if served.dropped < dropped and reused == (on == "reused"):
                served.dropped += 1
                drop(writer, reset)
                return
            writer.write(OK_RESPONSE)
            await writer.drain()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    served.url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}/"
    try:
        yield served
    finally:
        listening.close()


@pytest.mark.parametrize(
    ("clients", "on", "mode"),
    [("new-connections", "new", "new_connection"), ("mixed", "reused", "keepalive")],
)
@pytest.mark.parametrize(("reset", "kind"), [(False, "server_disconnected"), (True, "connection_reset")])
async def test_a_request_that_fails_on_its_connection_is_an_error_and_never_sent_again(
    clients: str, on: Literal["new", "reused"], mode: str, reset: bool, kind: str
) -> None:
    # aiohttp's client on its own sends such a GET again on a new connection, where this
    # server answers it: it would count as ok, and the server would read it twice.
    async with server_dropping_the_first(3, on, reset, enough=40) as served:
        generator = LoadGenerator(served.url, rate=100, clients=clients)
        running = asyncio.create_task(generator.run())
        await asyncio.wait_for(served.done.wait(), 10)
        generator.stop()
        result = await asyncio.wait_for(running, 10)
    assert served.dropped == 3
    assert served.read == result.requests
    assert result.errors == {kind: 3}, result.as_dict()
    assert result.by_mode[mode][kind] == 3
    assert result.ok == result.requests - 3
    assert [f["phase"] for f in result.failures] == ["sent"] * 3


def test_an_unknown_kind_of_client_is_refused() -> None:
    with pytest.raises(ValueError, match="one-keepalive"):
        LoadGenerator("http://127.0.0.1/", rate=1, clients="pipelined")


async def test_the_cli_takes_clients(capsys: pytest.CaptureFixture[str]) -> None:
    async with server() as served:
        argv = [served.url, "--rate", "50", "--seconds", "0.5", "--clients", "one-keepalive"]
        assert await asyncio.to_thread(main, argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed["by_mode"]) == ["one_keepalive"]
    assert printed["errors"] == {}
    assert printed["ok"] >= 15
    assert served.connections == 1
