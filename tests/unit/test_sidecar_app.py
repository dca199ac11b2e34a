"""The sidecar's HTTP endpoint and hold runner against a fake API server (aiohttp)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import replace
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from lameduck_sidecar.app import listening_sockets
from lameduck_sidecar.calls import READ_INTERVAL
from lameduck_sidecar.config import SidecarConfig, host_port, load_config
from lameduck_sidecar.endpoint import OwnConnections
from lameduck_sidecar.hold import HoldSettings
from lameduck_sidecar.holder import Holder
from lameduck_sidecar.learned import learned_max_hold, max_hold_in_force
from lameduck_sidecar.metrics import SidecarMetrics
from lameduck_sidecar.report_retry import RetrySchedule
from lameduck_sidecar.serving import HoldServer, before_exit, holder_for
from lameduck_sidecar.sockdiag import ESTABLISHED, LISTEN, TcpSocket
from lameduck_sidecar.traffic import Snapshot, TrafficCounter, Work

FAST = HoldSettings(propagation_delay=0.3, quiet_period=0.1, max_hold=3.0, api_timeout=0.5, fallback_delay=0.6)


def endpoint_slice(ready: bool, address_only: bool = False) -> dict[str, Any]:
    found: dict[str, Any] = {
        "metadata": {
            "name": "web-abcde",
            "namespace": "shop",
            "resourceVersion": "9" if ready else "10",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "endpoints": [
            {
                "addresses": ["10.1.0.7"],
                "conditions": {"ready": ready},
                "targetRef": {"kind": "Pod", "name": "web-1", "uid": "uid-1"},
            }
        ],
    }
    if address_only:
        del found["endpoints"][0]["targetRef"]
    return found


class FakeApiServer:
    """Lists one slice showing the pod ready; the watch flips it after `flip_after` seconds.
    The pod is being deleted (with `grace_period` seconds) unless `deleting` is False. How
    the watch behaves first: "flip" at once, "end" (the server closes it cleanly), "gone"
    (410: the listed version expired), "garbage" (not JSON)."""

    def __init__(  # noqa: PLR0917
        self,
        status: int = 200,
        flip_after: float = 0.3,
        hang: bool = False,
        grace_period: int | None = 60,
        deleting: bool = True,
        watch: str = "flip",
        pod_status: int = 200,
    ) -> None:
        self.status = status
        self.flip_after = flip_after
        self.hang = hang
        self.grace_period = grace_period
        self.deleting = deleting
        self.watch = watch
        self.pod_status = pod_status
        self.requests: list[str] = []
        self.events: list[dict[str, Any]] = []  # posted Events: the hold reports
        self.event_status = 201
        self.event_failures = 0  # posts answered 503 before event_status is
        self.posts = 0
        self.lists = 0
        self.address_only = False  # endpoints without a targetRef
        # The namespace's lameduck-learned ConfigMap's data; None: there is none (404).
        self.learned: dict[str, str] | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices", self.slices)
        app.router.add_get("/api/v1/namespaces/shop/pods/{name}", self.pod)
        app.router.add_post("/api/v1/namespaces/shop/events", self.event)
        app.router.add_get("/api/v1/namespaces/shop/configmaps/lameduck-learned", self.config_map)
        return app

    async def config_map(self, request: web.Request) -> web.Response:
        self.requests.append("learned")
        assert request.headers["Authorization"] == "Bearer t0ken"
        if self.hang:
            await asyncio.sleep(30)
        if self.learned is None:
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        return web.json_response({"metadata": {"name": "lameduck-learned"}, "data": self.learned})

    async def event(self, request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer t0ken"
        self.posts += 1
        if self.posts <= self.event_failures:
            return web.json_response({"kind": "Status", "code": 503}, status=503)
        if self.event_status != 201:
            return web.json_response({"kind": "Status", "code": self.event_status}, status=self.event_status)
        body = await request.json()
        self.events.append(body)
        return web.json_response(body, status=201)

    async def pod(self, request: web.Request) -> web.Response:
        self.requests.append("pod" if request.query.get("resourceVersion") == "0" else "pod consistent")
        assert request.headers["Authorization"] == "Bearer t0ken"
        if self.hang:
            await asyncio.sleep(30)
        if self.pod_status != 200:
            return web.json_response({"kind": "Status", "code": self.pod_status}, status=self.pod_status)
        metadata: dict[str, Any] = {
            "name": request.match_info["name"],
            "labels": {"app": "web", "pod-template-hash": "7d9f8c"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d9f8c", "controller": True}],
        }
        if self.deleting:
            metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
            if self.grace_period is not None:
                metadata["deletionGracePeriodSeconds"] = self.grace_period
        return web.json_response({"metadata": metadata})

    async def slices(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.query_string)
        assert request.headers["Authorization"] == "Bearer t0ken"
        if self.hang:
            await asyncio.sleep(30)
        if self.status != 200:
            return web.json_response({"kind": "Status", "code": self.status}, status=self.status)
        if "watch" not in request.query:
            self.lists += 1
            version = str(6 + self.lists)
            listed = endpoint_slice(True, address_only=self.address_only)
            return web.json_response({"metadata": {"resourceVersion": version}, "items": [listed]})
        watch, self.watch = self.watch, "flip"
        if watch == "gone":
            return web.json_response({"kind": "Status", "code": 410}, status=410)
        response = web.StreamResponse()
        await response.prepare(request)
        if watch == "end":
            bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}
            await response.write(json.dumps(bookmark).encode() + b"\n")
            return response
        if watch == "garbage":
            await response.write(b"<html>proxy error</html>\n")
            return response
        await asyncio.sleep(self.flip_after)
        event = {"type": "MODIFIED", "object": endpoint_slice(False, address_only=self.address_only)}
        await response.write(json.dumps(event).encode() + b"\n")
        await asyncio.sleep(30)
        return response


class FakeTraffic:
    """New work the test says arrived each poll: new connections, and requests on an open
    connection that paused just before (a busy streak that begins now)."""

    def __init__(self) -> None:
        self.pending = 0
        self.pending_reused = 0
        self.observed = 0

    def observe(self, now: float, snapshot: Snapshot) -> Work:
        self.observed += 1
        found = Work(self.pending, (now,) * self.pending_reused)
        self.pending = self.pending_reused = 0
        return found


NO_SOCKETS = Snapshot(None, 0, 0, [])


async def deleted_pod() -> dict[str, Any]:
    """A pod being deleted, as an API that answers at once would give it."""
    return {"metadata": {"name": "web-1", "deletionTimestamp": "2026-01-01T00:00:00Z"}}


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


class Client:
    """The sidecar's port on 127.0.0.1, served by its HoldServer, and a client session to it."""

    def __init__(self, server: HoldServer, session: ClientSession) -> None:
        self.server = server
        self.holder = server.holder
        self.session = session

    def get(self, path: str) -> Any:
        return self.session.get(path)

    async def close(self) -> None:
        await self.session.close()
        await self.server.close()


async def serve_port(holder: Holder, metrics: SidecarMetrics, own: OwnConnections | None = None) -> Client:
    server = HoldServer(holder, metrics, own or OwnConnections())
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    await server.listen([listener])
    port = listener.getsockname()[1]
    return Client(server, ClientSession(base_url=f"http://127.0.0.1:{port}"))


@pytest.fixture
async def sidecar(tmp_path: Path) -> AsyncIterator[Start]:
    clients: list[Client] = []
    servers: list[TestServer] = []

    async def start(
        api: FakeApiServer | None,
        api_url: str | None = None,
        hold: HoldSettings = FAST,
        read_interval: float = READ_INTERVAL,
    ) -> tuple[Client, FakeTraffic, SidecarMetrics]:
        if api is not None:
            server = TestServer(api.app())
            await server.start_server()
            servers.append(server)
            api_url = str(server.make_url("")).rstrip("/")
        config = replace(config_for(api_url, tmp_path), hold=hold)
        metrics = SidecarMetrics()
        traffic = FakeTraffic()
        holder = holder_for(config, metrics, lambda: NO_SOCKETS, lambda: traffic, read_interval=read_interval)
        client = await serve_port(holder, metrics)
        clients.append(client)
        return client, traffic, metrics

    yield start
    for client in clients:
        await client.close()
    for server in servers:
        await server.close()


async def test_hold_waits_for_the_slices_then_the_propagation_delay(sidecar: Start) -> None:
    api = FakeApiServer(flip_after=0.4)
    client, _, _ = await sidecar(api)
    response = await client.get("/hold/app")
    body = await response.json()
    assert response.status == 200
    assert body["outcome"] == "quiet"
    assert 0.4 <= body["stage1"] < 0.8
    assert 0.3 <= body["stage2"] < 0.6
    assert len(api.requests) == 4
    assert "pod consistent" in api.requests, "one get of the pod, from etcd"
    assert "learned" in api.requests, "one get of what was learned"
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
    client, traffic, _ = await sidecar(FakeApiServer(flip_after=0.1))

    async def arrive() -> None:
        for _ in range(6):
            await asyncio.sleep(0.1)
            traffic.pending += 1

    feeder = asyncio.create_task(arrive())
    body = await (await client.get("/hold/app")).json()
    await feeder
    assert body["outcome"] == "quiet"
    assert body["seconds"] >= 0.7, "released only after quiet following the last connection at ~0.6s"
    text = await (await client.get("/metrics")).text()
    counted = next(
        line for line in text.splitlines() if line.startswith("lameduck_sidecar_connections_after_stage1_total")
    )
    assert float(counted.split()[1]) >= 4


async def test_requests_on_open_connections_extend_the_hold(sidecar: Start) -> None:
    client, traffic, _ = await sidecar(FakeApiServer(flip_after=0.1))

    async def arrive() -> None:
        for _ in range(12):
            await asyncio.sleep(0.05)
            traffic.pending_reused += 1  # a pooled connection carried another request

    feeder = asyncio.create_task(arrive())
    body = await (await client.get("/hold/app")).json()
    await feeder
    assert body["outcome"] == "quiet"
    assert body["seconds"] >= 0.7


async def test_containers_calling_at_once_share_one_hold(sidecar: Start) -> None:
    api = FakeApiServer(flip_after=0.2)
    client, _, _ = await sidecar(api)
    first, second = await asyncio.gather(client.get("/hold/app"), client.get("/hold/worker"))
    assert await first.json() == await second.json()
    assert api.requests.count("pod consistent") == 1, "one read found the deletion, for both"
    assert api.requests.count("learned") == 1, "then what was learned, once"
    assert len(api.requests) == 4, "one hold: one list, one watch"
    late = await (await client.get("/hold/late")).json()
    assert late == await first.json(), "a late caller of the same deletion gets its hold's result at once"


async def test_a_call_while_the_pod_is_not_being_deleted_is_answered_at_once_and_leaves_no_hold(
    sidecar: Start,
) -> None:
    """kubelet runs preStop when it restarts a container after a failed liveness probe; so
    does anyone who calls the port. Neither may hold, nor use up the deletion's hold."""
    api = FakeApiServer(flip_after=0.4, deleting=False)
    client, _, metrics = await sidecar(api, read_interval=0.1)
    for caller in ("app", "stray"):
        body = await (await client.get(f"/hold/{caller}")).json()
        assert (body["outcome"], body["seconds"]) == ("not_deleting", 0.0)
    assert api.requests == ["pod consistent"] * 2, "one read each, from etcd: no slice watch, nothing learned"
    exported = metrics.exposition().decode()
    assert 'lameduck_sidecar_holds_total{outcome="not_deleting"} 2.0' in exported
    assert "lameduck_sidecar_connections_after_stage1_total 0.0" in exported
    assert "lameduck_sidecar_hold_seconds_count 0.0" in exported, "no hold to time"
    api.deleting = True
    body = await (await client.get("/hold/app")).json()
    assert body["outcome"] == "quiet"
    assert 0.4 <= body["stage1"] < 0.8, "the deletion gets its own full hold"


@pytest.mark.parametrize("name", ["App", "a" * 64, "x_y", "-app", "app.1", "app%0A", "%20", "a" * 4000])
async def test_a_call_naming_no_possible_container_is_refused_without_asking_the_api(sidecar: Start, name: str) -> None:
    api = FakeApiServer()
    client, _, metrics = await sidecar(api)
    response = await client.get(f"/hold/{name}")
    assert response.status == 400
    assert await response.json() == {"error": "invalid_container"}
    assert api.requests == []
    assert 'lameduck_sidecar_hold_calls_total{answer="invalid_container"} 1.0' in metrics.exposition().decode()


async def test_200_concurrent_calls_on_a_pod_not_being_deleted_cost_at_most_two_reads(sidecar: Start) -> None:
    """Anyone can call the port: a flood of calls is one read of the pod at a time, at most one a
    read interval, and nothing else (what was learned is read only for a deletion)."""
    api = FakeApiServer(deleting=False)
    client, _, metrics = await sidecar(api, read_interval=0.3)
    responses = await asyncio.gather(*(client.get(f"/hold/c{i}") for i in range(200)))
    assert {(await r.json())["outcome"] for r in responses} == {"not_deleting"}
    assert 1 <= len(api.requests) <= 2
    assert set(api.requests) == {"pod consistent"}
    exported = metrics.exposition().decode()
    assert 'lameduck_sidecar_hold_calls_total{answer="not_deleting"} 200.0' in exported
    assert f"lameduck_sidecar_api_requests_total {float(len(api.requests))}" in exported


async def test_a_call_while_the_pod_is_forbidden_uses_up_no_hold(sidecar: Start) -> None:
    """Issue 24: a stranger's call while the sidecar could not read its pod started the one hold,
    and the real deletion later was answered at once with no hold."""
    api = FakeApiServer(flip_after=0.4, pod_status=403)
    client, _, metrics = await sidecar(api, read_interval=0.05)
    stranger = await (await client.get("/hold/stray")).json()
    assert stranger["outcome"] == "fallback", "held as for a deletion: it may have been one"
    assert stranger["seconds"] >= FAST.fallback_delay
    assert api.requests == ["pod consistent"], "nothing else: no slices, nothing learned"
    api.pod_status = 200
    body = await (await client.get("/hold/app")).json()
    assert body["outcome"] == "quiet"
    assert 0.4 <= body["stage1"] < 0.8, "the deletion gets its own full hold"
    await terminate(client)
    (event,) = api.events
    report = json.loads(event["message"])
    assert (report["outcome"], report["containers"]) == ("quiet", ["app"]), "only the deletion is reported"
    assert 'lameduck_sidecar_fallbacks_total{reason="api"} 1.0' in metrics.exposition().decode()


async def test_a_classic_sidecar_finishes_a_fallback_hold_before_it_exits(tmp_path: Path) -> None:
    config = config_for(None, tmp_path)
    holder = holder_for(config, SidecarMetrics(), lambda: NO_SOCKETS, FakeTraffic)
    hold = asyncio.create_task(holder.hold("app"))
    await wait_for(lambda: bool(holder.waited_on()))
    await before_exit(holder, native=False)
    assert hold.done(), "the app's preStop was answered before the sidecar exited"
    assert (await hold).outcome.value == "fallback"


async def test_a_hold_ends_with_one_report_event_on_the_pod(sidecar: Start) -> None:
    api = FakeApiServer(flip_after=0.2)
    client, traffic, metrics = await sidecar(api)

    async def arrive() -> None:
        await asyncio.sleep(0.3)
        traffic.pending += 1

    feeder = asyncio.create_task(arrive())
    body = await (await client.get("/hold/app")).json()
    await feeder
    await asyncio.sleep(0.3)
    assert api.events == [], "a native sidecar reports once the app has exited: at its own SIGTERM"
    await terminate(client)
    (event,) = api.events
    assert event["metadata"]["labels"] == {"lameduck.dev/report": "hold"}
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "web-1",
        "namespace": "shop",
        "uid": "uid-1",
    }
    assert (event["reason"], event["type"]) == ("HoldReleased", "Normal")
    report = json.loads(event["message"])
    assert report["outcome"] == "quiet"
    assert report["holdSeconds"] == body["seconds"]
    assert 0.3 <= report["lateTrafficSeconds"] < report["holdSeconds"], "the connection came at ~0.3 s"
    assert report["connectionsAfterStage1"] == 1
    assert (report["replicaSet"], report["podTemplateHash"]) == ("web-7d9f8c", "7d9f8c")
    assert (report["gracePeriodSeconds"], report["maxHoldSeconds"], report["containers"]) == (60, 3.0, ["app"])
    assert (report["lostAfterRelease"], report["pooledQuietSeconds"], report["pinnedUntilClosed"]) == (None, None, 0), (
        "no kernel counter in this test: not measurable"
    )
    assert report["learnedDelaySeconds"] is None, "no ConfigMap: a learning hold"
    assert report["appExitSeconds"] >= 0.3, "the sidecar's SIGTERM came after 0.3 s"
    assert 'lameduck_sidecar_hold_reports_total{result="posted"} 1.0' in metrics.exposition().decode()


async def test_a_timed_out_hold_is_reported_as_a_warning(sidecar: Start) -> None:
    api = FakeApiServer(flip_after=30)
    client, _, _ = await sidecar(api, hold=replace(FAST, max_hold=0.5))
    assert (await (await client.get("/hold/app")).json())["outcome"] == "timeout"
    await terminate(client)
    assert (api.events[0]["reason"], api.events[0]["type"]) == ("HoldTimedOut", "Warning")


async def test_a_call_while_the_pod_is_not_being_deleted_posts_no_report(sidecar: Start) -> None:
    api = FakeApiServer(deleting=False)
    client, _, _ = await sidecar(api)
    assert (await (await client.get("/hold/app")).json())["outcome"] == "not_deleting"
    await asyncio.sleep(0.2)  # a report would be posted right after the answer
    assert api.events == []


async def test_a_refused_report_is_counted_and_the_hold_is_answered_as_usual(sidecar: Start) -> None:
    api = FakeApiServer(flip_after=0.1)
    api.event_status = 403
    client, _, metrics = await sidecar(api)
    assert (await (await client.get("/hold/app")).json())["outcome"] == "quiet"
    await terminate(client)
    assert 'result="failed"} 1.0' in metrics.exposition().decode()
    assert api.events == []
    assert api.posts == 1, "a refusal would be the same the next time: not posted again"


QUICK_RETRY = RetrySchedule(first_wait=0.05, max_wait=0.1, max_attempts=4)


def report_failures(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if '"event": "report_failed"' in r.getMessage()]


async def test_a_report_the_api_server_failed_is_posted_again_and_counted_once(
    sidecar: Start, caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeApiServer(flip_after=0.1)
    api.event_failures = 2
    client, _, metrics = await sidecar(api)
    client.holder.report_retry = QUICK_RETRY
    assert (await (await client.get("/hold/app")).json())["outcome"] == "quiet"
    await terminate(client)
    assert (api.posts, len(api.events)) == (3, 1), "stored by the third attempt, once"
    exported = metrics.exposition().decode()
    assert 'lameduck_sidecar_hold_reports_total{result="posted_after_retry"} 1.0' in exported
    assert 'result="posted"}' not in exported
    assert 'result="failed"}' not in exported
    failures = report_failures(caplog)
    assert [(f["attempt"], f["retry_in"] is not None) for f in failures] == [(1, True), (2, True)]
    assert failures[0]["reason"] == "posting the hold report: HTTP 503"


async def test_a_report_that_keeps_failing_is_retried_until_the_grace_period_then_given_up(
    sidecar: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """The grace period (3 s here) bounds the retries, not a number of attempts."""
    api = FakeApiServer(flip_after=0.1, grace_period=3)
    api.event_failures = 1000
    client, _, metrics = await sidecar(api)
    client.holder.report_retry = QUICK_RETRY
    started = asyncio.get_running_loop().time()
    await (await client.get("/hold/app")).json()
    await terminate(client)
    assert asyncio.get_running_loop().time() - started < 3.0, "gone before kubelet's SIGKILL"
    assert api.posts > QUICK_RETRY.max_attempts
    assert api.events == []
    assert 'lameduck_sidecar_hold_reports_total{result="failed"} 1.0' in metrics.exposition().decode()
    failures = [f["retry_in"] is None for f in report_failures(caplog)]
    assert failures == [False] * (len(failures) - 1) + [True]


async def test_the_sidecar_stays_past_its_usual_wait_for_a_retry_within_the_grace_period(sidecar: Start) -> None:
    """Without a retry it waits the API timeout (0.5 s) and a margin (0.5 s) on its SIGTERM; the
    retry 1.5 s after a failure still ends long before the grace period (60 s), so it waits for it."""
    api = FakeApiServer(flip_after=0.1)
    api.event_failures = 1
    client, _, _ = await sidecar(api)
    client.holder.report_retry = RetrySchedule(first_wait=1.5)
    await (await client.get("/hold/app")).json()
    started = asyncio.get_running_loop().time()
    await terminate(client)
    assert asyncio.get_running_loop().time() - started >= 1.5
    assert (api.posts, len(api.events)) == (2, 1), "posted before the sidecar exits"


async def test_with_the_grace_period_unknown_the_attempt_at_the_sidecars_sigterm_is_the_last(sidecar: Start) -> None:
    api = FakeApiServer(flip_after=0.1, grace_period=None)
    api.event_failures = 100
    client, _, metrics = await sidecar(api)
    client.holder.report_retry = QUICK_RETRY
    await (await client.get("/hold/app")).json()
    await terminate(client)
    assert api.posts == 1, "a native sidecar posts at its SIGTERM: nothing bounds a longer stay"
    assert 'lameduck_sidecar_hold_reports_total{result="failed"} 1.0' in metrics.exposition().decode()


@pytest.mark.parametrize("first_watch", ["end", "gone"])
async def test_a_watch_the_server_ends_is_watched_again(sidecar: Start, first_watch: str) -> None:
    api = FakeApiServer(flip_after=0.3, watch=first_watch)
    client, _, _ = await sidecar(api)
    body = await (await client.get("/hold/app")).json()
    assert body["outcome"] == "quiet", "stage 1 still ends on the slices, not by falling back"
    assert 0.3 <= body["stage1"] < 0.8
    watches = [r for r in api.requests if "watch=1" in r]
    lists = [r for r in api.requests if r not in ("pod", "pod consistent", "learned") and "watch=1" not in r]
    assert len(watches) == 2
    if first_watch == "end":
        assert "resourceVersion=12" in watches[1], "from the version the bookmark gave"
        assert len(lists) == 1
    else:
        assert len(lists) == 2, "410: listed again"
        assert "resourceVersion=8" in watches[1], "watched from the new list's version"
    assert "timeoutSeconds=60" in watches[0], "the server ends every watch in time"


async def test_a_garbled_watch_falls_back_with_its_reason(sidecar: Start, caplog: pytest.LogCaptureFixture) -> None:
    client, _, metrics = await sidecar(FakeApiServer(watch="garbage"))
    body = await (await client.get("/hold/app")).json()
    assert body["outcome"] == "fallback"
    assert 'lameduck_sidecar_fallbacks_total{reason="api"} 1.0' in metrics.exposition().decode()
    (record,) = [json.loads(r.getMessage()) for r in caplog.records if '"event": "fallback"' in r.getMessage()]
    assert (record["pod"], record["reason"]) == ("web-1", "api")
    assert record["detail"].startswith("ApiError: watching EndpointSlices: malformed event")


async def test_a_bug_in_stage_1_falls_back_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> AsyncGenerator[list[dict[str, Any]], None]:
        raise RuntimeError("a bug")
        yield []

    metrics = SidecarMetrics()
    holder = Holder(config_for(None, tmp_path), metrics, lambda: NO_SOCKETS, FakeTraffic, broken, own_pod=deleted_pod)
    result = await holder.hold("app")
    assert result.outcome.value == "fallback"
    exported = metrics.exposition().decode()
    assert 'lameduck_sidecar_fallbacks_total{reason="internal_error"} 1.0' in exported
    (logged,) = [r for r in caplog.records if r.exc_info]
    assert (logged.getMessage(), str(logged.exc_info[1] if logged.exc_info else "")) == ("stage 1 failed", "a bug")
    (record,) = [json.loads(r.getMessage()) for r in caplog.records if '"event": "fallback"' in r.getMessage()]
    assert (record["reason"], record["detail"]) == ("internal_error", "RuntimeError('a bug')")


@pytest.mark.parametrize(
    ("api", "at_least"),
    [
        (FakeApiServer(status=403), 0.6),
        (FakeApiServer(status=403, pod_status=403), 0.6),
        # the pod's read times out (0.5 s), then the fallback delay: no deletion to watch slices for
        (FakeApiServer(hang=True), 1.1),
    ],
    ids=["forbidden", "forbidden-pod-too", "hanging"],
)
async def test_api_trouble_falls_back(sidecar: Start, api: FakeApiServer, at_least: float) -> None:
    client, _, _ = await sidecar(api)
    body = await (await client.get("/hold/app")).json()
    assert body["outcome"] == "fallback"
    assert at_least <= body["seconds"] < at_least + 0.5
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
    holder = holder_for(config, SidecarMetrics(), lambda: NO_SOCKETS, FakeTraffic)
    hold = asyncio.create_task(holder.hold("app"))
    await wait_for(lambda: holder.holding)
    await before_exit(holder, native=native)
    assert hold.done() is waits
    assert (await hold).outcome.value == "quiet"
    if waits:
        assert len(api.events) == 1, "the hold report is posted before the sidecar exits"
    assert holder.report_task is not None
    await holder.report_task  # a native one's report goes out as the hold ends: it was signalled
    assert len(api.events) == 1
    await server.close()


async def terminate(client: Client) -> None:
    """The native sidecar's own SIGTERM, which kubelet sends once the app containers exited."""
    await before_exit(client.holder, native=True)


async def wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def test_the_sidecar_listens_on_both_families_and_counts_its_own_connections(tmp_path: Path) -> None:
    own = OwnConnections()
    metrics = SidecarMetrics()
    holder = holder_for(config_for(None, tmp_path), metrics, lambda: NO_SOCKETS, FakeTraffic)
    sockets = listening_sockets(0)
    families = {s.family for s in sockets}
    assert families == {socket.AF_INET, socket.AF_INET6}
    server = HoldServer(holder, metrics, own)
    await server.listen(sockets)
    try:
        for sock in sockets:
            host = "::1" if sock.family == socket.AF_INET6 else "127.0.0.1"
            port = sock.getsockname()[1]
            async with ClientSession() as session:
                for _ in range(2):  # one keep-alive connection, two requests
                    async with session.get(f"http://{host_port(host, port)}/healthz") as response:
                        assert response.status == 200
        assert own() == 2, "connections, not requests"
    finally:
        await server.close()
        for sock in sockets:
            sock.close()


async def test_the_hold_is_logged_as_one_record_with_what_happened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="lameduck.sidecar")
    api = FakeApiServer(flip_after=0.1, grace_period=61)
    server = TestServer(api.app())
    await server.start_server()
    config = replace(config_for(str(server.make_url("")).rstrip("/"), tmp_path), policy="GracefulPolicy/shop/p")
    traffic = FakeTraffic()
    holder = holder_for(config, SidecarMetrics(), lambda: NO_SOCKETS, lambda: traffic)
    result = await holder.hold("app")
    await server.close()
    (line,) = [r.getMessage() for r in caplog.records if '"event": "hold"' in r.getMessage()]
    record = json.loads(line)
    assert record["pod"] == "web-1"
    assert record["namespace"] == "shop"
    assert record["policy"] == "GracefulPolicy/shop/p"
    assert record["containers"] == ["app"]
    assert record["outcome"] == "quiet" == result.outcome.value
    assert record["seconds"] == round(result.total, 3)
    assert record["stage1"] == round(result.stage1 or 0, 3)
    assert record["stage2"] == round(result.stage2 or 0, 3)
    assert record["stage1_at"] == pytest.approx(record["started_at"] + record["stage1"], abs=0.002)
    assert (round(record["started_at"], 3), round(record["stage1_at"], 3)) == (
        record["started_at"],
        record["stage1_at"],
    )
    assert record["grace_period"] == 61
    assert (record["connections_after_stage1"], record["reused_after_stage1"], record["pinned_after_stage1"]) == (
        0,
        0,
        0,
    )
    assert traffic.observed >= 5, "polled every 0.1 s through the hold"


async def test_without_an_api_address_the_fallback_starts_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = holder_for(config_for(None, tmp_path), SidecarMetrics(), lambda: NO_SOCKETS, FakeTraffic)
    result = await holder.hold("app")
    (record,) = [json.loads(r.getMessage()) for r in caplog.records if '"event": "fallback"' in r.getMessage()]
    assert (record["reason"], record["detail"]) == ("no_api_address", "")
    assert result.outcome.value == "fallback"
    assert result.stage1 is not None
    assert result.stage1 < 0.05, "no API to wait for"
    assert 0.6 <= result.total < 0.8, "then the fallback delay"


async def test_slices_that_show_the_pod_not_ready_at_once_end_stage_1_without_a_fallback(
    sidecar: Start,
) -> None:
    api = FakeApiServer(flip_after=0.0)
    client, _, metrics = await sidecar(api)
    body = await (await client.get("/hold/app")).json()
    assert body["outcome"] == "quiet"
    assert "lameduck_sidecar_fallbacks_total{" not in metrics.exposition().decode()


async def test_slices_of_another_pod_do_not_end_stage_1(tmp_path: Path) -> None:
    api = FakeApiServer(flip_after=0.2)
    server = TestServer(api.app())
    await server.start_server()
    config = replace(
        config_for(str(server.make_url("")).rstrip("/"), tmp_path), pod_uid="uid-2", pod_name="web-2", pod_ip="10.1.0.8"
    )
    holder = holder_for(config, SidecarMetrics(), lambda: NO_SOCKETS, FakeTraffic)
    result = await holder.hold("app")
    await server.close()
    assert result.outcome.value == "not_in_any_slice", "the slice lists web-1, not this pod"


async def test_an_answer_at_once_and_an_unreadable_pod_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="lameduck.sidecar")
    api = FakeApiServer(deleting=False)
    server = TestServer(api.app())
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    holder = holder_for(config_for(url, tmp_path), SidecarMetrics(), lambda: NO_SOCKETS, FakeTraffic)
    await holder.hold("app")
    (record,) = [json.loads(r.getMessage()) for r in caplog.records if '"event": "hold"' in r.getMessage()]
    assert (record["outcome"], record["containers"], record["seconds"]) == ("not_deleting", ["app"], 0.0)
    assert (record["stage1"], record["grace_period"]) == (None, None)
    api.pod_status = 403
    holder = holder_for(config_for(url, tmp_path), SidecarMetrics(), lambda: NO_SOCKETS, FakeTraffic)
    await holder.hold("app")
    await server.close()
    (unreadable,) = [json.loads(r.getMessage()) for r in caplog.records if "pod_unreadable" in r.getMessage()]
    assert unreadable == {"event": "pod_unreadable", "pod": "web-1", "reason": "getting the pod: HTTP 403"}


async def test_the_holder_feeds_the_kernels_view_to_the_counter_with_the_time(tmp_path: Path) -> None:
    """A real counter: the first snapshot is the baseline, every later one is new work."""
    peer = ip_address("10.1.0.9")
    listening = TcpSocket(LISTEN, 8080, ip_address("0.0.0.0"), 0, 0, None)
    accepted = [100]

    def snapshot() -> Snapshot:
        accepted[0] += 1  # a new connection from a client at every poll, and a request on an old one
        pooled = TcpSocket(ESTABLISHED, 8080, peer, 40000, 0, accepted[0] * 100)
        return Snapshot(accepted[0], 0, 0, [listening, pooled, TcpSocket(ESTABLISHED, 8080, peer, accepted[0], 0, 0)])

    config = replace(config_for(None, tmp_path), hold=replace(FAST, max_hold=1.5))
    counter = TrafficCounter(frozenset({8080}), config.port, (), frozenset(), config.hold.quiet_period)
    result = await holder_for(config, SidecarMetrics(), snapshot, lambda: counter).hold("app")
    assert result.outcome.value == "fallback", "never quiet: a new connection every poll until maxHold"
    assert result.connections_after_stage1 >= 5
    assert result.reused_after_stage1 >= 5


async def test_the_pod_is_found_in_a_slice_by_its_address_alone(tmp_path: Path) -> None:
    api = FakeApiServer(flip_after=0.2)
    api.address_only = True
    server = TestServer(api.app())
    await server.start_server()
    config = config_for(str(server.make_url("")).rstrip("/"), tmp_path)
    result = await holder_for(config, SidecarMetrics(), lambda: NO_SOCKETS, FakeTraffic).hold("app")
    await server.close()
    assert result.outcome.value == "quiet", "listed by its address, then released"
    assert result.stage1 is not None
    assert result.stage1 >= 0.2


async def test_what_was_learned_is_read_with_the_pod_and_used_by_the_hold(sidecar: Start) -> None:
    api = FakeApiServer(flip_after=0.1)
    api.learned = {"web": json.dumps({"version": 1, "pooledDelaySeconds": 0.6, "reports": 2})}
    client, _, metrics = await sidecar(api)
    body = await (await client.get("/hold/app")).json()
    assert body["outcome"] == "quiet"
    await terminate(client)
    (event,) = api.events
    assert json.loads(event["message"])["learnedDelaySeconds"] == 0.6, "the Deployment web's entry"
    exported = metrics.exposition().decode()
    assert 'lameduck_sidecar_learned_holds_total{state="learned"} 1.0' in exported


async def test_a_config_map_that_cannot_be_read_in_time_is_no_history(sidecar: Start) -> None:
    api = FakeApiServer(flip_after=0.1)
    api.learned = {"web": "not json"}
    client, _, metrics = await sidecar(api)
    assert (await (await client.get("/hold/app")).json())["outcome"] == "quiet"
    exported = metrics.exposition().decode()
    assert 'lameduck_sidecar_learned_holds_total{state="learning"} 1.0' in exported


class Namespace:
    """The pod's network namespace as a test drives it: whether the app listens on 8080, the
    kernel's RST counter, and one keep-alive connection that keeps receiving while `busy`."""

    def __init__(self) -> None:
        self.listening = True
        self.resets = 500
        self.busy = True
        self.open = True
        self.received = 0

    def snapshot(self) -> Snapshot:
        sockets = [TcpSocket(LISTEN, 8080, ip_address("0.0.0.0"), 0, 0, None)] if self.listening else []
        if self.open:
            self.received += 100 if self.busy else 0
            sockets.append(TcpSocket(ESTABLISHED, 8080, ip_address("10.1.0.9"), 40000, 0, self.received))
        return Snapshot(None, 0, 0, sockets, self.resets)


async def test_a_classic_sidecar_reports_what_was_lost_once_the_app_stops_listening(tmp_path: Path) -> None:
    api = FakeApiServer(flip_after=0.1)
    server = TestServer(api.app())
    await server.start_server()
    config = replace(
        config_for(str(server.make_url("")).rstrip("/"), tmp_path),
        native=False,
        app_ports=frozenset({8080}),
        hold=replace(FAST, drain_timeout=5.0),
    )
    pod = Namespace()
    holder = holder_for(config, SidecarMetrics(), pod.snapshot, FakeTraffic)
    assert (await holder.hold("app")).outcome.value == "quiet"
    await asyncio.sleep(0.3)
    assert api.events == [], "the app still listens: it has not exited"
    pod.open = False  # the app closed the busy connection: pinned
    pod.resets += 3  # and three requests came too late
    await asyncio.sleep(0.2)
    pod.listening = False
    await wait_for(lambda: bool(api.events))
    report = json.loads(api.events[0]["message"])
    assert (report["lostAfterRelease"], report["pinnedUntilClosed"], report["pooledQuietSeconds"]) == (3, 1, None)
    assert 0.5 <= report["appExitSeconds"] < 1.5
    await server.close()


LEARNED = {"version": 1, "pooledDelaySeconds": 1.0, "reports": 3, "learnedMaxHoldSeconds": 1.5}
STARTING = {"version": 1, "reports": 0, "learnedMaxHoldSeconds": 1.5}


@pytest.mark.parametrize(
    ("value", "cap", "outcome", "max_hold"),
    [
        (LEARNED, 2.0, "quiet", 1.5),
        (LEARNED, 1.0, "timeout", 1.0),
        (LEARNED, None, "timeout", 0.5),
        (STARTING, 2.0, "quiet", 1.5),
        (STARTING, None, "timeout", 0.5),
    ],
    ids=[
        "raised-live",
        "raised-only-up-to-the-cap",
        "no-cap-no-raise",
        "starting-budget-raised-live",
        "starting-budget-no-cap-no-raise",
    ],
)
async def test_a_max_hold_read_at_the_holds_start_lengthens_a_pod_made_before_it(
    sidecar: Start, value: dict[str, Any], cap: float | None, outcome: str, max_hold: float
) -> None:
    """The pod's template said maxHold 0.5 s, and its slices let go only after 0.7 s; the maxHold
    published since for its Deployment (1.5 s: what its first pods taught, or with no report the
    starting budget, once a route to it was seen) is read when the hold starts and taken, up to
    the cap the pod's grace period was sized for: the hold sees stage 1 end and releases. Without
    a cap the pod's own maxHold stands and cuts the hold off."""
    api = FakeApiServer(flip_after=0.7)
    api.learned = {"web": json.dumps(value)}
    client, _, _ = await sidecar(api, hold=replace(FAST, max_hold=0.5, max_hold_cap=cap))
    body = await (await client.get("/hold/app")).json()
    assert body["outcome"] == outcome
    await terminate(client)
    (event,) = api.events
    report = json.loads(event["message"])
    assert report["maxHoldSeconds"] == max_hold
    assert report["learnedDelaySeconds"] == (1.0 if value is LEARNED else None), "a starting budget is no history"


@pytest.mark.parametrize(
    ("own", "cap", "learned", "expected"),
    [
        (30.0, None, 90.0, 30.0),  # no learned budget: the template's value is final
        (30.0, 120.0, None, 30.0),  # nothing learned yet
        (30.0, 120.0, 60.0, 60.0),
        (30.0, 120.0, 600.0, 120.0),  # never past the cap the grace period has room for
        (60.0, 120.0, 45.0, 60.0),  # never below the template's (learned when the pod was made)
    ],
)
def test_the_max_hold_in_force_at_a_holds_start(
    own: float, cap: float | None, learned: float | None, expected: float
) -> None:
    assert max_hold_in_force(own, cap, learned) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"version": 1, "pooledDelaySeconds": 2.0, "reports": 1, "learnedMaxHoldSeconds": 61.0}, 61.0),
        ({"version": 1, "pooledDelaySeconds": 2.0, "reports": 1}, None),
        ({"version": 1, "reports": 0, "learnedMaxHoldSeconds": 60.0}, 60.0),  # the starting budget
        ({"version": 1, "reports": 0}, None),
        ({"version": 1, "reports": -1, "learnedMaxHoldSeconds": 60.0}, None),
        ({"version": 1, "learnedMaxHoldSeconds": 60.0}, None),
        ({"version": 1, "pooledDelaySeconds": 2.0, "reports": 1, "learnedMaxHoldSeconds": -1}, None),
        ({"version": 1, "pooledDelaySeconds": 2.0, "reports": 1, "learnedMaxHoldSeconds": True}, None),
        ({"version": 2, "pooledDelaySeconds": 2.0, "reports": 1, "learnedMaxHoldSeconds": 61.0}, None),
    ],
)
def test_the_learned_max_hold_is_read_only_from_a_record_the_operator_wrote(
    value: dict[str, Any], expected: float | None
) -> None:
    assert learned_max_hold({"data": {"web": json.dumps(value)}}, "web") == expected
