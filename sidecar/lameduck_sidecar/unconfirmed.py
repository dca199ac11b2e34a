"""Fallback holds for calls whose pod could not be read (pod_reads.py: the API refused, failed or
was too slow, or the sidecar has no API address), so no deletion is confirmed.

Such a call may be kubelet's preStop for a deletion (a missed hold loses requests) or anyone
else's. It gets a fallback hold, as when stage 1 cannot watch the slices (hold.py): at least
fallbackDelay after the read, then until quiet, never past maxHold from the call. But it uses
nothing up (the pod's one hold still runs when a later read confirms the deletion), and it posts
no report (there may be no deletion). One hold per read, shared by the calls that read answered;
one poll of the kernel's view for all of them, however many there are.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from lameduck_sidecar.config import SidecarConfig
from lameduck_sidecar.hold import Hold, HoldResult
from lameduck_sidecar.metrics import SidecarMetrics
from lameduck_sidecar.pod_reads import Look
from lameduck_sidecar.reporter import POLL_SECONDS, record_hold
from lameduck_sidecar.traffic import Snapshot, Traffic

log = logging.getLogger("lameduck.sidecar")


class UnconfirmedHolds:
    def __init__(
        self,
        config: SidecarConfig,
        metrics: SidecarMetrics,
        snapshot: Callable[[], Snapshot],
        traffic: Callable[[], Traffic],
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.snapshot = snapshot
        self.traffic = traffic
        self.clock = clock
        self.holds: dict[Look, tuple[Hold, asyncio.Future[HoldResult]]] = {}
        self.task: asyncio.Task[None] | None = None  # the poll, while any hold runs

    async def hold(self, look: Look) -> HoldResult:
        """The fallback hold of the calls `look` answered, started by the first of them."""
        assert look.unreadable is not None, "only for a pod that could not be read"
        found = self.holds.get(look)
        if found is None:
            hold = Hold(self.config.hold, look.first_call)
            hold.api_failed(self.clock())
            found = self.holds[look] = (hold, asyncio.get_running_loop().create_future())
            self.metrics.in_flight.inc()
            self.metrics.fallbacks.labels(reason=look.unreadable.value).inc()
            fallback = {"event": "fallback", "pod": self.config.pod_name, "reason": look.unreadable.value}
            log.warning(json.dumps(fallback | {"detail": look.detail}))
            if self.task is None or self.task.done():
                self.task = asyncio.create_task(self._poll())
        return await asyncio.shield(found[1])

    async def _poll(self) -> None:
        traffic = self.traffic()
        try:
            traffic.observe(self.clock(), self.snapshot())  # what is open now is not new
            while self.holds:
                now = self.clock()
                work = traffic.observe(now, self.snapshot())
                for look, (hold, answer) in list(self.holds.items()):
                    hold.traffic(now, *work)
                    result = hold.result(self.clock())
                    if result is not None:
                        self._end(look)
                        self._record(look, result)
                        answer.set_result(result)
                wake = min((hold.wake_at() for hold, _ in self.holds.values()), default=now)
                await asyncio.sleep(max(0.0, min(POLL_SECONDS, wake - self.clock())))
        except Exception as err:  # a bug of ours: the calls get an error rather than waiting forever
            log.exception("a fallback hold failed")
            for look, (_, answer) in list(self.holds.items()):
                self._end(look)
                answer.set_exception(err)

    def _end(self, look: Look) -> None:
        del self.holds[look]
        self.metrics.in_flight.dec()

    def _record(self, look: Look, result: HoldResult) -> None:
        record_hold(self.metrics, self.config, result, look.callers, started_at=look.first_call_at, grace_period=None)
