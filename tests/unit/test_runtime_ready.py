"""A replica is ready only once it has listed policies and namespaces, and Deployments and Pods."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from kubernetes import client

from lameduck_operator import runtime as runtime_module
from lameduck_operator.config import OperatorConfig
from lameduck_operator.fleet import Fleet
from lameduck_operator.k8s.informer import ApiEndpoint, Informer
from lameduck_operator.learned_delays import LearnedDelays
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.readiness_gate import ReadinessGate
from lameduck_operator.runtime import Runtime, fleet_synced_when_listed
from lameduck_operator.settings import Settings
from tests.unit.fake_api import FakeApi


def test_a_replica_is_ready_once_its_fleet_and_both_watches_have_listed() -> None:
    config = OperatorConfig(Settings(), "lameduck-system", 8080, 1.0, "INFO")
    runtime = Runtime(config)
    assert not runtime.ready()
    runtime.fleet = Fleet(Settings(), FakeApi(), OperatorMetrics())
    endpoint = ApiEndpoint("https://api.invalid", False, client.Configuration())
    runtime.informers = [
        Informer(endpoint, "/apis/apps/v1/deployments", "Deployment", lambda obj, deleted: None),
        Informer(endpoint, "/api/v1/pods", "Pod", lambda obj, deleted: None),
    ]
    runtime.fleet.synced.set()
    assert not runtime.ready(), "Deployments not listed yet: the webhook would see no rollout in flight"
    runtime.informers[0].synced.set()
    assert not runtime.ready()
    runtime.informers[1].synced.set()
    assert runtime.ready()


async def test_only_the_leader_publishes_the_learned_delays() -> None:
    config = OperatorConfig(Settings(), "lameduck-system", 8080, 1.0, "INFO")
    runtime = Runtime(config)
    api = FakeApi()
    runtime.fleet = fleet = Fleet(Settings(), api, OperatorMetrics())
    runtime.gate = ReadinessGate(api, runtime.metrics)  # type: ignore[arg-type]
    runtime.learned = LearnedDelays(api, runtime.metrics, known=lambda _: True, hold_of=fleet.hold_of)
    assert not any(t.get_name() == "lameduck-learned-delays" for t in runtime.tasks), "a follower writes nothing"
    runtime._lead()
    try:
        assert [t.get_name() for t in runtime.tasks].count("lameduck-learned-delays") == 1
    finally:
        runtime._lose()
        await runtime.stop()


async def test_the_fleet_judges_nothing_until_every_deployment_is_listed() -> None:
    """Its reconcile loop waits for `synced`: a leader that began before the last page of
    Deployments would count only the rollouts in progress it had seen against the limit."""
    fleet = Fleet(Settings(), FakeApi(), OperatorMetrics())
    endpoint = ApiEndpoint("https://api.invalid", False, client.Configuration())
    deployments = Informer(endpoint, "/apis/apps/v1/deployments", "Deployment", lambda obj, deleted: None)
    waiting = asyncio.create_task(fleet_synced_when_listed(fleet, deployments))
    await asyncio.sleep(0)
    assert not fleet.synced.is_set()
    deployments.synced.set()
    await waiting
    assert fleet.synced.is_set()


class _UnreachableApi:
    """A KubeApi whose API server refuses connections: every list fails."""

    def __init__(self, _: object) -> None:
        pass

    def __getattr__(self, name: str) -> object:
        def refused(*_: object, **__: object) -> object:
            raise ConnectionRefusedError(111, "Connection refused")

        return refused


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_start_that_fails_leaves_nothing_running_stays_live_and_can_start_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replica restarted while the API server was down failed its start after serving its HTTP
    port; kopf's next try then failed on the bound port, every minute, and it never became ready.
    Now each try fails on the API alone, and kubelet's probes find it live and not ready."""
    monkeypatch.setattr(runtime_module, "kube_api_client", lambda _: client.ApiClient(client.Configuration()))
    monkeypatch.setattr(runtime_module, "KubeApi", _UnreachableApi)
    port = _free_port()
    runtime = Runtime(OperatorConfig(Settings(), "lameduck-system", port, 1.0, "INFO", leader_election=False))
    try:
        for attempt in range(2):
            with pytest.raises(ConnectionRefusedError):  # not the port's OSError (address in use)
                await runtime.start()
            assert runtime.background == [], f"attempt {attempt}: background tasks left running"
            assert runtime.fleet is None, "a half-built fleet would let the webhook judge with it"
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as live:
                    assert live.status == 200, "kubelet would restart a replica that is only starting"
                async with session.get(f"http://127.0.0.1:{port}/readyz") as ready:
                    assert ready.status != 200
    finally:
        await runtime.stop()


def test_the_elections_call_after_the_loop_closed_is_dropped_not_raised() -> None:
    """At shutdown the election's thread may still call on_lost after kopf closed the loop: an
    error there was logged as a failed election (CI's uninstall test read it in the logs)."""
    loop = asyncio.new_event_loop()
    called: list[str] = []
    call = runtime_module.on_the_loop(loop, lambda: called.append("lost"))
    call()
    loop.run_until_complete(asyncio.sleep(0))
    assert called == ["lost"]
    loop.close()
    call()  # raises RuntimeError("Event loop is closed") without the guard
    assert called == ["lost"]
