"""The shutdown observer: hold reports and terminations into metrics, status and Events."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

import pytest
from prometheus_client import generate_latest

from lameduck_operator.config import OperatorConfig
from lameduck_operator.deletions_seen import MAX_OBSERVED_PODS, MAX_PENDING, PENDING_SECONDS, POD_KEPT_SECONDS
from lameduck_operator.handlers import build_registry
from lameduck_operator.logic.decision import DeploymentEvent
from lameduck_operator.logic.report_trust import Untrusted
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.model import PolicyRef, PolicySpec
from lameduck_operator.runtime import Runtime
from lameduck_operator.settings import Settings
from lameduck_operator.shutdown_observer import ShutdownObserver
from tests.unit.builders import policy as policy_body
from tests.unit.test_report_ledger import injected_pod
from tests.unit.test_report_trust import DELETED_AT
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
        self.known: set[DeploymentRef] = {WEB}
        self.wall = DELETED_AT + 6  # a second after the genuine report was stored
        self.observer = ShutdownObserver(
            self.metrics,
            self.governed.get,
            self.specs.get,
            known=self.known.__contains__,
            changed=self.changed.append,
            post_event=self.post,
            monotonic=lambda: self.now,
            clock=lambda: self.wall,
        )

    def genuine_report(self, event: dict[str, Any] | None = None) -> None:
        """The pod seen being deleted, then its sidecar's report."""
        self.observer.pod_seen(pod())
        self.observer.report_seen(event or report_event())

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
    h.genuine_report()
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
    h.genuine_report()
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
    assert "the app needs longer to stop than its budget gives it" in posted[1].message
    assert sample(h.exported(), 'lameduck_pods_killed_total{cause="over_budget",' + LABELS + "}") == 2
    h.now += 61
    again = pod(KILLED)
    again["metadata"]["uid"] = "p4"
    h.observer.pod_seen(again)
    await _settle()
    assert len(h.posted) == 2


async def test_a_pod_killed_soon_after_it_started_is_said_to_have_likely_lost_its_sigterm(h: Harness) -> None:
    h.observer.lead()
    killed = pod(KILLED)
    # Deleted at 10:00:00 (the deletionTimestamp less its grace period), started 2 s before.
    killed["status"]["containerStatuses"][0]["state"]["terminated"]["startedAt"] = "2026-11-21T09:59:58Z"
    h.observer.pod_seen(killed)
    await _settle()
    assert sample(h.exported(), 'lameduck_pods_killed_total{cause="sigterm_likely_lost",' + LABELS + "}") == 1
    (posted,) = h.posted
    assert "SIGTERM probably came before the app handled it" in posted[1].message


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
    h.genuine_report()
    h.observer.deployment_gone(WEB)
    assert "lameduck_deployment_late_traffic_seconds{" not in h.exported()
    assert "lameduck_deployment_max_hold_seconds{" not in h.exported()
    assert h.observer.status_of(WEB_POLICY) == {"lateTraffic": [], "overBudget": []}


def test_per_deployment_series_stop_at_the_cap_and_status_still_lists_every_deployment(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lameduck_operator.shutdown_observer.MAX_DEPLOYMENT_SERIES", 1)
    api = DeploymentRef("shop", "api")
    h.governed[api] = WEB_POLICY
    h.known.add(api)
    h.observer.lead()
    h.genuine_report()
    api_pod = deleting("p2", "api-7d9f8c-abcde", "api-7d9f8c")
    h.observer.pod_seen(api_pod)
    h.observer.report_seen(report_of(api_pod, "e2"))
    exported = h.exported()
    assert exported.count("lameduck_deployment_max_hold_seconds{") == 1
    assert {e["name"] for e in h.observer.status_of(WEB_POLICY)["lateTraffic"]} == {"web", "api"}


# ---- which reports are believed, wired: the pure cases are in test_report_trust.py ----------


def deleting(uid: str, name: str, replica_set: str, namespace: str = "shop") -> dict[str, Any]:
    """A pod of `replica_set` (pod-template-hash 7d9f8c) deleted at 10:00:00, still running."""
    body = pod()
    body["metadata"] |= {
        "uid": uid,
        "name": name,
        "namespace": namespace,
        "ownerReferences": [{"kind": "ReplicaSet", "name": replica_set}],
    }
    return body


def report_of(
    pod_body: Mapping[str, Any], event_uid: str, namespace: str | None = None, **message: Any
) -> dict[str, Any]:
    """A report about `pod_body`, as an Event in `namespace` (the pod's own by default)."""
    meta = pod_body["metadata"]
    body = report_event(**message)
    where = namespace or meta["namespace"]
    body["metadata"] |= {"uid": event_uid, "namespace": where}
    body["involvedObject"] = {"kind": "Pod", "name": meta["name"], "namespace": where, "uid": meta["uid"]}
    return body


UNTRUSTED = "lameduck_hold_reports_untrusted_total"


def untrusted(text: str, reason: Untrusted) -> float:
    return sample(text, f'{UNTRUSTED}{{reason="{reason.value}"}}')


def test_the_issues_forged_report_reaches_no_other_namespaces_policy(h: Harness) -> None:
    # kubectl create of an Event in namespace attacker, naming small's policy and a made-up
    # Deployment, about a pod that does not exist, saying it held 208m20s.
    small = PolicyRef("GracefulPolicy", "all", "small")
    h.specs[small] = h.specs[WEB_POLICY]
    h.observer.lead()
    fake = deleting("f1", "fake-7d9f8c-xxxxx", "fake-7d9f8c", namespace="attacker")
    forged = report_of(fake, "e9", policy="GracefulPolicy/small/all", holdSeconds=12500, lateTrafficSeconds=10000)
    h.observer.report_seen(forged)
    h.now += PENDING_SECONDS
    h.observer.report_seen(report_of(fake, "e10"))  # any later report ends the wait
    assert h.observer.status_of(small) == {"lateTraffic": [], "overBudget": []}
    assert h.observer.deployments == {}
    assert untrusted(h.exported(), Untrusted.UNKNOWN_POD) == 1
    assert "lameduck_holds_total{" not in h.exported()
    assert h.changed == []


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: (deleting("p1", "web-7d9f8c-abcde", "web-7d9f8c"), "attacker"), Untrusted.NAMESPACE_MISMATCH),
        (lambda: (deleting("p2", "fake-7d9f8c-abcde", "fake-7d9f8c"), None), Untrusted.UNKNOWN_DEPLOYMENT),
        (lambda: (deleting("p3", "jobs-7d9f8c-abcde", "jobs-7d9f8c"), None), Untrusted.NOT_SELECTED),
    ],
    ids=["other-namespace", "unknown-deployment", "not-selected"],
)
def test_a_report_about_a_pod_seen_deleted_is_judged_at_once(h: Harness, build: Any, reason: Untrusted) -> None:
    h.known.add(DeploymentRef("shop", "jobs"))  # known, governed by no policy
    h.observer.lead()
    body, namespace = build()
    h.observer.pod_seen(body)
    h.observer.report_seen(report_of(body, "e1", namespace))
    assert untrusted(h.exported(), reason) == 1
    assert h.observer.deployments == {}


def test_a_report_that_comes_before_its_pods_deletion_is_seen_waits_for_it(h: Harness) -> None:
    h.observer.lead()
    h.observer.report_seen(report_event())
    assert "lameduck_holds_total{" not in h.exported()
    h.observer.pod_seen(pod(deleted=None))  # the pod watch is behind: not deleting yet
    h.observer.pod_seen(pod())
    assert sample(h.exported(), outcome("lameduck_holds_total", "quiet")) == 1


def test_a_report_that_comes_after_its_pod_is_gone_is_still_judged_for_a_while(h: Harness) -> None:
    h.observer.lead()
    h.observer.pod_seen(pod(), deleted=True)
    h.now += POD_KEPT_SECONDS - 1
    h.observer.report_seen(report_event())
    assert sample(h.exported(), outcome("lameduck_holds_total", "quiet")) == 1
    later = deleting("p2", "web-7d9f8c-fghij", "web-7d9f8c")
    h.observer.pod_seen(later, deleted=True)
    h.now += POD_KEPT_SECONDS + 1
    h.observer.report_seen(report_of(later, "e2"))  # forgotten: waits, then is unknown
    h.now += PENDING_SECONDS
    h.observer.pod_seen(pod(deleted=None))
    assert untrusted(h.exported(), Untrusted.UNKNOWN_POD) == 1
    assert sample(h.exported(), outcome("lameduck_holds_total", "quiet")) == 1


def test_one_report_per_pod_the_first_within_bounds(h: Harness) -> None:
    h.observer.lead()
    h.observer.pod_seen(pod())
    h.observer.report_seen(report_event(holdSeconds=12500) | {"metadata": {**report_event()["metadata"], "uid": "e0"}})
    h.observer.report_seen(report_event())
    h.observer.report_seen(report_event(holdSeconds=4.5) | {"metadata": {**report_event()["metadata"], "uid": "e2"}})
    text = h.exported()
    assert sample(text, outcome("lameduck_holds_total", "quiet")) == 1
    assert sample(text, f"lameduck_hold_duration_seconds_sum{{{LABELS}}}") == 4.2
    assert (untrusted(text, Untrusted.OUT_OF_BOUNDS), untrusted(text, Untrusted.DUPLICATE)) == (1, 1)
    assert sample(text, 'lameduck_hold_reports_total{result="untrusted"}') == 2


def series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def test_200_made_up_policy_names_add_no_series(h: Harness) -> None:
    h.observer.lead()
    h.genuine_report()
    before = series(h.exported())
    for i in range(200):
        # Genuine pods of web, whose reports each name another policy: counted under web's.
        body = deleting(f"g{i}", f"web-7d9f8c-{i:05d}", "web-7d9f8c")
        h.observer.pod_seen(body)
        h.observer.report_seen(report_of(body, f"g{i}", policy=f"GracefulPolicy/shop/made-up-{i}"))
        # Forged ones, about pods nobody saw deleted.
        h.observer.report_seen(
            report_of(deleting(f"f{i}", f"x-{i}", "x-7d9f8c"), f"f{i}", policy=f"GracefulPolicy/small/made-up-{i}")
        )
    h.now += PENDING_SECONDS
    h.observer.pod_seen(pod(deleted=None))
    text = h.exported()
    assert series(text) == before
    assert "made-up" not in text
    assert sample(text, outcome("lameduck_holds_total", "quiet")) == 201
    assert untrusted(text, Untrusted.UNKNOWN_POD) == 200


def test_20000_fake_deployments_leave_the_state_bounded(h: Harness) -> None:
    h.observer.lead()
    for i in range(20000):
        fake = deleting(f"f{i}", f"fake{i}-7d9f8c-x", f"fake{i}-7d9f8c", namespace="attacker")
        h.observer.report_seen(report_of(fake, f"e{i}"))
        if i % 5000 == 4999:
            h.now += 1
    observer = h.observer
    assert observer.deployments == {}
    assert observer.deletions._pending_count == len(observer.deletions._pending) == MAX_PENDING
    assert untrusted(h.exported(), Untrusted.UNKNOWN_POD) == 20000 - MAX_PENDING
    h.now += PENDING_SECONDS
    observer.pod_seen(pod(deleted=None))
    seen = observer.deletions
    assert (seen._pending_count, len(seen._pending), len(seen._pods)) == (0, 0, 0)
    assert untrusted(h.exported(), Untrusted.UNKNOWN_POD) == 20000
    # And real pods of 20,000 Deployments nobody governs leave nothing per Deployment.
    for i in range(20000):
        body = deleting(f"r{i}", f"real{i}-7d9f8c-x", f"real{i}-7d9f8c", namespace="attacker")
        observer.pod_seen(body)
        observer.report_seen(report_of(body, f"r{i}"))
        observer.pod_seen(body, deleted=True)
    assert observer.deployments == {}
    assert len(observer.deletions._pods) <= MAX_OBSERVED_PODS
    assert untrusted(h.exported(), Untrusted.UNKNOWN_DEPLOYMENT) == 20000


def test_a_terminations_policy_is_the_operators_never_the_one_the_pod_names(h: Harness) -> None:
    h.observer.lead()
    small = PolicyRef("GracefulPolicy", "all", "small")
    named = pod(CLEAN, sidecar_policy="GracefulPolicy/small/all")
    h.observer.pod_seen(named)
    assert sample(h.exported(), outcome("lameduck_terminations_total", "clean")) == 1
    assert h.observer.status_of(small)["overBudget"] == []
    unknown = deleting("p9", "fake-7d9f8c-abcde", "fake-7d9f8c", namespace="attacker")
    unknown["spec"] = named["spec"]
    unknown["status"] = named["status"]
    h.observer.pod_seen(unknown)
    assert DeploymentRef("attacker", "fake") not in h.observer.deployments


# ---- hold reports that never came --------------------------------------------------------------

MISSING = 'lameduck_hold_reports_missing_total{namespace="shop"}'
LATE = 'lameduck_hold_reports_late_total{namespace="shop"}'


def held_pod() -> dict[str, Any]:
    """Pod p1 of web in shop as lameduck injects it (a Sidecar hold), its app running when deleted."""
    return injected_pod() | {"metadata": pod()["metadata"]}


async def periodic_check(h: Harness) -> None:
    """One round of the check the runtime runs every few seconds, at the harness's time."""
    task = asyncio.create_task(h.observer.missing.expire_forever(0.001))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_pod_gone_without_its_report_is_counted_missing_then_late_once(h: Harness) -> None:
    h.observer.lead()
    h.observer.pod_seen(held_pod())
    h.observer.pod_seen(held_pod(), deleted=True)
    h.now += POD_KEPT_SECONDS - 1
    await periodic_check(h)
    assert MISSING not in h.exported(), "still within the window"
    h.now += 1
    await periodic_check(h)  # no pod event needed: the periodic check counts it
    assert sample(h.exported(), MISSING) == 1
    h.observer.report_seen(report_event())
    h.observer.report_seen(report_event() | {"metadata": {**report_event()["metadata"], "uid": "e2"}})
    text = h.exported()
    assert (sample(text, MISSING), sample(text, LATE)) == (1, 1), "late once; the pod stays counted missing"


def test_a_report_that_came_in_time_counts_no_missing_one(h: Harness) -> None:
    h.observer.lead()
    h.observer.pod_seen(held_pod())
    h.observer.pod_seen(held_pod(), deleted=True)
    h.now += POD_KEPT_SECONDS - 1
    h.observer.report_seen(report_event())
    h.now += 1000
    h.observer.pod_seen(pod(deleted=None))
    assert MISSING not in h.exported()
    assert sample(h.exported(), outcome("lameduck_holds_total", "quiet")) == 1


def test_a_pod_that_holds_nothing_owes_no_report(h: Harness) -> None:
    h.observer.lead()
    for body in (pod(CLEAN), injected_pod(hold="Sleep") | {"metadata": pod()["metadata"]}):
        h.observer.pod_seen(body)
        h.observer.pod_seen(body, deleted=True)
    h.now += 1000
    h.observer.pod_seen(pod(deleted=None))
    assert MISSING not in h.exported()


def test_a_standby_counts_missing_reports_too_since_a_leader_that_loses_the_api_exits_with_its_ledger(
    h: Harness,
) -> None:
    h.observer.pod_seen(held_pod())
    h.observer.pod_seen(held_pod(), deleted=True)
    h.now += POD_KEPT_SECONDS
    h.observer.pod_seen(pod(deleted=None))
    assert sample(h.exported(), MISSING) == 1, "a standby counts what it saw: read with max over replicas"
    second = injected_pod() | {"metadata": deleting("p2", "web-7d9f8c-fghij", "web-7d9f8c")["metadata"]}
    h.observer.pod_seen(second)
    h.observer.pod_seen(second, deleted=True)
    h.observer.lead()
    h.now += POD_KEPT_SECONDS
    h.observer.pod_seen(pod(deleted=None))
    assert sample(h.exported(), MISSING) == 2, "leading changes nothing: each pod once"


# ---- a pod deleted with its namespace: the API server refuses its report ----------------------


def terminating(name: str) -> dict[str, Any]:
    """A namespace being deleted, as its watch shows it until it is gone."""
    metadata = {"name": name, "uid": f"ns-{name}", "deletionTimestamp": "2026-11-21T09:59:59Z"}
    return {"metadata": metadata, "status": {"phase": "Terminating"}}


class NamespacesOnly:
    """The fleet's side of the namespace handler, which these tests do not look at."""

    def namespace_seen(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        pass


async def namespace_event(h: Harness, kind: str, body: dict[str, Any]) -> None:
    """A namespace event through the operator's kopf handler, to the harness's observer."""
    runtime = Runtime(OperatorConfig(Settings(), "lameduck-system", 8080, 1.0, "INFO"))
    runtime.fleet, runtime.shutdown = cast(Any, NamespacesOnly()), h.observer
    registry = build_registry(runtime)
    (handler,) = [
        x.fn for x in registry._watching.get_all_handlers() if getattr(x.fn, "__name__", None) == "namespace_event"
    ]
    called: Any = handler  # the handlers take the event and ignore kopf's other arguments
    await called(event={"type": kind, "object": body})


# What the watches show, in the order this replica sees them (they are not ordered between them).
POD_DELETING, POD_GONE = "pod deleting", "pod gone"
SHOP_TERMINATING, SHOP_GONE = ("MODIFIED", terminating("shop")), ("DELETED", terminating("shop"))
BATCH_TERMINATING = ("MODIFIED", terminating("batch"))


@pytest.mark.parametrize(
    ("seen", "missing"),
    [
        pytest.param(
            [SHOP_TERMINATING, POD_DELETING, POD_GONE, SHOP_GONE], None, id="the namespace's deletion seen first"
        ),
        pytest.param([POD_DELETING, SHOP_TERMINATING, POD_GONE, SHOP_GONE], None, id="seen after the pod's deletion"),
        pytest.param([POD_DELETING, POD_GONE, SHOP_TERMINATING, SHOP_GONE], None, id="seen after the pod was gone"),
        pytest.param([POD_DELETING, POD_GONE], 1, id="an ordinary pod is counted missing"),
        pytest.param([BATCH_TERMINATING, POD_DELETING, POD_GONE], 1, id="another namespace's deletion excuses nothing"),
    ],
)
async def test_a_pod_deleted_with_its_namespace_is_not_counted_missing_whichever_watch_shows_it_first(
    h: Harness, seen: list[Any], missing: int | None
) -> None:
    h.observer.lead()
    for each in seen:
        if each == POD_DELETING:
            h.observer.pod_seen(held_pod())
        elif each == POD_GONE:
            h.observer.pod_seen(held_pod(), deleted=True)
        else:
            await namespace_event(h, *each)
        h.now += 1
    h.now += POD_KEPT_SECONDS
    await periodic_check(h)
    text = h.exported()
    assert (sample(text, MISSING) if MISSING in text else None) == missing
