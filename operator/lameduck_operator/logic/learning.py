"""What lameduck learns about a Deployment's data plane from the trusted hold reports of its recent
pods, for the holds of its next pods. Pure.

One hold cannot tell a connection an L7 proxy keeps busy from its pool (waiting helps) from a
client pinned to the pod through kube-proxy (only the app closing it helps). The reports can:
after release the sidecar watches each connection busy at release and reports the latest time
after stage 1 at which one went quiet on its own (`pooledQuietSeconds`: a proxy letting go), and
the connection attempts refused and connections reset once the hold was over
(`lostAfterRelease`: what the hold could not save). From them, the Deployment's pooled delay:
how long after stage 1 its next holds wait for a busy reused connection before taking it as
pinned (the sidecar waits max(propagationDelay, that delay); see lameduck_sidecar.learned).

The rule:
- the largest recent `pooledQuietSeconds`, times RECOMMENDATION_HEADROOM;
- raised by every recent hold that lost requests after release: to at least LOSS_FACTOR times
  the delay it used, and LOSS_STEP_SECONDS more than it (what it held after stage 1, at least
  its learned delay), and to the time from stage 1's end to its last loss (`lastLossSeconds`
  after release), times RECOMMENDATION_HEADROOM: a data plane that still sent work then needs
  at least that, so one lossy hold corrects the delay rather than several growing steps;
- kept at least at what a hold used (see delay_used) when that hold could not tell pooled
  from pinned and clients may reach the pod by its IP: its connections busy at release were
  closed only by the app (`pinnedUntilClosed`), none went quiet by itself, the app was not in
  lame-duck mode, and a headless Service listed the pod (`headlessService`). A proxy that
  resolves the headless Service keeps its pooled connections to a deleted pod busy, exactly as
  a client pinned through kube-proxy does (benchmark: HAProxy), and what counts is when it
  stops opening new ones, which such a hold cannot see: the delay that was lossless is kept
  rather than dropped to 0 (a first learned rollout behind HAProxy lost 103 requests that way,
  bench/results/rollout-l7-lameduck.json). The app's lame-duck mode removes the doubt, and the
  cost;
- never above the policy's maxHold, never below 0: 0 when the recent holds saw only pinned
  clients or no late traffic (the fast path).
Each term only raises the value, so a longer quiet or a loss never lowers it. A loss stops
counting when its report leaves the recent ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lameduck_operator.logic.shutdown import RECOMMENDATION_HEADROOM, HoldReport
from lameduck_operator.names import LEARNED_CONFIGMAP, LEARNED_VERSION, MANAGED_LABELS, LearnedField

# A hold that lost requests with some delay needs more: this many times as much, and at least
# LOSS_STEP_SECONDS more (a loss with no delay at all must still raise it).
LOSS_FACTOR = 1.5
LOSS_STEP_SECONDS = 1.0
# Learned delays are kept to the millisecond (rounded up), as the sidecar reports its times.
PER_SECOND = 1000
# A value longer than this is none lameduck wrote (the sidecar reads at most 256 characters).
MAX_VALUE_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Learned:
    """A Deployment's learned pooled delay and how many trusted reports it rests on."""

    pooled_delay_seconds: float
    reports: int


def _up_to_resolution(seconds: float) -> float:
    # Rounded first so that a float just above a whole millisecond is not taken up to the next.
    return math.ceil(round(seconds * PER_SECOND, 6)) / PER_SECOND


def delay_used(report: HoldReport) -> float:
    """How long the hold waited for busy pooled connections after stage 1: all it held after
    stage 1, and at least its learned delay. (A learned delay below the policy's
    propagationDelay was not what the hold waited: a loss after a learned 0 must raise the delay
    above the propagationDelay the hold did wait, not to 1 s.)"""
    held = report.stage2_seconds
    if held is None:
        held = max(0.0, report.hold_seconds - (report.stage1_seconds or 0.0))
    return max(held, report.learned_delay_seconds or 0.0)


def needed_after(report: HoldReport) -> float:
    """What one report says the next holds need."""
    needed = 0.0
    if report.pooled_quiet_seconds is not None:
        needed = report.pooled_quiet_seconds * RECOMMENDATION_HEADROOM
    if report.headless and report.pinned_until_closed and report.pooled_quiet_seconds is None and not report.lame_duck:
        needed = max(needed, delay_used(report))
    if report.lost_after_release:
        used = delay_used(report)
        needed = max(needed, used * LOSS_FACTOR, used + LOSS_STEP_SECONDS)
        if report.last_loss_seconds is not None:
            held = report.stage2_seconds or 0.0
            needed = max(needed, (held + report.last_loss_seconds) * RECOMMENDATION_HEADROOM)
    return needed


def learn(reports: Sequence[HoldReport], max_hold: float) -> Learned | None:
    """From a Deployment's recent trusted reports and its policy's maxHold; None without any."""
    if not reports:
        return None
    wanted = max(needed_after(report) for report in reports)
    cap = max(0.0, max_hold)
    return Learned(min(cap, _up_to_resolution(wanted)), len(reports))


def learned_value(learned: Learned) -> str:
    """One Deployment's value in the lameduck-learned ConfigMap, as the sidecar reads it."""
    return json.dumps(
        {
            LearnedField.VERSION: LEARNED_VERSION,
            LearnedField.POOLED_DELAY_SECONDS: learned.pooled_delay_seconds,
            LearnedField.REPORTS: learned.reports,
        },
        separators=(",", ":"),
    )


def learned_data(values: Mapping[str, Learned]) -> dict[str, str]:
    """The ConfigMap's data: one key per Deployment name."""
    return {name: learned_value(values[name]) for name in sorted(values)}


def learned_config_map(namespace: str, data: Mapping[str, str]) -> dict[str, Any]:
    """The ConfigMap lameduck applies in a namespace: the keys are all it owns of it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": LEARNED_CONFIGMAP, "namespace": namespace, "labels": dict(MANAGED_LABELS)},
        "data": dict(data),
    }


def parse_learned(value: object) -> Learned | None:
    """A value lameduck wrote before (read back after a restart); None for anything else."""
    if not isinstance(value, str) or len(value) > MAX_VALUE_LENGTH:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or parsed.get(LearnedField.VERSION) != LEARNED_VERSION:
        return None
    delay, reports = parsed.get(LearnedField.POOLED_DELAY_SECONDS), parsed.get(LearnedField.REPORTS)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay) or delay < 0:
        return None
    if isinstance(reports, bool) or not isinstance(reports, int) or reports < 1:
        return None
    return Learned(float(delay), reports)
