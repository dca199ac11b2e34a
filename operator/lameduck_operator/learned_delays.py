"""The learned delays: per Deployment, what its recent trusted hold reports teach its next holds
(logic/learning.py), published per namespace in the ConfigMap lameduck-learned that the sidecar
reads when a hold starts, so that the next pods of a rollout already hold with it. With the
policy's hold.learnedBudget, also its learned maxHold, which a hold takes as it starts (up to the
cap) and the webhook passes to the decision at the Deployment's next rollout (learned_max_hold);
and for a Deployment with no history that its decision starts at the starting budget (an L7 hop
sends to it: Decision.starting_max_hold, told by the reconciler), that maxHold alone, so that the
holds of pods made before its route was seen take it too.

Every replica keeps the values (a new leader publishes at once); only the leader writes, batched
on the status interval, and only a namespace whose content changed. Values exist only for
Deployments the operator knows (they come from trusted reports, or from the ConfigMap read back
for a known Deployment, or from its decisions) and go with them. The first write in a namespace
after a start reads the ConfigMap first and keeps what an earlier leader learned for Deployments
not reported since, so that a restart does not send every Deployment back to a learning hold;
starting budgets are not read back: the leader's own decisions give them again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from lameduck_operator.logic.budget import max_hold_in_force
from lameduck_operator.logic.learning import Learned, bounded, learn, learned_data, parse_learned
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.logic.shutdown import HoldReport
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.model import HoldSpec
from lameduck_operator.namespace_writes import NamespaceWrites
from lameduck_operator.ports import CallLater, LearnedApi, call_later_on_running_loop

log = logging.getLogger("lameduck.operator")

HoldOf = Callable[[DeploymentRef], HoldSpec | None]


class LearnedDelays:
    def __init__(
        self,
        api: LearnedApi,
        metrics: OperatorMetrics,
        *,
        known: Callable[[DeploymentRef], bool],
        hold_of: HoldOf,
        call_later: CallLater = call_later_on_running_loop,
        history_changed: Callable[[DeploymentRef], None] = lambda _: None,
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.known = known
        # The hold of the policy that governs a Deployment now; None: none governs it.
        self.hold_of = hold_of
        # Told when a Deployment gains its first learned maxHold or loses it: its maxHold in force
        # then comes from elsewhere (logic/budget.py, BudgetSource), its starting budget with it.
        self.history_changed = history_changed
        self.call_later = call_later
        # Per namespace, per Deployment name: what the next holds are to use.
        self.values: dict[str, dict[str, Learned]] = {}
        # Per namespace, per Deployment name: the starting maxHold its latest decision gave it
        # (published only while nothing is learned for it).
        self.starting: dict[str, dict[str, float]] = {}
        # Per namespace, the data last written (or read back, before the first write).
        self.published: dict[str, dict[str, str]] = {}
        self._dirty = NamespaceWrites("the learned delays", "learned", metrics, self.call_later)

    def learned(self, ref: DeploymentRef) -> Learned | None:
        return self.values.get(ref.namespace, {}).get(ref.name)

    def learned_max_hold(self, ref: DeploymentRef) -> float | None:
        """The maxHold learned for the Deployment, for its decisions; None: none. Called on the
        webhook's thread too: two dict reads of values the loop replaces whole."""
        learned = self.learned(ref)
        return None if learned is None else learned.max_hold_seconds

    def in_force(self, ref: DeploymentRef) -> float | None:
        """The maxHold the Deployment's next rollout gets from what was learned, as its decision
        bounds it by its policy now (budget.max_hold_in_force); None when nothing was learned or
        its policy does not learn budgets. What status and metrics show."""
        learned, hold = self.learned_max_hold(ref), self.hold_of(ref)
        if learned is None or hold is None or hold.learned_budget is None:
            return None
        return max_hold_in_force(hold, learned)

    def reports_changed(self, ref: DeploymentRef, reports: Sequence[HoldReport], hold: HoldSpec) -> None:
        """The Deployment's recent trusted reports (oldest first) and its policy's hold."""
        learned = learn(reports, hold)
        if learned is None:
            self.forget(ref)
        elif self.learned(ref) != learned:
            had = self.learned_max_hold(ref) is not None
            self.values.setdefault(ref.namespace, {})[ref.name] = learned
            self._dirty.add(ref.namespace)
            self._told(ref, had)

    def forget(self, ref: DeploymentRef) -> None:
        """The Deployment is gone (or has nothing left to learn from): its key goes too."""
        had = self.learned_max_hold(ref) is not None
        in_namespace = self.values.get(ref.namespace)
        if in_namespace is not None and in_namespace.pop(ref.name, None) is not None:
            self._dirty.add(ref.namespace)
            if not in_namespace:
                del self.values[ref.namespace]
            self._told(ref, had)

    def starting_budget(self, ref: DeploymentRef, max_hold: float | None) -> None:
        """The starting maxHold the Deployment's latest decision gave it; None: none (another
        source, no policy, or the Deployment is gone)."""
        in_namespace = self.starting.get(ref.namespace, {})
        if in_namespace.get(ref.name) == max_hold:
            return
        if max_hold is None:
            del in_namespace[ref.name]
            if not in_namespace:
                del self.starting[ref.namespace]
        else:
            self.starting.setdefault(ref.namespace, {})[ref.name] = max_hold
        self._dirty.add(ref.namespace)

    def _told(self, ref: DeploymentRef, had: bool) -> None:
        if had != (self.learned_max_hold(ref) is not None):
            self.history_changed(ref)

    async def publish_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.publish()
            except Exception:
                log.exception("publishing the learned delays failed")

    async def publish(self) -> None:
        await self._dirty.write(self._publish_in)

    async def _publish_in(self, namespace: str) -> None:
        if namespace not in self.published:
            existing = await self.api.read_learned(namespace)
            self._adopt(namespace, existing or {})
            self.published[namespace] = existing or {}
        data = learned_data(self.values.get(namespace, {}), self.starting.get(namespace))
        if data != self.published[namespace]:
            await self.api.apply_learned(namespace, data)
            self.published[namespace] = data

    def _adopt(self, namespace: str, data: dict[str, str]) -> None:
        """What an earlier leader learned, for Deployments known and governed now and not
        reported since this replica started; bounded by today's policy (its maxHold, or the
        learned one within its learnedBudget; none learned when it no longer learns budgets)."""
        for name, value in data.items():
            ref = DeploymentRef(namespace, name)
            learned, hold = parse_learned(value), self.hold_of(ref)
            if learned is None or hold is None or not self.known(ref) or self.learned(ref) is not None:
                continue
            self.values.setdefault(namespace, {})[name] = bounded(learned, hold)
            self._told(ref, False)
