"""The pods this operator's own watch saw being deleted, and the hold reports waiting for one.

A hold report is judged against the pod it names as the operator saw it (logic/report_trust.py).
The report's watch and the pod watch are not ordered, so a report whose pod's deletion has not
been seen yet waits here (a few per pod, for a minute at most) and is handed back when it is;
pods are kept a little after their removal for reports that come late. Bounded whatever arrives.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable

from lameduck_operator.logic.report_ledger import REPORT_WINDOW_SECONDS
from lameduck_operator.logic.report_trust import ObservedPod
from lameduck_operator.logic.shutdown import HoldReport

# Pods seen being deleted, whose reports may still come: at most this many, each kept this long
# after its removal (a report is posted once the app has exited, before the sidecar stops, but
# its watch may lag): as long as the report ledger waits for it before counting it missing.
MAX_OBSERVED_PODS = 20000
POD_KEPT_SECONDS = REPORT_WINDOW_SECONDS
# Reports whose pod's deletion the pod watch has not shown yet: how many, and for how long.
MAX_PENDING = 1000
PENDING_SECONDS = 60.0
PENDING_PER_POD = 4


class DeletionsSeen:
    def __init__(self, monotonic: Callable[[], float], clock: Callable[[], float]) -> None:
        self.monotonic = monotonic
        self.clock = clock
        self._pods: OrderedDict[str, ObservedPod] = OrderedDict()
        self._gone: OrderedDict[str, float] = OrderedDict()
        self._pending: OrderedDict[str, list[tuple[HoldReport, float]]] = OrderedDict()
        self._pending_count = 0

    def pod(self, uid: str) -> ObservedPod | None:
        return self._pods.get(uid)

    def wait(self, report: HoldReport) -> list[HoldReport]:
        """Keep a report until its pod is seen; the reports let go to make room (never judged:
        their pod was not seen in time), the report itself when its pod has too many waiting."""
        waiting = self._pending.setdefault(report.pod_uid, [])
        if len(waiting) >= PENDING_PER_POD:
            return [report]
        waiting.append((report, self.monotonic()))
        self._pending_count += 1
        dropped: list[HoldReport] = []
        while self._pending_count > MAX_PENDING:
            dropped += self._drop(next(iter(self._pending)))
        return dropped

    def _drop(self, pod_uid: str) -> list[HoldReport]:
        waiting = [report for report, _ in self._pending.pop(pod_uid, [])]
        self._pending_count -= len(waiting)
        return waiting

    def saw(self, pod: ObservedPod, deleted: bool) -> list[HoldReport]:
        """Note a pod being deleted (or removed); the reports that waited for it, to judge now."""
        if deleted:
            pod = dataclasses.replace(pod, gone_at=self.clock())
            self._gone[pod.uid] = self.monotonic()
        self._pods[pod.uid] = pod
        while len(self._pods) > MAX_OBSERVED_PODS:
            uid, _ = self._pods.popitem(last=False)
            self._gone.pop(uid, None)
        return self._drop(pod.uid)

    def forget_expired(self) -> list[HoldReport]:
        """Let go of pods removed POD_KEPT_SECONDS ago; the reports that waited PENDING_SECONDS
        for a pod never seen, which are not to be believed."""
        now = self.monotonic()
        while self._gone and next(iter(self._gone.values())) <= now - POD_KEPT_SECONDS:
            uid, _ = self._gone.popitem(last=False)
            self._pods.pop(uid, None)
        expired: list[HoldReport] = []
        while self._pending:
            uid, waiting = next(iter(self._pending.items()))
            if waiting[0][1] > now - PENDING_SECONDS:
                break
            expired += self._drop(uid)
        return expired
