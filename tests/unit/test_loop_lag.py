"""The event loop lag monitor: a stall of the loop shows in the operator's metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import generate_latest

from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.runtime import watch_loop_lag


async def test_a_stalled_loop_is_measured() -> None:
    metrics = OperatorMetrics()
    monitor = asyncio.create_task(watch_loop_lag(metrics, interval=0.02))
    await asyncio.sleep(0.05)
    time.sleep(0.3)  # code that does not yield: the stall to measure
    await asyncio.sleep(0.05)
    monitor.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await monitor
    exported = generate_latest(metrics.registry).decode()
    (line,) = [x for x in exported.splitlines() if x.startswith("lameduck_event_loop_lag_max_seconds ")]
    assert 0.25 <= float(line.split()[1]) < 1.0
    (over,) = [x for x in exported.splitlines() if x.startswith('lameduck_event_loop_lag_seconds_bucket{le="0.1"}')]
    (count,) = [x for x in exported.splitlines() if x.startswith("lameduck_event_loop_lag_seconds_count")]
    assert float(count.split()[1]) - float(over.split()[1]) == 1, "one timer was late by more than 0.1 s"
