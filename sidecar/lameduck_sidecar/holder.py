"""Runs the one hold a pod has, shared by every app container that calls it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol

from lameduck_sidecar.config import SidecarConfig
from lameduck_sidecar.hold import Hold, HoldResult
from lameduck_sidecar.metrics import SidecarMetrics
from lameduck_sidecar.slices import listings, released

POLL_SECONDS = 0.1
log = logging.getLogger("lameduck.sidecar")


class Connections(Protocol):
    def new_connections(self) -> int: ...

    def new_opens(self) -> int: ...


SliceStream = Callable[[], AsyncGenerator[list[dict[str, Any]], None]]
PodLookup = Callable[[], Awaitable[dict[str, Any]]]


class Holder:
    def __init__(
        self,
        config: SidecarConfig,
        metrics: SidecarMetrics,
        connections: Connections,
        slice_stream: SliceStream | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        own_connections: Callable[[], int] = lambda: 0,
        own_pod: PodLookup | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.connections = connections
        self.slice_stream = slice_stream
        self.clock = clock
        self.own_connections = own_connections
        self.own_pod = own_pod
        self.grace_period: float | None = None  # of the pod's deletion, once known
        self.task: asyncio.Task[HoldResult] | None = None
        self.callers: list[str] = []
        self.started_at = 0.0  # wall clock, for logs that line up with other observers

    @property
    def holding(self) -> bool:
        return self.task is not None and not self.task.done()

    async def hold(self, caller: str) -> HoldResult:
        """Join the pod's hold, starting it on the first call; later calls get its result."""
        self.callers.append(caller)
        if self.task is None:
            self.task = asyncio.create_task(self._run())
        return await asyncio.shield(self.task)

    async def _run(self) -> HoldResult:
        self.metrics.in_flight.inc()
        self.started_at = time.time()
        hold = Hold(self.config.hold, self.clock())
        self.connections.new_connections()  # what is open now is not new
        self.connections.new_opens()
        own = self.own_connections()
        watcher = asyncio.create_task(self._watch_slices(hold))
        grace = asyncio.create_task(self._read_grace_period(hold))
        try:
            while True:
                now = self.clock()
                hold.connections(now, self.connections.new_connections())
                own_now = self.own_connections()
                hold.inbound(now, self.connections.new_opens() - (own_now - own))
                own = own_now
                result = hold.result(self.clock())
                if result is not None:
                    break
                await asyncio.sleep(max(0.0, min(POLL_SECONDS, hold.wake_at() - self.clock())))
        finally:
            for task in (watcher, grace):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.metrics.in_flight.dec()
        self._record(result)
        return result

    async def _watch_slices(self, hold: Hold) -> None:
        """Stage 1: until no EndpointSlice lists the pod as ready, or fall back."""
        if self.slice_stream is None:
            hold.api_failed(self.clock())
            log.warning(json.dumps({"event": "fallback", "reason": "no API address"}))
            return
        stream = self.slice_stream()
        try:
            first = await asyncio.wait_for(anext(stream), self.config.hold.api_timeout)
            self._judge(hold, first)
            async for slices in stream:
                if hold.stage1_end is not None:
                    break
                self._judge(hold, slices)
        except (TimeoutError, Exception) as err:  # API down or forbidden: fail open, loudly
            if hold.stage1_end is None:
                hold.api_failed(self.clock())
                log.warning(json.dumps({"event": "fallback", "pod": self.config.pod_name, "reason": str(err)}))
        finally:
            await stream.aclose()

    async def _read_grace_period(self, hold: Hold) -> None:
        """A deletion may give the pod less than the template's grace period (kubectl delete
        --grace-period, an eviction's override): shorten the hold to leave the app its drain."""
        if self.own_pod is None:
            return
        try:
            pod = await asyncio.wait_for(self.own_pod(), self.config.hold.api_timeout)
        except (TimeoutError, Exception) as err:  # the hold goes on as configured
            log.warning(json.dumps({"event": "pod_unreadable", "pod": self.config.pod_name, "reason": str(err)}))
            return
        seconds = pod.get("metadata", {}).get("deletionGracePeriodSeconds")
        if isinstance(seconds, int | float):
            self.grace_period = float(seconds)
            hold.grace_period(float(seconds))

    def _judge(self, hold: Hold, slices: list[dict[str, Any]]) -> None:
        readiness = listings(slices, self.config.pod_uid, self.config.pod_name, self.config.pod_ip)
        if released(readiness):
            hold.slices_released(self.clock(), listed=bool(readiness))

    def _record(self, result: HoldResult) -> None:
        self.metrics.holds.labels(outcome=result.outcome.value).inc()
        self.metrics.hold_seconds.observe(result.total)
        if result.stage1 is not None:
            self.metrics.stage1_seconds.observe(result.stage1)
        if result.stage2 is not None:
            self.metrics.stage2_seconds.observe(result.stage2)
        self.metrics.connections_after_stage1.inc(result.connections_after_stage1)
        log.info(
            json.dumps(
                {
                    "event": "hold",
                    "pod": self.config.pod_name,
                    "namespace": self.config.namespace,
                    "policy": self.config.policy,
                    "containers": self.callers,
                    "outcome": result.outcome.value,
                    "seconds": round(result.total, 3),
                    "stage1": None if result.stage1 is None else round(result.stage1, 3),
                    "stage2": None if result.stage2 is None else round(result.stage2, 3),
                    "started_at": round(self.started_at, 3),
                    "stage1_at": None if result.stage1 is None else round(self.started_at + result.stage1, 3),
                    "connections_after_stage1": result.connections_after_stage1,
                    "grace_period": self.grace_period,
                }
            )
        )
