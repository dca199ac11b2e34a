"""Shutdown, as observed: the sidecars' hold reports and the pods' terminations, and what a
Deployment's recent terminations say about the delay it needs. Pure: the adapter passes in
Events and pods as read from the API.

A hold report is the Event the sidecar posts on its pod at the end of a hold (label
lameduck.dev/report=hold, the report as JSON in the message; see lameduck_sidecar.report).
A termination is read from the pod itself: once the pod is being deleted and every app
container has terminated, the time from the deletion to the last exit and how each ended.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from lameduck_operator.logic.budget import BudgetSource
from lameduck_operator.logic.status import MAX_LISTED
from lameduck_operator.model import BUDGET_MARGIN_SECONDS, MAX_HOLD, PolicyRef, format_seconds
from lameduck_operator.names import (
    KIND_CLUSTER,
    POLICY_KINDS,
    REPORT_VERSION,
    SIDECAR_NAME,
    LameDuckReport,
    ReportField,
    SidecarEnv,
)

# A container killed at the end of its grace period exits with 128 + SIGKILL.
SIGKILL_EXIT = 137
SIGTERM_EXIT = 143
# A pod deleted this soon after its app container started may have had its SIGTERM before the
# app could handle it.
EARLY_DELETION_SECONDS = 5.0
# A grace period's end, as kubelet and the API server's whole-second times see it.
CLOCK_SLACK_SECONDS = 1.0
# Headroom over the latest late traffic observed when recommending a maxHold.
RECOMMENDATION_HEADROOM = 1.25


class HoldOutcome(StrEnum):
    QUIET = "quiet"
    NOT_IN_ANY_SLICE = "not_in_any_slice"
    TIMEOUT = "timeout"
    FALLBACK = "fallback"


class TerminationOutcome(StrEnum):
    """How a pod's app containers ended after its deletion."""

    CLEAN = "clean"  # exit 0, or died of the SIGTERM itself (143)
    ERROR = "error"  # any other exit, an OOM kill included
    KILLED = "killed"  # SIGKILLed at the end of the grace period: the budget was too small


class KilledCause(StrEnum):
    """Why a pod was likely SIGKILLed at the end of its grace period."""

    # Deleted within EARLY_DELETION_SECONDS of its app container starting: the SIGTERM most
    # likely came before the app handled it (as PID 1 an app without a handler ignores it).
    SIGTERM_LIKELY_LOST = "sigterm_likely_lost"
    # Otherwise: the app needed longer to stop than its grace period gave it.
    OVER_BUDGET = "over_budget"


class MalformedReason(StrEnum):
    NOT_JSON = "not_json"
    UNKNOWN_VERSION = "unknown_version"
    MISSING_FIELD = "missing_field"
    BAD_VALUE = "bad_value"


class ReportMalformed(ValueError):
    def __init__(self, reason: MalformedReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HoldReport:
    event_uid: str
    namespace: str
    pod: str
    pod_uid: str
    deployment: str | None
    policy: PolicyRef | None
    outcome: HoldOutcome
    hold_seconds: float
    stage1_seconds: float | None
    stage2_seconds: float | None
    late_traffic_seconds: float
    max_hold_seconds: float | None
    grace_period_seconds: float | None
    # Where the Event says its pod is, and when the API server stored the Event (its own
    # clock: a client cannot set it). What report_trust judges the report by.
    involved_namespace: str | None = None
    created_at: float | None = None
    # Measured after release, until the app exited (sidecars before issue 22 omit them: None, 0).
    # Connection attempts refused and connections reset after release: the loss the hold could
    # not prevent; None when the sidecar could not count it.
    lost_after_release: int | None = None
    # The latest time after stage 1's end at which a connection busy at release went quiet on
    # its own (an L7 proxy's pool letting go); None when none did.
    pooled_quiet_seconds: float | None = None
    pinned_until_closed: int = 0  # busy connections that ended only when closed
    learned_delay_seconds: float | None = None  # the learned delay the hold used; None: a learning hold
    app_exit_seconds: float | None = None  # from release to the app's exit, as the sidecar saw it
    # The app was in lame-duck mode for the hold: each connection closed after its response.
    lame_duck: bool = False
    last_loss_seconds: float | None = None  # from release to the last request lost
    # A headless Service listed the pod: clients may have reached it by its IP (DNS, an L7 proxy).
    headless: bool = False


@dataclass(frozen=True)
class Termination:
    namespace: str
    pod: str
    pod_uid: str
    deployment: str | None
    policy: PolicyRef | None
    outcome: TerminationOutcome
    seconds: float  # from the deletion to the last app container's exit
    grace_period_seconds: float
    exit_codes: tuple[int, ...]
    killed_cause: KilledCause | None = None  # for a KILLED outcome


def policy_from_annotation(value: object) -> PolicyRef | None:
    """The policy named as PolicyRef.annotation_value writes it (the sidecar's LAMEDUCK_POLICY)."""
    if not isinstance(value, str):
        return None
    parts = value.split("/")
    if len(parts) == 2 and parts[0] == KIND_CLUSTER and parts[1]:
        return PolicyRef(parts[0], parts[1])
    if len(parts) == 3 and parts[0] in POLICY_KINDS and parts[0] != KIND_CLUSTER and all(parts[1:]):
        return PolicyRef(parts[0], parts[2], parts[1])
    return None


def deployment_of(replica_set: object, template_hash: object) -> str | None:
    """A Deployment names its ReplicaSets <deployment>-<pod-template-hash>."""
    if not isinstance(replica_set, str) or not isinstance(template_hash, str) or not template_hash:
        return None
    suffix = f"-{template_hash}"
    return replica_set[: -len(suffix)] if replica_set.endswith(suffix) and len(replica_set) > len(suffix) else None


def pod_deployment(pod: Mapping[str, Any]) -> str | None:
    metadata = pod.get("metadata") or {}
    owners = [o for o in metadata.get("ownerReferences") or [] if o.get("kind") == "ReplicaSet"]
    if not owners:
        return None
    return deployment_of(owners[0].get("name"), (metadata.get("labels") or {}).get("pod-template-hash"))


def _optional(report: Mapping[str, Any], name: str) -> float | None:
    if name not in report:
        raise ReportMalformed(MalformedReason.MISSING_FIELD, name)
    value = report[name]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ReportMalformed(MalformedReason.BAD_VALUE, f"{name}={value!r}")
    return float(value)


def _required(report: Mapping[str, Any], name: str) -> float:
    value = _optional(report, name)
    if value is None:
        raise ReportMalformed(MalformedReason.BAD_VALUE, f"{name}=None")
    return value


def _absent_or_seconds(report: Mapping[str, Any], name: str) -> float | None:
    """A field newer sidecars add: absent reads as None."""
    return _optional(report, name) if name in report else None


def _absent_or_count(report: Mapping[str, Any], name: str) -> int | None:
    value = report.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReportMalformed(MalformedReason.BAD_VALUE, f"{name}={value!r}")
    return value


def parse_hold_report(event: Mapping[str, Any]) -> HoldReport:
    """The hold report an Event carries; ReportMalformed names what is wrong with it."""
    try:
        report = json.loads(event.get("message") or "")
    except (ValueError, RecursionError) as err:  # RecursionError: nested too deep to decode
        raise ReportMalformed(MalformedReason.NOT_JSON, str(err)) from err
    if not isinstance(report, dict):
        raise ReportMalformed(MalformedReason.NOT_JSON, "not an object")
    if report.get("version") != REPORT_VERSION:
        raise ReportMalformed(MalformedReason.UNKNOWN_VERSION, repr(report.get("version")))
    metadata, involved = event.get("metadata") or {}, event.get("involvedObject") or {}
    if involved.get("kind") != "Pod" or not involved.get("name") or not metadata.get("namespace"):
        raise ReportMalformed(MalformedReason.MISSING_FIELD, "involvedObject")
    try:
        outcome = HoldOutcome(str(report.get("outcome")))
    except ValueError as err:
        raise ReportMalformed(MalformedReason.BAD_VALUE, f"outcome={report.get('outcome')!r}") from err
    return HoldReport(
        event_uid=str(metadata.get("uid") or ""),
        namespace=str(metadata["namespace"]),
        pod=str(involved["name"]),
        pod_uid=str(involved.get("uid") or ""),
        deployment=deployment_of(report.get("replicaSet"), report.get("podTemplateHash")),
        policy=policy_from_annotation(report.get("policy")),
        outcome=outcome,
        hold_seconds=_required(report, "holdSeconds"),
        stage1_seconds=_optional(report, "stage1Seconds"),
        stage2_seconds=_optional(report, "stage2Seconds"),
        late_traffic_seconds=_required(report, "lateTrafficSeconds"),
        max_hold_seconds=_optional(report, "maxHoldSeconds"),
        grace_period_seconds=_optional(report, "gracePeriodSeconds"),
        involved_namespace=str(involved["namespace"]) if involved.get("namespace") else None,
        created_at=epoch_seconds(metadata.get("creationTimestamp")),
        lost_after_release=_absent_or_count(report, ReportField.LOST_AFTER_RELEASE),
        pooled_quiet_seconds=_absent_or_seconds(report, ReportField.POOLED_QUIET_SECONDS),
        pinned_until_closed=_absent_or_count(report, ReportField.PINNED_UNTIL_CLOSED) or 0,
        learned_delay_seconds=_absent_or_seconds(report, ReportField.LEARNED_DELAY_SECONDS),
        app_exit_seconds=_absent_or_seconds(report, ReportField.APP_EXIT_SECONDS),
        lame_duck=report.get(ReportField.LAME_DUCK) == LameDuckReport.ON,
        last_loss_seconds=_absent_or_seconds(report, ReportField.LAST_LOSS_SECONDS),
        headless=report.get(ReportField.HEADLESS_SERVICE) is True,
    )


def _time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def epoch_seconds(text: object) -> float | None:
    """An API time (RFC 3339) as seconds since the epoch; None if it is not one."""
    at = _time(text)
    return None if at is None else at.timestamp()


def deletion_requested_at(metadata: Mapping[str, Any]) -> float | None:
    """When the pod's deletion was asked for (epoch seconds), or None if it is not being deleted.
    deletionTimestamp is the deletion plus its grace period; shortening the grace period later
    moves both, so their difference stays the moment the deletion was asked for."""
    at, grace = epoch_seconds(metadata.get("deletionTimestamp")), metadata.get("deletionGracePeriodSeconds")
    if at is None or not isinstance(grace, int) or isinstance(grace, bool):
        return None
    return at - grace


def sidecar_policy(pod_spec: Mapping[str, Any]) -> PolicyRef | None:
    """The policy the pod's sidecar was configured by (its LAMEDUCK_POLICY)."""
    for container in [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]:
        if container.get("name") == SIDECAR_NAME:
            for env in container.get("env") or []:
                if env.get("name") == SidecarEnv.POLICY:
                    return policy_from_annotation(env.get("value"))
    return None


def _outcome(exit_code: int, reason: object, seconds: float, grace: float) -> TerminationOutcome:
    if exit_code in (0, SIGTERM_EXIT):
        return TerminationOutcome.CLEAN
    # Killed for want of budget: SIGKILLed when a real grace period ran out (a forced deletion,
    # grace 0 or 1, gives the app no budget to run out of).
    out_of_time = grace > CLOCK_SLACK_SECONDS and seconds >= grace - CLOCK_SLACK_SECONDS
    if exit_code == SIGKILL_EXIT and reason != "OOMKilled" and out_of_time:
        return TerminationOutcome.KILLED
    return TerminationOutcome.ERROR


def termination_of(pod: Mapping[str, Any], policy: PolicyRef | None = None) -> Termination | None:
    """The pod's termination, once it is being deleted and every app container has exited since;
    None before that, and for a pod whose containers had ended before it was deleted. The
    policy is the sidecar's when it has one, else the one given (the Deployment's)."""
    metadata, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    deleted_at = deletion_requested_at(metadata)
    grace = metadata.get("deletionGracePeriodSeconds")
    if deleted_at is None or not isinstance(grace, int):
        return None
    app = {c.get("name") for c in spec.get("containers") or []} - {SIDECAR_NAME}
    statuses = [s for s in (pod.get("status") or {}).get("containerStatuses") or [] if s.get("name") in app]
    if not app or len(statuses) < len(app):
        return None
    ends = []
    latest_start: float | None = None
    for status in statuses:
        terminated = (status.get("state") or {}).get("terminated") or {}
        finished = _time(terminated.get("finishedAt"))
        exit_code = terminated.get("exitCode")
        if finished is None or not isinstance(exit_code, int):
            return None
        ends.append((finished.timestamp(), exit_code, terminated.get("reason")))
        started = _time(terminated.get("startedAt"))
        if started is not None:
            latest_start = max(latest_start or started.timestamp(), started.timestamp())
    last = max(at for at, _, _ in ends)
    if last < deleted_at - CLOCK_SLACK_SECONDS:
        return None  # ended before the deletion: not a shutdown
    seconds = max(0.0, last - deleted_at)
    outcomes = [_outcome(code, reason, max(0.0, at - deleted_at), grace) for at, code, reason in ends]
    outcome = max(outcomes, key=[TerminationOutcome.CLEAN, TerminationOutcome.ERROR, TerminationOutcome.KILLED].index)
    cause = None
    if outcome is TerminationOutcome.KILLED:
        early = latest_start is not None and deleted_at - latest_start < EARLY_DELETION_SECONDS
        cause = KilledCause.SIGTERM_LIKELY_LOST if early else KilledCause.OVER_BUDGET
    return Termination(
        namespace=str(metadata.get("namespace") or ""),
        pod=str(metadata.get("name") or ""),
        pod_uid=str(metadata.get("uid") or ""),
        deployment=pod_deployment(pod),
        policy=sidecar_policy(spec) or policy,
        outcome=outcome,
        seconds=seconds,
        grace_period_seconds=float(grace),
        exit_codes=tuple(code for _, code, _ in ends),
        killed_cause=cause,
    )


@dataclass(frozen=True)
class LateTraffic:
    """What a Deployment's recent holds saw: the late traffic's p50, p99 and maximum, and the
    maxHold and termination budget that would cover it."""

    holds: int
    p50: float
    p99: float
    max: float
    timeouts: int  # holds that ended at maxHold: their late traffic may have gone on
    max_hold: float | None  # as configured when the latest report was written
    recommended_max_hold: int
    recommended_budget: int
    # Connection attempts refused and connections reset after release, over the holds that
    # counted them: the requests the holds could not save.
    lost_after_release: int = 0

    @property
    def max_hold_too_short(self) -> bool:
        return self.max_hold is not None and self.max_hold < self.max


def _quantile(ordered: Sequence[float], q: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(q * 100) - 1]


def recommended_max_hold(late_traffic_max: float, quiet_period: float) -> int:
    """Long enough for the latest late traffic seen, with headroom, and the quiet period after it;
    never more than a policy may set (a recommendation must be one a policy can take)."""
    wanted = max(1, math.ceil(late_traffic_max * RECOMMENDATION_HEADROOM + quiet_period))
    return min(wanted, math.floor(MAX_HOLD.seconds[2]))


def late_traffic(reports: Sequence[HoldReport], quiet_period: float, drain_timeout: float) -> LateTraffic | None:
    """From a Deployment's recent hold reports, oldest first; None without any."""
    if not reports:
        return None
    ordered = sorted(r.late_traffic_seconds for r in reports)
    highest = ordered[-1]
    recommended = recommended_max_hold(highest, quiet_period)
    return LateTraffic(
        holds=len(reports),
        p50=_quantile(ordered, 0.5),
        p99=_quantile(ordered, 0.99),
        max=highest,
        timeouts=sum(1 for r in reports if r.outcome is HoldOutcome.TIMEOUT),
        max_hold=reports[-1].max_hold_seconds,
        recommended_max_hold=recommended,
        # Bounded as its parts are: the capped maxHold and the policy's own drainTimeout.
        recommended_budget=math.ceil(recommended + drain_timeout) + BUDGET_MARGIN_SECONDS,
        lost_after_release=sum(r.lost_after_release or 0 for r in reports),
    )


# At most this many Deployments in each list of a policy's status.


@dataclass(frozen=True)
class DeploymentShutdown:
    """A Deployment's recent shutdowns, as its policy's status lists them."""

    namespace: str
    name: str
    late: LateTraffic | None
    terminations: int
    killed: int
    learned_delay: float | None = None  # the pooled delay its next holds use; None: none learned
    # The maxHold its next rollout gets (hold.learnedBudget); None: none learned, or not asked for.
    learned_max_hold: float | None = None


def _late_entry(shutdown: DeploymentShutdown, late: LateTraffic) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "namespace": shutdown.namespace,
        "name": shutdown.name,
        "holds": late.holds,
        "p50Seconds": round(late.p50, 3),
        "p99Seconds": round(late.p99, 3),
        "maxSeconds": round(late.max, 3),
        "timeouts": late.timeouts,
        "recommendedMaxHold": format_seconds(late.recommended_max_hold),
        **(
            {"learnedMaxHold": format_seconds(shutdown.learned_max_hold), "learnedFrom": BudgetSource.REPORTS.value}
            if shutdown.learned_max_hold
            else {}
        ),
        "recommendedBudgetSeconds": late.recommended_budget,
        ReportField.LOST_AFTER_RELEASE: late.lost_after_release,
    }
    if shutdown.learned_delay is not None:
        entry["learnedDelay"] = format_seconds(shutdown.learned_delay)
    if late.max_hold is not None:
        entry["maxHold"] = format_seconds(late.max_hold)
    if late.max_hold_too_short:
        entry["warning"] = (
            f"maxHold {format_seconds(late.max_hold or 0)} is below the late traffic observed "
            f"({late.max:.1f}s): raise it to {format_seconds(late.recommended_max_hold)}"
        )
    return entry


def shutdown_status(deployments: Sequence[DeploymentShutdown]) -> dict[str, Any]:
    """status.lateTraffic (per Deployment: what its holds saw and the maxHold that covers it; too
    short first, then the latest traffic first) and status.overBudget (Deployments whose pods
    were SIGKILLed at the end of their grace period, most kills first)."""
    with_late = [(d, d.late) for d in deployments if d.late is not None]
    with_late.sort(key=lambda item: (not item[1].max_hold_too_short, -item[1].max, item[0].namespace, item[0].name))
    killed = sorted((d for d in deployments if d.killed), key=lambda d: (-d.killed, d.namespace, d.name))
    return {
        "lateTraffic": [_late_entry(d, late) for d, late in with_late[:MAX_LISTED]],
        "overBudget": [
            {"namespace": d.namespace, "name": d.name, "terminations": d.terminations, "killed": d.killed}
            for d in killed[:MAX_LISTED]
        ],
    }
