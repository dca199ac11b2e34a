"""Serving the readiness gate lameduck.dev/endpoints-ready: an index fed by shared watches.

Handlers feed every pod, Service and EndpointSlice event in; the index keeps only what the
decision needs (logic/readiness.py's views, never whole bodies, and pods only when they carry
the gate). Events mark what they can affect: a pod itself, or the pods a Service selects
(before and after a change of it or of one of its slices). On the leader, one loop gathers
a burst of events, judges each affected pod once per batch, and writes the conditions that
changed to the pods' status, concurrently but at most `concurrency` at once.

Nothing here imports kopf or the API client, so tests drive it with a fake API.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from lameduck_operator.logic.readiness import (
    GateCondition,
    Listed,
    PodView,
    ServiceView,
    SliceView,
    condition_for,
    listings,
    pod_view,
    service_view,
    slice_view,
)
from lameduck_operator.logic.retry import Backoff
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.ports import GateApi, WriteResult, one_line

log = logging.getLogger("lameduck.readiness")
CONCURRENT_WRITES = 8
# How long a batch gathers events after the first one: a rollout's events arrive in bursts.
BATCH_SECONDS = 0.05
MAX_CONDITION_RETRY_SECONDS = 30.0


class ReadinessGate:
    def __init__(
        self,
        api: GateApi,
        metrics: OperatorMetrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        concurrency: int = CONCURRENT_WRITES,
        batch_seconds: float = BATCH_SECONDS,
        call_later: Callable[[float, Callable[[], None]], object] | None = None,
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.clock = clock
        self.batch_seconds = batch_seconds
        self.call_later = call_later or (lambda delay, callback: asyncio.get_running_loop().call_later(delay, callback))
        # By namespace: gated pods by uid, Services with a selector by name, slices by name.
        self.pods: dict[str, dict[str, PodView]] = {}
        self.services: dict[str, dict[str, ServiceView]] = {}
        self.slices: dict[str, dict[str, SliceView]] = {}
        self._listed: dict[str, dict[tuple[str, str], Listed]] = {}
        # What the next batch judges: pods by uid, the pods of Services by name (as they are
        # now), and the pods of Services as they were before a change.
        self._dirty_pods: dict[str, set[str]] = defaultdict(set)
        self._dirty_services: dict[str, set[str]] = defaultdict(set)
        self._dropped: dict[str, list[ServiceView]] = defaultdict(list)
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._writing: set[str] = set()
        self._again: set[tuple[str, str]] = set()
        # Pods whose write found them changed before their new version was seen.
        self._stale: set[str] = set()
        self._retries: Backoff[str] = Backoff(MAX_CONDITION_RETRY_SECONDS)
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- what the watches observe -----------------------------------------------------

    def pod_seen(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        view = pod_view(body)
        in_namespace = self.pods.get(view.namespace)
        old = in_namespace.get(view.uid) if in_namespace else None
        if deleted or not view.gated or view.finished:
            if in_namespace is not None and old is not None:
                del in_namespace[view.uid]
                if not in_namespace:
                    del self.pods[view.namespace]
            self._stale.discard(view.uid)
            self._retries.succeeded(view.uid)
            return
        self.pods.setdefault(view.namespace, {})[view.uid] = view
        if old is None or not old.same_for_the_gate(view) or view.uid in self._stale:
            self._stale.discard(view.uid)
            self._mark(view.namespace, view.uid)

    def service_seen(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        view = service_view(body)
        in_namespace = self.services.setdefault(view.namespace, {})
        old = in_namespace.get(view.name)
        new = None if deleted or not view.selector else view
        if new is None:
            in_namespace.pop(view.name, None)
            if not in_namespace:
                del self.services[view.namespace]
        else:
            in_namespace[view.name] = new
        if old == new or view.namespace not in self.pods:
            return
        if old is not None:
            self._dropped[view.namespace].append(old)
        if new is not None:
            self._dirty_services[view.namespace].add(view.name)
        self._wake.set()

    def slice_seen(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        view = slice_view(body)
        in_namespace = self.slices.setdefault(view.namespace, {})
        old = in_namespace.get(view.name)
        new = None if deleted or view.service is None else view
        if new is None:
            in_namespace.pop(view.name, None)
            if not in_namespace:
                del self.slices[view.namespace]
        else:
            in_namespace[view.name] = new
        if old == new:
            return  # e.g. only the endpoints' conditions changed: listed is listed
        self._listed.pop(view.namespace, None)
        if view.namespace not in self.pods:
            return
        for changed in (old, new):
            if changed is not None and changed.service is not None:
                self._dirty_services[view.namespace].add(changed.service)
        self._wake.set()

    def everything_dirty(self) -> None:
        """Judge every gated pod at the next batch (when this replica starts leading)."""
        for namespace, pods in self.pods.items():
            self._dirty_pods[namespace].update(pods)
        self._wake.set()

    def _mark(self, namespace: str, uid: str) -> None:
        self._dirty_pods[namespace].add(uid)
        self._wake.set()

    # ---- judging and writing (the leader only) ----------------------------------------

    async def run(self) -> None:
        self.everything_dirty()
        try:
            while True:
                await self._wake.wait()
                await asyncio.sleep(self.batch_seconds)
                self._wake.clear()
                try:
                    self.flush()
                except Exception:  # one bad batch never stops the loop
                    log.exception("judging the readiness gate failed")
        finally:
            for task in list(self._tasks):
                task.cancel()

    def flush(self) -> int:
        """Judge every pod the events since the last batch can affect; start the writes due.
        Returns how many writes it started."""
        started = 0
        for pod, condition in self.due():
            if pod.uid in self._writing:
                self._again.add((pod.namespace, pod.uid))  # judged again once that write ends
                continue
            self._writing.add(pod.uid)
            task = asyncio.create_task(self._write(pod, condition), name=f"lameduck-gate-{pod.name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    def due(self) -> list[tuple[PodView, GateCondition]]:
        """The writes the marked pods need now; clears the marks."""
        pods_marked, self._dirty_pods = self._dirty_pods, defaultdict(set)
        services_marked, self._dirty_services = self._dirty_services, defaultdict(set)
        dropped, self._dropped = self._dropped, defaultdict(list)
        now = self.clock()
        writes: list[tuple[PodView, GateCondition]] = []
        for namespace in sorted(set(pods_marked) | set(services_marked) | set(dropped)):
            pods = self.pods.get(namespace)
            if not pods:
                continue
            services = self.services.get(namespace, {})
            touched = [
                *dropped.get(namespace, ()),
                *(services[n] for n in services_marked.get(namespace, ()) if n in services),
            ]
            uids = set(pods_marked.get(namespace, ()))
            if touched:
                uids.update(uid for uid, pod in pods.items() if any(s.selects(pod) for s in touched))
            listed = self._listed_in(namespace)
            for uid in sorted(uids):
                pod = pods.get(uid)
                if pod is None:
                    continue
                condition = condition_for(pod, services.values(), listed, now)
                if condition is not None:
                    writes.append((pod, condition))
        return writes

    def _listed_in(self, namespace: str) -> dict[tuple[str, str], Listed]:
        found = self._listed.get(namespace)
        if found is None:
            found = listings(self.slices.get(namespace, {}).values())
            self._listed[namespace] = found
        return found

    async def _write(self, pod: PodView, condition: GateCondition) -> None:
        # A False condition only on the very version judged: never on a pod that has turned
        # True or started terminating since.
        guard = not condition.status
        try:
            async with self._slots:
                if guard and self._superseded(pod):
                    # Refused without asking: under a rollout's burst of writes a False judged
                    # on an old version would only hold a slot the True writes are waiting for.
                    result = WriteResult.CONFLICT
                else:
                    result = await self.api.patch_pod_condition(pod, condition.as_api(), guard)
        except Exception as err:
            self.metrics.api_errors.labels(operation="readiness_condition").inc()
            delay = self._retries.failed(pod.uid)
            log.warning(
                "could not set %s on pod %s/%s (retry in %.0fs): %s",
                condition.reason.value,
                pod.namespace,
                pod.name,
                delay,
                one_line(err),
            )
            self.call_later(delay, partial(self._mark, pod.namespace, pod.uid))
            return
        finally:
            self._writing.discard(pod.uid)
            if (pod.namespace, pod.uid) in self._again:
                self._again.discard((pod.namespace, pod.uid))
                self._mark(pod.namespace, pod.uid)
        self._retries.succeeded(pod.uid)
        current = self.pods.get(pod.namespace, {}).get(pod.uid)
        if result is WriteResult.WRITTEN:
            self.metrics.readiness_writes.labels(status=condition.status_text, reason=condition.reason.value).inc()
            log.debug("pod %s/%s: %s %s", pod.namespace, pod.name, condition.status_text, condition.reason.value)
            if current is not None and (current.status, current.reason) == (pod.status, pod.reason):
                # Until the watch brings the pod back, the index knows what it now carries.
                self.pods[pod.namespace][pod.uid] = replace(
                    current, status=condition.status_text, reason=condition.reason.value
                )
        elif result is WriteResult.CONFLICT and current is not None:
            if current.resource_version != pod.resource_version:
                self._mark(pod.namespace, pod.uid)  # the newer version is here: judge it
            else:
                self._stale.add(pod.uid)  # judged again when the newer version arrives

    def _superseded(self, pod: PodView) -> bool:
        """The index holds a newer version of the pod than the one judged, or none at all."""
        current = self.pods.get(pod.namespace, {}).get(pod.uid)
        return current is None or current.resource_version != pod.resource_version

    async def settle(self) -> None:
        """Judge and write until nothing is left to do (for tests)."""
        while True:
            self.flush()
            if not self._tasks:
                if not (self._dirty_pods or self._dirty_services or self._dropped):
                    return
                continue
            await asyncio.gather(*list(self._tasks))
