"""Serving the readiness gate: the index fed by watch events, batched judging, bounded writes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from lameduck_operator.logic.readiness import PodView
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.names import READINESS_CONDITION
from lameduck_operator.ports import WriteResult
from lameduck_operator.readiness_gate import ReadinessGate

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


class FakeGateApi:
    def __init__(self) -> None:
        self.writes: list[tuple[str, str, str, bool]] = []  # pod name, status, reason, guarded
        self.versions: list[tuple[str, str]] = []  # pod name, the resourceVersion written on
        self.results: dict[str, list[WriteResult | Exception]] = {}
        self.in_flight = 0
        self.most_in_flight = 0

    async def patch_pod_condition(self, pod: PodView, condition: Mapping[str, Any], guard: bool) -> WriteResult:
        assert condition["type"] == READINESS_CONDITION
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0)
        self.in_flight -= 1
        self.writes.append((pod.name, condition["status"], condition["reason"], guard))
        self.versions.append((pod.name, pod.resource_version))
        queued = self.results.get(pod.name)
        result = queued.pop(0) if queued else WriteResult.WRITTEN
        if isinstance(result, Exception):
            raise result
        return result


class Timers:
    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.pending.append((delay, callback))

    def fire(self) -> None:
        due, self.pending = self.pending, []
        for _, callback in due:
            callback()


def pod(
    name: str,
    labels: dict[str, str] | None = None,
    *,
    gated: bool = True,
    condition: tuple[str, str] | None = None,
    version: str = "1",
    terminating: bool = False,
    ip: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "shop",
        "uid": f"uid-{name}",
        "labels": {"app": "web"} if labels is None else labels,
        "resourceVersion": version,
    }
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T11:00:00Z"
    status: dict[str, Any] = {"phase": "Running", "podIP": ip or f"10.0.{len(name)}.{sum(map(ord, name)) % 250}"}
    if condition:
        status["conditions"] = [{"type": READINESS_CONDITION, "status": condition[0], "reason": condition[1]}]
    gates = [{"conditionType": READINESS_CONDITION}] if gated else []
    return {"metadata": meta, "spec": {"readinessGates": gates, "containers": [{"name": "app"}]}, "status": status}


def service(name: str = "web", selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop"}, "spec": {"selector": selector or {"app": "web"}}}


def endpoint_slice(names: list[str], service_name: str = "web", ready: bool = False) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{service_name}-1",
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "endpoints": [
            {
                "addresses": [pod(n)["status"]["podIP"]],
                "conditions": {"ready": ready},
                "targetRef": {"kind": "Pod", "name": n, "uid": f"uid-{n}"},
            }
            for n in names
        ],
    }


class Harness:
    def __init__(self, concurrency: int = 16) -> None:
        self.api = FakeGateApi()
        self.timers = Timers()
        self.metrics = OperatorMetrics()
        self.gate = ReadinessGate(
            self.api, self.metrics, lambda: NOW, concurrency=concurrency, call_later=self.timers.call_later
        )

    def written(self) -> list[tuple[str, str, str, bool]]:
        done, self.api.writes = self.api.writes, []
        return sorted(done)

    def count(self, status: str, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "lameduck_readiness_condition_writes_total", {"status": status, "reason": reason}
        )
        return value or 0.0


@pytest.fixture
def h() -> Harness:
    return Harness()


async def test_a_pod_under_a_service_is_false_until_its_slice_lists_it_then_true(h: Harness) -> None:
    h.gate.service_seen(service())
    h.gate.pod_seen(pod("web-1"))
    await h.gate.settle()
    assert h.written() == [("web-1", "False", "NotListed", True)], "a False write is guarded by resourceVersion"
    h.gate.slice_seen(endpoint_slice(["web-1"]))
    await h.gate.settle()
    assert h.written() == [("web-1", "True", "EndpointsListed", False)]
    assert (h.count("False", "NotListed"), h.count("True", "EndpointsListed")) == (1, 1)


async def test_a_pod_no_service_selects_is_true_at_once(h: Harness) -> None:
    h.gate.service_seen(service("api", {"app": "api"}))
    h.gate.pod_seen(pod("web-1"))
    await h.gate.settle()
    assert h.written() == [("web-1", "True", "NoService", False)]


async def test_only_pods_with_the_gate_are_kept_and_only_as_views(h: Harness) -> None:
    h.gate.pod_seen(pod("plain", gated=False))
    h.gate.pod_seen(pod("web-1"))
    assert set(h.gate.pods["shop"]) == {"uid-web-1"}
    assert isinstance(h.gate.pods["shop"]["uid-web-1"], PodView)
    h.gate.pod_seen(pod("web-1"), deleted=True)
    assert h.gate.pods == {}
    await h.gate.settle()
    assert h.written() == []


async def test_a_slice_change_of_conditions_only_judges_nothing(h: Harness) -> None:
    h.gate.service_seen(service())
    h.gate.slice_seen(endpoint_slice(["web-1"]))
    h.gate.pod_seen(pod("web-1"))
    await h.gate.settle()
    assert h.written() == [("web-1", "True", "EndpointsListed", False)]
    h.gate.slice_seen(endpoint_slice(["web-1"], ready=True))
    assert h.gate.due() == []
    h.gate.pod_seen(pod("web-1", condition=("True", "EndpointsListed"), version="2"))
    assert h.gate.due() == [], "the pod's own write coming back changes nothing"


async def test_the_index_knows_its_write_before_the_watch_brings_it_back(h: Harness) -> None:
    h.gate.pod_seen(pod("web-1"))
    await h.gate.settle()
    assert h.written() == [("web-1", "True", "NoService", False)]
    h.gate.everything_dirty()
    await h.gate.settle()
    assert h.written() == []


async def test_a_rollout_of_hundreds_of_pods_is_judged_in_one_batch_with_bounded_writes() -> None:
    h = Harness(concurrency=8)
    h.gate.service_seen(service())
    names = [f"web-{i}" for i in range(300)]
    for name in names:
        h.gate.pod_seen(pod(name))
    h.gate.slice_seen(endpoint_slice(names))
    due = h.gate.due()
    assert len(due) == 300, "one judgement per pod per batch"
    h.gate.everything_dirty()
    assert h.gate.flush() == 300
    await h.gate.settle()
    assert len(h.api.writes) == 300
    assert h.api.most_in_flight == 8


async def test_a_pod_judged_while_its_write_is_in_flight_is_judged_again_after_it(h: Harness) -> None:
    h.gate.service_seen(service())
    h.gate.pod_seen(pod("web-1"))
    assert h.gate.flush() == 1
    h.gate.slice_seen(endpoint_slice(["web-1"]))
    assert h.gate.flush() == 0, "no second write for a pod while one is in flight"
    await h.gate.settle()
    assert h.written() == [("web-1", "False", "NotListed", True), ("web-1", "True", "EndpointsListed", False)]


async def test_a_guarded_write_that_finds_the_pod_changed_waits_for_its_new_version(h: Harness) -> None:
    h.gate.service_seen(service())
    h.api.results["web-1"] = [WriteResult.CONFLICT]
    h.gate.pod_seen(pod("web-1"))
    await h.gate.settle()
    assert h.written() == [("web-1", "False", "NotListed", True)]
    h.gate.pod_seen(pod("web-1", version="2"))  # only the resourceVersion moved
    await h.gate.settle()
    assert h.written() == [("web-1", "False", "NotListed", True)]


async def test_a_pod_that_turned_terminating_before_the_new_version_is_seen_gets_nothing(h: Harness) -> None:
    h.gate.service_seen(service())
    h.api.results["web-1"] = [WriteResult.CONFLICT]
    h.gate.pod_seen(pod("web-1"))
    await h.gate.settle()
    h.written()
    h.gate.pod_seen(pod("web-1", version="2", terminating=True))
    await h.gate.settle()
    assert h.written() == []


async def test_a_failed_write_is_retried_later(h: Harness) -> None:
    h.api.results["web-1"] = [RuntimeError("connection refused")]
    h.gate.pod_seen(pod("web-1"))
    await h.gate.settle()
    assert h.written() == [("web-1", "True", "NoService", False)]
    errors = h.metrics.registry.get_sample_value("lameduck_api_errors_total", {"operation": "readiness_condition"})
    assert errors == 1
    assert h.count("True", "NoService") == 0
    h.timers.fire()
    await h.gate.settle()
    assert h.written() == [("web-1", "True", "NoService", False)]
    assert h.count("True", "NoService") == 1


async def test_a_pod_that_is_gone_is_not_retried(h: Harness) -> None:
    h.api.results["web-1"] = [WriteResult.GONE]
    h.gate.pod_seen(pod("web-1"))
    await h.gate.settle()
    assert h.written() == [("web-1", "True", "NoService", False)]
    assert h.timers.pending == []
    assert h.gate.due() == []


async def test_a_deleted_service_frees_the_pods_it_held(h: Harness) -> None:
    h.gate.service_seen(service())
    h.gate.pod_seen(pod("web-1"))
    h.gate.pod_seen(pod("api-1", {"app": "api"}))
    await h.gate.settle()
    assert h.written() == [("api-1", "True", "NoService", False), ("web-1", "False", "NotListed", True)]
    h.gate.pod_seen(pod("web-1", condition=("False", "NotListed"), version="2"))
    h.gate.service_seen(service(), deleted=True)
    await h.gate.settle()
    assert h.written() == [("web-1", "True", "NoService", False)]


async def test_a_new_slice_judges_only_the_pods_of_its_service(h: Harness) -> None:
    h.gate.service_seen(service())
    h.gate.service_seen(service("api", {"app": "api"}))
    h.gate.pod_seen(pod("web-1"))
    h.gate.pod_seen(pod("api-1", {"app": "api"}))
    await h.gate.settle()
    h.written()
    h.gate.slice_seen(endpoint_slice(["api-1"], "api"))
    assert [p.name for p, _ in h.gate.due()] == ["api-1"]


async def test_a_terminating_pod_is_never_written(h: Harness) -> None:
    h.gate.service_seen(service())
    h.gate.pod_seen(pod("web-1", terminating=True))
    h.gate.pod_seen(pod("web-2", condition=("True", "EndpointsListed"), terminating=True))
    await h.gate.settle()
    assert h.written() == []


async def test_a_true_pod_that_its_slices_drop_stays_true(h: Harness) -> None:
    h.gate.service_seen(service())
    h.gate.slice_seen(endpoint_slice([]))
    h.gate.pod_seen(pod("web-1", condition=("True", "EndpointsListed")))
    await h.gate.settle()
    assert h.written() == []


async def test_nothing_is_written_until_the_loop_runs_and_then_in_batches() -> None:
    h = Harness()
    h.gate.batch_seconds = 0.001
    h.gate.pod_seen(pod("web-1"))
    await asyncio.sleep(0.01)
    assert h.api.writes == [], "a follower only keeps the index"
    loop = asyncio.create_task(h.gate.run())
    try:
        for _ in range(200):
            if h.api.writes:
                break
            await asyncio.sleep(0.005)
        assert h.written() == [("web-1", "True", "NoService", False)]
        h.gate.pod_seen(pod("web-2"))
        for _ in range(200):
            if h.api.writes:
                break
            await asyncio.sleep(0.005)
        assert h.written() == [("web-2", "True", "NoService", False)]
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop


async def test_a_false_write_waiting_for_a_slot_is_dropped_when_a_newer_version_of_its_pod_arrives() -> None:
    h = Harness(concurrency=1)
    h.gate.service_seen(service())
    h.gate.pod_seen(pod("web-1"))
    h.gate.pod_seen(pod("web-2"))
    assert h.gate.flush() == 2  # two False writes, one slot: web-2's waits
    h.gate.pod_seen(pod("web-2", version="2"))
    await h.gate.settle()
    assert sorted(h.api.versions) == [("web-1", "1"), ("web-2", "2")], "version 1 of web-2 never reached the API"
    assert h.written() == [("web-1", "False", "NotListed", True), ("web-2", "False", "NotListed", True)]
