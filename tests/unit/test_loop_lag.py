"""The event loop lag monitor: a stall of the loop shows in the operator's metrics."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable

import pytest
from prometheus_client import generate_latest

from lameduck_operator.loop_health import (
    GC_YOUNGEST_THRESHOLD,
    collect_less_often,
    freeze_what_is_alive,
    watch_loop_lag,
)
from lameduck_operator.metrics import OperatorMetrics


async def exported_around(work: Callable[[], None]) -> str:
    """The loop monitor's metrics after `work` ran on the loop thread while it watched."""
    metrics = OperatorMetrics()
    monitor = asyncio.create_task(watch_loop_lag(metrics.loop, interval=0.02))
    await asyncio.sleep(0.05)
    work()
    await asyncio.sleep(0.05)
    monitor.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await monitor
    return generate_latest(metrics.registry).decode()


async def test_a_stalled_loop_is_measured() -> None:
    # Code that does not yield: the stall to measure.
    exported = await exported_around(lambda: time.sleep(0.3))
    (line,) = [x for x in exported.splitlines() if x.startswith("lameduck_event_loop_lag_max_seconds ")]
    assert 0.25 <= float(line.split()[1]) < 1.0
    (over,) = [x for x in exported.splitlines() if x.startswith('lameduck_event_loop_lag_seconds_bucket{le="0.1"}')]
    (count,) = [x for x in exported.splitlines() if x.startswith("lameduck_event_loop_lag_seconds_count")]
    assert float(count.split()[1]) - float(over.split()[1]) == 1, "one timer was late by more than 0.1 s"


async def test_a_stall_of_code_that_does_not_yield_is_counted_as_loop_busy_with_its_stack_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exported = await exported_around(lambda: spin_on_the_loop_thread(1.3))
    assert 'lameduck_event_loop_stalls_total{cause="loop_busy"} 1.0' in exported
    assert "spin_on_the_loop_thread" in caplog.text, "the watchdog logged the stalled thread's stack"


async def test_time_in_the_garbage_collector_is_counted() -> None:
    def collect_cycles() -> None:
        garbage: list[list[object]] = [[i] for i in range(300_000)]
        for i, item in enumerate(garbage):
            item.append(garbage[i - 1])  # cycles, so that a collection has work
        del garbage
        gc.collect()

    exported = await exported_around(collect_cycles)
    (total,) = [x for x in exported.splitlines() if x.startswith("lameduck_gc_seconds_total ")]
    (longest,) = [x for x in exported.splitlines() if x.startswith("lameduck_gc_pause_max_seconds ")]
    assert float(total.split()[1]) > 0
    assert 0 < float(longest.split()[1]) <= float(total.split()[1])


def spin_on_the_loop_thread(seconds: float) -> None:
    """CPU work that never yields (time.sleep would leave the CPU idle: not this cause)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(range(1000))


def test_the_youngest_generation_is_collected_less_often_and_the_others_as_before() -> None:
    before = gc.get_threshold()
    try:
        collect_less_often()
        assert gc.get_threshold() == (GC_YOUNGEST_THRESHOLD, before[1], before[2])
        assert before[0] < GC_YOUNGEST_THRESHOLD
    finally:
        gc.set_threshold(*before)


def test_what_is_alive_when_frozen_is_left_out_of_collections() -> None:
    kept = [[i] for i in range(1000)]
    try:
        freeze_what_is_alive()
        assert gc.get_freeze_count() >= len(kept)
    finally:
        gc.unfreeze()
