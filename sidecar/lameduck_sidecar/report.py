"""The hold report: one Kubernetes Event on the pod once the app has exited (what the hold saw,
and what happened after release: after_release.py), so that it outlives the pod (its metrics
die with it, usually before any scrape). The operator reads these Events (label
lameduck.dev/report=hold) into fleet metrics; people see them in `kubectl describe pod`
and `kubectl events`. Pure: the caller posts the body."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from lameduck_sidecar.after_release import AfterRelease
from lameduck_sidecar.calls import bounded_names
from lameduck_sidecar.hold import HoldResult, Outcome
from lameduck_sidecar.names import REPORT_LABEL, REPORT_VALUE, REPORT_VERSION, ReportField

REASONS = {
    Outcome.QUIET: "HoldReleased",
    Outcome.NOT_IN_ANY_SLICE: "HoldReleased",
    Outcome.TIMEOUT: "HoldTimedOut",
    Outcome.FALLBACK: "HoldFellBack",
}


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _owner(pod: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """The pod's ReplicaSet and pod-template-hash, from which the operator finds its Deployment."""
    metadata = (pod or {}).get("metadata") or {}
    owners = [o for o in metadata.get("ownerReferences") or [] if o.get("kind") == "ReplicaSet"]
    replica_set = owners[0].get("name") if owners else None
    template_hash = (metadata.get("labels") or {}).get("pod-template-hash")
    return (
        replica_set if isinstance(replica_set, str) else None,
        template_hash if isinstance(template_hash, str) else None,
    )


def report_message(
    result: HoldResult,
    *,
    policy: str,
    max_hold: float,
    grace_period: float | None,
    pod: Mapping[str, Any] | None,
    containers: Sequence[str],
    after: AfterRelease | None = None,
) -> dict[str, Any]:
    replica_set, template_hash = _owner(pod)
    after = after or AfterRelease(None, None, 0, None)
    return {
        "version": REPORT_VERSION,
        "outcome": result.outcome.value,
        "holdSeconds": _seconds(result.total),
        "stage1Seconds": _seconds(result.stage1),
        "stage2Seconds": _seconds(result.stage2),
        "lateTrafficSeconds": _seconds(result.late_traffic),
        "connectionsAfterStage1": result.connections_after_stage1,
        "reusedAfterStage1": result.reused_after_stage1,
        "pinnedAfterStage1": result.pinned_after_stage1,
        "maxHoldSeconds": _seconds(max_hold),
        "gracePeriodSeconds": grace_period,
        "policy": policy,
        "replicaSet": replica_set,
        "podTemplateHash": template_hash,
        "containers": bounded_names(containers),
        ReportField.LOST_AFTER_RELEASE: after.lost,
        ReportField.POOLED_QUIET_SECONDS: _seconds(after.pooled_quiet),
        ReportField.PINNED_UNTIL_CLOSED: after.pinned_until_closed,
        ReportField.LEARNED_DELAY_SECONDS: _seconds(result.learned_delay),
        ReportField.APP_EXIT_SECONDS: _seconds(after.app_exit),
        ReportField.LAME_DUCK: result.lame_duck.value,
        ReportField.LAST_LOSS_SECONDS: _seconds(after.last_loss),
        ReportField.HEADLESS_SERVICE: result.headless,
    }


def hold_report_event(
    message: Mapping[str, Any], *, namespace: str, pod_name: str, pod_uid: str, now: datetime
) -> dict[str, Any]:
    """A core/v1 Event on the pod whose message is the report as compact JSON."""
    outcome = Outcome(message["outcome"])
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{pod_name}.",
            "namespace": namespace,
            "labels": {REPORT_LABEL: REPORT_VALUE},
        },
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "namespace": namespace, "uid": pod_uid},
        "reason": REASONS.get(outcome, "HoldEnded"),
        "message": json.dumps(message, separators=(",", ":")),
        "type": "Normal" if outcome in {Outcome.QUIET, Outcome.NOT_IN_ANY_SLICE} else "Warning",
        "source": {"component": "lameduck-sidecar"},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
