"""Calls to the sidecar's port, which anyone who reaches the pod can make: what they may cost
(reads of the pod shared and spaced, nothing learned before a deletion), which names are
refused, that a call whose pod cannot be read uses up nothing, and that a hold's callers, log
line and report stay small whatever comes. Fakes of the pod's read here are plain functions."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from lameduck_sidecar.after_release import AfterRelease
from lameduck_sidecar.calls import MAX_CONTAINERS, bounded_names, next_read_at, valid_container
from lameduck_sidecar.config import SidecarConfig, load_config
from lameduck_sidecar.hold import FallbackReason, HoldResult, HoldSettings, Outcome
from lameduck_sidecar.holder import Holder
from lameduck_sidecar.k8s import ApiError
from lameduck_sidecar.metrics import SidecarMetrics
from lameduck_sidecar.pod_reads import PodReads
from lameduck_sidecar.report import hold_report_event, report_message
from lameduck_sidecar.traffic import Snapshot, Work

FAST = HoldSettings(propagation_delay=0.3, quiet_period=0.1, max_hold=3.0, api_timeout=0.5, fallback_delay=0.6)
NO_SOCKETS = Snapshot(None, 0, 0, [])
# The API server refuses a request body over 3 MiB (413: issue 24's report was lost so) and etcd
# keeps values up to 1.5 MiB. The report is held to a small fixed budget, so that a bound that
# breaks shows here long before it reaches those.
API_SERVER_BODY_LIMIT = 3 * 1024 * 1024
REPORT_BUDGET = 4096
LOG_LINE_BUDGET = 4096


def pod(deleting: bool) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "web-1"}
    if deleting:
        metadata |= {"deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 60}
    return {"metadata": metadata}


class PodApi:
    """The pod's read as the API answers it: counts reads; `deleting` as of when a read begins;
    `forbidden` answers as a 403 does; `gate`, when set, holds every read until it opens."""

    def __init__(self, deleting: bool = False) -> None:
        self.deleting = deleting
        self.forbidden = False
        self.reads = 0
        self.started: list[float] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> dict[str, Any]:
        self.reads += 1
        self.started.append(time.monotonic())
        deleting, forbidden = self.deleting, self.forbidden
        if self.gate is not None:
            await self.gate.wait()
        if forbidden:
            raise ApiError("getting the pod: HTTP 403")
        return pod(deleting)


class NoTraffic:
    def observe(self, now: float, snapshot: Snapshot) -> Work:
        return Work(0)


def config(hold: HoldSettings = FAST) -> SidecarConfig:
    base = load_config({"LAMEDUCK_POD_NAME": "web-1", "LAMEDUCK_POD_NAMESPACE": "shop", "LAMEDUCK_POD_UID": "uid-1"})
    return replace(base, hold=hold, api_url=None)


async def no_slices() -> AsyncGenerator[list[dict[str, Any]], None]:
    """A namespace whose slices list no pod: stage 1 of a deletion's hold ends at once."""
    yield []


def holder(api: PodApi, read_interval: float = 0.2, **kwargs: Any) -> Holder:
    return Holder(
        config(),
        SidecarMetrics(),
        lambda: NO_SOCKETS,
        NoTraffic,
        no_slices,
        own_pod=api,
        read_interval=read_interval,
        **kwargs,
    )


def exported(h: Holder) -> str:
    return h.metrics.exposition().decode()


# Pure: names and spacing.


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("app", True),
        ("log-shipper", True),
        ("a" * 63, True),
        ("0web", True),
        ("a" * 64, False),
        ("", False),
        ("App", False),
        ("-app", False),
        ("app-", False),
        ("app_1", False),
        ("app.1", False),
        ("..", False),
        ("app\n", False),
        ("app%20", False),
    ],
)
def test_only_a_dns_label_can_name_a_container(name: str, valid: bool) -> None:
    assert valid_container(name) is valid


def test_reads_start_an_interval_apart() -> None:
    assert next_read_at(None, 5.0, 1.0) == 5.0, "the first read at once"
    assert next_read_at(4.5, 5.0, 1.0) == 5.5
    assert next_read_at(3.0, 5.0, 1.0) == 5.0


def test_callers_recorded_are_distinct_and_bounded() -> None:
    names = bounded_names(["app", "app", *(f"c{i}" for i in range(1000))])
    assert names[:2] == ["app", "c0"]
    assert len(names) == MAX_CONTAINERS


# The reads of the pod: shared, spaced, never older than the call.


async def test_200_concurrent_looks_at_a_pod_not_being_deleted_cost_at_most_two_reads() -> None:
    api = PodApi()
    reads = PodReads(api, time.monotonic, 1.0, interval=0.2)
    looks = await asyncio.gather(*(reads.look(f"c{i}", time.monotonic(), time.time()) for i in range(200)))
    assert all(not look.deleting and look.unreadable is None for look in looks)
    assert api.reads <= 2
    assert len({id(look) for look in looks}) == api.reads, "one answer per read, shared"
    assert all(len(look.callers) <= MAX_CONTAINERS for look in looks)


async def test_a_steady_stream_of_looks_costs_at_most_one_read_per_interval() -> None:
    api = PodApi()
    reads = PodReads(api, time.monotonic, 1.0, interval=0.15)
    began = time.monotonic()
    calls = []
    for i in range(40):  # 40 calls a second for a second
        calls.append(asyncio.create_task(reads.look(f"c{i}", time.monotonic(), time.time())))
        await asyncio.sleep(0.025)
    await asyncio.gather(*calls)
    took = time.monotonic() - began
    assert api.reads <= took / 0.15 + 1
    gaps = [b - a for a, b in zip(api.started, api.started[1:], strict=False)]
    assert min(gaps) >= 0.15 - 0.01, "reads start at least an interval apart"


async def test_a_read_that_began_before_a_call_never_answers_it() -> None:
    """A stranger's read that found the pod not being deleted must not answer kubelet's call
    for the deletion that came meanwhile: that call waits for a read of its own."""
    api = PodApi()
    api.gate = asyncio.Event()
    reads = PodReads(api, time.monotonic, 1.0, interval=0.05)
    stranger = asyncio.create_task(reads.look("stray", time.monotonic(), time.time()))
    await asyncio.sleep(0.02)  # the stranger's read has begun
    api.deleting = True
    kubelet = asyncio.create_task(reads.look("app", time.monotonic(), time.time()))
    await asyncio.sleep(0.02)
    api.gate.set()
    assert not (await stranger).deleting, "the pod as it was when the read began"
    assert (await kubelet).deleting
    assert api.reads == 2


async def test_a_read_that_found_the_deletion_answers_every_later_call_at_once() -> None:
    api = PodApi(deleting=True)
    reads = PodReads(api, time.monotonic, 1.0, interval=10.0)
    first = await reads.look("app", time.monotonic(), time.time())
    began = time.monotonic()
    later = await reads.look("worker", time.monotonic(), time.time())
    assert later is first
    assert time.monotonic() - began < 0.05, "no wait for the interval"
    assert api.reads == 1


async def test_a_bug_in_reading_the_pod_leaves_no_call_waiting() -> None:
    async def broken() -> dict[str, Any]:
        raise KeyError("a bug")

    reads = PodReads(broken, time.monotonic, 1.0, interval=0.05)
    look = await asyncio.wait_for(reads.look("app", time.monotonic(), time.time()), 1.0)
    assert look.unreadable is FallbackReason.INTERNAL_ERROR


# A pod that cannot be read: a fallback hold for the call, and nothing used up.


async def test_an_unreadable_pod_then_a_real_deletion_still_gets_a_full_hold() -> None:
    """Issue 24: a stranger's call while the pod could not be read used up the one hold, and
    the deletion that came later was answered at once."""
    api = PodApi()
    api.forbidden = True
    h = holder(api)
    stranger = await h.hold("stray")
    assert stranger.outcome is Outcome.FALLBACK
    assert stranger.total >= FAST.fallback_delay, "held as for a deletion: it may have been one"
    assert h.task is None, "nothing used up"
    api.forbidden, api.deleting = False, True
    deletion = await h.hold("app")
    assert deletion.outcome is Outcome.NOT_IN_ANY_SLICE, "the deletion's own hold, stage 1 and all"
    assert h.task is not None
    assert h.callers == ["app"], "the stranger is no caller of the deletion's hold"
    assert 'lameduck_sidecar_hold_calls_total{answer="fallback"} 1.0' in exported(h)
    assert 'lameduck_sidecar_hold_calls_total{answer="hold"} 1.0' in exported(h)


async def test_a_deletion_during_a_strangers_fallback_hold_gets_a_hold_of_its_own() -> None:
    api = PodApi()
    api.forbidden = True
    h = holder(api, read_interval=0.05)
    stranger = asyncio.create_task(h.hold("stray"))
    await asyncio.sleep(0.3)
    api.forbidden, api.deleting = False, True
    deletion = await h.hold("app")
    assert not stranger.done()
    assert h.task is not None
    assert deletion is h.task.result(), "the deletion's own hold, not the rest of the stranger's"
    assert deletion.outcome is Outcome.NOT_IN_ANY_SLICE
    assert (await stranger).outcome is Outcome.FALLBACK


async def test_each_call_while_the_pod_cannot_be_read_is_held_from_its_own_read() -> None:
    """A fallback hold per read: a call that comes during an earlier call's fallback hold is
    held the whole fallback delay from its own read, not the rest of the earlier hold."""
    api = PodApi()
    api.forbidden = True
    h = holder(api, read_interval=0.05)
    first = asyncio.create_task(h.hold("stray"))
    await asyncio.sleep(0.4)
    called = time.monotonic()
    second = await h.hold("app")
    assert time.monotonic() - called >= FAST.fallback_delay
    assert (await first).outcome is second.outcome is Outcome.FALLBACK
    assert h.task is None
    assert 'lameduck_sidecar_fallbacks_total{reason="api"} 2.0' in exported(h)


async def test_concurrent_calls_while_the_pod_cannot_be_read_share_the_fallback_hold_of_their_read() -> None:
    api = PodApi()
    api.forbidden = True
    h = holder(api, read_interval=0.2)
    results = await asyncio.gather(*(h.hold(f"c{i}") for i in range(200)))
    assert {r.outcome for r in results} == {Outcome.FALLBACK}
    assert api.reads <= 2
    assert len({id(r) for r in results}) == api.reads, "one fallback hold per read"
    assert f'lameduck_sidecar_fallbacks_total{{reason="api"}} {float(api.reads)}' in exported(h)
    assert "lameduck_sidecar_holds_in_flight 0.0" in exported(h)


async def test_calls_that_find_the_pod_not_deleting_are_one_record_per_read(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="lameduck.sidecar")
    api = PodApi()
    h = holder(api, read_interval=0.2)
    results = await asyncio.gather(*(h.hold(f"c{i}") for i in range(200)))
    assert {r.outcome for r in results} == {Outcome.NOT_DELETING}
    records = [json.loads(r.getMessage()) for r in caplog.records if '"event": "hold"' in r.getMessage()]
    assert 1 <= len(records) == api.reads <= 2
    assert all(len(r["containers"]) <= MAX_CONTAINERS for r in records)
    assert 'lameduck_sidecar_hold_calls_total{answer="not_deleting"} 200.0' in exported(h)


async def test_nothing_learned_is_read_for_a_pod_not_being_deleted() -> None:
    asked: list[str] = []

    async def learned() -> dict[str, Any] | None:
        asked.append("learned")
        return None

    h = holder(PodApi(), learned=learned)
    assert (await h.hold("app")).outcome is Outcome.NOT_DELETING
    assert asked == []


# Whatever comes, a hold's callers, log line and report stay small.


async def test_1500_callers_with_long_names_during_a_hold_keep_its_log_line_and_report_small(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="lameduck.sidecar")
    posted: list[dict[str, Any]] = []

    async def post(event: dict[str, Any]) -> None:
        posted.append(event)

    h = holder(PodApi(deleting=True), post_event=post)
    names = [f"{i:04d}-" + "x" * 58 for i in range(1500)]  # valid, 63 characters each
    results = await asyncio.gather(*(h.hold(name) for name in names))
    assert len({id(r) for r in results}) == 1, "one hold"
    h.terminate()
    assert h.report_task is not None
    await h.report_task
    (line,) = [r.getMessage() for r in caplog.records if '"event": "hold"' in r.getMessage()]
    assert len(line.encode()) < LOG_LINE_BUDGET
    assert len(json.loads(line)["containers"]) == MAX_CONTAINERS
    (event,) = posted
    assert len(json.dumps(event).encode()) < REPORT_BUDGET


def worst_case_result() -> HoldResult:
    big = 10**15
    return HoldResult(Outcome.TIMEOUT, 1e15 / 3, 1e15 / 7, 1e15 / 9, big, big, big, 1e15 / 11, 1e15 / 13)


def test_the_worst_case_report_is_far_below_the_api_servers_limit() -> None:
    """Every part at its bound: names at the API's lengths (pod and ReplicaSet names 253,
    namespace and label values 63), MAX_CONTAINERS callers of 63 characters, every number long."""
    replica_set = "r" * 242 + "-" + "h" * 10
    worst_pod = {
        "metadata": {
            "labels": {"pod-template-hash": "h" * 63},
            "ownerReferences": [{"kind": "ReplicaSet", "name": replica_set}],
        }
    }
    callers = bounded_names([f"{i:04d}-" + "x" * 58 for i in range(1500)])
    message = report_message(
        worst_case_result(),
        policy="ClusterGracefulPolicy/" + "n" * 63 + "/" + "p" * 253,
        max_hold=1e15 / 17,
        grace_period=1e15 / 19,
        pod=worst_pod,
        containers=callers,
        after=AfterRelease(10**15, 1e15 / 23, 10**15, 1e15 / 29),
    )
    event = hold_report_event(message, namespace="n" * 63, pod_name="p" * 253, pod_uid="u" * 36, now=datetime.now(UTC))
    size = len(json.dumps(event).encode())
    assert size < REPORT_BUDGET < API_SERVER_BODY_LIMIT
