"""Constant-rate HTTP load, recording every failure by kind and second. Which clients send it
(`clients`, `--clients`):

- `mixed` (the default): half on a pool of reused keep-alive connections, half on a new
  connection per request. Open loop: requests go out on schedule whether or not earlier ones
  have answered, as real clients do.
- `new-connections`: every request on a new connection, open loop.
- `one-keepalive`: one client that keeps a single connection for the whole run and sends its
  requests one after another on it, at the rate as far as the answers allow. When the server
  closes it gracefully (a response with `Connection: close`, or a close seen between two
  requests) the client opens a new one: counted in `reconnects`, not an error. A request that
  fails on the connection is an error; nothing is retried.

No client sends a request twice. aiohttp's client, which `mixed` and `new-connections` use, by
itself sends a GET once more on another connection when its connection is reset or closed before
the answer, new connections as well as reused ones (`_send_once`): here that request fails and
counts as an error, as it would for a client that does not resend.

    python -m harness.loadgen http://10.0.0.10/ --rate 200 --seconds 10 --clients one-keepalive
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args
from urllib.parse import urlsplit

import aiohttp


@dataclass
class LoadResult:
    requests: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    # second since start -> errors in it, for the errors-over-time chart
    errors_by_second: Counter[int] = field(default_factory=Counter)
    by_mode: dict[str, Counter[str]] = field(
        default_factory=lambda: {"keepalive": Counter(), "new_connection": Counter()}
    )
    # the first failures in detail: when sent, how long until failed, and how far the
    # request got (waiting for a pooled connection, connecting, sent, receiving)
    failures: list[dict[str, object]] = field(default_factory=list)
    # (second since start, seconds) whenever this process's event loop ran late by more than
    # LOOP_LAG_REPORTED: a stalled client can time out requests the server never saw
    loop_stalls: list[tuple[float, float]] = field(default_factory=list)
    # one-keepalive only: new connections after the first, by why the last one ended
    # (connection_close: the server answered `Connection: close`; closed_between_requests: it
    # closed the idle connection; reset_between_requests: it reset the idle connection)
    reconnects: Counter[str] = field(default_factory=Counter)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "errors": dict(self.errors),
            "error_rate": round(self.error_count / self.requests, 6) if self.requests else 0.0,
            "errors_by_second": {str(k): v for k, v in sorted(self.errors_by_second.items())},
            "by_mode": {m: dict(c) for m, c in self.by_mode.items()},
            "failures": self.failures,
            "loop_stalls": [[round(t, 3), round(lag, 3)] for t, lag in self.loop_stalls],
            "reconnects": dict(self.reconnects),
        }


def error_kind(err: BaseException) -> str:
    if isinstance(err, aiohttp.ClientConnectorError):
        return "connect_refused" if err.os_error.errno == errno.ECONNREFUSED else "connect_failed"
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return "server_disconnected"
    if isinstance(err, aiohttp.ClientOSError):
        return "connection_reset"
    if isinstance(err, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    return type(err).__name__


Clients = Literal["mixed", "new-connections", "one-keepalive"]
CLIENTS: tuple[str, ...] = get_args(Clients)
# the modes in by_mode that each kind of client sends in
MODES: dict[str, tuple[str, ...]] = {
    "mixed": ("keepalive", "new_connection"),
    "new-connections": ("new_connection",),
    "one-keepalive": ("one_keepalive",),
}

MAX_FAILURES_KEPT = 200
LOOP_TICK = 0.05
LOOP_LAG_REPORTED = 0.2


def _phase_tracer() -> aiohttp.TraceConfig:
    """Records in each request's trace context the last phase it reached."""
    tracer = aiohttp.TraceConfig()

    def marker(phase: str):  # type: ignore[no-untyped-def]
        async def mark(_session: object, context: object, _params: object) -> None:
            context.trace_request_ctx["phase"] = phase  # type: ignore[attr-defined]

        return mark

    tracer.on_connection_queued_start.append(marker("waiting_for_pool"))
    tracer.on_connection_create_start.append(marker("connecting"))
    tracer.on_connection_create_end.append(marker("connected"))
    tracer.on_connection_reuseconn.append(marker("reused_connection"))
    tracer.on_request_headers_sent.append(marker("sent"))
    tracer.on_response_chunk_received.append(marker("receiving"))
    return tracer


def _send_once() -> aiohttp.ClientMiddlewareType:
    """A middleware for one request: after the request failed on its connection, it fails.

    aiohttp (3.14: ClientSession._request in client.py) sends a GET, HEAD, OPTIONS, TRACE, PUT or
    DELETE a second time, on another connection, when sending it or waiting for the answer's
    head raised ClientOSError or ServerDisconnectedError, whether the connection was new or
    reused; no parameter turns that off. The second attempt passes through the middlewares
    again (3.12 on): this one raises the first attempt's error instead of sending."""
    failed: BaseException | None = None

    async def middleware(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        nonlocal failed
        if failed is not None:
            raise failed
        try:
            return await handler(request)
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as err:
            failed = err
            raise

    return middleware


class LoadGenerator:
    def __init__(
        self,
        url: str,
        rate: float,
        timeout: float = 2.0,
        keepalive_connections: int = 8,
        clients: Clients | str = "mixed",
    ) -> None:
        if clients not in MODES:
            raise ValueError(f"clients must be one of {', '.join(CLIENTS)}, not {clients!r}")
        self.url = url
        self.rate = rate
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.keepalive_connections = keepalive_connections
        self.clients = clients
        self.result = LoadResult(by_mode={mode: Counter() for mode in MODES[clients]})
        self._stop = asyncio.Event()
        self.started = 0.0

    async def _one(self, session: aiohttp.ClientSession, mode: str) -> None:
        sent = time.monotonic()
        self.result.requests += 1
        trace: dict[str, str] = {"phase": "started"}
        try:
            async with session.get(self.url, trace_request_ctx=trace, middlewares=(_send_once(),)) as response:
                await response.read()
                if response.status >= 500:
                    raise aiohttp.ClientResponseError(response.request_info, (), status=response.status)
            self.record_ok(mode)
        except Exception as err:
            kind = f"http_{err.status}" if isinstance(err, aiohttp.ClientResponseError) else error_kind(err)
            self.record_failure(mode, kind, sent, trace["phase"], err)

    def record_ok(self, mode: str) -> None:
        self.result.ok += 1
        self.result.by_mode[mode]["ok"] += 1

    def record_failure(self, mode: str, kind: str, sent: float, phase: str, err: BaseException) -> None:
        self.result.errors[kind] += 1
        self.result.by_mode[mode][kind] += 1
        self.result.errors_by_second[int(sent - self.started)] += 1
        if len(self.result.failures) < MAX_FAILURES_KEPT:
            self.result.failures.append(
                {
                    "sent_at": round(sent - self.started, 3),
                    "failed_after": round(time.monotonic() - sent, 3),
                    "mode": mode,
                    "kind": kind,
                    "phase": phase,
                    "detail": str(err)[:120],
                    "client_stalled": round(self._stalled_between(sent, time.monotonic()), 3),
                }
            )

    def _stalled_between(self, start: float, end: float) -> float:
        """Seconds this client's loop stood still while a request was out."""
        first, last = start - self.started, end - self.started
        return sum(lag for t, lag in self.result.loop_stalls if first <= t <= last + LOOP_TICK)

    async def _watch_loop(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(LOOP_TICK)
            lag = time.monotonic() - before - LOOP_TICK
            if lag > LOOP_LAG_REPORTED:
                self.result.loop_stalls.append((time.monotonic() - self.started, lag))

    async def run(self) -> LoadResult:
        """Until stop(); then waits for the requests still out."""
        watcher = asyncio.create_task(self._watch_loop())
        self.started = time.monotonic()
        try:
            if self.clients == "one-keepalive":
                await OneConnectionClient(self).run()
            else:
                await self._open_loop()
        finally:
            watcher.cancel()
        return self.result

    async def _open_loop(self) -> None:
        keepalive = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.keepalive_connections),
            timeout=self.timeout,
            trace_configs=[_phase_tracer()],
        )
        fresh = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True), timeout=self.timeout, trace_configs=[_phase_tracer()]
        )
        tasks: set[asyncio.Task[None]] = set()
        interval = 1.0 / self.rate
        count = 0
        try:
            while not self._stop.is_set():
                if self.clients == "mixed" and count % 2 == 0:
                    session, mode = keepalive, "keepalive"
                else:
                    session, mode = fresh, "new_connection"
                task = asyncio.create_task(self._one(session, mode))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                count += 1
                await self.wait_stopped(self.started + count * interval - time.monotonic())
            if tasks:
                await asyncio.wait(tasks)
        finally:
            await keepalive.close()
            await fresh.close()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    async def wait_stopped(self, delay: float) -> bool:
        """Wait up to delay seconds; whether stop() was called."""
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        return self._stop.is_set()


def stream_error_kind(err: BaseException, phase: str) -> str:
    """error_kind's names for a failure on a plain asyncio stream."""
    if isinstance(err, ConnectionRefusedError):
        return "connect_refused"
    if isinstance(err, TimeoutError):
        return "timeout"
    if isinstance(err, asyncio.IncompleteReadError | EOFError):
        return "server_disconnected"
    if isinstance(err, OSError):
        return "connect_failed" if phase == "connecting" else "connection_reset"
    return type(err).__name__


class OneConnectionClient:
    """clients="one-keepalive": one HTTP/1.1 connection for the whole run, one request at a time
    on it, none retried. A plain asyncio stream rather than aiohttp's pool, so that this client
    knows which connection each request goes on and why it opened a new one (`reconnects`)."""

    MODE = "one_keepalive"

    def __init__(self, generator: LoadGenerator) -> None:
        self.generator = generator
        parts = urlsplit(generator.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {generator.url}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = parts.scheme == "https"
        authority = parts.netloc.rsplit("@", 1)[-1]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.request = f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: lameduck-loadgen\r\n\r\n".encode()
        self.timeout = generator.timeout.total or 2.0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        generator = self.generator
        interval = 1.0 / generator.rate
        due = time.monotonic()
        try:
            while not generator.stopped:
                await self._one()
                # the next request is due an interval after this one was; after a slow answer it
                # goes at once, but the client never bursts to catch up
                due = max(due + interval, time.monotonic())
                if await generator.wait_stopped(due - time.monotonic()):
                    break
        finally:
            await self._close()

    async def _one(self) -> None:
        generator = self.generator
        sent = time.monotonic()
        generator.result.requests += 1
        phase = "started"
        try:
            async with asyncio.timeout(self.timeout):
                if self.writer is None or await self._closed_while_idle():
                    phase = "connecting"
                    await self._open()
                    phase = "connected"
                else:
                    phase = "reused_connection"
                reader, writer = self.reader, self.writer
                assert reader is not None
                assert writer is not None
                writer.write(self.request)
                await writer.drain()
                phase = "sent"
                status, keep = await self._response(reader)
            if not keep:
                await self._close("connection_close")
            if status >= 500:
                generator.record_failure(self.MODE, f"http_{status}", sent, "answered", RuntimeError(f"HTTP {status}"))
            else:
                generator.record_ok(self.MODE)
        except Exception as err:
            await self._close()
            generator.record_failure(self.MODE, stream_error_kind(err, phase), sent, phase, err)

    async def _closed_while_idle(self) -> bool:
        """Whether the server closed the idle connection since the last answer (as far as this
        side has seen: a close still in flight shows as the next request's failure)."""
        reader = self.reader
        assert reader is not None
        await asyncio.sleep(0)  # let the loop take in a close that has arrived
        reason = None
        if reader.exception() is not None:
            reason = "reset_between_requests"
        elif reader.at_eof() or (self.writer is not None and self.writer.is_closing()):
            reason = "closed_between_requests"
        if reason is None:
            return False
        await self._close(reason)
        return True

    async def _open(self) -> None:
        context = ssl.create_default_context() if self.tls else None
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, ssl=context)

    async def _close(self, reason: str | None = None) -> None:
        """Close the connection; reason: why the next request needs a new one (not an error)."""
        writer, self.reader, self.writer = self.writer, None, None
        if writer is None:
            return
        if reason:
            self.generator.result.reconnects[reason] += 1
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bool]:
        """Read one response; (status, whether the connection may carry another request)."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, status = lines[0].split(" ", 2)[:2]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip().lower()
        tokens = {t.strip() for t in headers.get("connection", "").split(",")}
        keep = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
        if "chunked" in headers.get("transfer-encoding", ""):
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailer fields
                    break
                await reader.readexactly(size + 2)
        elif "content-length" in headers:
            await reader.readexactly(int(headers["content-length"]))
        elif status[0] != "1" and status not in ("204", "304"):
            await reader.read()  # delimited by the close
            keep = False
        return int(status), keep


async def under_load(
    generator: LoadGenerator, during: Callable[[], object], *, before: float, after: float
) -> LoadResult:
    """Load for `before` seconds, then while `during` runs, then `after` seconds more.
    `during` runs in a thread: a blocking call (kubectl, a poll) must never stall the
    client's event loop, or the client would time out requests the server never saw."""
    load = asyncio.create_task(generator.run())
    await asyncio.sleep(before)  # a measured window of load (not a poll)
    await asyncio.to_thread(during)
    await asyncio.sleep(after)
    generator.stop()
    return await load


async def _main(url: str, rate: float, seconds: float, clients: str = "mixed") -> None:
    generator = LoadGenerator(url, rate, clients=clients)
    runner = asyncio.create_task(generator.run())
    await asyncio.sleep(seconds)
    generator.stop()
    print(json.dumps((await runner).as_dict(), indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="constant-rate HTTP load")
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--clients",
        choices=CLIENTS,
        default="mixed",
        help="mixed: half keep-alive pool, half a new connection per request; new-connections: "
        "a new connection per request; one-keepalive: one connection for the whole run",
    )
    args = parser.parse_args(argv)
    asyncio.run(_main(args.url, args.rate, args.seconds, args.clients))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
