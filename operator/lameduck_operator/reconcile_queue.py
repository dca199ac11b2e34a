"""The queue of Deployments to reconcile and the workers that take from it.

A Deployment is in the queue at most once; workers reconcile several Deployments at a time but
never two of one (one that comes up again meanwhile is reconciled again after). A reconcile that
fails is retried with a per-Deployment backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from lameduck_operator.logic.retry import Backoff
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.ports import CallLater

MAX_DEPLOYMENT_RETRY_SECONDS = 60.0
log = logging.getLogger("lameduck.fleet")


class ReconcileQueue:
    def __init__(
        self,
        reconcile: Callable[[DeploymentRef], Awaitable[object]],
        metrics: OperatorMetrics,
        call_later: CallLater,
    ) -> None:
        self.reconcile = reconcile
        self.metrics = metrics
        self.call_later = call_later
        self._queue: asyncio.Queue[DeploymentRef] = asyncio.Queue()
        self._queued: set[DeploymentRef] = set()
        # One that comes up again while it is being reconciled waits in _again for that
        # reconcile to end.
        self._reconciling: set[DeploymentRef] = set()
        self._again: set[DeploymentRef] = set()
        self._retries: Backoff[DeploymentRef] = Backoff(MAX_DEPLOYMENT_RETRY_SECONDS)

    @property
    def queued(self) -> frozenset[DeploymentRef]:
        return frozenset(self._queued)

    def put(self, ref: DeploymentRef) -> None:
        if ref not in self._queued:
            self._queued.add(ref)
            self._queue.put_nowait(ref)
            self.metrics.queue_depth.set(len(self._queued))

    def succeeded(self, ref: DeploymentRef) -> None:
        self._retries.succeeded(ref)

    def retry_later(self, ref: DeploymentRef) -> None:
        delay = self._retries.failed(ref)
        self.call_later(delay, partial(self.put, ref))

    async def run(self, workers: int) -> None:
        await asyncio.gather(*(self._work() for _ in range(workers)))

    async def _work(self) -> None:
        while True:
            ref = await self._queue.get()
            self._queued.discard(ref)
            self.metrics.queue_depth.set(len(self._queued))
            if ref in self._reconciling:
                self._again.add(ref)
                continue
            self._reconciling.add(ref)
            try:
                await self.reconcile(ref)
            except Exception:  # one bad Deployment never stops the loop
                log.exception("reconcile of %s failed", ref)
                self.retry_later(ref)
            finally:
                self._reconciling.discard(ref)
                if ref in self._again:
                    self._again.discard(ref)
                    self.put(ref)
            # Let the loop run between reconciles. A reconcile that needs no API call never
            # suspends, and neither does getting from a non-empty queue: after a policy change
            # over 5,000 Deployments a worker held the loop for 4.7 s without this, delaying
            # watches, webhook answers and the other workers' finished API calls.
            await asyncio.sleep(0)

    async def drain(self) -> None:
        """Reconcile until the queue is empty (for tests)."""
        while self._queued:
            ref = self._queue.get_nowait()
            self._queued.discard(ref)
            await self.reconcile(ref)
