"""Serving the readiness gate lameduck.dev/endpoints-ready: an index fed by shared watches
(gate_index.py), and the writes of the conditions it judges.

Handlers feed every pod, Service and EndpointSlice event into the index, which marks the pods
they can affect. On the leader, one loop gathers a burst of events, judges each affected pod
once per batch, and writes the conditions that changed to the pods' status, concurrently but at
most `concurrency` at once.

Nothing here imports kopf or the API client, so tests drive it with a fake API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from lameduck_operator.gate_index import GateIndex
from lameduck_operator.logic.readiness import GateCondition, PodView
from lameduck_operator.logic.retry import Backoff
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.ports import CallLater, GateApi, WriteResult, call_later_on_running_loop, one_line

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
        call_later: CallLater = call_later_on_running_loop,
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.clock = clock
        self.batch_seconds = batch_seconds
        self.call_later = call_later
        self.index = GateIndex()
        self._slots = asyncio.Semaphore(concurrency)
        self._writing: set[str] = set()
        self._again: set[tuple[str, str]] = set()
        self._retries: Backoff[str] = Backoff(MAX_CONDITION_RETRY_SECONDS)
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- what the watches observe: kept in the index --------------------------------------

    @property
    def pods(self) -> dict[str, dict[str, PodView]]:
        return self.index.pods

    def pod_seen(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        gone = self.index.pod_seen(body, deleted)
        if gone is not None:
            self._retries.succeeded(gone)

    def service_seen(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        self.index.service_seen(body, deleted)

    def slice_seen(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        self.index.slice_seen(body, deleted)

    def everything_dirty(self) -> None:
        self.index.everything_dirty()

    # ---- judging and writing (the leader only) ----------------------------------------

    async def run(self) -> None:
        self.everything_dirty()
        try:
            while True:
                await self.index.wake.wait()
                await asyncio.sleep(self.batch_seconds)
                self.index.wake.clear()
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
        return self.index.due(self.clock())

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
            self.call_later(delay, partial(self.index.mark, pod.namespace, pod.uid))
            return
        finally:
            self._writing.discard(pod.uid)
            if (pod.namespace, pod.uid) in self._again:
                self._again.discard((pod.namespace, pod.uid))
                self.index.mark(pod.namespace, pod.uid)
        self._retries.succeeded(pod.uid)
        current = self.index.pods.get(pod.namespace, {}).get(pod.uid)
        if result is WriteResult.WRITTEN:
            self.metrics.readiness_writes.labels(status=condition.status_text, reason=condition.reason.value).inc()
            log.debug("pod %s/%s: %s %s", pod.namespace, pod.name, condition.status_text, condition.reason.value)
            if current is not None and (current.status, current.reason) == (pod.status, pod.reason):
                # Until the watch brings the pod back, the index knows what it now carries.
                self.index.pods[pod.namespace][pod.uid] = replace(
                    current, status=condition.status_text, reason=condition.reason.value
                )
        elif result is WriteResult.CONFLICT and current is not None:
            if current.resource_version != pod.resource_version:
                self.index.mark(pod.namespace, pod.uid)  # the newer version is here: judge it
            else:
                self.index.stale(pod.uid)  # judged again when the newer version arrives

    def _superseded(self, pod: PodView) -> bool:
        """The index holds a newer version of the pod than the one judged, or none at all."""
        current = self.index.pods.get(pod.namespace, {}).get(pod.uid)
        return current is None or current.resource_version != pod.resource_version

    async def settle(self) -> None:
        """Judge and write until nothing is left to do (for tests)."""
        while True:
            self.flush()
            if not self._tasks:
                if not self.index.marked:
                    return
                continue
            await asyncio.gather(*list(self._tasks))
