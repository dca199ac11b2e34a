"""Which hold reports the operator believes. Pure: the observer passes in what it saw.

A hold report is an Event, and `create events` is granted to every app's service account (the
sidecar needs it, and RBAC cannot limit it to one name or one involved object), so anyone who
runs code in a namespace can write one. A report is therefore only trusted when what it says is
consistent with what the operator observed itself:

- the Event is in the namespace of the pod it names, and that pod (by uid) is one the
  operator's own pod watch saw being deleted;
- the pod belongs to a Deployment the operator knows (its ReplicaSet and pod-template-hash),
  and that Deployment is governed by a policy the operator resolves itself, never the policy
  the report names; a GracefulPolicy only ever gets reports from its own namespace;
- its durations fit in what was observed: a hold starts after the pod's deletion and ends
  before its app exits and before the report is stored, and no hold is longer than the
  largest maxHold a policy may set;
- what it measured after release fits too: the time after stage 1 at which a pooled connection
  went quiet, and the time from release to the app's exit, each after what precedes it in the
  hold and within the same observed window; the learned delay it used no longer than a
  maxHold may be; counts of lost requests and pinned connections below a sane bound;
- it is the first trusted report of that pod: every deletion gets one hold.

What a trusted report says about its pod, Deployment and policy is replaced by what the
operator knows, so nothing a report names can reach another Deployment or policy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.logic.shutdown import HoldReport, deletion_requested_at, pod_deployment, termination_of
from lameduck_operator.model import MAX_HOLD, PolicyRef

# Deletion, creation and exit times are whole seconds and come from the API server's and the
# node's clocks, the operator's "now" from its own: each bound allows this much.
REPORT_SLACK_SECONDS = 2.0
# The sidecar rounds every duration to the millisecond: stages and late traffic may exceed the
# hold's total by that rounding.
ROUNDING_SECONDS = 0.01
LONGEST_HOLD_SECONDS = MAX_HOLD.seconds[2]
# Far more refusals and resets than one pod's shutdown can see: a larger count is not believed,
# so that no report can make one Deployment dominate the fleet's counters.
MAX_COUNT_AFTER_RELEASE = 1_000_000


class Untrusted(StrEnum):
    """Why a report was not believed (a metric label: a fixed, small set)."""

    UNKNOWN_POD = "UnknownPod"  # no pod of that uid and name seen being deleted
    NAMESPACE_MISMATCH = "NamespaceMismatch"  # the Event is not in its pod's namespace
    UNKNOWN_DEPLOYMENT = "UnknownDeployment"  # the pod belongs to no Deployment the operator knows
    NOT_SELECTED = "NotSelected"  # no policy governs that Deployment (or one of another namespace)
    OUT_OF_BOUNDS = "OutOfBounds"  # durations the observed deletion cannot hold
    DUPLICATE = "Duplicate"  # the pod's one hold has been reported already


@dataclass(frozen=True, slots=True)
class ObservedPod:
    """A pod the operator's watch saw being deleted, with the times it observed (epoch seconds)."""

    uid: str
    namespace: str
    name: str
    deployment: str | None
    deleted_at: float  # when the deletion was asked for (API server clock)
    exited_at: float | None = None  # the last app container's exit, once all have exited
    gone_at: float | None = None  # when the operator saw the pod removed (its own clock)


@dataclass(frozen=True, slots=True)
class Trusted:
    """A believed report, with the Deployment and policy the operator resolved for its pod
    (also written into the report, in place of what it named)."""

    report: HoldReport
    deployment: DeploymentRef
    policy: PolicyRef


def observed_pod(pod: Mapping[str, Any]) -> ObservedPod | None:
    """The pod as the operator observed it, once it is being deleted; None before."""
    metadata = pod.get("metadata") or {}
    deleted_at = deletion_requested_at(metadata)
    uid = metadata.get("uid")
    if deleted_at is None or not isinstance(uid, str) or not uid:
        return None
    termination = termination_of(pod)
    return ObservedPod(
        uid=uid,
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        deployment=pod_deployment(pod),
        deleted_at=deleted_at,
        exited_at=None if termination is None else deleted_at + termination.seconds,
    )


def observed_window(pod: ObservedPod, created_at: float | None, now: float) -> float:
    """The longest a hold of this pod can have lasted: from its deletion to the earliest of its
    app's exit, the pod's removal, the report's creation and now."""
    ends = [at for at in (now, pod.exited_at, pod.gone_at, created_at) if at is not None]
    return min(ends) - pod.deleted_at


def within_bounds(report: HoldReport, pod: ObservedPod, now: float) -> bool:
    window = observed_window(pod, report.created_at, now)
    limit = min(window, LONGEST_HOLD_SECONDS) + REPORT_SLACK_SECONDS
    parts = [report.late_traffic_seconds, report.stage1_seconds, report.stage2_seconds]
    return (
        report.hold_seconds <= limit
        and all(part is None or part <= report.hold_seconds + ROUNDING_SECONDS for part in parts)
        and (report.max_hold_seconds is None or report.max_hold_seconds <= LONGEST_HOLD_SECONDS)
        and after_release_within_bounds(report, window)
    )


def after_release_within_bounds(report: HoldReport, window: float) -> bool:
    """What the report measured after release, against the observed window (from the deletion to
    the earliest of the app's exit, the pod's removal, the report and now): stage 1 ended after
    the deletion and release came after it too, so each time counts from one of those."""
    limit = window + REPORT_SLACK_SECONDS
    pooled, app_exit, last_loss = report.pooled_quiet_seconds, report.app_exit_seconds, report.last_loss_seconds
    counts = [report.lost_after_release, report.pinned_until_closed]
    return (
        (pooled is None or pooled + (report.stage1_seconds or 0.0) <= limit)
        and (app_exit is None or app_exit + report.hold_seconds <= limit + ROUNDING_SECONDS)
        and (last_loss is None or last_loss + report.hold_seconds <= limit + ROUNDING_SECONDS)
        and (report.learned_delay_seconds is None or report.learned_delay_seconds <= LONGEST_HOLD_SECONDS)
        and all(count is None or 0 <= count < MAX_COUNT_AFTER_RELEASE for count in counts)
    )


def judge_report(
    report: HoldReport,
    pod: ObservedPod | None,
    *,
    known: Callable[[DeploymentRef], bool],
    policy_of: Callable[[DeploymentRef], PolicyRef | None],
    reported: bool,
    now: float,
) -> Trusted | Untrusted:
    """The report with the operator's own Deployment and policy in it, or why it is not
    believed. `pod` is the one observed with the report's pod uid (None if none was); `reported`
    says whether that pod has a trusted report already."""
    if pod is None or pod.uid != report.pod_uid:
        return Untrusted.UNKNOWN_POD
    if pod.namespace != report.namespace:
        return Untrusted.NAMESPACE_MISMATCH  # an Event about another namespace's pod
    if report.involved_namespace != report.namespace:
        return Untrusted.NAMESPACE_MISMATCH  # an Event that places its pod elsewhere
    if pod.name != report.pod:
        return Untrusted.UNKNOWN_POD
    ref = DeploymentRef(pod.namespace, pod.deployment) if pod.deployment else None
    if ref is None or not known(ref):
        return Untrusted.UNKNOWN_DEPLOYMENT
    policy = policy_of(ref)
    if policy is None or (policy.namespace is not None and policy.namespace != pod.namespace):
        return Untrusted.NOT_SELECTED
    if not within_bounds(report, pod, now):
        return Untrusted.OUT_OF_BOUNDS
    if reported:
        return Untrusted.DUPLICATE
    return Trusted(dataclasses.replace(report, deployment=ref.name, policy=policy), ref, policy)
