"""The readiness gate lameduck.dev/endpoints-ready: what condition a pod should carry.

A pod with the gate becomes Ready only once every Service that selects it lists it in one
of its EndpointSlices (with any conditions: the EndpointSlice controller lists a pod that is
not ready yet too). Every data plane then learns the new endpoint from the same slices, as
not ready first and ready once the gate opens, instead of a rollout counting the pod
available before any data plane has heard of it.

The condition is never set False on a pod being deleted, and never turned from True back to
False: kube-proxy falls back to a Service's serving terminating endpoints when no other is
left, and a False gate would make the pod not serving, turning "served late" into "dropped".

Pure: pods, Services and EndpointSlices are read as dicts from the API, or as the small
views the operator keeps of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from lameduck_operator.names import READINESS_CONDITION

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# Pods in these phases run nothing and are listed by no EndpointSlice controller.
FINISHED_PHASES = ("Succeeded", "Failed")
TRUE = "True"
FALSE = "False"


class GateReason(StrEnum):
    """Why the condition has its status: one value per distinct cause."""

    ENDPOINTS_LISTED = "EndpointsListed"  # True: every Service selecting the pod lists it
    NO_SERVICE = "NoService"  # True: no Service selects the pod
    NOT_LISTED = "NotListed"  # False: some Service selecting the pod does not list it yet


@dataclass(frozen=True, slots=True)
class PodView:
    """What the gate needs of a pod."""

    uid: str
    name: str
    namespace: str
    labels: Mapping[str, str]
    ips: frozenset[str]
    terminating: bool
    finished: bool
    gated: bool
    # Our condition as the pod carries it (None when absent).
    status: str | None
    reason: str | None
    resource_version: str = ""

    def same_for_the_gate(self, other: PodView) -> bool:
        """Equal in everything but the resourceVersion."""
        return (
            self.uid,
            self.name,
            self.labels,
            self.ips,
            self.terminating,
            self.finished,
            self.gated,
            self.status,
            self.reason,
        ) == (
            other.uid,
            other.name,
            other.labels,
            other.ips,
            other.terminating,
            other.finished,
            other.gated,
            other.status,
            other.reason,
        )


@dataclass(frozen=True, slots=True)
class ServiceView:
    """A Service's selector; empty when its endpoints are not the EndpointSlice controller's
    (no selector, or type ExternalName)."""

    namespace: str
    name: str
    selector: Mapping[str, str]

    def selects(self, pod: PodView) -> bool:
        return (
            bool(self.selector)
            and self.namespace == pod.namespace
            and all(pod.labels.get(k) == v for k, v in self.selector.items())
        )


@dataclass(frozen=True, slots=True)
class SliceView:
    """Which pods an EndpointSlice lists, and for which Service."""

    namespace: str
    name: str
    service: str | None
    uids: frozenset[str]
    ips: frozenset[str]


@dataclass(frozen=True, slots=True)
class Listed:
    """Every pod a Service's slices list, by uid and by address."""

    uids: frozenset[str] = frozenset()
    ips: frozenset[str] = frozenset()

    def lists(self, pod: PodView) -> bool:
        return pod.uid in self.uids or not self.ips.isdisjoint(pod.ips)


@dataclass(frozen=True)
class GateCondition:
    """The condition to write on a pod."""

    status: bool
    reason: GateReason
    message: str
    # Set when the status changes; otherwise the pod's own stays.
    last_transition_time: datetime | None = None

    @property
    def status_text(self) -> str:
        return TRUE if self.status else FALSE

    def as_api(self) -> dict[str, str]:
        """The pod condition, as status.conditions holds it."""
        condition = {
            "type": READINESS_CONDITION,
            "status": self.status_text,
            "reason": self.reason.value,
            "message": self.message,
        }
        if self.last_transition_time is not None:
            condition["lastTransitionTime"] = self.last_transition_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        return condition


# ---- views of API objects ---------------------------------------------------------------


def pod_view(pod: Mapping[str, Any]) -> PodView:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    ips = {str(ip["ip"]) for ip in status.get("podIPs") or [] if ip.get("ip")}
    if status.get("podIP"):
        ips.add(str(status["podIP"]))
    ours: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == READINESS_CONDITION), {}
    )
    return PodView(
        uid=str(meta.get("uid") or ""),
        name=str(meta.get("name") or ""),
        namespace=str(meta.get("namespace") or ""),
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        ips=frozenset(ips),
        terminating=bool(meta.get("deletionTimestamp")),
        finished=status.get("phase") in FINISHED_PHASES,
        gated=any(g.get("conditionType") == READINESS_CONDITION for g in spec.get("readinessGates") or []),
        status=ours.get("status"),
        reason=ours.get("reason"),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def service_view(service: Mapping[str, Any]) -> ServiceView:
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    # The EndpointSlice controller lists endpoints only for Services with a selector and not of
    # type ExternalName; the slices of the others are someone else's, and not waited on.
    selector = {} if spec.get("type") == "ExternalName" else (spec.get("selector") or {})
    return ServiceView(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        selector={str(k): str(v) for k, v in selector.items()},
    )


def slice_view(endpoint_slice: Mapping[str, Any]) -> SliceView:
    meta = endpoint_slice.get("metadata") or {}
    uids: set[str] = set()
    ips: set[str] = set()
    for endpoint in endpoint_slice.get("endpoints") or []:
        ref = endpoint.get("targetRef") or {}
        if ref.get("uid") and ref.get("kind", "Pod") == "Pod":
            uids.add(str(ref["uid"]))
        ips.update(str(address) for address in endpoint.get("addresses") or [])
    service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return SliceView(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        service=str(service) if service else None,
        uids=frozenset(uids),
        ips=frozenset(ips),
    )


def listings(slices: Iterable[SliceView]) -> dict[tuple[str, str], Listed]:
    """What each Service's slices list, by (namespace, Service name)."""
    uids: dict[tuple[str, str], set[str]] = {}
    ips: dict[tuple[str, str], set[str]] = {}
    for s in slices:
        if s.service is None:
            continue
        key = (s.namespace, s.service)
        uids.setdefault(key, set()).update(s.uids)
        ips.setdefault(key, set()).update(s.ips)
    return {key: Listed(frozenset(uids[key]), frozenset(ips[key])) for key in uids}


# ---- the decision --------------------------------------------------------------------------


def _names(services: Iterable[str]) -> str:
    names = sorted(services)
    return ("Service " if len(names) == 1 else "Services ") + ", ".join(names)


def condition_for(
    pod: PodView,
    services: Iterable[ServiceView],
    listed: Mapping[tuple[str, str], Listed],
    now: datetime,
) -> GateCondition | None:
    """The condition lameduck should write on this pod now, or None when nothing must be written."""
    if not pod.gated or pod.finished or pod.terminating:
        # A pod being deleted gets nothing: never False (it may be all a Service has left to
        # serve from), and opening its gate now would only make it a fallback it never was.
        return None
    selecting = [s.name for s in services if s.selects(pod)]
    missing = [name for name in selecting if not listed.get((pod.namespace, name), Listed()).lists(pod)]
    if missing:
        if pod.status == TRUE:
            return None  # never back to False: see the module's docstring
        wanted = GateCondition(
            False, GateReason.NOT_LISTED, f"not listed yet by the EndpointSlices of {_names(missing)}"
        )
    elif selecting:
        wanted = GateCondition(
            True, GateReason.ENDPOINTS_LISTED, f"listed by the EndpointSlices of {_names(selecting)}"
        )
    else:
        wanted = GateCondition(True, GateReason.NO_SERVICE, "no Service selects the pod")
    if (pod.status, pod.reason) == (wanted.status_text, wanted.reason.value):
        return None
    if pod.status != wanted.status_text:
        return GateCondition(wanted.status, wanted.reason, wanted.message, now)
    return wanted


def gate_condition(
    pod: Mapping[str, Any],
    services: Iterable[Mapping[str, Any]],
    slices: Iterable[Mapping[str, Any]],
    now: datetime,
) -> GateCondition | None:
    """condition_for, from the API's own objects: the pod, the Services of its namespace and
    their EndpointSlices."""
    return condition_for(
        pod_view(pod),
        [service_view(s) for s in services],
        listings(slice_view(s) for s in slices),
        now,
    )
