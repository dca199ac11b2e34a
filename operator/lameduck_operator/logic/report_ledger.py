"""Which hold reports never came. Pure: the observer passes in the pods it saw, the reports it
read and the time (its monotonic clock).

A pod deleted with lameduck's sidecar and a Sidecar hold gets one hold report, which the sidecar
posts before it exits, so the API server stores it before the pod is gone. A post that fails is
tried again while the pod's grace period lasts, then given up, and the sidecar's count of that
dies with the pod. This ledger keeps such a loss from being silent: it expects a report of each
pod `report_expected` picks and settles each such pod once:

- RECEIVED: a report naming the pod (its uid and name, in its namespace) came before the pod was
  gone, or within `window` seconds after; whatever report_trust makes of it (a report not
  believed is counted there, by reason);
- MISSING: none came within the window;
- FORGOTTEN: the ledger let go of the pod, still waiting, to stay within its bound (the pod
  first seen being deleted goes first);
- EXCUSED: its namespace is being deleted. The API server creates nothing in a terminating
  namespace (it answers 403), so no report is owed: a pod seen being deleted while its namespace
  is known to be terminating is not awaited, and the pods still awaited without a report when
  the namespace is first seen terminating are let go. The latter covers both orders of the two
  watches (the namespace's deletion may be seen after its pods') and a pod deleted before its
  namespace was, whose report, posted at the end of its hold, is refused all the same. This is
  decided as the namespace is seen, not when a pod's window ends: a namespace is removed soon
  after its last pod, and the ledger knows it as terminating only until it is seen gone. A pod
  already counted missing stays counted; one whose deletion the pod watch shows only after its
  namespace is seen gone (behind by the pod's whole shutdown) is awaited as any other.

A report that comes for a pod already counted MISSING is LATE, once: the pod stays counted
missing (a counter only goes up). A report that comes before its pod is seen being deleted (the
two watches are not ordered) waits `window` seconds for it. A pod never seen gone (stuck
Terminating on a lost node) is waited for until it is, or until it is forgotten.

The window (REPORT_WINDOW_SECONDS) only has to cover how far the Event watch lags behind the pod
watch, since the report is stored before the pod is gone: seconds, tens of seconds when a watch
is started again after an API server outage (the pod informer retries within 30 s, from the
last version it saw). The observer keeps a removed pod as long to judge the reports that come
late (deletions_seen.POD_KEPT_SECONDS is this window), so that a report counted missing could
not have been believed either.

Bounded: at most `max_pods` pods expected (the reported ones until their window ends), as many
reports waiting for their pod (the oldest let go first: its pod, if it is seen later, is counted
missing, never lost in silence) and as many pods settled (counted missing, forgotten or excused,
or let go at the bound once reported), remembered for a late report and so that their later
events do not expect them again. And the names of the namespaces being deleted, each let go when
it is seen gone (or not terminating: created again under its name).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lameduck_operator.logic.shutdown import CLOCK_SLACK_SECONDS, deletion_requested_at, epoch_seconds
from lameduck_operator.names import HOLD_PATH_PREFIX, SIDECAR_NAME

# How long after a pod's removal its report is still taken (see above).
REPORT_WINDOW_SECONDS = 120.0
# As many as the pods the observer keeps to judge reports by (deletions_seen.MAX_OBSERVED_PODS):
# a fleet of 10,000 pods all deleted at once fits twice.
MAX_PODS = 20_000


class Settled(StrEnum):
    RECEIVED = "received"
    MISSING = "missing"
    LATE = "late"
    FORGOTTEN = "forgotten"
    EXCUSED = "excused"


@dataclass(frozen=True, slots=True)
class PodRef:
    """A pod as a report names it: its uid, namespace and name."""

    uid: str
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Counted:
    pod: PodRef
    settled: Settled


@dataclass(slots=True)
class _Expected:
    pod: PodRef
    reported: bool = False


def _held_containers(spec: Mapping[str, Any]) -> set[str]:
    """The containers whose preStop is lameduck's Sidecar hold: an httpGet of the hold route on the
    port of a container named as the sidecar (a Sleep hold sends no report; no sidecar, no hold)."""
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    ports = {
        value
        for c in containers
        if c.get("name") == SIDECAR_NAME
        for port in c.get("ports") or []
        for value in (port.get("containerPort"), port.get("name"))
        if value is not None
    }
    held = set()
    for container in containers:
        get = ((container.get("lifecycle") or {}).get("preStop") or {}).get("httpGet")
        if (
            isinstance(get, Mapping)
            and str(get.get("path", "")).startswith(HOLD_PATH_PREFIX)
            and get.get("port") in ports
        ):
            held.add(str(container.get("name")))
    return held


def _running_at(state: Mapping[str, Any], deleted_at: float) -> bool:
    """Whether a container was running when its pod's deletion came: kubelet runs the preStop of
    running containers only (not of one still waiting to start, or already exited)."""
    if state.get("running") is not None:
        return True
    terminated = state.get("terminated") or {}
    started, finished = epoch_seconds(terminated.get("startedAt")), epoch_seconds(terminated.get("finishedAt"))
    return started is not None and finished is not None and finished >= deleted_at - CLOCK_SLACK_SECONDS


def report_expected(pod: Mapping[str, Any]) -> PodRef | None:
    """The pod, when a hold report of it is to come: it is being deleted with a grace period (a
    forced deletion, grace 0, removes it before the sidecar could read it), carries lameduck's
    sidecar and its Sidecar hold, and a container with the hold was running when the deletion
    came (a pod deleted before its containers started runs no preStop). None otherwise: a pod
    not being deleted (a container restarted after a failed probe holds nothing) included."""
    metadata = pod.get("metadata") or {}
    deleted_at, uid = deletion_requested_at(metadata), metadata.get("uid")
    if deleted_at is None or not metadata.get("deletionGracePeriodSeconds") or not isinstance(uid, str) or not uid:
        return None
    held = _held_containers(pod.get("spec") or {})
    status = pod.get("status") or {}
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    if not any(s.get("name") in held and _running_at(s.get("state") or {}, deleted_at) for s in statuses):
        return None
    return PodRef(uid, str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def namespace_terminating(namespace: Mapping[str, Any]) -> bool:
    """Whether the namespace is being deleted: its deletionTimestamp is set (its phase becomes
    Terminating with it; either says so)."""
    metadata, status = namespace.get("metadata") or {}, namespace.get("status") or {}
    return bool(metadata.get("deletionTimestamp")) or status.get("phase") == "Terminating"


class ReportLedger:
    def __init__(self, window: float = REPORT_WINDOW_SECONDS, max_pods: int = MAX_PODS) -> None:
        self.window = window
        self.max_pods = max_pods
        # Pods expected to report, in the order first seen being deleted.
        self._expected: OrderedDict[str, _Expected] = OrderedDict()
        # Of those, the ones gone: when their window ends, in that order (the clock only goes on).
        self._due: OrderedDict[str, float] = OrderedDict()
        # Reports whose pod was not seen being deleted yet, by the pod they name: until when they
        # wait for it (a report naming another pod on the same uid does not push a genuine one out).
        self._early: OrderedDict[PodRef, float] = OrderedDict()
        # Pods counted missing (for a report that comes late), forgotten, excused or let go once
        # reported (so that the pod's later events do not expect it again), by uid.
        self._settled: OrderedDict[str, Counted] = OrderedDict()
        # The namespaces seen being deleted and not yet seen gone: their pods owe no report.
        self._terminating: set[str] = set()

    def deleting(self, pod: PodRef) -> list[Counted]:
        """A pod report_expected picked was seen (again) being deleted."""
        if pod.uid in self._expected or pod.uid in self._settled:
            return []
        if pod.namespace in self._terminating:
            self._early.pop(pod, None)
            return [self._settle(Counted(pod, Settled.EXCUSED))]
        expected = self._expected[pod.uid] = _Expected(pod)
        counted = []
        if self._early.pop(pod, None) is not None:
            expected.reported = True
            counted.append(Counted(pod, Settled.RECEIVED))
        while len(self._expected) > self.max_pods:
            uid, oldest = self._expected.popitem(last=False)
            self._due.pop(uid, None)
            if oldest.reported:  # counted already: remembered only, so that its later events do not expect it again
                self._settle(Counted(oldest.pod, Settled.RECEIVED))
            else:
                counted.append(self._settle(Counted(oldest.pod, Settled.FORGOTTEN)))
        return counted

    def namespace_seen(self, namespace: str, terminating: bool) -> list[Counted]:
        """A namespace was seen, terminating or not (gone counts as not: its name is let go). The
        first time it is seen terminating, its pods still awaited without a report are excused."""
        if not terminating:
            self._terminating.discard(namespace)
            return []
        if namespace in self._terminating:
            return []
        self._terminating.add(namespace)
        excused = [e.pod for e in self._expected.values() if e.pod.namespace == namespace and not e.reported]
        for pod in excused:
            del self._expected[pod.uid]
            self._due.pop(pod.uid, None)
        return [self._settle(Counted(pod, Settled.EXCUSED)) for pod in excused]

    def gone(self, uid: str, now: float) -> None:
        """A pod was seen removed: its window starts (the first time only)."""
        if uid in self._expected and uid not in self._due:
            self._due[uid] = now + self.window

    def reported(self, pod: PodRef, now: float) -> list[Counted]:
        """A hold report naming `pod` was read."""
        expected = self._expected.get(pod.uid)
        if expected is not None:
            if expected.pod != pod or expected.reported:
                return []  # another pod's name on this uid, or the pod's second report
            expected.reported = True
            return [Counted(pod, Settled.RECEIVED)]
        settled = self._settled.get(pod.uid)
        if settled is None:
            if pod not in self._early:
                self._early[pod] = now + self.window
                while len(self._early) > self.max_pods:
                    self._early.popitem(last=False)
        elif settled == Counted(pod, Settled.MISSING):
            del self._settled[pod.uid]  # late once: a second copy of it counts nothing
            return [Counted(pod, Settled.LATE)]
        return []

    def expire(self, now: float) -> list[Counted]:
        """The pods whose window has ended without a report, counted missing; the reports that
        waited in vain for their pod let go."""
        counted = []
        while self._due:
            uid, due = next(iter(self._due.items()))
            if due > now:
                break
            del self._due[uid]
            expected = self._expected.pop(uid)
            if not expected.reported:
                counted.append(self._settle(Counted(expected.pod, Settled.MISSING)))
        while self._early and next(iter(self._early.values())) <= now:
            self._early.popitem(last=False)
        return counted

    def _settle(self, counted: Counted) -> Counted:
        self._settled[counted.pod.uid] = counted
        while len(self._settled) > self.max_pods:
            self._settled.popitem(last=False)
        return counted

    def __len__(self) -> int:
        """Entries held, of every kind: what the bounds limit."""
        return len(self._expected) + len(self._early) + len(self._settled)
