"""The Events on policies: what a policy did alike to many Deployments, one Event per policy and
burst listing them (logic/event_batches gathers them and says when each is due). A timer wakes
the posting when the next batch falls due; a post is best effort: a failed one is counted and
logged, never retried."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from lameduck_operator.logic.decision import DeploymentEvent
from lameduck_operator.logic.event_batches import EventBatches, PolicyEvent
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.model import PolicyRef
from lameduck_operator.ports import CallLater, FleetApi, one_line

log = logging.getLogger("lameduck.fleet")


class PolicyEvents:
    """`uid_of` gives a policy's uid as last observed (None: not known), which `kubectl describe`
    matches the Event's involvedObject with."""

    def __init__(
        self,
        api: FleetApi,
        metrics: OperatorMetrics,
        monotonic: Callable[[], float],
        call_later: CallLater,
        uid_of: Callable[[PolicyRef], str | None],
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.monotonic = monotonic
        self.call_later = call_later
        self.uid_of = uid_of
        self.batches = EventBatches()
        self._woken_at: float | None = None  # when the armed timer fires; None: none is armed
        self._posting: set[asyncio.Task[None]] = set()

    def add(self, deployment: DeploymentRef, event: DeploymentEvent) -> None:
        """Tell the event (one with a policy) in its policy's next Event."""
        assert event.policy is not None
        self.batches.add((event.policy, event.reason, event.message, event.warning), deployment, self.monotonic())
        self._arm()

    async def post_due(self) -> None:
        for event in self.batches.due(self.monotonic()):
            await self._post(event)
        self._arm()

    async def post_all(self) -> None:
        """Every open batch now, due or not (the operator is stopping)."""
        for event in self.batches.all():
            await self._post(event)

    async def idle(self) -> None:
        """Until the posts under way have ended (for tests)."""
        while self._posting:
            await asyncio.gather(*self._posting)

    def _arm(self) -> None:
        due = self.batches.next_due()
        if due is None or (self._woken_at is not None and self._woken_at <= due):
            return
        self._woken_at = due
        self.call_later(max(0.0, due - self.monotonic()), self._wake)

    def _wake(self) -> None:
        self._woken_at = None
        task = asyncio.get_running_loop().create_task(self.post_due())
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

    async def _post(self, event: PolicyEvent) -> None:
        try:
            await self.api.post_policy_event(event, self.uid_of(event.policy))
        except Exception as err:  # events are best effort
            self.metrics.api_errors.labels(operation="event").inc()
            log.info("could not post %s on %s: %s", event.reason, event.policy, one_line(err))
