"""The event loop's health: how late it runs timers and, when it stalls, what held it.

Every 0.1 s a timer measures how late it fired. Over each late interval the loop thread's CPU,
the process's CPU and the garbage collector's time are read; a stall of a second or more is
counted by cause (`logic.stall`) and logged with those clocks. A watchdog thread logs the loop
thread's stack while a stall lasts, so that a stall of code that did not yield names that code.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import traceback
from typing import Any

from lameduck_operator.logic.stall import STALL_SECONDS, StallClocks, stall_cause
from lameduck_operator.metrics import LoopHealthMetrics

log = logging.getLogger("lameduck.operator")
LOOP_LAG_INTERVAL = 0.1
# Python's default collects the youngest generation every 700 allocations, and the whole heap
# after enough of those: at 5,000 Deployments that was about a quarter of the operator's CPU
# (16.4 s of lameduck_gc_seconds_total against 58 CPU seconds in a fleet run's phases).
# Collected every 50,000 instead: cyclic garbage waits longer to be freed.
GC_YOUNGEST_THRESHOLD = 50_000
WATCHDOG_POLL_SECONDS = 0.25
STACK_FRAMES = 25


def collect_less_often() -> None:
    """At start: the youngest generation collected every GC_YOUNGEST_THRESHOLD allocations."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNGEST_THRESHOLD, middle, oldest)


def freeze_what_is_alive() -> None:
    """Once the watches have listed everything: what is alive then (modules, the API client's
    models, the first view of every object) is left out of every later collection, which would
    traverse it each time and free none of it."""
    gc.collect()
    gc.freeze()


class GcClock:
    """Seconds spent in the cyclic garbage collector, from gc.callbacks (which run around every
    collection, on the thread that triggered it)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.longest = 0.0
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            pause = time.perf_counter() - self._started
            self._started = None
            self.total += pause
            self.longest = max(self.longest, pause)

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self)


class StallWatchdog:
    """A thread that logs the loop thread's stack once per stall, while the stall lasts: the
    loop itself cannot say what holds it until it is free again."""

    def __init__(self, threshold: float = STALL_SECONDS, poll: float = WATCHDOG_POLL_SECONDS) -> None:
        self.threshold = threshold
        self.poll = poll
        self.loop_thread = threading.get_ident()
        self.last_beat = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="lameduck-stall-watchdog", daemon=True)

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def __enter__(self) -> StallWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        reported: float | None = None
        while not self._stop.wait(self.poll):
            beat = self.last_beat
            stalled = time.monotonic() - beat
            if stalled < self.threshold or reported == beat:
                continue
            reported = beat
            frame = sys._current_frames().get(self.loop_thread)
            if frame is None:
                continue
            stack = "".join(traceback.format_stack(frame, limit=STACK_FRAMES))
            log.warning("the event loop has not run for %.1f s; its thread is in:\n%s", stalled, stack)


async def watch_loop_lag(metrics: LoopHealthMetrics, interval: float = LOOP_LAG_INTERVAL) -> None:
    """Measures how late a timer fires: the time the loop was held by code that did not yield
    (a long decision, a large JSON parse), by the garbage collector, by other threads or by other
    processes; each delays every watch, webhook answer and probe."""
    loop = asyncio.get_running_loop()
    longest = 0.0
    with GcClock() as gc_clock, StallWatchdog() as watchdog:
        gc_counted = 0.0
        while True:
            due = loop.time() + interval
            loop_cpu, process_cpu, gc_before = time.thread_time(), time.process_time(), gc_clock.total
            await asyncio.sleep(interval)
            watchdog.beat()
            lag = max(0.0, loop.time() - due)
            metrics.lag.observe(lag)
            metrics.gc_seconds.inc(gc_clock.total - gc_counted)
            gc_counted = gc_clock.total
            metrics.gc_pause_max.set(gc_clock.longest)
            if lag > longest:
                longest = lag
                metrics.lag_max.set(lag)
            if lag >= STALL_SECONDS:
                clocks = StallClocks(
                    lag=lag,
                    loop_cpu=time.thread_time() - loop_cpu,
                    process_cpu=time.process_time() - process_cpu,
                    gc=gc_clock.total - gc_before,
                )
                cause = stall_cause(clocks)
                metrics.stalls.labels(cause=cause.value).inc()
                log.warning(
                    "the event loop stalled %.2f s (%s): loop thread CPU %.2f s, other threads %.2f s, "
                    "garbage collection %.2f s",
                    lag,
                    cause.value,
                    clocks.loop_cpu,
                    clocks.process_cpu - clocks.loop_cpu,
                    clocks.gc,
                )
