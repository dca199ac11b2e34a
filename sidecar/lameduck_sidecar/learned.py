"""What the operator learned about the pod's Deployment, read when a hold starts. Pure.

The operator keeps, per namespace, the ConfigMap LEARNED_CONFIGMAP: one data key per Deployment
name, its value JSON {"version": 1, "pooledDelaySeconds": <float>, "reports": <int>} (and
"learnedMaxHoldSeconds" under a learned budget): how long after stage 1 the Deployment's L7 data
planes have kept pooled connections busy, from the hold reports of its earlier pods, and the
maxHold its holds need. Anything else (no ConfigMap, no key, a value this sidecar cannot
read) is no history, and the hold learns (see hold.py). A value of no report ("reports": 0, no
pooledDelaySeconds) is no history either, but its "learnedMaxHoldSeconds" is the maxHold to hold
with: the starting budget of a Deployment an L7 hop sends to.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from lameduck_sidecar.names import LEARNED_VERSION, LearnedField

# A value longer than this is not one the operator writes: not parsed.
MAX_VALUE_LENGTH = 256


def deployment_name(pod: Mapping[str, Any] | None) -> str | None:
    """The pod's Deployment: its ReplicaSet owner's name less `-<pod-template-hash>`; None when
    the pod has no such owner (a bare pod, a StatefulSet's, an unreadable pod)."""
    metadata = (pod or {}).get("metadata") or {}
    owners = [o for o in metadata.get("ownerReferences") or [] if isinstance(o, dict) and o.get("kind") == "ReplicaSet"]
    replica_set = owners[0].get("name") if owners else None
    template_hash = (metadata.get("labels") or {}).get("pod-template-hash")
    if not isinstance(replica_set, str) or not isinstance(template_hash, str) or not template_hash:
        return None
    suffix = f"-{template_hash}"
    if not replica_set.endswith(suffix) or len(replica_set) == len(suffix):
        return None
    return replica_set[: -len(suffix)]


def _record(config_map: Mapping[str, Any] | None, deployment: str | None) -> tuple[dict[str, Any], int] | None:
    """The Deployment's value as the operator writes it, and how many reports it was made from;
    None for anything else."""
    if config_map is None or deployment is None:
        return None
    data = config_map.get("data")
    value = data.get(deployment) if isinstance(data, dict) else None
    if not isinstance(value, str) or len(value) > MAX_VALUE_LENGTH:
        return None
    try:
        learned = json.loads(value)
    except ValueError:
        return None
    if not isinstance(learned, dict) or learned.get(LearnedField.VERSION) != LEARNED_VERSION:
        return None
    reports = learned.get(LearnedField.REPORTS)
    if not isinstance(reports, int) or isinstance(reports, bool) or reports < 0:
        return None
    return learned, reports


def _seconds(value: object) -> float | None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def learned_delay(config_map: Mapping[str, Any] | None, deployment: str | None) -> float | None:
    """The Deployment's learned pooled delay in seconds, or None for no history."""
    record = _record(config_map, deployment)
    # A record made from no report is no history.
    if record is None or record[1] < 1:
        return None
    return _seconds(record[0].get(LearnedField.POOLED_DELAY_SECONDS))


def learned_max_hold(config_map: Mapping[str, Any] | None, deployment: str | None) -> float | None:
    """The maxHold the operator gives the Deployment's holds in seconds (its policy learns
    budgets): learned from its reports, or with none its starting budget; None: neither."""
    record = _record(config_map, deployment)
    return None if record is None else _seconds(record[0].get(LearnedField.LEARNED_MAX_HOLD_SECONDS))


def max_hold_in_force(max_hold: float, cap: float | None, learned: float | None) -> float:
    """The maxHold a hold starting now keeps: the pod's own, raised to the learned (or starting)
    one up to the cap its grace period was sized for. Never lowered: the template's value was the
    in-force one when the pod was made, and the operator's value never goes below the policy's."""
    if cap is None or learned is None:
        return max_hold
    return max(max_hold, min(learned, cap))
