"""The learned delays: kept per known Deployment, published per namespace in lameduck-learned."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from prometheus_client import generate_latest

from lameduck_operator.learned_delays import LearnedDelays
from lameduck_operator.logic.learning import Learned, learned_value, starting_value
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.model import HoldSpec
from tests.unit.fake_api import FakeApi
from tests.unit.test_learning import hold, report
from tests.unit.test_shutdown import pod, report_event
from tests.unit.test_shutdown_observer import WEB, Harness, sample

API = DeploymentRef("shop", "api")
ELSEWHERE = DeploymentRef("blog", "web")


class Loop:
    def __init__(self, known: set[DeploymentRef] | None = None) -> None:
        self.api = FakeApi()
        self.metrics = OperatorMetrics()
        self.known = {WEB, API, ELSEWHERE} if known is None else known
        self.hold: dict[DeploymentRef, HoldSpec] = dict.fromkeys(self.known, hold(30.0))
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.learned = LearnedDelays(
            self.api,
            self.metrics,
            known=self.known.__contains__,
            hold_of=self.hold.get,
            call_later=lambda delay, callback: self.timers.append((delay, callback)),
        )

    def value(self, namespace: str, name: str) -> dict[str, object]:
        loaded = json.loads(self.api.learned[namespace][name])
        assert isinstance(loaded, dict)
        return loaded


@pytest.fixture
def loop() -> Loop:
    return Loop()


async def test_what_is_learned_is_published_per_namespace_at_the_next_publish(loop: Loop) -> None:
    loop.learned.reports_changed(WEB, [report(pooled=4.0)], hold(30.0))
    loop.learned.reports_changed(ELSEWHERE, [report(), report()], hold(30.0))
    assert loop.api.learned == {}, "batched: nothing is written until the publish"
    await loop.learned.publish()
    assert loop.value("shop", "web") == {"version": 1, "pooledDelaySeconds": 5.0, "reports": 1}
    assert loop.value("blog", "web") == {"version": 1, "pooledDelaySeconds": 0.0, "reports": 2}
    assert loop.api.calls == ["learned read blog", "learned blog", "learned read shop", "learned shop"]


async def test_only_a_namespace_whose_content_changed_is_written_again(loop: Loop) -> None:
    loop.learned.reports_changed(WEB, [report(pooled=4.0)], hold(30.0))
    await loop.learned.publish()
    loop.api.calls.clear()
    loop.learned.reports_changed(WEB, [report(pooled=4.0)], hold(30.0))  # the same value
    await loop.learned.publish()
    assert loop.api.calls == []
    loop.learned.reports_changed(WEB, [report(pooled=4.0), report(pooled=8.0)], hold(30.0))
    await loop.learned.publish()
    assert loop.api.calls == ["learned shop"], "read back once per namespace, then only written"
    assert loop.value("shop", "web")["pooledDelaySeconds"] == 10.0


async def test_a_gone_deployments_key_is_removed(loop: Loop) -> None:
    loop.learned.reports_changed(WEB, [report(pooled=4.0)], hold(30.0))
    loop.learned.reports_changed(API, [report()], hold(30.0))
    await loop.learned.publish()
    loop.learned.forget(WEB)
    assert loop.learned.learned(WEB) is None
    await loop.learned.publish()
    assert set(loop.api.learned["shop"]) == {"api"}
    loop.learned.forget(API)
    await loop.learned.publish()
    assert loop.api.learned["shop"] == {}
    assert loop.learned.values == {}, "nothing kept for a namespace with nothing learned"


async def test_a_starting_budget_is_written_when_it_changes_and_gives_way_to_what_is_learned(loop: Loop) -> None:
    loop.learned.starting_budget(WEB, 60.0)
    await loop.learned.publish()
    assert loop.value("shop", "web") == {"version": 1, "reports": 0, "learnedMaxHoldSeconds": 60.0}
    loop.api.calls.clear()
    loop.learned.starting_budget(WEB, 60.0)  # judged again, the same
    loop.learned.starting_budget(API, None)  # never had one
    await loop.learned.publish()
    assert loop.api.calls == []
    loop.learned.reports_changed(WEB, [report(pooled=4.0)], hold(30.0))
    await loop.learned.publish()
    assert loop.value("shop", "web") == {"version": 1, "pooledDelaySeconds": 5.0, "reports": 1}
    loop.learned.starting_budget(WEB, None)
    loop.learned.forget(WEB)
    await loop.learned.publish()
    assert loop.api.learned["shop"] == {}
    assert loop.learned.starting == {}, "nothing kept for a namespace with no starting budget"


async def test_a_restart_adopts_no_starting_budget_as_learned() -> None:
    loop = Loop(known={WEB, API})
    loop.hold[WEB] = hold(30.0, cap=120.0)
    loop.api.learned["shop"] = {"web": starting_value(60.0)}
    loop.learned.reports_changed(API, [report()], hold(30.0))  # a write in shop: reads it back
    await loop.learned.publish()
    assert loop.learned.learned_max_hold(WEB) is None
    assert set(loop.api.learned["shop"]) == {"api"}, "until this leader's decision gives it again"


async def test_after_a_restart_what_was_published_is_kept_for_known_deployments_only() -> None:
    loop = Loop(known={WEB, API})
    loop.hold[API] = hold(2.0)  # its policy's maxHold was lowered meanwhile
    loop.api.learned["shop"] = {
        "web": learned_value(Learned(5.0, 4)),
        "api": learned_value(Learned(6.0, 2)),
        "gone": learned_value(Learned(7.0, 1)),
        "garbage": "not json",
    }
    loop.learned.reports_changed(WEB, [report(pooled=1.0)], hold(30.0))  # reported since: this wins
    await loop.learned.publish()
    assert loop.value("shop", "web") == {"version": 1, "pooledDelaySeconds": 1.25, "reports": 1}
    assert loop.value("shop", "api") == {"version": 1, "pooledDelaySeconds": 2.0, "reports": 2}
    assert set(loop.api.learned["shop"]) == {"web", "api"}


async def test_a_failed_write_is_counted_and_retried_with_a_backoff(loop: Loop) -> None:
    loop.learned.reports_changed(WEB, [report(pooled=4.0)], hold(30.0))
    loop.api.fail_next["learned shop"] = RuntimeError("503 unavailable")
    await loop.learned.publish()
    text = generate_latest(loop.metrics.registry).decode()
    assert sample(text, 'lameduck_api_errors_total{operation="learned"}') == 1
    (delay, retry), *_ = loop.timers
    assert delay == 1.0
    retry()
    await loop.learned.publish()
    assert loop.value("shop", "web")["pooledDelaySeconds"] == 5.0


# ---- wired to the shutdown observer: trusted reports only ------------------------------


def observed(h: Harness) -> Loop:
    loop = Loop(known=h.known)
    h.observer.learned = loop.learned
    return loop


async def test_a_trusted_report_teaches_the_next_holds_and_shows_in_status_and_metrics() -> None:
    h = Harness()
    loop = observed(h)
    h.observer.lead()
    h.genuine_report(report_event(pooledQuietSeconds=2.0, lostAfterRelease=3, learnedDelaySeconds=None))
    assert loop.learned.learned(WEB) is not None
    (entry,) = h.observer.status_of(h.governed[WEB])["lateTraffic"]
    assert (entry["lostAfterRelease"], entry["learnedDelay"]) == (3, "5.1s")  # 1.5 x the 3.4 s held after stage 1
    await loop.learned.publish()
    assert loop.value("shop", "web") == {"version": 1, "pooledDelaySeconds": 5.1, "reports": 1}
    text = h.exported()
    series = 'deployment="web",namespace="shop",policy="GracefulPolicy shop/web"'
    assert sample(text, f"lameduck_deployment_learned_delay_seconds{{{series}}}") == 5.1
    assert sample(text, f"lameduck_deployment_requests_lost_after_release{{{series}}}") == 3
    labels = 'namespace="shop",policy="GracefulPolicy shop/web"'
    assert sample(text, f"lameduck_requests_lost_after_release_total{{{labels}}}") == 3
    h.observer.deployment_gone(WEB)
    assert loop.learned.learned(WEB) is None


def test_an_untrusted_report_teaches_nothing() -> None:
    h = Harness()
    loop = observed(h)
    h.observer.pod_seen(pod())
    h.observer.report_seen(report_event(pooledQuietSeconds=500.0))  # after the report was stored
    assert loop.learned.values == {}
    assert h.observer.status_of(h.governed[WEB])["lateTraffic"] == []
