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
- never above the maxHold the next holds may have (the policy's, or the learned one below),
  never below 0: 0 when the recent holds saw only pinned clients or no late traffic (the fast
  path).
Each term only raises the value, so a longer quiet or a loss never lowers it. A loss stops
counting when its report leaves the recent ones.

With the policy's hold.learnedBudget, also the Deployment's maxHold (and so, at admission, its
grace period: logic/budget.py), from the same reports (max_hold_needed):
- every hold needs its late traffic with headroom and a quiet period after it, as the status's
  recommendedMaxHold says (shutdown.recommended_max_hold): traffic that came close to maxHold
  raises it before any hold is cut off;
- a hold cut off at its maxHold while work still came (outcome timeout, and late traffic within
  its quiet period + CUT_OFF_SLACK_SECONDS of its end, or requests lost after release) says that
  more was needed but not how much: CUT_OFF_FACTOR times what it held, and at least the time
  from its start (the deletion) to its last loss with headroom;
- the largest of the recent reports', rounded up to whole seconds (the grace period is whole
  seconds), never below the policy's maxHold, never above its maxHoldCap. It comes back down
  only with evidence: when the reports that raised it have left the recent ones and every
  recent hold ended with late traffic that needs less.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lameduck_operator.logic.budget import CUT_OFF_FACTOR, max_hold_in_force
from lameduck_operator.logic.shutdown import RECOMMENDATION_HEADROOM, HoldOutcome, HoldReport, recommended_max_hold
from lameduck_operator.model import HoldSpec, whole_seconds
from lameduck_operator.names import LEARNED_CONFIGMAP, LEARNED_VERSION, MANAGED_LABELS, LearnedField

# A hold that lost requests with some delay needs more: this many times as much, and at least
# LOSS_STEP_SECONDS more (a loss with no delay at all must still raise it).
LOSS_FACTOR = 1.5
LOSS_STEP_SECONDS = 1.0
# Learned delays are kept to the millisecond (rounded up), as the sidecar reports its times.
PER_SECOND = 1000
# A value longer than this is none lameduck wrote (the sidecar reads at most 256 characters).
MAX_VALUE_LENGTH = 256
# Late traffic this much past (quietPeriod before the hold's end) still counts as arriving at the
# end: the sidecar polls the kernel's counters about once a second.
CUT_OFF_SLACK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Learned:
    """A Deployment's learned pooled delay and how many trusted reports it rests on; with
    hold.learnedBudget, its learned maxHold (whole seconds, within the policy's bounds)."""

    pooled_delay_seconds: float
    reports: int
    max_hold_seconds: float | None = None


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


def cut_off(report: HoldReport, quiet_period: float) -> bool:
    """Whether the hold ended at its maxHold (or its grace period) while work still came: late
    traffic within its last quietPeriod (and the poll's slack), or requests lost after it."""
    if report.outcome is not HoldOutcome.TIMEOUT:
        return False
    arriving = report.late_traffic_seconds > 0 and (
        report.hold_seconds - report.late_traffic_seconds <= quiet_period + CUT_OFF_SLACK_SECONDS
    )
    return arriving or bool(report.lost_after_release)


def max_hold_needed(report: HoldReport, quiet_period: float) -> float:
    """The maxHold one report says the Deployment's holds need, counted from the hold's start
    (kubelet runs the preStop when the deletion reaches it)."""
    needed = float(recommended_max_hold(report.late_traffic_seconds, quiet_period))
    if cut_off(report, quiet_period):
        needed = max(needed, report.hold_seconds * CUT_OFF_FACTOR)
        if report.last_loss_seconds is not None:
            to_last_loss = report.hold_seconds + report.last_loss_seconds
            needed = max(needed, to_last_loss * RECOMMENDATION_HEADROOM + quiet_period)
    return needed


def learn_max_hold(reports: Sequence[HoldReport], hold: HoldSpec) -> float | None:
    """The Deployment's learned maxHold; None when its policy does not learn budgets."""
    budget = hold.learned_budget
    if budget is None or not reports:
        return None
    wanted = whole_seconds(max(max_hold_needed(report, hold.quiet_period) for report in reports))
    return max_hold_in_force(hold, float(wanted))


def learn(reports: Sequence[HoldReport], hold: HoldSpec) -> Learned | None:
    """From a Deployment's recent trusted reports and its policy's hold; None without any."""
    if not reports:
        return None
    max_hold = learn_max_hold(reports, hold)
    wanted = max(needed_after(report) for report in reports)
    # What the sidecar waits is bounded by its own maxHold anyway: the learned one when there is.
    cap = max(0.0, hold.max_hold if max_hold is None else max_hold)
    return Learned(min(cap, _up_to_resolution(wanted)), len(reports), max_hold)


def bounded(learned: Learned, hold: HoldSpec) -> Learned:
    """A value learned under an earlier policy (read back after a restart), bounded by the
    policy's hold as it is now."""
    max_hold = None
    if hold.learned_budget is not None and learned.max_hold_seconds is not None:
        max_hold = max_hold_in_force(hold, learned.max_hold_seconds)
    cap = max(0.0, hold.max_hold if max_hold is None else max_hold)
    return Learned(min(learned.pooled_delay_seconds, cap), learned.reports, max_hold)


def learned_value(learned: Learned) -> str:
    """One Deployment's value in the lameduck-learned ConfigMap, as the sidecar reads it (the
    learned delay and, under a learned budget, the learned maxHold) and the operator reads back."""
    value: dict[str, float | int] = {
        LearnedField.VERSION: LEARNED_VERSION,
        LearnedField.POOLED_DELAY_SECONDS: learned.pooled_delay_seconds,
        LearnedField.REPORTS: learned.reports,
    }
    if learned.max_hold_seconds is not None:
        value[LearnedField.LEARNED_MAX_HOLD_SECONDS] = learned.max_hold_seconds
    return json.dumps(value, separators=(",", ":"))


def starting_value(max_hold_seconds: float) -> str:
    """The value of a Deployment at the starting budget (budget.starting_max_hold): no report, so
    no learned delay; the sidecar's holds take its maxHold as they start, and the operator never
    reads it back as learned (parse_learned: no reports)."""
    value = {LearnedField.VERSION: LEARNED_VERSION, LearnedField.REPORTS: 0}
    return json.dumps({**value, LearnedField.LEARNED_MAX_HOLD_SECONDS: max_hold_seconds}, separators=(",", ":"))


def learned_data(values: Mapping[str, Learned], starting: Mapping[str, float] | None = None) -> dict[str, str]:
    """The ConfigMap's data: one key per Deployment name, what was learned or else its starting
    budget (starting: per Deployment name, the starting maxHold)."""
    data = {name: starting_value(seconds) for name, seconds in (starting or {}).items() if name not in values}
    data.update((name, learned_value(learned)) for name, learned in values.items())
    return dict(sorted(data.items()))


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
    max_hold = parsed.get(LearnedField.LEARNED_MAX_HOLD_SECONDS)
    if max_hold is not None and (
        isinstance(max_hold, bool)
        or not isinstance(max_hold, int | float)
        or not math.isfinite(max_hold)
        or max_hold < 0
    ):
        return None
    return Learned(float(delay), reports, None if max_hold is None else float(max_hold))
