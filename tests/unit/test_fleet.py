"""The operator's reconcile loop against an in-memory API: apply, audit, limits, revert, drift, errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import generate_latest

from lameduck_operator.deployment_events import POSTS_AT_ONCE
from lameduck_operator.fleet import Fleet
from lameduck_operator.logic.admitted import injected
from lameduck_operator.logic.compliance import Reason, State
from lameduck_operator.logic.decision import Action, Moment, decide
from lameduck_operator.logic.event_batches import QUIET_SECONDS
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.logic.status import MAX_LISTED
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.model import PolicyRef
from lameduck_operator.settings import Settings
from tests.unit.builders import container, deployment, policy
from tests.unit.fake_api import FakeApi, policy_body

WEB = PolicyRef("GracefulPolicy", "web", "shop")
WEB_TIER: dict[str, Any] = {"selector": {"matchLabels": {"tier": "web"}}}
DELETING = "2026-01-01T00:00:00Z"


class Timers:
    """The fleet's timers; they run only when a test moves time on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.pending.append((self.now + delay, callback))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [callback for at, callback in self.pending if at <= self.now]
        self.pending = [(at, callback) for at, callback in self.pending if at > self.now]
        for callback in due:
            callback()


class Harness:
    def __init__(self, api: FakeApi | None = None) -> None:
        self.api = api or FakeApi()
        self.timers = Timers()
        self.fleet = Fleet(
            Settings(),
            self.api,
            OperatorMetrics(),
            clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
            monotonic=lambda: self.timers.now,
            call_later=self.timers.call_later,
        )
        self.fleet.synced.set()

    def add(self, name: str, replicas: int = 1, **kwargs: Any) -> None:
        self.fleet.deployment_seen(self.api.add(deployment(name, **kwargs), replicas))

    def policy(self, name: str = "web", namespace: str | None = "shop", **spec: Any) -> None:
        self.fleet.policy_seen(policy_body(name, namespace, spec))

    def observe(self, name: str) -> None:
        """The watch delivers what the API server now stores."""
        self.fleet.deployment_seen(self.api.view("shop", name))

    def pod(self, name: str) -> dict[str, Any]:
        spec: dict[str, Any] = self.api.view("shop", name)["spec"]["template"]["spec"]
        return spec

    def state(self, name: str) -> State:
        return self.fleet.decisions[DeploymentRef("shop", name)].verdict.state

    async def settle(self) -> None:
        await self.fleet.drain()
        for name in [n for (_, n) in self.api.deployments]:
            self.observe(name)
        await self.fleet.drain()
        await self.fleet.publish()

    async def later(self, seconds: float) -> None:
        """Time passes with no Deployment changing: due timers fire, then statuses and access are published."""
        self.timers.advance(seconds)
        await self.fleet.drain()
        await self.fleet.publish()

    async def told(self) -> list[tuple[str, str]]:
        """The Events on policies so far, once the last burst's window has passed: (reason, message)."""
        self.timers.advance(QUIET_SECONDS)
        await self.fleet.reconciler.events.policies.idle()
        return [(e.reason, e.message) for e, _ in self.api.policy_events]

    def access_timers(self) -> int:
        """Timers pending but those of the policies' Events."""
        wake = self.fleet.reconciler.events.policies._wake
        return sum(1 for _, callback in self.timers.pending if callback != wake)

    def pod_listings(self) -> int:
        return sum(1 for c in self.api.calls if c.startswith("pods "))


@pytest.fixture
def h() -> Harness:
    return Harness()


async def test_immediate_policy_applies_once_and_reports_compliant(h: Harness) -> None:
    h.add("api", labels={"tier": "web"})
    h.add("db", labels={"tier": "db"})
    h.policy(apply="Immediate", selector={"matchLabels": {"tier": "web"}})
    await h.settle()
    assert h.pod("api")["initContainers"][0]["name"] == "lameduck"
    assert h.pod("api")["terminationGracePeriodSeconds"] == 65
    assert "initContainers" not in h.pod("db"), "unselected Deployments are untouched"
    assert h.api.events == [], "nothing on the Deployment: its policy is told"
    assert await h.told() == [("Injected", "injected the preStop hold, termination budget 65s, into 1 Deployment: api")]
    h.api.complete_rollout("shop", "api")
    h.observe("api")
    calls_before = list(h.api.calls)
    generation = h.api.deployments[("shop", "api")].generation
    await h.settle()
    assert h.state("api") is State.COMPLIANT
    assert [c for c in h.api.calls if c.startswith("apply")] == [c for c in calls_before if c.startswith("apply")]
    assert h.api.deployments[("shop", "api")].generation == generation, "no new rollout"
    status = h.api.statuses[WEB]
    assert (status["matched"], status["compliant"], status["pending"], status["budgetSeconds"]) == (1, 1, 0, 65)
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Conflict": "False",
        "Degraded": "False",
    }


async def test_audit_never_writes(h: Harness) -> None:
    h.add("api")
    h.policy(mode="Audit", apply="Immediate")
    await h.settle()
    assert not [c for c in h.api.calls if c.startswith("apply")]
    assert h.state("api") is State.PENDING
    assert h.api.statuses[WEB]["pending"] == 1
    assert h.api.statuses[WEB]["conditions"][0]["reason"] == "Audited"


async def test_decisions_are_kept_without_their_intent_which_is_a_whole_deployment_body(h: Harness) -> None:
    h.add("api")
    h.policy(mode="Audit", apply="Immediate")
    taken = await h.fleet.reconcile(DeploymentRef("shop", "api"))
    assert taken is not None
    assert taken.intent is not None
    kept = h.fleet.decisions[DeploymentRef("shop", "api")]
    assert kept.intent is None
    assert kept.plan is not None
    assert not kept.plan.intent
    assert (kept.verdict, kept.budget_seconds) == (taken.verdict, taken.budget_seconds)


async def test_on_next_rollout_reports_pending_without_patching(h: Harness) -> None:
    h.add("api")
    h.policy()
    await h.settle()
    assert not [c for c in h.api.calls if c.startswith("apply")]
    decision = h.fleet.decisions[DeploymentRef("shop", "api")]
    assert (decision.verdict.state, decision.verdict.reason) == (State.PENDING, Reason.PENDING_NEXT_ROLLOUT)
    assert h.api.statuses[WEB]["nonCompliant"][0]["reason"] == "PendingNextRollout"


async def test_immediate_rollouts_never_exceed_the_limit(h: Harness) -> None:
    names = [f"app-{i:02d}" for i in range(12)]
    for name in names:
        h.add(name, replicas=2)
    h.policy(apply="Immediate", maxConcurrentRollouts=3)
    await h.settle()
    most_rolling = 0
    for _ in range(10):
        rolling = [n for n in names if h.api.deployments[("shop", n)].status["updatedReplicas"] == 0]
        most_rolling = max(most_rolling, len(rolling))
        assert len(rolling) <= 3
        for name in rolling:
            h.api.complete_rollout("shop", name)
            h.observe(name)
        await h.settle()
    assert most_rolling == 3
    assert all(h.state(n) is State.COMPLIANT for n in names)
    assert all("initContainers" in h.pod(n) for n in names)


async def test_waiting_deployments_are_reported_with_their_turn(h: Harness) -> None:
    for name in ("a", "b"):
        h.add(name)
    h.policy(apply="Immediate", maxConcurrentRollouts=1)
    await h.settle()
    verdicts = sorted((h.fleet.decisions[DeploymentRef("shop", n)].verdict for n in ("a", "b")), key=str)
    assert [v.reason for v in verdicts].count(Reason.WAITING_TURN) == 1
    waiting = next(v for v in verdicts if v.reason is Reason.WAITING_TURN)
    assert waiting.message == "waits its turn: 1 of at most 1 rollouts in progress"


async def test_deleting_the_policy_reverts_then_releases_the_finalizer(h: Harness) -> None:
    h.add("api", containers=[container("app", 8080)], terminationGracePeriodSeconds=None)
    h.policy(apply="Immediate")
    await h.settle()
    assert "initContainers" in h.pod("api")
    h.fleet.policy_seen(policy_body("web", "shop", {"apply": "Immediate"}, deletionTimestamp="2026-01-01T00:00:00Z"))
    await h.settle()
    assert "initContainers" not in h.pod("api")
    assert "lifecycle" not in h.pod("api")["containers"][0]
    assert h.pod("api")["containers"][0]["image"] == "example.com/app:1", "other managers' fields stay"
    assert h.api.finalizers[WEB] is False
    assert ("Reverted", "removed lameduck's fields (no policy selects it) from 1 Deployment: api") in await h.told()


async def test_opt_out_reverts(h: Harness) -> None:
    h.add("api")
    h.policy(apply="Immediate")
    await h.settle()
    h.api.edit_base(
        "shop", "api", lambda b: b["metadata"].setdefault("annotations", {}).update({"lameduck.dev/skip": "true"})
    )
    h.observe("api")
    await h.settle()
    assert "initContainers" not in h.pod("api")
    assert h.state("api") is State.SKIPPED
    assert h.api.statuses[WEB]["skipped"] == 1


async def test_drift_is_restored_and_told(h: Harness) -> None:
    h.add("api")
    h.policy(apply="Immediate")
    await h.settle()
    h.api.complete_rollout("shop", "api")
    stored = h.api.deployments[("shop", "api")]
    # someone with kubectl edit removes the hold: lameduck no longer owns it
    del stored.applied["spec"]["template"]["spec"]["containers"]
    stored.base_time = "2026-03-01T00:00:00Z"
    h.observe("api")
    await h.settle()
    assert h.pod("api")["containers"][0]["lifecycle"]["preStop"]["httpGet"]["path"] == "/hold/app"
    drift = [e for n, e in h.api.events if e.reason == "DriftRestored"]
    assert len(drift) == 1
    assert drift[0].message.startswith(
        'kubectl changed lameduck\'s fields (container "app" lacks the lameduck preStop hold)'
    )


class SlowEvents(FakeApi):
    """Posts of Deployments' Events that wait until the test lets them through."""

    def __init__(self) -> None:
        super().__init__()
        self.through = asyncio.Event()
        self.posting = 0
        self.most_posting = 0

    async def post_event(self, deployment: Mapping[str, Any], event: Any) -> None:
        self.posting += 1
        self.most_posting = max(self.most_posting, self.posting)
        await self.through.wait()
        self.posting -= 1
        await super().post_event(deployment, event)


def with_conflicts(count: int) -> tuple[Harness, SlowEvents]:
    """A fleet of `count` Deployments with their own preStop (each a conflict to tell), whose
    Events wait until the test lets them through."""
    api = SlowEvents()
    h = Harness(api)
    hook = {"preStop": {"exec": {"command": ["sleep", "9"]}}}
    for i in range(count):
        h.add(f"legacy-{i}", containers=[container("app", lifecycle=hook)])
    return h, api


async def test_a_conflicts_event_is_posted_beside_the_reconciles_a_few_at_a_time() -> None:
    h, api = with_conflicts(5)
    h.add("api")
    h.policy(apply="Immediate")
    # Every reconcile ends while the conflicts' Events wait: no worker is held by one.
    await asyncio.wait_for(h.fleet.queue.drain(), 1)
    assert "initContainers" in h.pod("api"), "applied while every conflict's Event waits"
    assert api.events == []
    await asyncio.sleep(0)
    assert api.most_posting == POSTS_AT_ONCE, "the rest wait their turn"
    api.through.set()
    await h.fleet.drain()
    assert sorted(n for n, e in api.events if e.reason == "Conflict") == [f"legacy-{i}" for i in range(5)]


async def test_a_replica_that_lost_its_lease_posts_none_of_the_events_still_waiting() -> None:
    h, api = with_conflicts(4)
    h.policy(apply="Immediate")
    await asyncio.wait_for(h.fleet.queue.drain(), 1)
    await asyncio.sleep(0)
    assert api.posting == POSTS_AT_ONCE
    h.fleet.reconciler.events.cancel()  # as Runtime._lose does
    api.through.set()
    await asyncio.wait_for(h.fleet.drain(), 1)
    assert [e for _, e in api.events if e.reason == "Conflict"] == []


async def test_foreign_prestop_is_a_conflict_and_one_bad_deployment_blocks_nothing(h: Harness) -> None:
    h.add("legacy", containers=[container("app", lifecycle={"preStop": {"exec": {"command": ["sleep", "9"]}}})])
    h.add("api")
    h.policy(apply="Immediate")
    await h.settle()
    assert h.state("legacy") is State.CONFLICT
    assert "initContainers" in h.pod("api"), "the other Deployment is still applied"
    assert "initContainers" not in h.pod("legacy")
    conflicts = [e for n, e in h.api.events if n == "legacy"]
    assert [e.reason for e in conflicts] == ["Conflict"]
    await h.settle()
    assert len([e for n, e in h.api.events if n == "legacy"]) == 1, "a conflict is told once"
    status = h.api.statuses[WEB]
    assert status["conflicting"] == 1
    assert status["nonCompliant"][0]["name"] == "legacy"
    conflict = next(c for c in status["conditions"] if c["type"] == "Conflict")
    assert (conflict["status"], conflict["reason"]) == ("True", "DeploymentConflicts")


@pytest.mark.parametrize(
    ("applies", "listed"),
    [
        pytest.param(3, "app-00, app-01, app-02", id="a few, all listed"),
        pytest.param(
            MAX_LISTED + 7, ", ".join(f"app-{i:02d}" for i in range(MAX_LISTED)) + " and 7 more", id="bounded"
        ),
    ],
)
async def test_a_burst_of_applies_is_told_in_one_event_on_the_policy_and_a_conflict_on_its_deployment(
    h: Harness, applies: int, listed: str
) -> None:
    for i in range(applies):
        h.add(f"app-{i:02d}")
    h.add("legacy", containers=[container("app", lifecycle={"preStop": {"exec": {"command": ["sleep", "9"]}}})])
    h.fleet.policy_seen(policy_body("web", "shop", {"apply": "Immediate", "maxConcurrentRollouts": 100}, uid="uid-web"))
    await h.settle()
    assert len(writes(h)) == applies
    assert [(n, e.reason, e.warning) for n, e in h.api.events] == [("legacy", "Conflict", True)], (
        "a Deployment's own problem is told on it"
    )
    assert h.api.policy_events == [], "not before the burst is over"
    told = await h.told()
    injected = "injected the preStop hold, termination budget 65s, into"
    assert told == [("Injected", f"{injected} {applies} Deployments: {listed}")]
    assert [uid for _, uid in h.api.policy_events] == ["uid-web"], "with the policy's uid, for kubectl describe"
    await h.settle()
    assert await h.told() == told, "nothing more: every Deployment is compliant"


async def test_an_apply_is_judged_once_and_its_rollouts_progress_is_stored_without_judging_it_again(
    h: Harness,
) -> None:
    api = DeploymentRef("shop", "api")
    h.add("api")
    h.policy(apply="Immediate")
    await h.fleet.drain()
    assert writes(h) == ["apply shop/api"]
    assert h.state("api") is State.COMPLIANT, "judged as written, without deciding again"
    assert h.fleet.slots.rolling == {api: WEB}
    h.observe("api")  # the watch's event of lameduck's own write: the very object stored
    assert not h.fleet.queued
    h.api.complete_rollout("shop", "api")
    h.observe("api")  # only its status changed: the rollout is over
    assert not h.fleet.queued
    assert h.fleet.slots.rolling == {}, "its slot is free"
    h.api.edit_base("shop", "api", lambda b: b["metadata"]["labels"].update(team="a"))
    h.observe("api")
    assert h.fleet.queued == {api}, "a change its decision reads is judged"


async def test_a_rollouts_progress_is_kept_without_storing_the_whole_deployment_again(h: Harness) -> None:
    api = DeploymentRef("shop", "api")
    h.add("api")
    h.policy(apply="Immediate")
    await h.fleet.drain()
    stored: list[Mapping[str, Any]] = []
    put = h.fleet.deployments.put

    def counted(body: Mapping[str, Any]) -> DeploymentRef:
        stored.append(body)
        return put(body)

    h.fleet.deployments.put = counted  # type: ignore[method-assign]
    done = h.api.complete_rollout("shop", "api")
    h.observe("api")
    assert stored == [], "only its status changed: kept alone"
    assert h.fleet.deployments.get(api) == done, "read back as the watch delivered it"
    assert h.fleet.slots.rolling == {}, "its slot is free"
    h.api.edit_base("shop", "api", lambda b: b["metadata"]["labels"].update(team="a"))
    h.observe("api")
    assert [b["metadata"]["labels"] for b in stored] == [{"team": "a"}], "the rest changed: stored"
    assert h.fleet.queued == {api}


async def test_the_watch_event_of_a_write_that_comes_before_its_answer_is_not_judged_again(h: Harness) -> None:
    h.add("api")
    h.policy(apply="Immediate")
    apply, reconciles = h.api.apply_deployment, 0

    async def echoed_first(intent: Mapping[str, Any], force: bool) -> dict[str, Any]:
        answer = await apply(intent, force)
        h.observe("api")  # the watch delivers the write before its answer reaches the reconcile
        return answer

    async def counted(ref: DeploymentRef) -> object:
        nonlocal reconciles
        reconciles += 1
        return await h.fleet.reconcile(ref)

    h.api.apply_deployment = echoed_first  # type: ignore[method-assign]
    h.fleet.queue.reconcile = counted
    await h.fleet.drain()
    assert writes(h) == ["apply shop/api"]
    assert reconciles == 1, "the write's own event waited for its answer, and was that answer"
    assert h.state("api") is State.COMPLIANT
    h.api.complete_rollout("shop", "api")
    h.observe("api")
    assert not h.fleet.queued


async def test_a_deployment_waiting_for_a_slot_is_judged_again_when_its_status_changes(h: Harness) -> None:
    h.add("a", replicas=2)
    h.add("b", replicas=2)
    h.policy(apply="Immediate", maxConcurrentRollouts=1)
    await h.fleet.drain()
    (waiting,) = h.fleet.slots.waiting[WEB]
    h.api.deployments[("shop", waiting.name)].status["availableReplicas"] = 1
    h.observe(waiting.name)
    assert h.fleet.queued == {waiting}


async def test_policy_status_is_written_at_most_once_per_publish_through_a_burst(h: Harness) -> None:
    for i in range(30):
        h.add(f"app-{i:02d}")
    h.policy(apply="Immediate", maxConcurrentRollouts=100)
    status_writes = 0
    for _ in range(10):
        for _ in range(3):
            ref = h.fleet.queue._queue.get_nowait()
            h.fleet.queue._queued.discard(ref)
            await h.fleet.reconcile(ref)
        before = len([c for c in h.api.calls if c.startswith("status ")])
        await h.fleet.publish()
        status_writes = len([c for c in h.api.calls if c.startswith("status ")]) - before
        assert status_writes <= 1, "one write per policy per interval, however many Deployments changed"
    assert len(writes(h)) == 30
    await h.fleet.publish()
    assert len([c for c in h.api.calls if c.startswith("status ")]) <= 11


async def test_take_over_replaces_a_foreign_prestop(h: Harness) -> None:
    h.add("legacy", containers=[container("app", lifecycle={"preStop": {"exec": {"command": ["sleep", "9"]}}})])
    h.policy(apply="Immediate", onConflict="TakeOver")
    await h.settle()
    assert h.pod("legacy")["containers"][0]["lifecycle"]["preStop"] == {
        "httpGet": {"path": "/hold/app", "port": 9901, "scheme": "HTTP"}
    }


TEAMS_HOOK = {"exec": {"command": ["sleep", "9"]}}
TAKE_OVER: dict[str, Any] = {"apply": "Immediate", "onConflict": "TakeOver"}


def managers(h: Harness, name: str) -> list[tuple[str, str]]:
    return [(e["manager"], e["operation"]) for e in h.api.view("shop", name)["metadata"]["managedFields"]]


async def test_take_over_by_the_reconciler_is_given_back_exactly_on_revert(h: Harness) -> None:
    team = container("app", 8080, lifecycle={"preStop": TEAMS_HOOK, "postStart": {"sleep": {"seconds": 1}}})
    h.add("legacy", containers=[team], terminationGracePeriodSeconds=10, annotations={"team": "x"})
    written = h.api.view("shop", "legacy")
    h.policy(**TAKE_OVER)
    await h.settle()
    pod = h.pod("legacy")
    assert pod["containers"][0]["lifecycle"]["preStop"] == {
        "httpGet": {"path": "/hold/app", "port": 9901, "scheme": "HTTP"}
    }
    assert pod["terminationGracePeriodSeconds"] == 65
    generation = h.api.deployments[("shop", "legacy")].generation
    h.fleet.policy_seen(policy_body("web", "shop", TAKE_OVER, deletionTimestamp=DELETING))
    await h.settle()
    stored = h.api.view("shop", "legacy")
    assert stored["spec"] == written["spec"], "the team's hook and grace period are back, and nothing of lameduck's"
    assert stored["metadata"]["annotations"] == {"team": "x"}
    assert managers(h, "legacy") == [("kubectl", "Update")], "lameduck owns nothing: its entry went"
    assert h.api.deployments[("shop", "legacy")].generation == generation + 1, "the revert is one template change"
    assert h.api.finalizers[WEB] is False


async def test_a_taken_over_deployment_is_compliant_and_the_same_policy_writes_nothing_more(h: Harness) -> None:
    h.add("legacy", containers=[container("app", 8080, lifecycle={"preStop": TEAMS_HOOK})])
    h.policy(**TAKE_OVER)
    await h.settle()
    taken = ["take over shop/legacy", "apply shop/legacy"]  # the fake's take-over ends in lameduck's apply
    assert writes(h) == taken
    h.fleet.policy_seen(policy_body("web", "shop", TAKE_OVER, generation=2))
    await h.settle()
    await h.settle()
    assert h.state("legacy") is State.COMPLIANT
    assert writes(h) == taken, "no write again: no new ReplicaSet"
    decision = h.fleet.decisions[DeploymentRef("shop", "legacy")]
    assert decision.plan is not None
    assert decision.plan.taken_over == ('container "app" already has a preStop hook (exec)',), "judged as written"


async def test_a_hook_its_team_sets_again_is_taken_over_again_and_that_one_given_back(h: Harness) -> None:
    h.add("legacy", containers=[container("app", 8080, lifecycle={"preStop": TEAMS_HOOK})])
    h.policy(**TAKE_OVER)
    await h.settle()
    newer = {"exec": {"command": ["sleep", "3"]}}
    stored = h.api.deployments[("shop", "legacy")]
    # An update of the team's own: its hook replaces lameduck's, whose apply entry loses it.
    del stored.applied["spec"]["template"]["spec"]["containers"][0]["lifecycle"]
    h.api.edit_base(
        "shop", "legacy", lambda b: b["spec"]["template"]["spec"]["containers"][0].update(lifecycle={"preStop": newer})
    )
    h.observe("legacy")
    await h.settle()
    assert h.pod("legacy")["containers"][0]["lifecycle"]["preStop"]["httpGet"]["path"] == "/hold/app"
    h.fleet.policy_seen(policy_body("web", "shop", TAKE_OVER, deletionTimestamp=DELETING))
    await h.settle()
    assert h.pod("legacy")["containers"][0]["lifecycle"] == {"preStop": newer}


async def test_values_taken_over_that_the_policy_no_longer_sets_go_back_to_their_team(h: Harness) -> None:
    teams = [{"conditionType": "example.com/warm"}]
    h.add("legacy", readinessGates=teams)
    with_gate = {**TAKE_OVER, "readinessGate": {"enabled": True}}
    h.policy(**with_gate)
    await h.settle()
    assert h.pod("legacy")["readinessGates"] == [*teams, {"conditionType": "lameduck.dev/endpoints-ready"}]
    h.fleet.policy_seen(policy_body("web", "shop", TAKE_OVER, generation=2))
    await h.settle()
    assert h.pod("legacy")["readinessGates"] == teams, "the team's gates, not none"
    stored = h.api.deployments[("shop", "legacy")]
    assert stored.base["spec"]["template"]["spec"]["readinessGates"] == teams, "and the team owns them again"
    assert "readinessGates" not in stored.applied["spec"]["template"]["spec"]
    done = writes(h)
    await h.settle()
    assert h.state("legacy") is State.COMPLIANT
    assert writes(h) == done


async def test_conflicts_name_the_manager_that_set_the_value(h: Harness) -> None:
    h.add(
        "legacy",
        containers=[container("app", lifecycle={"preStop": {"exec": {"command": ["sleep", "9"]}}})],
        terminationGracePeriodSeconds=10,
    )
    h.policy(apply="Immediate")
    await h.settle()
    decision = h.fleet.decisions[DeploymentRef("shop", "legacy")]
    assert decision.verdict.message == (
        'container "app" already has a preStop hook (exec), set by kubectl; '
        "terminationGracePeriodSeconds is 10, below the budget of 65s, set by kubectl"
    )


async def test_the_default_grace_period_is_raised_not_a_conflict(h: Harness) -> None:
    h.add("api", terminationGracePeriodSeconds=30)
    h.policy(apply="Immediate")
    await h.settle()
    assert h.pod("api")["terminationGracePeriodSeconds"] == 65


async def test_api_errors_degrade_and_retry_while_others_proceed(h: Harness) -> None:
    h.add("a")
    h.add("b")
    h.api.fail_next["apply shop/a"] = RuntimeError("etcd timeout")
    h.policy(apply="Immediate", maxConcurrentRollouts=5)
    await h.fleet.drain()
    await h.fleet.publish()
    assert "initContainers" in h.pod("b")
    assert "initContainers" not in h.pod("a")
    degraded = next(c for c in h.api.statuses[WEB]["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ApplyErrors")
    assert "etcd timeout" in degraded["message"]
    h.fleet.enqueue(DeploymentRef("shop", "a"))  # what the backoff timer does
    await h.settle()
    assert "initContainers" in h.pod("a")
    degraded = next(c for c in h.api.statuses[WEB]["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "False"


async def test_overlap_loser_gets_a_conflict_condition_naming_the_winner(h: Harness) -> None:
    h.add("api")
    h.policy("base", None, mode="Audit")
    h.policy("web", "shop", mode="Audit")
    await h.settle()
    base = h.api.statuses[PolicyRef("ClusterGracefulPolicy", "base")]
    conflict = next(c for c in base["conditions"] if c["type"] == "Conflict")
    assert conflict["status"] == "True"
    assert conflict["reason"] == "Overlap"
    assert "lost to GracefulPolicy shop/web on 1 Deployment(s) (shop/api)" in conflict["message"]
    assert base["matched"] == 0
    assert h.api.statuses[WEB]["matched"] == 1


async def test_invalid_policy_reports_and_applies_nothing(h: Harness) -> None:
    h.add("api")
    h.fleet.policy_seen(policy_body("web", "shop", {"hold": {"maxHold": "forever"}, "apply": "Immediate"}))
    await h.settle()
    assert not [c for c in h.api.calls if c.startswith("apply")]
    ready = h.api.statuses[WEB]["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert "spec.hold.maxHold" in ready["message"]


async def test_new_policy_gets_the_finalizer(h: Harness) -> None:
    h.fleet.policy_seen(policy_body("web", "shop", {}, finalizers=[]))
    await h.settle()
    assert h.api.finalizers[WEB] is True


async def test_status_is_not_rewritten_when_nothing_changed(h: Harness) -> None:
    h.add("api")
    h.policy()
    await h.settle()
    writes = len([c for c in h.api.calls if c.startswith("status")])
    h.policy()
    await h.settle()
    assert len([c for c in h.api.calls if c.startswith("status")]) == writes


async def test_sidecar_access_follows_the_pods_that_run_the_sidecar(h: Harness) -> None:
    h.add("api", labels={"tier": "web"}, serviceAccountName="api")
    h.add("web", labels={"tier": "web"})
    h.add("batch", labels={"tier": "batch"}, serviceAccountName="batch")
    h.policy(apply="Immediate", selector={"matchLabels": {"tier": "web"}})
    await h.settle()
    assert h.api.sidecar_access == {"shop": ["api", "default"]}
    h.fleet.policy_seen(policy_body("web", "shop", {"apply": "Immediate"}, deletionTimestamp="2026-01-01T00:00:00Z"))
    await h.settle()
    assert h.api.sidecar_access == {}, "removed once no pod runs the sidecar"


async def test_a_sidecar_role_an_earlier_version_wrote_with_other_rules_is_applied_again(h: Harness) -> None:
    h.add("api", labels={"tier": "web"}, serviceAccountName="api")
    h.policy(apply="Immediate", **WEB_TIER)
    await h.settle()
    assert h.api.sidecar_access == {"shop": ["api"]}
    h.api.sidecar_access["shop"] = ["outdated"]  # stands for the old rules: only a new apply replaces it
    h.fleet.access.outdated = {"shop"}
    h.fleet.recheck_access(["shop"])
    await h.settle()
    assert h.api.sidecar_access == {"shop": ["api"]}
    assert h.fleet.access.outdated == set()


def delete_pod(api: FakeApi, name: str) -> None:
    del api.pods[("shop", name)]


def pod_succeeded(api: FakeApi, name: str) -> None:
    api.pods[("shop", name)]["status"]["phase"] = "Succeeded"


def pod_failed(api: FakeApi, name: str) -> None:
    api.pods[("shop", name)]["status"]["phase"] = "Failed"


@pytest.mark.parametrize("pod_ends", [delete_pod, pod_succeeded, pod_failed])
async def test_after_a_revert_the_sidecars_access_stays_until_the_old_pods_are_gone(
    h: Harness, pod_ends: Callable[[FakeApi, str], None]
) -> None:
    h.add("api", labels={"tier": "web"}, serviceAccountName="api")
    h.add("db", labels={"tier": "db"})
    h.policy(apply="Immediate", **WEB_TIER)
    await h.settle()
    h.api.start_pod("shop", "api", "api-old")
    h.api.start_pod("shop", "db", "db-1")
    assert h.api.sidecar_access == {"shop": ["api"]}
    h.fleet.policy_seen(policy_body("web", "shop", {"apply": "Immediate", **WEB_TIER}, deletionTimestamp=DELETING))
    await h.settle()
    assert "initContainers" not in h.pod("api"), "the template is reverted"
    h.api.start_pod("shop", "api", "api-new")
    assert h.api.sidecar_access == {"shop": ["api"]}, "the old pod may still hold and needs its access"
    h.api.pods[("shop", "api-old")]["metadata"]["deletionTimestamp"] = DELETING
    await h.later(10)
    assert h.api.sidecar_access == {"shop": ["api"]}, "a terminating pod is the one that holds"
    pod_ends(h.api, "api-old")
    await h.later(10)
    assert h.api.sidecar_access == {}, "removed once no pod runs the sidecar"
    listings = h.pod_listings()
    await h.later(60)
    assert h.pod_listings() == listings, "and the namespace is no longer re-checked"


async def test_dropping_one_service_account_waits_for_its_pods(h: Harness) -> None:
    h.add("api", labels={"tier": "web"}, serviceAccountName="api")
    h.add("web", labels={"tier": "web"})
    h.policy(apply="Immediate", **WEB_TIER)
    await h.settle()
    h.api.start_pod("shop", "api", "api-old")
    assert h.api.sidecar_access == {"shop": ["api", "default"]}
    h.api.edit_base(
        "shop", "api", lambda b: b["metadata"].setdefault("annotations", {}).update({"lameduck.dev/skip": "true"})
    )
    h.observe("api")
    await h.settle()
    assert "initContainers" not in h.pod("api"), "opted out and reverted"
    assert h.api.sidecar_access == {"shop": ["api", "default"]}
    delete_pod(h.api, "api-old")
    await h.later(10)
    assert h.api.sidecar_access == {"shop": ["default"]}


async def test_a_namespace_whose_templates_keep_their_access_lists_no_pods(h: Harness) -> None:
    h.add("api", labels={"tier": "web"}, serviceAccountName="api")
    h.policy(apply="Immediate", **WEB_TIER)
    await h.settle()
    h.api.start_pod("shop", "api", "api-1")
    changed = {"apply": "Immediate", "hold": {"maxHold": "40s"}, **WEB_TIER}
    h.fleet.policy_seen(policy_body("web", "shop", changed, generation=2))
    h.add("db", labels={"tier": "db"})
    h.fleet.recheck_access(["shop"])
    await h.later(60)
    sidecar_env = {e["name"]: e.get("value") for e in h.pod("api")["initContainers"][0]["env"]}
    assert sidecar_env["LAMEDUCK_MAX_HOLD"] == "40s", "the template was changed again"
    assert h.api.sidecar_access == {"shop": ["api"]}
    assert h.pod_listings() == 0


async def test_a_namespace_waits_on_one_recheck_however_often_it_is_looked_at(h: Harness) -> None:
    h.add("api")
    h.policy(apply="Immediate")
    await h.settle()
    h.api.start_pod("shop", "api", "api-old")
    h.fleet.policy_seen(policy_body("web", "shop", {"apply": "Immediate"}, deletionTimestamp=DELETING))
    for _ in range(3):
        h.fleet.recheck_access(["shop"])
        await h.settle()
    assert h.access_timers() == 1
    assert h.api.sidecar_access == {"shop": ["default"]}


async def test_pods_keep_the_access_they_had_but_gain_none(h: Harness) -> None:
    h.add("api", labels={"tier": "web"}, serviceAccountName="api")
    h.add("web", labels={"tier": "web"})
    h.policy(apply="Immediate", **WEB_TIER)
    await h.settle()
    h.api.start_pod("shop", "web", "copied-by-hand")
    h.api.pods[("shop", "copied-by-hand")]["spec"]["serviceAccountName"] = "batch"
    h.api.edit_base(
        "shop", "api", lambda b: b["metadata"].setdefault("annotations", {}).update({"lameduck.dev/skip": "true"})
    )
    h.observe("api")
    await h.settle()
    assert h.api.sidecar_access == {"shop": ["default"]}


async def test_a_failed_pod_listing_keeps_the_access_and_retries(h: Harness) -> None:
    h.add("api")
    h.policy(apply="Immediate")
    await h.settle()
    h.api.fail_next["pods shop"] = RuntimeError("connection refused")
    h.fleet.policy_seen(policy_body("web", "shop", {"apply": "Immediate"}, deletionTimestamp=DELETING))
    await h.settle()
    assert h.api.sidecar_access == {"shop": ["default"]}
    await h.later(1)
    assert h.api.sidecar_access == {}


async def test_sleep_method_needs_no_sidecar_access(h: Harness) -> None:
    h.add("api")
    h.policy(apply="Immediate", hold={"method": "Sleep"})
    await h.settle()
    assert h.api.sidecar_access == {}


async def test_an_invalid_update_keeps_the_last_valid_spec_in_force(h: Harness) -> None:
    h.add("api")
    h.policy(apply="Immediate")
    await h.settle()
    assert "initContainers" in h.pod("api")
    bad = policy_body("web", "shop", {"apply": "Immediate", "hold": {"maxHold": "forever"}}, generation=2)
    h.fleet.policy_seen(bad)
    await h.settle()
    assert "initContainers" in h.pod("api"), "nothing reverted"
    ready = h.api.statuses[WEB]["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].endswith("generation 1, the last valid one, stays in force")


async def test_a_policy_change_looks_only_at_deployments_it_can_affect(h: Harness) -> None:
    h.add("api", labels={"tier": "web"})
    h.add("db", labels={"tier": "db"})
    h.policy(apply="Immediate", selector={"matchLabels": {"tier": "web"}})
    await h.settle()
    h.fleet.policy_seen(
        policy_body(
            "web",
            "shop",
            {"apply": "Immediate", "selector": {"matchLabels": {"tier": "web"}}, "hold": {"maxHold": "40s"}},
            generation=2,
        )
    )
    assert h.fleet.queued == {DeploymentRef("shop", "api")}


async def test_a_policy_enabling_the_readiness_gate_injects_it_with_min_ready_seconds(h: Harness) -> None:
    h.add("api")
    h.policy(apply="Immediate", readinessGate={"enabled": True})
    await h.settle()
    assert h.pod("api")["readinessGates"] == [{"conditionType": "lameduck.dev/endpoints-ready"}]
    assert h.api.view("shop", "api")["spec"]["minReadySeconds"] == 2
    h.api.complete_rollout("shop", "api")
    await h.settle()
    assert h.state("api") is State.COMPLIANT


# --- Deployments injected at admission: lameduck keeps to the fields it recorded --------------------


def admitted_at_creation(h: Harness, name: str, written: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """The Deployment as written, stored as the webhook patched it under the policy "web": every field
    attributed to the writer (kubectl), lameduck's recorded in lameduck.dev/admitted."""
    written = written or deployment(name)
    written["spec"]["replicas"] = 1
    decision = decide(written, [policy("web", "shop", spec)], Settings(), None, lambda _: 0, moment=Moment.ADMISSION)
    assert decision.intent is not None
    h.fleet.deployment_seen(h.api.add(injected(written, decision.intent)))
    return written


def writes(h: Harness) -> list[str]:
    return [c for c in h.api.calls if c.startswith(("apply", "patch", "take over"))]


FOREIGN_PRESTOP = {"exec": {"command": ["sleep", "9"]}}
WRITTEN = [
    pytest.param(lambda: deployment("api"), {}, id="nothing of lameduck's there before"),
    pytest.param(
        lambda: deployment(
            "api",
            annotations={"team": "shop"},
            containers=[container("app", 8080, lifecycle={"preStop": FOREIGN_PRESTOP})],
            terminationGracePeriodSeconds=30,
        ),
        {"onConflict": "TakeOver"},
        id="a default grace period and a preStop lameduck replaced are put back",
    ),
]


async def test_a_deployment_injected_at_admission_is_compliant_and_never_patched(h: Harness) -> None:
    admitted_at_creation(h, "api")
    h.policy()
    await h.settle()
    await h.settle()
    assert h.state("api") is State.COMPLIANT
    assert writes(h) == []
    assert h.api.deployments[("shop", "api")].generation == 1
    assert h.api.statuses[WEB]["compliant"] == 1


@pytest.mark.parametrize(("write", "spec"), WRITTEN)
async def test_deleting_the_policy_reverts_an_admitted_deployment_to_exactly_what_was_written(
    h: Harness, write: Callable[[], dict[str, Any]], spec: dict[str, Any]
) -> None:
    written = admitted_at_creation(h, "api", write(), **spec)
    h.policy(**spec)
    await h.settle()
    assert writes(h) == []
    h.fleet.policy_seen(policy_body("web", "shop", spec, deletionTimestamp=DELETING))
    await h.settle()
    stored = h.api.view("shop", "api")
    assert set(writes(h)) == {"patch shop/api"}, "JSON patches alone: no lameduck managedFields entry to apply away"
    assert stored["spec"] == written["spec"]
    assert stored["metadata"].get("annotations") == written["metadata"].get("annotations")
    assert stored["metadata"]["labels"] == written["metadata"]["labels"]
    assert ("Reverted", "removed lameduck's fields (no policy selects it) from 1 Deployment: api") in await h.told()
    assert h.api.finalizers[WEB] is False, "nothing carries the policy any more"


@pytest.mark.parametrize(("write", "spec"), WRITTEN)
async def test_opting_out_reverts_an_admitted_deployment_to_exactly_what_was_written(
    h: Harness, write: Callable[[], dict[str, Any]], spec: dict[str, Any]
) -> None:
    written = admitted_at_creation(h, "api", write(), **spec)
    h.policy(**spec)
    await h.settle()
    skip = {"lameduck.dev/skip": "true"}
    h.api.edit_base("shop", "api", lambda b: b["metadata"]["annotations"].update(skip))
    h.observe("api")
    await h.settle()
    stored = h.api.view("shop", "api")
    assert set(writes(h)) == {"patch shop/api"}
    assert stored["spec"] == written["spec"]
    assert stored["metadata"]["annotations"] == {**written["metadata"].get("annotations", {}), **skip}
    assert h.state("api") is State.SKIPPED


async def test_a_hold_method_changed_to_sleep_is_reinjected_by_json_patch_without_the_sidecar(h: Harness) -> None:
    written = admitted_at_creation(h, "api", apply="Immediate")
    h.policy(apply="Immediate")
    await h.settle()
    assert writes(h) == [], "compliant as admitted"
    h.fleet.policy_seen(policy_body("web", "shop", {"apply": "Immediate", "hold": {"method": "Sleep"}}, generation=2))
    await h.settle()
    assert writes(h) == ["patch shop/api"], "lameduck keeps to its recorded fields: no server-side apply"
    pod = h.pod("api")
    assert "initContainers" not in pod
    assert [c["name"] for c in pod["containers"]] == ["app"]
    assert pod["containers"][0]["lifecycle"]["preStop"] == {"sleep": {"seconds": 30}}
    assert await h.told() == [("Updated", "updated lameduck's fields on 1 Deployment: api")]
    h.api.complete_rollout("shop", "api")
    h.observe("api")
    await h.settle()
    assert h.state("api") is State.COMPLIANT
    assert writes(h) == ["patch shop/api"]
    h.fleet.policy_seen(
        policy_body("web", "shop", {"apply": "Immediate", "hold": {"method": "Sleep"}}, deletionTimestamp=DELETING)
    )
    await h.settle()
    assert h.api.view("shop", "api")["spec"] == written["spec"], "and reverting the new intent leaves nothing of either"


async def test_the_policy_status_carries_what_the_shutdown_observer_saw_and_follows_its_changes(h: Harness) -> None:
    seen: dict[str, Any] = {"lateTraffic": [], "overBudget": []}
    h.fleet.status.shutdown_status = lambda ref: seen if ref == WEB else {}
    h.add("web")
    h.policy(apply="Immediate")
    await h.settle()
    assert (h.api.statuses[WEB]["lateTraffic"], h.api.statuses[WEB]["overBudget"]) == ([], [])
    seen = {"lateTraffic": [], "overBudget": [{"namespace": "shop", "name": "web", "terminations": 1, "killed": 1}]}
    h.fleet.status.changed(WEB)
    await h.settle()
    assert h.api.statuses[WEB]["overBudget"] == seen["overBudget"]
    assert h.fleet.governing_policy(DeploymentRef("shop", "web")) == WEB
    assert h.fleet.policy_spec(WEB) is not None


async def test_every_policy_in_force_has_a_rollouts_in_flight_series_zero_when_none_rolls(h: Harness) -> None:
    h.add("web")
    h.policy(apply="Immediate", selector={"matchLabels": {"tier": "none"}})
    await h.settle()
    exported = generate_latest(h.fleet.metrics.registry).decode()
    assert 'lameduck_rollouts_in_flight{policy="GracefulPolicy shop/web"} 0.0' in exported


async def test_concurrent_workers_never_exceed_the_rollout_limit_nor_reconcile_one_deployment_twice_at_once(
    h: Harness,
) -> None:
    """Eight workers, each apply taking a while: a slot is taken when the apply is decided,
    before the API answers, so no two workers fill the last slot; and a Deployment that comes
    up again while it is being reconciled waits for that reconcile to end."""
    h.fleet.workers = 8
    applying: set[str] = set()
    most_at_once = 0
    overlapping: list[str] = []
    apply = h.api.apply_deployment

    async def slow_apply(intent: Mapping[str, Any], force: bool) -> dict[str, Any]:
        nonlocal most_at_once
        name = intent["metadata"]["name"]
        if name in applying:
            overlapping.append(name)
        applying.add(name)
        most_at_once = max(most_at_once, len(applying))
        await asyncio.sleep(0.02)
        applying.discard(name)
        return await apply(intent, force)

    h.api.apply_deployment = slow_apply  # type: ignore[method-assign]
    names = [f"app-{i:02d}" for i in range(12)]
    for name in names:
        h.add(name, replicas=2)
    h.policy(apply="Immediate", maxConcurrentRollouts=3)
    workers = asyncio.create_task(h.fleet.run())
    try:
        for _ in range(3):  # the same Deployments come up again while their applies are in flight
            for name in names:
                h.observe(name)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        rolling = [n for n in names if h.api.deployments[("shop", n)].status["updatedReplicas"] == 0]
    finally:
        workers.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await workers
    assert len(rolling) == 3, "three rollouts, the limit"
    assert most_at_once <= 3
    assert overlapping == []


def waiting_reconciles(h: Harness) -> float:
    text = generate_latest(h.fleet.metrics.registry).decode()
    return sum(
        float(line.split()[1])
        for line in text.splitlines()
        if line.startswith('lameduck_reconciles_total{result="waiting"}')
    )


async def test_a_rollouts_end_wakes_as_many_waiting_deployments_as_there_are_free_slots_the_longest_waiting_first(
    h: Harness,
) -> None:
    names = [f"app-{i:02d}" for i in range(12)]
    for name in names:
        h.add(name, replicas=2)
    h.policy(apply="Immediate", maxConcurrentRollouts=3)
    await h.settle()
    rolling = [n for n in names if h.api.deployments[("shop", n)].status["updatedReplicas"] == 0]
    waiting = list(h.fleet.slots.waiting[WEB])
    assert len(rolling) == 3
    assert len(waiting) == 9
    judged = waiting_reconciles(h)
    h.api.complete_rollout("shop", rolling[0])
    h.observe(rolling[0])  # only the Deployment that changed is seen again, as in a cluster
    await h.fleet.drain()
    assert waiting_reconciles(h) == judged, "no waiting Deployment was judged only to wait again"
    assert h.api.deployments[("shop", waiting[0].name)].status["updatedReplicas"] == 0, "the first in line went"
    assert list(h.fleet.slots.waiting[WEB]) == waiting[1:]


async def test_an_opted_out_deployment_rolling_out_takes_no_slot_of_the_policy(h: Harness) -> None:
    h.add("skipped", replicas=2, annotations={"lameduck.dev/skip": "true"})
    h.add("web", replicas=2)
    h.api.deployments[("shop", "skipped")].status["updatedReplicas"] = 0  # a rollout of its own, under way
    h.observe("skipped")
    h.policy(apply="Immediate", maxConcurrentRollouts=1)
    await h.settle()
    assert h.state("skipped") is State.SKIPPED
    assert "initContainers" in h.pod("web"), "the policy's one slot was free for web"


async def test_a_worker_lets_the_loop_run_between_reconciles_that_need_no_api_call(h: Harness) -> None:
    for i in range(50):
        h.add(f"app-{i}")
    h.policy(apply="Immediate", mode="Audit")  # judged, nothing written: no reconcile awaits the API
    others_ran = 0

    async def other_work() -> None:
        nonlocal others_ran
        while True:
            others_ran += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    worker = asyncio.create_task(h.fleet.run())
    while h.fleet.queued or len(h.fleet.decisions) < 50:
        await asyncio.sleep(0)
    worker.cancel()
    other.cancel()
    await asyncio.gather(worker, other, return_exceptions=True)
    assert all(d.action is Action.NONE for d in h.fleet.decisions.values())
    assert others_ran >= 50, "other work ran between the 50 reconciles, not only before and after them"


async def test_a_watch_event_from_before_an_apply_does_not_free_the_slot_the_apply_took(h: Harness) -> None:
    for name in ("a", "b"):
        h.add(name)
    before = {name: h.api.view("shop", name) for name in ("a", "b")}
    h.policy(apply="Immediate", maxConcurrentRollouts=1)
    await h.fleet.drain()
    applied = [n for n in ("a", "b") if "initContainers" in h.pod(n)]
    assert len(applied) == 1
    # The watch, behind the apply's answer, delivers both Deployments as they were before it.
    for name in ("a", "b"):
        h.fleet.deployment_seen(before[name])
    await h.fleet.drain()
    assert [n for n in ("a", "b") if "initContainers" in h.pod(n)] == applied, "still one rollout at a time"
    assert h.fleet.in_flight(PolicyRef("GracefulPolicy", "web", "shop")) == 1


def rolling(h: Harness, names: list[str]) -> list[str]:
    return [n for n in names if h.api.deployments[("shop", n)].status["updatedReplicas"] == 0]


@pytest.mark.parametrize(("listed", "workers"), [("in name order", 1), ("in reverse", 1), ("in reverse", 8)])
async def test_a_new_leader_counts_the_rollouts_its_predecessor_left_in_progress_before_it_starts_one(
    h: Harness, listed: str, workers: int
) -> None:
    """A standby keeps no decisions, so it held no slots for the rollouts the leader started: the
    successor must count them before its first apply, whichever Deployment it comes to first."""
    names = [f"app-{i}" for i in range(6)]
    for name in names:
        h.add(name, replicas=2)
    h.policy(apply="Immediate", maxConcurrentRollouts=2)
    await h.settle()
    started = rolling(h, names)
    assert len(started) == 2
    # The leader dies; a standby that watched the same objects takes over.
    successor = Harness(h.api)
    successor.fleet.workers = workers
    successor.policy(apply="Immediate", maxConcurrentRollouts=2)
    for name in names if listed == "in name order" else names[::-1]:
        successor.observe(name)
    assert successor.fleet.in_flight(WEB) == 0, "a standby holds no slots"
    leading = asyncio.create_task(successor.fleet.run())
    try:
        await asyncio.sleep(0.05)
    finally:
        leading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await leading
    assert rolling(h, names) == started, "no rollout started while the limit's two were under way"
    assert successor.fleet.in_flight(WEB) == 2
    assert len(successor.fleet.slots.waiting[WEB]) == 4
