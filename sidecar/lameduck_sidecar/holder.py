"""Runs the hold of the pod's deletion, shared by every app container that calls for it, then
watches what happens after release until the app exits, and reports both in one Event."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from lameduck_sidecar.after_release import (
    ConnectionFates,
)
from lameduck_sidecar.calls import READ_INTERVAL, Answer, bounded_names
from lameduck_sidecar.config import SidecarConfig
from lameduck_sidecar.hold import (
    FallbackReason,
    Hold,
    HoldResult,
    HoldSettings,
    answered_at_once,
    deletion_grace_period,
)
from lameduck_sidecar.k8s import ApiError
from lameduck_sidecar.lame_duck import (
    ANSWER_TIMEOUT_SECONDS,
    MAX_STATUS_LINE,
    LameDuckState,
    LameDuckTarget,
    judge,
    request,
)
from lameduck_sidecar.learned import deployment_name, learned_delay, learned_max_hold, max_hold_in_force
from lameduck_sidecar.metrics import SidecarMetrics
from lameduck_sidecar.pod_reads import Look, PodLookup, PodReads
from lameduck_sidecar.report_retry import RetrySchedule
from lameduck_sidecar.reporter import POLL_SECONDS, AfterReleaseReporter, EventPoster, record_hold
from lameduck_sidecar.slices import headless, listings, released
from lameduck_sidecar.traffic import Snapshot, Traffic
from lameduck_sidecar.unconfirmed import UnconfirmedHolds

log = logging.getLogger("lameduck.sidecar")


SliceStream = Callable[[], AsyncGenerator[list[dict[str, Any]], None]]
LearnedLookup = Callable[[], Awaitable[dict[str, Any] | None]]


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
        learned: LearnedLookup | None = None,
        read_interval: float = READ_INTERVAL,
        report_retry: RetrySchedule | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.snapshot = snapshot
        self.traffic = traffic
        self.slice_stream = slice_stream
        self.clock = clock
        self.reads = PodReads(own_pod, clock, config.hold.api_timeout, interval=read_interval, pod_name=config.pod_name)
        # Calls whose pod could not be read: fallback holds that use nothing up.
        self.unconfirmed = UnconfirmedHolds(config, metrics, snapshot, traffic, clock)
        self.post_event = post_event
        self.report_retry = report_retry  # how a failed report is posted again (report_retry.py)
        self.learned = learned
        self.pod: dict[str, Any] | None = None  # as read when the hold began
        # After the hold has been answered: watching until the app exits, then the report.
        self.report_task: asyncio.Task[None] | None = None
        self.reporter: AfterReleaseReporter | None = None
        # When the sidecar got its own SIGTERM (before_exit), on `clock`.
        self.terminated_at: float | None = None
        self.grace_period: float | None = None  # of the pod's deletion, once known
        # The hold of the pod's deletion: a pod is deleted once, so there is at most one, and
        # only a read of the pod that found it being deleted starts it.
        self.task: asyncio.Task[HoldResult] | None = None
        self.callers: list[str] = []
        self.started_at = 0.0  # wall clock, for logs that line up with other observers

    @property
    def holding(self) -> bool:
        return self.task is not None and not self.task.done()

    def waited_on(self) -> set[asyncio.Task[Any]]:
        """What calls still wait for: the deletion's hold, fallback holds."""
        return {t for t in (self.task, self.unconfirmed.task) if t is not None and not t.done()}

    async def hold(self, caller: str) -> HoldResult:
        """Join the hold of the pod's deletion, started by the first call a read of the pod
        confirms. A call while the pod is not being deleted (kubelet restarting a container
        after a failed probe, or anyone else) is answered at once and leaves nothing behind; a
        call while the pod cannot be read gets a fallback hold that uses nothing up."""
        called, called_at = self.clock(), time.time()
        if self.task is None:
            look = await self.reads.look(caller, called, called_at)
            if self.task is None:
                if look.unreadable is not None:
                    self.metrics.calls.labels(answer=Answer.FALLBACK.value).inc()
                    return await self.unconfirmed.hold(look)
                if not look.deleting:
                    return self._not_deleting(look)
                self.task = asyncio.create_task(self._start(look))
        self.metrics.calls.labels(answer=Answer.HOLD.value).inc()
        self.callers = bounded_names([*self.callers, caller])
        return await asyncio.shield(self.task)

    def _not_deleting(self, look: Look) -> HoldResult:
        self.metrics.calls.labels(answer=Answer.NOT_DELETING.value).inc()
        result = answered_at_once()
        if not look.recorded:  # one record per read, however many calls it answered
            look.recorded = True
            self._record(result, look.callers, look.first_call_at)
        return result

    async def _start(self, look: Look) -> HoldResult:
        """The hold of the confirmed deletion, from the first call the read answered. What was
        learned is read now, and only for a deletion: a hold waits for it at most api_timeout."""
        self.pod = look.pod
        self.grace_period = deletion_grace_period(look.pod)
        config_map = None if self.learned is None else await self._read_learned()
        deployment = deployment_name(look.pod)
        delay = learned_delay(config_map, deployment)
        settings = self.config.hold
        # A rollout's later pods were made before what its first pods taught: take it now.
        max_hold = max_hold_in_force(settings.max_hold, settings.max_hold_cap, learned_max_hold(config_map, deployment))
        return await self._run(look.first_call, look.first_call_at, delay, replace(settings, max_hold=max_hold))

    async def _read_learned(self) -> dict[str, Any] | None:
        assert self.learned is not None
        try:
            return await asyncio.wait_for(self.learned(), self.config.hold.api_timeout)
        except (TimeoutError, ApiError) as err:  # no history: the hold learns
            log.warning(json.dumps({"event": "learned_unreadable", "pod": self.config.pod_name, "reason": str(err)}))
            return None

    async def _run(
        self, started: float, started_at: float, learned: float | None, settings: HoldSettings
    ) -> HoldResult:
        self.metrics.in_flight.inc()
        self.metrics.holds_by_history.labels(state="learning" if learned is None else "learned").inc()
        self.started_at = started_at
        # Before the first observation: the sidecar's own connection to the app is then no new work.
        lame_duck = await ask_lame_duck(self.config.lame_duck, self.config.pod_name)
        hold = Hold(settings, started, learned, lame_duck)
        if self.grace_period is not None:
            hold.grace_period(self.grace_period)
        traffic = self.traffic()
        fates = ConnectionFates(self.config.app_ports, self.config.port, self.config.hold.quiet_period, started)
        first = self.snapshot()
        traffic.observe(self.clock(), first)  # what is open now is not new
        fates.observe(self.clock(), first.sockets)
        watcher = asyncio.create_task(self._watch_slices(hold))
        stage1_seen = False
        try:
            while True:
                now = self.clock()
                snapshot = self.snapshot()
                hold.traffic(now, *traffic.observe(now, snapshot))
                if hold.stage1_end is not None and not stage1_seen:
                    stage1_seen = True
                    fates.stage1_ended(hold.stage1_end)
                fates.observe(now, snapshot.sockets)
                result = hold.result(self.clock())
                if result is not None:
                    break
                await asyncio.sleep(max(0.0, min(POLL_SECONDS, hold.wake_at() - self.clock())))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self.metrics.in_flight.dec()
        fates.released(self.clock())
        self._record(result, self.callers, self.started_at)
        reporter = AfterReleaseReporter(
            self.config, self.metrics, self.snapshot, self.clock, self.post_event, retry=self.report_retry
        )
        if self.terminated_at is not None:
            reporter.terminate(self.terminated_at)
        self.reporter = reporter
        self.report_task = asyncio.create_task(
            reporter.run(hold, fates, result, list(self.callers), pod=self.pod, grace_period=self.grace_period)
        )
        return result

    def terminate(self) -> None:
        """The sidecar got its own SIGTERM."""
        if self.terminated_at is None:
            self.terminated_at = self.clock()
        if self.reporter is not None:
            self.reporter.terminate(self.terminated_at)

    async def _watch_slices(self, hold: Hold) -> None:
        """Stage 1: until no EndpointSlice holds the pod, or fall back."""
        if self.slice_stream is None:
            self._fall_back(hold, FallbackReason.NO_API_ADDRESS, "")
            return
        try:
            async with contextlib.aclosing(self.slice_stream()) as stream:
                first = await asyncio.wait_for(anext(stream), self.config.hold.api_timeout)
                self._judge(hold, first)
                # Ends with stage 1: the watch's connection is closed long before release, so
                # none of its packets falls into the count after release.
                if hold.stage1_end is None:
                    async for slices in stream:
                        self._judge(hold, slices)
                        if hold.stage1_end is not None:
                            break
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
        hold.headless = hold.headless or headless(slices, self.config.pod_uid, self.config.pod_name, self.config.pod_ip)
        if released(found):
            hold.slices_released(self.clock(), listed=bool(found))

    def _record(self, result: HoldResult, callers: list[str], started_at: float) -> None:
        record_hold(self.metrics, self.config, result, callers, started_at=started_at, grace_period=self.grace_period)


async def ask_lame_duck(target: LameDuckTarget | None, pod_name: str) -> LameDuckState:
    """Asks the app for its lame-duck mode (lame_duck.py), once, where the policy names one."""
    if target is None:
        return LameDuckState.OFF
    status: bytes | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT_SECONDS):
            reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
            writer.write(request(target))
            await writer.drain()
            status = await reader.readline()
    except (OSError, TimeoutError, ValueError) as err:
        log.warning(json.dumps({"event": "lame_duck_failed", "pod": pod_name, "reason": repr(err)}))
    finally:
        if writer is not None:
            writer.close()
    state = judge(status[:MAX_STATUS_LINE] if status else None)
    log.info(json.dumps({"event": "lame_duck", "pod": pod_name, "state": state.value}))
    return state
