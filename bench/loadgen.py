"""Constant-rate HTTP load, half on reused keep-alive connections and half on a new
connection per request, recording every failure by kind and second. Open loop: requests
go out on schedule whether or not earlier ones have answered, as real clients do.

    python -m bench.loadgen http://10.0.0.10/ --rate 200 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

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


class LoadGenerator:
    def __init__(self, url: str, rate: float, timeout: float = 2.0, keepalive_connections: int = 8) -> None:
        self.url = url
        self.rate = rate
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.keepalive_connections = keepalive_connections
        self.result = LoadResult()
        self._stop = asyncio.Event()
        self.started = 0.0

    async def _one(self, session: aiohttp.ClientSession, mode: str) -> None:
        sent = time.monotonic()
        self.result.requests += 1
        trace: dict[str, str] = {"phase": "started"}
        try:
            async with session.get(self.url, trace_request_ctx=trace) as response:
                await response.read()
                if response.status >= 500:
                    raise aiohttp.ClientResponseError(response.request_info, (), status=response.status)
            self.result.ok += 1
            self.result.by_mode[mode]["ok"] += 1
        except Exception as err:
            kind = f"http_{err.status}" if isinstance(err, aiohttp.ClientResponseError) else error_kind(err)
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
                        "phase": trace["phase"],
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
        keepalive = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.keepalive_connections),
            timeout=self.timeout,
            trace_configs=[_phase_tracer()],
        )
        fresh = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True), timeout=self.timeout, trace_configs=[_phase_tracer()]
        )
        tasks: set[asyncio.Task[None]] = set()
        self.started = time.monotonic()
        interval = 1.0 / self.rate
        count = 0
        watcher = asyncio.create_task(self._watch_loop())
        try:
            while not self._stop.is_set():
                session, mode = (keepalive, "keepalive") if count % 2 == 0 else (fresh, "new_connection")
                task = asyncio.create_task(self._one(session, mode))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                count += 1
                delay = self.started + count * interval - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), delay)
            if tasks:
                await asyncio.wait(tasks)
        finally:
            watcher.cancel()
            await keepalive.close()
            await fresh.close()
        return self.result

    def stop(self) -> None:
        self._stop.set()


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


async def _main(url: str, rate: float, seconds: float) -> None:
    generator = LoadGenerator(url, rate)
    runner = asyncio.create_task(generator.run())
    await asyncio.sleep(seconds)
    generator.stop()
    print(json.dumps((await runner).as_dict(), indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description="constant-rate HTTP load")
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    asyncio.run(_main(args.url, args.rate, args.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
