"""After the hold is answered: watch until the app exits (what the hold could not save, which
connections let go by themselves), then post the hold report, one Event on the pod that
outlives it, again after a failure while that may pass and the pod's grace period leaves time.
Pure parts in after_release.py, report.py and report_retry.py; this only runs them in order."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from lameduck_sidecar.after_release import (
    AfterRelease,
    ConnectionFates,
    LossCount,
    app_listening,
    last_post_start,
    listening_ports,
    observation_deadline,
    observation_over,
)
from lameduck_sidecar.config import SidecarConfig
from lameduck_sidecar.hold import Hold, HoldResult, Outcome
from lameduck_sidecar.k8s import ApiError
from lameduck_sidecar.metrics import SidecarMetrics
from lameduck_sidecar.report import hold_report_event, report_message
from lameduck_sidecar.report_retry import RetrySchedule, next_attempt, retryable
from lameduck_sidecar.traffic import Snapshot

# How often the kernel's view is read, during the hold and after it.
POLL_SECONDS = 0.1
log = logging.getLogger("lameduck.sidecar")
EventPoster = Callable[[dict[str, Any]], Awaitable[None]]


class AfterReleaseReporter:
    def __init__(
        self,
        config: SidecarConfig,
        metrics: SidecarMetrics,
        snapshot: Callable[[], Snapshot],
        clock: Callable[[], float],
        post_event: EventPoster | None,
        *,
        retry: RetrySchedule | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.snapshot = snapshot
        self.clock = clock
        self.post_event = post_event
        self.retry = retry or RetrySchedule()
        # When the sidecar got its own SIGTERM (before_exit), on `clock`; it wakes a retry's wait.
        self.terminated_at: float | None = None
        self._terminated = asyncio.Event()
        # The latest moment a post may start and end before the pod's grace period does, once known.
        self.last_start: float | None = None

    def terminate(self, at: float) -> None:
        """The sidecar got its own SIGTERM at `at`."""
        if self.terminated_at is None:
            self.terminated_at = at
        self._terminated.set()

    def posting_ends_by(self) -> float | None:
        """When the last attempt to post ends at the latest, on `clock`; None: the grace period is
        unknown (then the sidecar's SIGTERM ends the retries)."""
        return None if self.last_start is None else self.last_start + self.config.hold.api_timeout

    async def run(
        self,
        hold: Hold,
        fates: ConnectionFates,
        result: HoldResult,
        callers: list[str],
        *,
        pod: Mapping[str, Any] | None,
        grace_period: float | None,
    ) -> None:
        """Watch until the app exits, then post the report: it outlives the pod, unlike the metrics."""
        api_timeout = self.config.hold.api_timeout
        self.last_start = last_post_start(started=hold.started, grace_period=grace_period, api_timeout=api_timeout)
        try:
            after = await self._observe(hold, fates, grace_period)
        except Exception:  # a bug of ours: the report still goes out
            log.exception("observing after release failed")
            after = AfterRelease(None, None, 0, None)
        log.info(
            json.dumps(
                {
                    "event": "after_release",
                    "pod": self.config.pod_name,
                    "lost": after.lost,
                    "pooled_quiet": None if after.pooled_quiet is None else round(after.pooled_quiet, 3),
                    "pinned_until_closed": after.pinned_until_closed,
                    "app_exit": None if after.app_exit is None else round(after.app_exit, 3),
                    "last_loss": None if after.last_loss is None else round(after.last_loss, 3),
                }
            )
        )
        if self.post_event is not None:
            await self._report(result, callers, after, pod, grace_period)

    async def _observe(self, hold: Hold, fates: ConnectionFates, grace_period: float | None) -> AfterRelease:
        """From release until the app's exit (after_release.py): the first snapshot is the
        baseline, taken once the hold's own API connections are closed."""
        native, released = self.config.native, self.clock()
        deadline = observation_deadline(
            native=native,
            released=released,
            started=hold.started,
            grace_period=grace_period,
            drain_timeout=self.config.hold.drain_timeout,
            api_timeout=self.config.hold.api_timeout,
        )
        loss = LossCount(self.config.probes)
        while True:
            snapshot, now = self.snapshot(), self.clock()
            fates.observe(now, snapshot.sockets)
            ports = listening_ports(self.config.port, snapshot.sockets)
            loss.observe(now, snapshot.resets_sent, ports)
            listening = app_listening(self.config.app_ports, ports)
            terminated = self.terminated_at is not None
            if observation_over(native=native, terminated=terminated, listening=listening, now=now, deadline=deadline):
                break
            await asyncio.sleep(POLL_SECONDS)
        exited: float | None = None
        if now < deadline:  # ended by the app's exit as seen, not by the bound
            exited = max(0.0, (self.terminated_at or now) - released) if native else now - released
        last_loss = loss.last_loss_at()
        return AfterRelease(
            loss.lost(),
            fates.pooled_quiet,
            fates.pinned_until_closed,
            exited,
            None if last_loss is None else max(0.0, last_loss - released),
        )

    async def _report(
        self,
        result: HoldResult,
        callers: list[str],
        after: AfterRelease,
        pod: Mapping[str, Any] | None,
        grace_period: float | None,
    ) -> None:
        """One Event on the pod with what the hold saw and what followed it."""
        assert self.post_event is not None
        message = report_message(
            result,
            policy=self.config.policy,
            max_hold=self.config.hold.max_hold if result.max_hold is None else result.max_hold,
            grace_period=grace_period,
            pod=pod,
            containers=callers,
            after=after,
        )
        event = hold_report_event(
            message,
            namespace=self.config.namespace,
            pod_name=self.config.pod_name,
            pod_uid=self.config.pod_uid,
            now=datetime.now(UTC),
        )
        await self._post(event)

    async def _post(self, event: dict[str, Any]) -> None:
        """Until it is stored, or report_retry.next_attempt gives up: each failure logged, the
        outcome counted once (posted, posted_after_retry, failed)."""
        assert self.post_event is not None
        for attempts in itertools.count(1):
            try:
                await asyncio.wait_for(self.post_event(event), self.config.hold.api_timeout)
            except (TimeoutError, ApiError) as err:
                now = self.clock()
                again = next_attempt(
                    self.retry,
                    attempts=attempts,
                    now=now,
                    may_pass=retryable(err.status if isinstance(err, ApiError) else None),
                    last_start=self.last_start,
                    terminated=self.terminated_at is not None,
                )
                failed = {"event": "report_failed", "pod": self.config.pod_name, "reason": str(err) or repr(err)}
                retry_in = None if again is None else round(max(0.0, again - now), 3)
                log.warning(json.dumps(failed | {"attempt": attempts, "retry_in": retry_in}))
                if again is None:
                    self.metrics.reports.labels(result="failed").inc()
                    return
                await self._wait_until(again)
            else:
                self.metrics.reports.labels(result="posted" if attempts == 1 else "posted_after_retry").inc()
                return

    async def _wait_until(self, at: float) -> None:
        """Until `at` on `clock`; the sidecar's SIGTERM, if it comes first, ends the wait once."""
        delay = max(0.0, at - self.clock())
        if self.terminated_at is not None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._terminated.wait(), delay)


def record_hold(
    metrics: SidecarMetrics,
    config: SidecarConfig,
    result: HoldResult,
    callers: list[str],
    *,
    started_at: float,
    grace_period: float | None,
) -> None:
    """A hold's outcome in the sidecar's metrics and one JSON log line, as soon as it is answered."""
    metrics.holds.labels(outcome=result.outcome.value).inc()
    if result.outcome is not Outcome.NOT_DELETING:
        metrics.hold_seconds.observe(result.total)
    if result.stage1 is not None:
        metrics.stage1_seconds.observe(result.stage1)
    if result.stage2 is not None:
        metrics.stage2_seconds.observe(result.stage2)
    metrics.connections_after_stage1.inc(result.connections_after_stage1)
    metrics.reused_after_stage1.inc(result.reused_after_stage1)
    metrics.pinned_after_stage1.inc(result.pinned_after_stage1)
    log.info(
        json.dumps(
            {
                "event": "hold",
                "pod": config.pod_name,
                "namespace": config.namespace,
                "policy": config.policy,
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
                "learned_delay": result.learned_delay,
                "max_hold": result.max_hold,  # the learned one when a hold took it live
                "lame_duck": result.lame_duck.value,
                "grace_period": grace_period,
            }
        )
    )
