"""What lameduck tells about the Deployments it decided about: a policy's action (injected,
updated, reverted) in one Event on the policy per burst (policy_events), and a Deployment's own
problem (a conflict, drift, a template too large) in an Event on it, a conflict once per
distinct reason (not on every resync). Best effort: a failed post is counted and logged, never
retried."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lameduck_operator.logic.decision import Action, Decision
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.policy_events import PolicyEvents
from lameduck_operator.ports import FleetApi

log = logging.getLogger("lameduck.fleet")


class DeploymentEvents:
    def __init__(self, api: FleetApi, metrics: OperatorMetrics, policies: PolicyEvents) -> None:
        self.api = api
        self.metrics = metrics
        self.policies = policies
        self._conflict_posted: dict[DeploymentRef, str] = {}

    async def tell(self, ref: DeploymentRef, decision: Decision, body: Mapping[str, Any]) -> None:
        """Tell the decision's Event: in its policy's next Event, or on body (the Deployment as
        reconciled, not parsed again from the store)."""
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
        try:
            await self.api.post_event(body, event)
        except Exception as err:  # events are best effort
            self.metrics.api_errors.labels(operation="event").inc()
            log.info("could not post event on %s: %s", ref, err)
