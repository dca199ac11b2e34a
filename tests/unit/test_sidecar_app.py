"""The sidecar's HTTP endpoint and hold runner against a fake API server (aiohttp)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from lameduck_sidecar.app import before_exit, build_app, holder_for
from lameduck_sidecar.config import SidecarConfig, load_config
from lameduck_sidecar.hold import HoldSettings
from lameduck_sidecar.metrics import SidecarMetrics

FAST = HoldSettings(propagation_delay=0.3, quiet_period=0.1, max_hold=3.0, api_timeout=0.5, fallback_delay=0.6)


def endpoint_slice(ready: bool) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-abcde", "namespace": "shop"},
        "endpoints": [
            {
                "addresses": ["10.1.0.7"],
                "conditions": {"ready": ready},
                "targetRef": {"kind": "Pod", "name": "web-1", "uid": "uid-1"},
            }
        ],
    }


class FakeApiServer:
    """Lists one slice showing the pod ready; the watch flips it after `flip_after` seconds.
    The pod is being deleted with `grace_period` seconds."""

    def __init__(self, status: int = 200, flip_after: float = 0.3, hang: bool = False, grace_period: int = 60) -> None:
        self.status = status
        self.flip_after = flip_after
        self.hang = hang
        self.grace_period = grace_period
        self.requests: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices", self.slices)
        app.router.add_get("/api/v1/namespaces/shop/pods/web-1", self.pod)
        return app

    async def pod(self, request: web.Request) -> web.Response:
        assert request.query.get("resourceVersion") == "0", "read from the API server's cache"
        self.requests.append("pod")
        assert request.headers["Authorization"] == "Bearer t0ken"
        if self.hang:
            await asyncio.sleep(30)
        if self.status != 200:
            return web.json_response({"kind": "Status", "code": self.status}, status=self.status)
        metadata = {"name": "web-1", "deletionTimestamp": "2026-01-01T00:00:00Z"}
        return web.json_response({"metadata": {**metadata, "deletionGracePeriodSeconds": self.grace_period}})

    async def slices(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.query_string)
        assert request.headers["Authorization"] == "Bearer t0ken"
        if self.hang:
            await asyncio.sleep(30)
        if self.status != 200:
            return web.json_response({"kind": "Status", "code": self.status}, status=self.status)
        if "watch" not in request.query:
            return web.json_response({"metadata": {"resourceVersion": "7"}, "items": [endpoint_slice(True)]})
        response = web.StreamResponse()
        await response.prepare(request)
        await asyncio.sleep(self.flip_after)
        event = {"type": "MODIFIED", "object": endpoint_slice(False)}
        await response.write(json.dumps(event).encode() + b"\n")
        await asyncio.sleep(30)
        return response


class Counter:
    """Connections the test says arrived: seen in the socket table, or only in the kernel's count."""

    def __init__(self) -> None:
        self.pending = 0
        self.pending_opens = 0

    def new_connections(self) -> int:
        found, self.pending = self.pending, 0
        return found

    def new_opens(self) -> int:
        found, self.pending_opens = self.pending_opens, 0
        return found


def config_for(api_url: str | None, tmp_path: Path) -> SidecarConfig:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    base = load_config(
        {
            "LAMEDUCK_POD_NAME": "web-1",
            "LAMEDUCK_POD_NAMESPACE": "shop",
            "LAMEDUCK_POD_UID": "uid-1",
            "LAMEDUCK_POD_IP": "10.1.0.7",
            "LAMEDUCK_API_TOKEN_FILE": str(token),
        }
    )
    return replace(base, hold=FAST, api_url=api_url)


Start = Callable[..., Any]


@pytest.fixture
async def sidecar(tmp_path: Path) -> AsyncIterator[Start]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(
        api: FakeApiServer | None, api_url: str | None = None, hold: HoldSettings = FAST
    ) -> tuple[TestClient[web.Request, web.Application], Counter, SidecarMetrics]:
        if api is not None:
            server = TestServer(api.app())
            await server.start_server()
            api_url = str(server.make_url("")).rstrip("/")
        config = replace(config_for(api_url, tmp_path), hold=hold)
        metrics = SidecarMetrics()
        connections = Counter()
        client = TestClient(TestServer(build_app(config, holder_for(config, metrics, connections), metrics)))
        await client.start_server()
        clients.append(client)
        return client, connections, metrics

    yield start
    for client in clients:
        await client.close()


async def test_hold_waits_for_the_slices_then_the_propagation_delay(sidecar: Start) -> None:
    api = FakeApiServer(flip_after=0.4)
    client, _, _ = await sidecar(api)
    response = await client.get("/hold/app")
    body = await response.json()
    assert response.status == 200
    assert body["outcome"] == "quiet"
    assert 0.4 <= body["stage1"] < 0.8
    assert 0.3 <= body["stage2"] < 0.6
    assert len(api.requests) == 3
    assert "pod" in api.requests, "one get of the pod"
    assert "resourceVersion=0" in api.requests, "one list, from the API server's cache"
    (watched,) = [q for q in api.requests if "watch=1" in q]
    assert "resourceVersion=7" in watched, "one watch, from the listed version"


async def test_a_short_deletion_grace_period_leaves_the_app_its_drain_time(sidecar: Start, tmp_path: Path) -> None:
    # drainTimeout 0.5 s, deleted with a grace period of 1 s: the hold may last 0.5 s at most,
    # although the slices never let go and maxHold is 3 s.
    api = FakeApiServer(flip_after=30, grace_period=1)
    client, _, _ = await sidecar(api, hold=replace(FAST, drain_timeout=0.5))
    body = await (await client.get("/hold/app")).json()
    assert body["outcome"] == "timeout"
    assert 0.5 <= body["seconds"] < 0.9


async def test_new_connections_after_the_slices_let_go_extend_the_hold(sidecar: Start) -> None:
    client, connections, _ = await sidecar(FakeApiServer(flip_after=0.1))

    async def traffic() -> None:
        for _ in range(6):
            await asyncio.sleep(0.1)
            connections.pending += 1

    feeder = asyncio.create_task(traffic())
    body = await (await client.get("/hold/app")).json()
    await feeder
    assert body["outcome"] == "quiet"
    assert body["seconds"] >= 0.7, "released only after quiet following the last connection at ~0.6s"
    text = await (await client.get("/metrics")).text()
    counted = next(
        line for line in text.splitlines() if line.startswith("lameduck_sidecar_connections_after_stage1_total")
    )
    assert float(counted.split()[1]) >= 4


async def test_short_connections_only_the_kernel_counted_extend_the_hold(sidecar: Start) -> None:
    client, connections, _ = await sidecar(FakeApiServer(flip_after=0.1))

    async def traffic() -> None:
        for _ in range(12):
            await asyncio.sleep(0.05)
            connections.pending_opens += 1  # came and went between two reads of the socket table

    feeder = asyncio.create_task(traffic())
    body = await (await client.get("/hold/app")).json()
    await feeder
    assert body["outcome"] == "quiet"
    assert body["seconds"] >= 0.7


async def test_containers_calling_at_once_share_one_hold(sidecar: Start) -> None:
    api = FakeApiServer(flip_after=0.2)
    client, _, _ = await sidecar(api)
    first, second = await asyncio.gather(client.get("/hold/app"), client.get("/hold/worker"))
    assert await first.json() == await second.json()
    assert len(api.requests) == 3, "one hold: one list, one watch, one get of the pod"
    late = await (await client.get("/hold/late")).json()
    assert late == await first.json(), "a late caller gets the finished hold at once"


@pytest.mark.parametrize("api", [FakeApiServer(status=403), FakeApiServer(hang=True)], ids=["forbidden", "hanging"])
async def test_api_trouble_falls_back(sidecar: Start, api: FakeApiServer) -> None:
    client, _, _ = await sidecar(api)
    body = await (await client.get("/hold/app")).json()
    assert body["outcome"] == "fallback"
    assert 0.6 <= body["seconds"] < 1.5
    text = await (await client.get("/metrics")).text()
    assert 'lameduck_sidecar_holds_total{outcome="fallback"} 1.0' in text


async def test_unreachable_api_falls_back(sidecar: Start) -> None:
    client, _, _ = await sidecar(None, api_url="http://127.0.0.1:9")
    body = await (await client.get("/hold/app")).json()
    assert body["outcome"] == "fallback"


async def test_no_api_request_while_idle(sidecar: Start) -> None:
    api = FakeApiServer()
    client, _, _ = await sidecar(api)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status == 200
    assert api.requests == []


@pytest.mark.parametrize(("native", "waits"), [(False, True), (True, False)], ids=["classic", "native"])
async def test_own_sigterm_during_a_hold(tmp_path: Path, native: bool, waits: bool) -> None:
    """A classic sidecar finishes the hold in progress before exiting; a native one exits at once."""
    api = FakeApiServer(flip_after=0.3)
    server = TestServer(api.app())
    await server.start_server()
    config = config_for(str(server.make_url("")).rstrip("/"), tmp_path)
    holder = holder_for(config, SidecarMetrics(), Counter())
    hold = asyncio.create_task(holder.hold("app"))
    await asyncio.sleep(0)  # let the hold start
    assert holder.holding
    await before_exit(holder, native=native)
    assert hold.done() is waits
    assert (await hold).outcome.value == "quiet"
    await server.close()
