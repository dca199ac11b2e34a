"""The hold: when the app's preStop may return. Pure; the caller feeds observations and time.

A hold runs only for a pod that is being deleted: kubelet also runs preStop hooks when it
restarts a container after a failed liveness or startup probe, and such a call is answered
at once (`should_hold`). Stage 1 ends when no EndpointSlice holds the pod any more (see
slices.py; or none lists it, or the API could not be asked: fallback). Stage 2 ends once no
new work reached the app for quietPeriod (no new connection, no new data on an open one:
see traffic.py), and at least propagationDelay (fallbackDelay after a fallback) passed since
stage 1 ended. Never longer than maxHold in all, nor so long that the app has less than
drainTimeout left of the grace period the pod was deleted with.

A connection busy without a pause is either an L7 proxy's pooled one (waiting helps) or one
pinned to the pod (only the app closing it helps). How long it is waited for comes from the
Deployment's history (learned.py): with a learned delay, max(propagationDelay, that delay); with
none (a learning hold), until it goes quiet, up to maxHold. With the app in lame-duck mode
(lame_duck.py) no connection stays busy past its current response, so every busy one is waited
for until it goes quiet, as in a learning hold, however much was learned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lameduck_sidecar.lame_duck import LameDuckState


class Outcome(StrEnum):
    QUIET = "quiet"
    NOT_IN_ANY_SLICE = "not_in_any_slice"
    TIMEOUT = "timeout"
    FALLBACK = "fallback"
    # The call came while the pod was not being deleted (a container restart): no hold.
    NOT_DELETING = "not_deleting"


class FallbackReason(StrEnum):
    """Why stage 1 could not watch the slices."""

    NO_API_ADDRESS = "no_api_address"
    API = "api"  # unreachable, forbidden, too slow or a garbled answer
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class HoldSettings:
    propagation_delay: float
    quiet_period: float
    max_hold: float
    # How long stage 1 may wait for the API's first answer before falling back.
    api_timeout: float = 3.0
    # Stage 2's minimum after a fallback, when the slices could not be watched.
    fallback_delay: float = 10.0
    # What the app needs after SIGTERM: a deletion with a shorter grace period than the
    # template's shortens the hold so that this much is still left.
    drain_timeout: float = 0.0
    # With the policy's learned budget: how far a learned maxHold read when the hold starts may
    # take max_hold (the pod's grace period leaves room for it); None: max_hold is final.
    max_hold_cap: float | None = None


@dataclass(frozen=True)
class HoldResult:
    outcome: Outcome
    total: float
    stage1: float | None
    stage2: float | None
    connections_after_stage1: int
    # Open connections that carried new data after stage 1, counted once per poll; pinned:
    # those whose busy streak went on past propagationDelay (see Hold.traffic).
    reused_after_stage1: int = 0
    pinned_after_stage1: int = 0
    # From the hold's start until the last new connection or request that kept the hold
    # (0 when none came): what the data planes took to stop sending work to the pod.
    late_traffic: float = 0.0
    # The Deployment's learned delay this hold used; None: a learning hold (no history).
    learned_delay: float | None = None
    lame_duck: LameDuckState = LameDuckState.OFF
    # A headless Service's slice listed the pod: clients may reach it by its own IP (slices.py).
    headless: bool = False
    # The maxHold this hold was bounded by (a learned one when it raised it); None: no hold ran.
    max_hold: float | None = None


def should_hold(pod: Mapping[str, Any] | None) -> bool:
    """Hold unless the pod, as read when the call came, is not being deleted. An unreadable
    pod (None) is held for: a deletion is the usual reason for a preStop call, and a missed
    hold loses requests while an extra one only delays a restart."""
    return pod is None or bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def deletion_grace_period(pod: Mapping[str, Any] | None) -> float | None:
    seconds = ((pod or {}).get("metadata") or {}).get("deletionGracePeriodSeconds")
    return float(seconds) if isinstance(seconds, int | float) and not isinstance(seconds, bool) else None


def answered_at_once() -> HoldResult:
    return HoldResult(Outcome.NOT_DELETING, 0.0, None, None, 0)


class Hold:
    def __init__(
        self,
        settings: HoldSettings,
        started: float,
        learned_delay: float | None = None,
        lame_duck: LameDuckState = LameDuckState.OFF,
    ) -> None:
        self.settings = settings
        self.started = started
        # The Deployment's learned pooled delay; None: no history, a learning hold.
        self.learned_delay = learned_delay
        self.lame_duck = lame_duck
        self.headless = False
        self.stage1_end: float | None = None
        self.not_in_any_slice = False
        self.fallback = False
        self.last_traffic: float | None = None
        self.connections_after_stage1 = 0
        self.reused_after_stage1 = 0
        self.pinned_after_stage1 = 0
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

    def traffic(self, now: float, new_connections: int, streaks: tuple[float, ...] = ()) -> None:
        """New work reached the app: new inbound connections, and open connections that
        received new data, each given by the start of its busy streak (traffic.py).

        A data plane that stops choosing the pod stops opening connections to it, and an L7
        proxy stops sending requests over its pooled ones. But a connection can also be
        pinned to the pod: kube-proxy keeps an established connection on the endpoint it
        chose, and so does a client's pool through a Service, however long the hold waits;
        only the app moves it (it answers with Connection: close after SIGTERM, within
        drainTimeout). From the pod's side the two look alike in one hold, so a busy streak is
        waited for until `pinned_after()` after it began (or after stage 1, if later); a streak
        still going then is taken as pinned. In a learning hold it is never taken as pinned: it
        keeps the hold until it goes quiet or maxHold. A request after a pause starts a new
        streak and counts again.
        """
        wait = self.pinned_after()
        counted = [
            start
            for start in streaks
            if self.stage1_end is None or wait is None or now < max(start, self.stage1_end) + wait
        ]
        if self.stage1_end is not None:
            self.pinned_after_stage1 += len(streaks) - len(counted)
        if new_connections <= 0 and not counted:
            return
        self.last_traffic = now
        if self.stage1_end is not None:
            self.connections_after_stage1 += max(0, new_connections)
            self.reused_after_stage1 += len(counted)

    def pinned_after(self) -> float | None:
        """How long a busy streak is waited for, from stage 1's end or its own start if later;
        None: until it goes quiet (a learning hold, or the app in lame-duck mode, which closes
        each connection after its response). A learned delay only ever lengthens the policy's
        propagationDelay: the policy is the floor."""
        if self.learned_delay is None or self.lame_duck is LameDuckState.ON:
            return None
        return max(self.settings.propagation_delay, self.learned_delay)

    def _minimum(self) -> float:
        if self.fallback:
            return min(self.settings.fallback_delay, self.settings.max_hold)
        return 0.0 if self.not_in_any_slice else self.settings.propagation_delay

    def _release_at(self) -> float | None:
        if self.stage1_end is None:
            return None
        quiet_from = max(self.stage1_end, self.last_traffic or self.stage1_end)
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
        return HoldResult(
            outcome,
            now - self.started,
            stage1,
            stage2,
            self.connections_after_stage1,
            self.reused_after_stage1,
            self.pinned_after_stage1,
            0.0 if self.last_traffic is None else max(0.0, self.last_traffic - self.started),
            self.learned_delay,
            self.lame_duck,
            self.headless,
            self.settings.max_hold,
        )

    def wake_at(self) -> float:
        """When result() can next change if nothing new is observed."""
        deadline = self.deadline
        release = self._release_at()
        return deadline if release is None else min(deadline, release)
