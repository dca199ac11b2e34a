"""What lameduck tells about the Deployments it decided about: a policy's action (injected,
updated, reverted) in one Event on the policy per burst (policy_events), and a Deployment's own
problem (a conflict, drift, a template too large) in an Event on it, a conflict once per
distinct reason (not on every resync). Best effort: a failed post is counted and logged, never
retried. A Deployment's Event is posted beside the reconciles, not by the reconcile worker: a
burst's conflicts each held a worker for an API call, one call in seven of a burst over
bench.fleet's shapes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from lameduck_operator.logic.decision import Action, Decision, DeploymentEvent
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.policy_events import PolicyEvents
from lameduck_operator.ports import FleetApi

log = logging.getLogger("lameduck.fleet")
# Events posted at once; more wait their turn. Bounded so that a burst of conflicts takes few of
# the API threads and connections the reconcile workers' writes use.
POSTS_AT_ONCE = 2
# What an Event's involvedObject reads of the Deployment: a post waiting its turn keeps only this.
INVOLVED = ("name", "namespace", "uid", "resourceVersion")


class DeploymentEvents:
    def __init__(self, api: FleetApi, metrics: OperatorMetrics, policies: PolicyEvents) -> None:
        self.api = api
        self.metrics = metrics
        self.policies = policies
        self._conflict_posted: dict[DeploymentRef, str] = {}
        self._posts = asyncio.Semaphore(POSTS_AT_ONCE)
        self._posting: set[asyncio.Task[None]] = set()

    def tell(self, ref: DeploymentRef, decision: Decision, body: Mapping[str, Any]) -> None:
        """Tell the decision's Event: in its policy's next Event, or on body (the Deployment as
        reconciled, not parsed again from the store), posted in the background."""
        event = decision.event
        if event is None:
            self._conflict_posted.pop(ref, None)
            return
        if event.policy is not None:
            self.policies.add(ref, event)
            return
        if decision.action is Action.NONE:
            if self._conflict_posted.get(ref) == event.message:
                return
            self._conflict_posted[ref] = event.message
        meta = body.get("metadata") or {}
        involved = {"metadata": {key: meta.get(key) for key in INVOLVED}}
        task = asyncio.get_running_loop().create_task(self._post(ref, involved, event))
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

    async def idle(self) -> None:
        """Until the posts under way and waiting have ended (for tests and drain)."""
        while self._posting:
            # a post cancelled (the Lease lost) has ended too
            await asyncio.gather(*self._posting, return_exceptions=True)

    def cancel(self) -> None:
        """Drop the posts under way and waiting: this replica no longer leads, so it tells nothing."""
        for task in self._posting:
            task.cancel()

    async def _post(self, ref: DeploymentRef, involved: Mapping[str, Any], event: DeploymentEvent) -> None:
        # the wait for a turn inside the try too: a failure there is counted and logged as well
        try:
            async with self._posts:
                await self.api.post_event(involved, event)
        except Exception as err:  # events are best effort
            self.metrics.api_errors.labels(operation="event").inc()
            log.info("could not post event on %s: %s", ref, err)
