"""Runs the hold of the pod's deletion, shared by every app container that calls for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from lameduck_sidecar.config import SidecarConfig
from lameduck_sidecar.hold import (
    FallbackReason,
    Hold,
    HoldResult,
    Outcome,
    answered_at_once,
    deletion_grace_period,
    should_hold,
)
from lameduck_sidecar.k8s import ApiError
from lameduck_sidecar.metrics import SidecarMetrics
from lameduck_sidecar.report import hold_report_event, report_message
from lameduck_sidecar.slices import listings, released
from lameduck_sidecar.traffic import Snapshot, Work

POLL_SECONDS = 0.1
log = logging.getLogger("lameduck.sidecar")


class Traffic(Protocol):
    """Turns the kernel's view into new work."""

    def observe(self, now: float, snapshot: Snapshot) -> Work: ...


SliceStream = Callable[[], AsyncGenerator[list[dict[str, Any]], None]]
PodLookup = Callable[..., Awaitable[dict[str, Any]]]
EventPoster = Callable[[dict[str, Any]], Awaitable[None]]


class Holder:
    def __init__(
        self,
        config: SidecarConfig,
        metrics: SidecarMetrics,
        snapshot: Callable[[], Snapshot],
        traffic: Callable[[], Traffic],
        slice_stream: SliceStream | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        own_pod: PodLookup | None = None,
        post_event: EventPoster | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.snapshot = snapshot
        self.traffic = traffic
        self.slice_stream = slice_stream
        self.clock = clock
        self.own_pod = own_pod
        self.post_event = post_event
        self.pod: dict[str, Any] | None = None  # as read when the hold began
        # Posting the hold report, after the hold has been answered.
        self.report_task: asyncio.Task[None] | None = None
        self.grace_period: float | None = None  # of the pod's deletion, once known
        # The hold of the pod's deletion: a pod is deleted once, so there is at most one.
        self.task: asyncio.Task[HoldResult] | None = None
        self.callers: list[str] = []
        self.started_at = 0.0  # wall clock, for logs that line up with other observers

    @property
    def holding(self) -> bool:
        return self.task is not None and not self.task.done()

    async def hold(self, caller: str) -> HoldResult:
        """Join the hold of the pod's deletion, starting it on the first call. A call while
        the pod is not being deleted (kubelet restarting a container after a failed probe, or
        anyone else) is answered at once and leaves nothing behind."""
        called, called_at = self.clock(), time.time()
        if self.task is None:
            pod = await self._read_pod()
            if pod is not None and not should_hold(pod):
                # The API server's cache may lag behind the deletion kubelet acted on.
                pod = await self._read_pod(consistent=True)
            if pod is not None and not should_hold(pod):
                result = answered_at_once()
                self._record(result, [caller], called_at)
                return result
            if self.task is None:
                self.pod = pod
                self.grace_period = deletion_grace_period(pod)
                self.task = asyncio.create_task(self._run(called, called_at))
        self.callers.append(caller)
        return await asyncio.shield(self.task)

    async def _read_pod(self, consistent: bool = False) -> dict[str, Any] | None:
        if self.own_pod is None:
            return None
        try:
            return await asyncio.wait_for(self.own_pod(consistent=consistent), self.config.hold.api_timeout)
        except (TimeoutError, ApiError) as err:  # hold as for a deletion, and say so
            log.warning(json.dumps({"event": "pod_unreadable", "pod": self.config.pod_name, "reason": str(err)}))
            return None

    async def _run(self, started: float, started_at: float) -> HoldResult:
        self.metrics.in_flight.inc()
        self.started_at = started_at
        hold = Hold(self.config.hold, started)
        if self.grace_period is not None:
            hold.grace_period(self.grace_period)
        traffic = self.traffic()
        traffic.observe(self.clock(), self.snapshot())  # what is open now is not new
        watcher = asyncio.create_task(self._watch_slices(hold))
        try:
            while True:
                now = self.clock()
                hold.traffic(now, *traffic.observe(now, self.snapshot()))
                result = hold.result(self.clock())
                if result is not None:
                    break
                await asyncio.sleep(max(0.0, min(POLL_SECONDS, hold.wake_at() - self.clock())))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self.metrics.in_flight.dec()
        self._record(result, self.callers, self.started_at)
        if self.post_event is not None:
            self.report_task = asyncio.create_task(self._report(result, list(self.callers)))
        return result

    async def _report(self, result: HoldResult, callers: list[str]) -> None:
        """One Event on the pod with what the hold saw: it outlives the pod, unlike the metrics."""
        assert self.post_event is not None
        message = report_message(
            result,
            policy=self.config.policy,
            max_hold=self.config.hold.max_hold,
            grace_period=self.grace_period,
            pod=self.pod,
            containers=callers,
        )
        event = hold_report_event(
            message,
            namespace=self.config.namespace,
            pod_name=self.config.pod_name,
            pod_uid=self.config.pod_uid,
            now=datetime.now(UTC),
        )
        try:
            await asyncio.wait_for(self.post_event(event), self.config.hold.api_timeout)
        except (TimeoutError, ApiError) as err:
            self.metrics.reports.labels(result="failed").inc()
            log.warning(json.dumps({"event": "report_failed", "pod": self.config.pod_name, "reason": str(err)}))
            return
        self.metrics.reports.labels(result="posted").inc()

    async def _watch_slices(self, hold: Hold) -> None:
        """Stage 1: until no EndpointSlice holds the pod, or fall back."""
        if self.slice_stream is None:
            self._fall_back(hold, FallbackReason.NO_API_ADDRESS, "")
            return
        try:
            async with contextlib.aclosing(self.slice_stream()) as stream:
                first = await asyncio.wait_for(anext(stream), self.config.hold.api_timeout)
                self._judge(hold, first)
                async for slices in stream:
                    if hold.stage1_end is not None:
                        break
                    self._judge(hold, slices)
        except (TimeoutError, ApiError) as err:  # API down, forbidden or garbled: fail open, loudly
            self._fall_back(hold, FallbackReason.API, f"{type(err).__name__}: {err}")
        except Exception as err:  # a bug of ours: still fail open, with its traceback
            log.exception("stage 1 failed")
            self._fall_back(hold, FallbackReason.INTERNAL_ERROR, repr(err))

    def _fall_back(self, hold: Hold, reason: FallbackReason, detail: str) -> None:
        if hold.stage1_end is None:
            hold.api_failed(self.clock())
            self.metrics.fallbacks.labels(reason=reason.value).inc()
            log.warning(
                json.dumps({"event": "fallback", "pod": self.config.pod_name, "reason": reason.value, "detail": detail})
            )

    def _judge(self, hold: Hold, slices: list[dict[str, Any]]) -> None:
        found = listings(slices, self.config.pod_uid, self.config.pod_name, self.config.pod_ip)
        if released(found):
            hold.slices_released(self.clock(), listed=bool(found))

    def _record(self, result: HoldResult, callers: list[str], started_at: float) -> None:
        self.metrics.holds.labels(outcome=result.outcome.value).inc()
        if result.outcome is not Outcome.NOT_DELETING:
            self.metrics.hold_seconds.observe(result.total)
        if result.stage1 is not None:
            self.metrics.stage1_seconds.observe(result.stage1)
        if result.stage2 is not None:
            self.metrics.stage2_seconds.observe(result.stage2)
        self.metrics.connections_after_stage1.inc(result.connections_after_stage1)
        self.metrics.reused_after_stage1.inc(result.reused_after_stage1)
        self.metrics.pinned_after_stage1.inc(result.pinned_after_stage1)
        log.info(
            json.dumps(
                {
                    "event": "hold",
                    "pod": self.config.pod_name,
                    "namespace": self.config.namespace,
                    "policy": self.config.policy,
                    "containers": callers,
                    "outcome": result.outcome.value,
                    "seconds": round(result.total, 3),
                    "stage1": None if result.stage1 is None else round(result.stage1, 3),
                    "stage2": None if result.stage2 is None else round(result.stage2, 3),
                    "started_at": round(started_at, 3),
                    "stage1_at": None if result.stage1 is None else round(started_at + result.stage1, 3),
                    "connections_after_stage1": result.connections_after_stage1,
                    "reused_after_stage1": result.reused_after_stage1,
                    "pinned_after_stage1": result.pinned_after_stage1,
                    "late_traffic": round(result.late_traffic, 3),
                    "grace_period": self.grace_period,
                }
            )
        )
