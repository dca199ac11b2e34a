"""The hold: when the app's preStop may return. Pure; the caller feeds observations and time.

Stage 1 ends when every EndpointSlice that lists the pod shows it not ready (or none lists
it, or the API could not be asked: fallback). Stage 2 ends once no new inbound connection
reached the app for quietPeriod, and at least propagationDelay (fallbackDelay after a
fallback) passed since stage 1 ended. Never longer than maxHold in all, nor so long that
the app has less than drainTimeout left of the grace period the pod was deleted with.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    QUIET = "quiet"
    NOT_IN_ANY_SLICE = "not_in_any_slice"
    TIMEOUT = "timeout"
    FALLBACK = "fallback"


@dataclass(frozen=True)
class HoldSettings:
    propagation_delay: float
    quiet_period: float
    max_hold: float
    # How long stage 1 may wait for the API's first answer before falling back.
    api_timeout: float = 3.0
    # Stage 2's minimum after a fallback, when the slices could not be watched.
    fallback_delay: float = 10.0
    # kubelet's own probe connections per second to the app, which are not traffic.
    probes_per_second: float = 0.0
    # What the app needs after SIGTERM: a deletion with a shorter grace period than the
    # template's shortens the hold so that this much is still left.
    drain_timeout: float = 0.0


@dataclass(frozen=True)
class HoldResult:
    outcome: Outcome
    total: float
    stage1: float | None
    stage2: float | None
    connections_after_stage1: int


class Hold:
    def __init__(self, settings: HoldSettings, started: float) -> None:
        self.settings = settings
        self.started = started
        self.stage1_end: float | None = None
        self.not_in_any_slice = False
        self.fallback = False
        self.last_connection: float | None = None
        self.connections_after_stage1 = 0
        self._opens: deque[tuple[float, int]] = deque()
        # Inbound connections a quiet window may hold that are only kubelet's probes.
        self._probe_allowance = math.ceil(settings.probes_per_second * settings.quiet_period) + 1
        self.deadline = started + settings.max_hold

    def grace_period(self, seconds: float) -> None:
        """The pod is being deleted with this grace period, counted from the hold's start
        (kubelet starts it as it runs the preStop hook): leave the app its drainTimeout."""
        self.deadline = min(self.deadline, self.started + max(0.0, seconds - self.settings.drain_timeout))

    def slices_released(self, now: float, listed: bool) -> None:
        """Every slice listing the pod shows it not ready; listed=False: no slice lists it."""
        if self.stage1_end is None:
            self.stage1_end = now
            self.not_in_any_slice = not listed

    def api_failed(self, now: float) -> None:
        if self.stage1_end is None:
            self.stage1_end = now
            self.fallback = True

    def connections(self, now: float, count: int) -> None:
        """count new inbound connections reached the app."""
        if count <= 0:
            return
        self.last_connection = now
        if self.stage1_end is not None:
            self.connections_after_stage1 += count

    def inbound(self, now: float, opens: int) -> None:
        """opens: connections the kernel accepted for the pod, other than the sidecar's own.

        It misses none, however short-lived (the socket table does), but counts probes too:
        a quiet window may hold the probes' share of them.
        """
        self._opens.append((now, max(0, opens)))
        while self._opens and self._opens[0][0] <= now - self.settings.quiet_period:
            self._opens.popleft()
        in_window = sum(n for _, n in self._opens)
        if in_window > self._probe_allowance:
            self.connections(now, in_window - self._probe_allowance)
            self._opens.clear()

    def _minimum(self) -> float:
        if self.fallback:
            return min(self.settings.fallback_delay, self.settings.max_hold)
        return 0.0 if self.not_in_any_slice else self.settings.propagation_delay

    def _release_at(self) -> float | None:
        if self.stage1_end is None:
            return None
        quiet_from = max(self.stage1_end, self.last_connection or self.stage1_end)
        return max(self.stage1_end + self._minimum(), quiet_from + self.settings.quiet_period)

    def result(self, now: float) -> HoldResult | None:
        """The hold's end, or None while it must go on."""
        deadline = self.deadline
        release = self._release_at()
        if release is not None and now >= release and release <= deadline:
            outcome = (
                Outcome.FALLBACK
                if self.fallback
                else Outcome.NOT_IN_ANY_SLICE
                if self.not_in_any_slice
                else Outcome.QUIET
            )
            return self._result(outcome, now)
        if now >= deadline:
            # A hold that fell back is counted as such even when its deadline ended it.
            return self._result(Outcome.FALLBACK if self.fallback else Outcome.TIMEOUT, now)
        return None

    def _result(self, outcome: Outcome, now: float) -> HoldResult:
        stage1 = None if self.stage1_end is None else self.stage1_end - self.started
        stage2 = None if self.stage1_end is None else now - self.stage1_end
        return HoldResult(outcome, now - self.started, stage1, stage2, self.connections_after_stage1)

    def wake_at(self) -> float:
        """When result() can next change if nothing new is observed."""
        deadline = self.deadline
        release = self._release_at()
        return deadline if release is None else min(deadline, release)
