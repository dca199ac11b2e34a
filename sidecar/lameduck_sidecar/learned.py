"""What the operator learned about the pod's Deployment, read when a hold starts. Pure.

The operator keeps, per namespace, the ConfigMap LEARNED_CONFIGMAP: one data key per Deployment
name, its value JSON {"version": 1, "pooledDelaySeconds": <float>, "reports": <int>}: how long
after stage 1 the Deployment's L7 data planes have kept pooled connections busy, from the hold
reports of its earlier pods. Anything else (no ConfigMap, no key, a value this sidecar cannot
read) is no history, and the hold learns (see hold.py).
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


def learned_delay(config_map: Mapping[str, Any] | None, deployment: str | None) -> float | None:
    """The Deployment's learned pooled delay in seconds, or None for no history."""
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
    delay, reports = learned.get(LearnedField.POOLED_DELAY_SECONDS), learned.get(LearnedField.REPORTS)
    if not isinstance(delay, int | float) or isinstance(delay, bool) or not math.isfinite(delay) or delay < 0:
        return None
    # A record made from no report is no history.
    if not isinstance(reports, int) or isinstance(reports, bool) or reports < 1:
        return None
    return float(delay)
