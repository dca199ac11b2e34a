"""Judging EndpointSlices for one pod. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def listings(slices: Iterable[Mapping[str, Any]], pod_uid: str, pod_name: str, pod_ip: str) -> list[bool]:
    """Readiness of every endpoint, in any slice, that is this pod."""
    found = []
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or []:
            ref = endpoint.get("targetRef") or {}
            is_pod = (ref.get("kind") == "Pod" and (ref.get("uid") == pod_uid or ref.get("name") == pod_name)) or (
                bool(pod_ip) and pod_ip in (endpoint.get("addresses") or [])
            )
            if is_pod:
                # The API says a missing ready condition is to be read as ready.
                found.append((endpoint.get("conditions") or {}).get("ready") is not False)
    return found


def released(readiness: list[bool]) -> bool:
    """Stage 1 is over when no slice lists the pod as ready."""
    return not any(readiness)
