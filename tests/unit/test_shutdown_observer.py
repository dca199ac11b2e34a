"""The shutdown observer: hold reports and terminations into metrics, status and Events."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client import generate_latest

from lameduck_operator.logic.decision import DeploymentEvent
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.model import PolicyRef, PolicySpec
from lameduck_operator.shutdown_observer import ShutdownObserver
from tests.unit.builders import policy as policy_body
from tests.unit.test_shutdown import WEB_POLICY, pod, report_event

WEB = DeploymentRef("shop", "web")


class Harness:
    def __init__(self) -> None:
        self.metrics = OperatorMetrics()
        self.changed: list[PolicyRef] = []
        self.posted: list[tuple[Mapping[str, Any], DeploymentEvent]] = []
        self.now = 1000.0
        spec = policy_body("web", "shop", {"hold": {"quietPeriod": "1s"}, "drainTimeout": "10s"}).spec
        self.specs: dict[PolicyRef, PolicySpec] = {WEB_POLICY: spec}
        self.governed: dict[DeploymentRef, PolicyRef] = {WEB: WEB_POLICY}
        self.observer = ShutdownObserver(
            self.metrics,
            self.governed.get,
            self.specs.get,
            changed=self.changed.append,
            post_event=self.post,
            monotonic=lambda: self.now,
        )

    async def post(self, deployment: Mapping[str, Any], event: DeploymentEvent) -> None:
        self.posted.append((deployment, event))

    def exported(self) -> str:
        return generate_latest(self.metrics.registry).decode()


@pytest.fixture
def h() -> Harness:
    return Harness()


def sample(text: str, line_start: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(line.rsplit(" ", 1)[1])


LABELS = 'namespace="shop",policy="GracefulPolicy shop/web"'


def outcome(name: str, value: str) -> str:
    return f'{name}{{namespace="shop",outcome="{value}",policy="GracefulPolicy shop/web"}}'


def test_a_hold_report_is_counted_once_while_leading(h: Harness) -> None:
    h.observer.lead()
    h.observer.report_seen(report_event())
    h.observer.report_seen(report_event())  # the same Event again (a watch restarted)
    text = h.exported()
    assert sample(text, outcome("lameduck_holds_total", "quiet")) == 1
    assert sample(text, f"lameduck_hold_duration_seconds_sum{{{LABELS}}}") == 4.2
    assert sample(text, f"lameduck_hold_slice_propagation_seconds_sum{{{LABELS}}}") == 0.8
    assert sample(text, f"lameduck_hold_dataplane_propagation_seconds_sum{{{LABELS}}}") == 3.4
    assert sample(text, f"lameduck_hold_late_traffic_seconds_sum{{{LABELS}}}") == 1.5
    assert sample(text, 'lameduck_hold_reports_total{result="recorded"}') == 1
    series = 'deployment="web",namespace="shop",policy="GracefulPolicy shop/web"'
    assert sample(text, f'lameduck_deployment_late_traffic_seconds{{{series},quantile="1"}}') == 1.5
    assert sample(text, f"lameduck_deployment_max_hold_seconds{{{series}}}") == 30
    assert sample(text, f"lameduck_deployment_recommended_max_hold_seconds{{{series}}}") == 3
    assert h.changed == [WEB_POLICY]


def test_a_follower_keeps_reports_for_status_but_counts_nothing_until_it_leads(h: Harness) -> None:
    h.observer.report_seen(report_event())
    assert "lameduck_holds_total{" not in h.exported()
    assert "lameduck_deployment_late_traffic_seconds{" not in h.exported()
    (entry,) = h.observer.status_of(WEB_POLICY)["lateTraffic"]
    assert (entry["name"], entry["maxSeconds"], entry["recommendedMaxHold"]) == ("web", 1.5, "3s")
    assert entry["recommendedBudgetSeconds"] == 18, "3 s + 10 s drain + 5 s margin"
    h.observer.lead()
    assert "lameduck_deployment_late_traffic_seconds{" in h.exported(), "a new leader exports what it knows"
    assert "lameduck_holds_total{" not in h.exported(), "what came before leading is not counted"


def test_a_malformed_report_is_counted_and_changes_nothing(h: Harness) -> None:
    h.observer.lead()
    h.observer.report_seen(report_event(version=9))
    assert sample(h.exported(), 'lameduck_hold_reports_total{result="malformed"}') == 1
    assert h.observer.status_of(WEB_POLICY) == {"lateTraffic": [], "overBudget": []}


KILLED = (137, "2026-11-21T10:00:30Z", "Error")
CLEAN = (0, "2026-11-21T10:00:06Z", "Completed")


async def test_a_termination_is_counted_once_however_often_the_pod_is_seen(h: Harness) -> None:
    h.observer.lead()
    for deleted in (False, False, True):
        h.observer.pod_seen(pod(CLEAN), deleted=deleted)
    text = h.exported()
    assert sample(text, outcome("lameduck_terminations_total", "clean")) == 1
    assert sample(text, f"lameduck_termination_duration_seconds_sum{{{LABELS}}}") == 6
    assert sample(text, f"lameduck_termination_budget_ratio_sum{{{LABELS}}}") == 0.2
    assert h.posted == []


async def test_pods_killed_at_the_end_of_their_grace_period_are_counted_listed_and_told_on_the_deployment(
    h: Harness,
) -> None:
    h.observer.lead()
    for uid in ("p1", "p2"):
        killed = pod(KILLED)
        killed["metadata"]["uid"] = uid
        h.observer.pod_seen(killed)
    h.observer.pod_seen(pod(CLEAN) | {"metadata": {**pod(CLEAN)["metadata"], "uid": "p3"}})
    assert sample(h.exported(), outcome("lameduck_terminations_total", "killed")) == 2
    assert h.observer.status_of(WEB_POLICY)["overBudget"] == [
        {"namespace": "shop", "name": "web", "terminations": 3, "killed": 2}
    ]
    await _settle()
    (posted,) = h.posted  # the second kill came within a minute of the first
    assert posted[0] == {"metadata": {"name": "web", "namespace": "shop"}}
    assert (posted[1].reason, posted[1].warning) == ("PodsKilled", True)
    h.now += 61
    again = pod(KILLED)
    again["metadata"]["uid"] = "p4"
    h.observer.pod_seen(again)
    await _settle()
    assert len(h.posted) == 2


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_pod_of_no_policy_is_not_observed(h: Harness) -> None:
    h.observer.lead()
    stray = pod(CLEAN, sidecar_policy=None)
    stray["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "other-7d9f8c"}]
    h.observer.pod_seen(stray)
    assert "lameduck_terminations_total{" not in h.exported()


def test_a_deleted_deployment_loses_its_series_and_status(h: Harness) -> None:
    h.observer.lead()
    h.observer.report_seen(report_event())
    h.observer.deployment_gone(WEB)
    assert "lameduck_deployment_late_traffic_seconds{" not in h.exported()
    assert "lameduck_deployment_max_hold_seconds{" not in h.exported()
    assert h.observer.status_of(WEB_POLICY) == {"lateTraffic": [], "overBudget": []}


def test_per_deployment_series_stop_at_the_cap_and_status_still_lists_every_deployment(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lameduck_operator.shutdown_observer.MAX_DEPLOYMENT_SERIES", 1)
    h.governed[DeploymentRef("shop", "api")] = WEB_POLICY
    h.observer.lead()
    h.observer.report_seen(report_event())
    h.observer.report_seen(report_event(replicaSet="api-7d9f8c") | {"metadata": {"uid": "e2", "namespace": "shop"}})
    exported = h.exported()
    assert exported.count("lameduck_deployment_max_hold_seconds{") == 1
    assert {e["name"] for e in h.observer.status_of(WEB_POLICY)["lateTraffic"]} == {"web", "api"}
