"""Judging EndpointSlices for one pod, the way their consumers read them. Pure.

The EndpointSlice controller writes `ready = publishNotReadyAddresses or (serving and not
terminating)` (KEP-1672). So a terminating pod behind a Service with
publishNotReadyAddresses stays `ready: true` until the pod object is gone: its consumers keep
it by the Service's own choice, and no hold can change that. The rule, per listing of the pod:

- `terminating: true` or `ready: false`: released. The control plane has let go; whether a
  consumer still sends (kube-proxy falls back to serving-but-terminating endpoints when no
  ready one is left; publishNotReadyAddresses keeps it) is what stage 2 measures.
- neither `ready` nor `terminating` given: no signal. Nothing on such a listing will ever
  show the termination, so stage 1 does not wait for it; stage 2 still measures its traffic.
- a slice without the `kubernetes.io/service-name` label belongs to no Service: kube-proxy,
  cluster DNS and gateways never read it, so it is not waited on either.
- otherwise held.

A slice of a headless Service (label service.kubernetes.io/headless, which the EndpointSlice
controller sets when clusterIP is None) is read by clients that connect to pod IPs directly
and learn of changes on their own schedule (DNS, client-side balancing, an L7 proxy resolving
the Service, as the benchmark's HAProxy does): a delay no slice shows. `headless` tells the
report (and so the operator's learning) that such clients may exist.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
HEADLESS_LABEL = "service.kubernetes.io/headless"


class Listing(StrEnum):
    HELD = "held"
    RELEASED = "released"
    NO_SIGNAL = "no_signal"


def same_address(a: str, b: str) -> bool:
    """IP addresses compared as addresses: an IPv6 address has several spellings."""
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def judge(endpoint: Mapping[str, Any]) -> Listing:
    conditions = endpoint.get("conditions") or {}
    ready, terminating = conditions.get("ready"), conditions.get("terminating")
    if terminating is True or ready is False:
        return Listing.RELEASED
    if ready is None and terminating is None:
        return Listing.NO_SIGNAL
    return Listing.HELD


def listings(slices: Iterable[Mapping[str, Any]], pod_uid: str, pod_name: str, pod_ip: str) -> list[Listing]:
    """How every endpoint that is this pod, in any slice a Service's consumers read, stands."""
    found = []
    for endpoint_slice in slices:
        labels = (endpoint_slice.get("metadata") or {}).get("labels") or {}
        if SERVICE_NAME_LABEL not in labels:
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            if _is_pod(endpoint, pod_uid, pod_name, pod_ip):
                found.append(judge(endpoint))
    return found


def headless(slices: Iterable[Mapping[str, Any]], pod_uid: str, pod_name: str, pod_ip: str) -> bool:
    """Whether a headless Service's slice lists this pod: clients may reach it by its own IP."""
    for endpoint_slice in slices:
        labels = (endpoint_slice.get("metadata") or {}).get("labels") or {}
        endpoints = endpoint_slice.get("endpoints") or []
        if (
            SERVICE_NAME_LABEL in labels
            and HEADLESS_LABEL in labels
            and any(_is_pod(e, pod_uid, pod_name, pod_ip) for e in endpoints)
        ):
            return True
    return False


def _is_pod(endpoint: Mapping[str, Any], pod_uid: str, pod_name: str, pod_ip: str) -> bool:
    ref = endpoint.get("targetRef") or {}
    if ref.get("kind") == "Pod":
        # A uid names one incarnation; a name alone may be an earlier pod's.
        return ref.get("uid") == pod_uid if ref.get("uid") and pod_uid else ref.get("name") == pod_name
    return bool(pod_ip) and any(same_address(pod_ip, a) for a in endpoint.get("addresses") or [])


def released(found: list[Listing]) -> bool:
    """Stage 1 is over when no listing holds the pod."""
    return Listing.HELD not in found
