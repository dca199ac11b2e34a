"""The operator's reconcile loop against an in-memory API: apply, audit, limits, revert, drift, errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from lameduck_operator.fleet import Fleet
from lameduck_operator.logic.compliance import State
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.model import PolicyRef
from lameduck_operator.settings import Settings
from tests.unit.builders import container, deployment
from tests.unit.fake_api import FakeApi, policy_body

WEB = PolicyRef("GracefulPolicy", "web", "shop")


class Harness:
    def __init__(self) -> None:
        self.api = FakeApi()
        self.fleet = Fleet(Settings(), self.api, OperatorMetrics(), clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
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
    assert [(n, e.reason) for n, e in h.api.events] == [("api", "Injected")]
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


async def test_on_next_rollout_reports_pending_without_patching(h: Harness) -> None:
    h.add("api")
    h.policy()
    await h.settle()
    assert not [c for c in h.api.calls if c.startswith("apply")]
    decision = h.fleet.decisions[DeploymentRef("shop", "api")]
    assert decision.verdict.state is State.PENDING
    assert decision.verdict.reason.startswith("waits for the next rollout")


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
    reasons = sorted(h.fleet.decisions[DeploymentRef("shop", n)].verdict.reason for n in ("a", "b"))
    assert reasons[1] == "waits its turn: 1 of at most 1 rollouts in progress"


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
    assert ("api", "Reverted") in [(n, e.reason) for n, e in h.api.events]


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


async def test_take_over_replaces_a_foreign_prestop(h: Harness) -> None:
    h.add("legacy", containers=[container("app", lifecycle={"preStop": {"exec": {"command": ["sleep", "9"]}}})])
    h.policy(apply="Immediate", onConflict="TakeOver")
    await h.settle()
    assert h.pod("legacy")["containers"][0]["lifecycle"]["preStop"] == {
        "httpGet": {"path": "/hold/app", "port": 9901, "scheme": "HTTP"}
    }


async def test_conflicts_name_the_manager_that_set_the_value(h: Harness) -> None:
    h.add(
        "legacy",
        containers=[container("app", lifecycle={"preStop": {"exec": {"command": ["sleep", "9"]}}})],
        terminationGracePeriodSeconds=10,
    )
    h.policy(apply="Immediate")
    await h.settle()
    decision = h.fleet.decisions[DeploymentRef("shop", "legacy")]
    assert decision.verdict.reason == (
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


async def test_a_policy_enabling_the_unserved_readiness_gate_is_refused(h: Harness) -> None:
    h.add("api")
    h.policy(apply="Immediate", readinessGate={"enabled": True})
    await h.settle()
    assert "initContainers" not in h.pod("api"), "pods must not get a gate nothing sets"
    decision = h.fleet.decisions[DeploymentRef("shop", "api")]
    assert decision.verdict.state is State.CONFLICT
    assert "lameduck.dev/endpoints-ready" in decision.verdict.reason
