"""The hold reports that never came (logic/report_ledger.py, pure): which deleted pods owe one,
how each such pod is settled once (received, missing, forgotten, or excused with its namespace)
and a late report counted, in tables, over generated sequences of watch events (Hypothesis) and
at its bounds."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lameduck_operator.logic.intent import plan_deployment
from lameduck_operator.logic.report_ledger import (
    MAX_PODS,
    REPORT_WINDOW_SECONDS,
    Counted,
    PodRef,
    ReportLedger,
    Settled,
    namespace_terminating,
    report_expected,
)
from lameduck_operator.settings import Settings, SidecarSettings
from tests.unit.builders import deployment, policy

WINDOW = REPORT_WINDOW_SECONDS
DELETED = "2026-11-21T10:00:30Z"  # deletionTimestamp: asked for at 10:00:00 with a 30 s grace period
RUNNING = {"running": {"startedAt": "2026-11-21T09:00:00Z"}}


def injected_pod(
    hold: str = "Sidecar", native: bool = True, app_state: dict[str, Any] | None = None, grace: int | None = 30
) -> dict[str, Any]:
    """A pod of web in shop with what lameduck injects into its template (its own intent, so a
    change in how the hold is injected shows here), being deleted unless `grace` is None."""
    settings = Settings(sidecar=SidecarSettings(native=native))
    plan = plan_deployment(deployment(), policy("web", spec={"hold": {"method": hold}}), settings)
    spec = copy.deepcopy(plan.intent["spec"]["template"]["spec"])
    metadata: dict[str, Any] = {"name": "web-7d9f8c-abcde", "namespace": "shop", "uid": "p1"}
    if grace is not None:
        metadata |= {"deletionTimestamp": DELETED, "deletionGracePeriodSeconds": grace}
    statuses = [{"name": "app", "state": RUNNING if app_state is None else app_state}]
    return {"metadata": metadata, "spec": spec, "status": {"containerStatuses": statuses}}


def terminated(started: str | None, finished: str) -> dict[str, Any]:
    return {"terminated": {"exitCode": 0, "finishedAt": finished} | ({"startedAt": started} if started else {})}


def without_sidecar(pod: dict[str, Any]) -> dict[str, Any]:
    spec = pod["spec"]
    spec["initContainers"] = [c for c in spec.get("initContainers") or [] if c["name"] != "lameduck"]
    spec["containers"] = [c for c in spec["containers"] if c["name"] != "lameduck"]
    return pod


P1 = PodRef("p1", "shop", "web-7d9f8c-abcde")


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param(injected_pod(), P1, id="native sidecar, Sidecar hold, app running: expected"),
        pytest.param(injected_pod(native=False), P1, id="classic sidecar: expected"),
        pytest.param(
            injected_pod(app_state=terminated("2026-11-21T09:00:00Z", "2026-11-21T10:00:06Z")),
            P1,
            id="first seen after its app exited: expected",
        ),
        pytest.param(injected_pod(hold="Sleep"), None, id="Sleep hold: the sidecar reports none"),
        pytest.param(injected_pod(grace=None), None, id="not being deleted: a container restart holds nothing"),
        pytest.param(injected_pod(grace=0), None, id="forced deletion: gone before the sidecar reads it"),
        pytest.param(
            injected_pod(app_state={"waiting": {"reason": "ContainerCreating"}}),
            None,
            id="deleted before the app started: no preStop runs",
        ),
        pytest.param(
            injected_pod(app_state=terminated("2026-11-21T09:00:00Z", "2026-11-21T09:30:00Z")),
            None,
            id="the app had exited before the deletion",
        ),
        pytest.param(
            injected_pod(app_state=terminated(None, "2026-11-21T10:00:06Z")),
            None,
            id="ended without ever starting (its status unknown at deletion)",
        ),
        pytest.param(without_sidecar(injected_pod()), None, id="the hold but no sidecar to answer it"),
    ],
)
def test_a_report_is_expected_of_a_deleted_pod_whose_sidecar_held(pod: dict[str, Any], expected: PodRef | None) -> None:
    assert report_expected(pod) == expected


# --- the ledger, step by step ---------------------------------------------------------------

# A step: ("deleting" | "gone" | "report" | "report as web-other" | "expire" | one of NAMESPACE_SEEN,
# seconds after the start).
Step = tuple[str, float]
# What the namespace watch shows: (namespace, terminating); not terminating is also how it is seen gone.
NAMESPACE_SEEN = {
    "shop terminating": ("shop", True),
    "shop gone": ("shop", False),
    "shop created again": ("shop", False),
    "batch terminating": ("batch", True),
}
OTHER_NAME = PodRef("p1", "shop", "web-other")


def play(steps: list[Step], max_pods: int = MAX_PODS) -> list[Settled]:
    """P1's watch events and reports as the observer passes them, with expire() before each as the
    observer calls it; what was counted, in order."""
    ledger = ReportLedger(WINDOW, max_pods)
    counted: list[Counted] = []
    for what, at in steps:
        counted += ledger.expire(at)
        if what == "deleting":
            counted += ledger.deleting(P1)
        elif what == "gone":
            ledger.gone(P1.uid, at)
        elif what == "report":
            counted += ledger.reported(P1, at)
        elif what == "report as web-other":
            counted += ledger.reported(OTHER_NAME, at)
        elif what in NAMESPACE_SEEN:
            counted += ledger.namespace_seen(*NAMESPACE_SEEN[what])
    assert all(c.pod == P1 for c in counted)
    return [c.settled for c in counted]


RECEIVED, MISSING, LATE, EXCUSED = Settled.RECEIVED, Settled.MISSING, Settled.LATE, Settled.EXCUSED


@pytest.mark.parametrize(
    ("steps", "counted"),
    [
        pytest.param([("deleting", 0), ("report", 10), ("gone", 20), ("expire", 1000)], [RECEIVED], id="before gone"),
        pytest.param(
            [("deleting", 0), ("gone", 20), ("report", 20 + WINDOW - 0.1), ("expire", 1000)],
            [RECEIVED],
            id="within the window after gone",
        ),
        pytest.param(
            [("deleting", 0), ("gone", 20), ("expire", 20 + WINDOW - 0.1)], [], id="not missing before the window ends"
        ),
        pytest.param([("deleting", 0), ("gone", 20), ("expire", 20 + WINDOW)], [MISSING], id="missing as it ends"),
        pytest.param(
            [("deleting", 0), ("gone", 20), ("report", 20 + WINDOW), ("report", 500)],
            [MISSING, LATE],
            id="a late report: counted late once, the pod stays missing",
        ),
        pytest.param(
            [("deleting", 0), ("gone", 20), ("expire", 20 + WINDOW), ("report as web-other", 500)],
            [MISSING],
            id="a report naming another pod on a missing uid is not late",
        ),
        pytest.param(
            [("report", 0), ("deleting", 5), ("gone", 20), ("expire", 1000)],
            [RECEIVED],
            id="the report before the pod watch showed the deletion",
        ),
        pytest.param(
            [("report", 0), ("deleting", WINDOW), ("gone", WINDOW + 1), ("expire", 1000)],
            [MISSING],
            id="a report that waited for its pod longer than the window is let go",
        ),
        pytest.param(
            [("deleting", 0), ("report as web-other", 5), ("gone", 20), ("expire", 1000)],
            [MISSING],
            id="a report naming another pod on the uid is not this pod's",
        ),
        pytest.param(
            [("report as web-other", 0), ("report", 1), ("deleting", 5), ("gone", 20), ("expire", 1000)],
            [RECEIVED],
            id="and does not push this pod's early report out",
        ),
        pytest.param(
            [("deleting", 0), ("deleting", 1), ("report", 2), ("report", 3), ("gone", 4), ("gone", 5), ("expire", 999)],
            [RECEIVED],
            id="seen and reported twice: counted once",
        ),
        pytest.param([("deleting", 0), ("expire", 100_000)], [], id="never seen gone: waits"),
        pytest.param([("report", 0), ("expire", 1000)], [], id="a report of a pod never expected counts nothing"),
        pytest.param(
            [("deleting", 0), ("gone", 1), ("expire", 1 + WINDOW), ("deleting", 2 + WINDOW), ("expire", 999)],
            [MISSING],
            id="a pod counted missing is not expected again",
        ),
    ],
)
def test_each_expected_pod_is_settled_once(steps: list[Step], counted: list[Settled]) -> None:
    assert play(steps) == counted


@pytest.mark.parametrize(
    ("namespace", "terminating"),
    [
        pytest.param({"metadata": {"name": "shop"}, "status": {"phase": "Active"}}, False, id="active"),
        pytest.param({"metadata": {"name": "shop"}}, False, id="no status yet"),
        pytest.param(
            {"metadata": {"name": "shop", "deletionTimestamp": DELETED}, "status": {"phase": "Terminating"}},
            True,
            id="being deleted",
        ),
        pytest.param(
            {"metadata": {"name": "shop", "deletionTimestamp": DELETED}, "status": {"phase": "Active"}},
            True,
            id="deletion asked for, phase not yet updated",
        ),
        pytest.param({"metadata": {"name": "shop"}, "status": {"phase": "Terminating"}}, True, id="phase only"),
    ],
)
def test_a_namespace_with_a_deletion_timestamp_or_phase_terminating_is_being_deleted(
    namespace: dict[str, Any], terminating: bool
) -> None:
    assert namespace_terminating(namespace) is terminating


# The API server refuses the report of a pod whose namespace is terminating (403): the two watches
# are not ordered, so the namespace's deletion may be seen before or after the pod's.
@pytest.mark.parametrize(
    ("steps", "counted"),
    [
        pytest.param(
            [("shop terminating", 0), ("deleting", 1), ("gone", 10), ("shop gone", 11), ("expire", 1000)],
            [EXCUSED],
            id="the namespace seen terminating before the pod's deletion",
        ),
        pytest.param(
            [("deleting", 0), ("shop terminating", 1), ("gone", 10), ("shop gone", 11), ("expire", 1000)],
            [EXCUSED],
            id="the namespace seen terminating after the pod's deletion",
        ),
        pytest.param(
            [("deleting", 0), ("gone", 10), ("shop terminating", 10 + WINDOW - 0.1), ("shop gone", 200)],
            [EXCUSED],
            id="the namespace seen terminating after the pod was gone, within its window",
        ),
        pytest.param(
            [("shop terminating", 0), ("deleting", 1), ("shop gone", 9), ("deleting", 9.5), ("gone", 10)],
            [EXCUSED],
            id="the namespace seen gone before the pod's last events: excused once",
        ),
        pytest.param(
            [("deleting", 0), ("shop terminating", 1), ("shop terminating", 2), ("gone", 10), ("expire", 1000)],
            [EXCUSED],
            id="the namespace seen terminating twice: excused once",
        ),
        pytest.param(
            [("shop terminating", 0), ("deleting", 1), ("gone", 10), ("report", 20), ("expire", 1000)],
            [EXCUSED],
            id="a report of an excused pod counts nothing, not late either",
        ),
        pytest.param(
            [("deleting", 0), ("report", 5), ("shop terminating", 6), ("gone", 10), ("expire", 1000)],
            [RECEIVED],
            id="a report that came before is received",
        ),
        pytest.param(
            [("deleting", 0), ("gone", 10), ("expire", 10 + WINDOW), ("shop terminating", 200)],
            [MISSING],
            id="the namespace seen terminating after the window: the pod stays counted missing",
        ),
        pytest.param(
            [("batch terminating", 0), ("deleting", 1), ("gone", 10), ("expire", 1000)],
            [MISSING],
            id="another namespace being deleted excuses nothing",
        ),
        pytest.param(
            [("shop terminating", 0), ("shop created again", 5), ("deleting", 10), ("gone", 20), ("expire", 1000)],
            [MISSING],
            id="a namespace created again under its name: its pods owe reports again",
        ),
    ],
)
def test_a_pod_deleted_with_its_namespace_owes_no_report_whichever_watch_shows_it_first(
    steps: list[Step], counted: list[Settled]
) -> None:
    assert play(steps) == counted


def test_the_oldest_pod_waiting_is_forgotten_beyond_the_bound_and_counted() -> None:
    ledger = ReportLedger(WINDOW, max_pods=3)
    pods = [PodRef(f"p{n}", "shop", f"web-{n}") for n in range(6)]
    assert ledger.reported(pods[1], 0) == []
    counted = []
    for pod in pods:
        counted += ledger.deleting(pod)
    assert counted == [
        Counted(pods[1], RECEIVED),
        Counted(pods[0], Settled.FORGOTTEN),
        Counted(pods[2], Settled.FORGOTTEN),
    ], "p1 reported: let go without a count"
    assert ledger.deleting(pods[0]) == [], "a pod forgotten is not expected again by its later events"
    assert ledger.reported(pods[0], 1) == [], "nor is its report counted"
    assert ledger.deleting(pods[1]) == [], "nor is a pod let go once reported"
    for pod in pods:
        ledger.gone(pod.uid, 2)
    assert [c.pod for c in ledger.expire(1000)] == pods[3:], "the three still awaited, missing; p1 not again"


def test_every_kind_of_entry_is_bounded() -> None:
    ledger = ReportLedger(WINDOW, max_pods=10)
    now = 0.0
    for n in range(1000):
        now += 0.01
        ledger.reported(PodRef(f"early-{n}", "shop", "web"), now)  # reports of pods never seen
        ledger.deleting(PodRef(f"stuck-{n}", "shop", "web"))  # pods never seen gone
        missing = PodRef(f"gone-{n}", "shop", "web")
        ledger.deleting(missing)
        ledger.gone(missing.uid, now - WINDOW)
        ledger.expire(now)
        assert len(ledger) <= 3 * 10


# --- properties ------------------------------------------------------------------------------

UIDS = 4
OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "deleting",
                "gone",
                "report",
                "report as another pod",
                "namespace terminating",
                "namespace not terminating",
            ]
        ),
        st.integers(0, UIDS - 1),
        st.sampled_from([0.0, 0.5, 30.0, WINDOW - 1, WINDOW, 300.0]),
    ),
    max_size=50,
)


class Run:
    """Generated watch events played through a ledger, expire() before each as the observer does,
    then every pod gone and every window over; what was counted for each pod, and when what
    happened (the pods' namespace, shop, seen terminating or not among them)."""

    def __init__(self, ops: list[tuple[str, int, float]], max_pods: int, check: Callable[[ReportLedger], None]) -> None:
        ledger = ReportLedger(WINDOW, max_pods)
        self.counted: dict[str, list[Settled]] = defaultdict(list)
        self.deleted: dict[str, float] = {}
        self.gone: dict[str, float] = {}
        self.reports: dict[str, list[float]] = defaultdict(list)
        # When shop was seen turning terminating (step, time); at which step each pod's deletion was
        # first seen, and whether shop was terminating then (steps order events of the same time).
        self.terminating: list[tuple[int, float]] = []
        self.deleted_step: dict[str, int] = {}
        self.deleted_while_terminating: set[str] = set()
        terminating = False
        now = 0.0
        for index, (what, n, step) in enumerate(ops):
            now += step
            self._note(ledger.expire(now))
            pod = PodRef(f"p{n}", "shop", f"web-{n}")
            if what == "deleting" and pod.uid not in self.gone:  # a pod's events end when it is gone
                if pod.uid not in self.deleted:
                    self.deleted_step[pod.uid] = index
                    if terminating:
                        self.deleted_while_terminating.add(pod.uid)
                self.deleted.setdefault(pod.uid, now)
                self._note(ledger.deleting(pod))
            elif what == "gone" and pod.uid in self.deleted and pod.uid not in self.gone:
                self.gone[pod.uid] = now
                ledger.gone(pod.uid, now)
            elif what == "report":
                self.reports[pod.uid].append(now)
                self._note(ledger.reported(pod, now))
            elif what == "report as another pod":
                self._note(ledger.reported(PodRef(pod.uid, "shop", "someone-else"), now))
            elif what.startswith("namespace"):
                turning = what == "namespace terminating" and not terminating
                terminating = what == "namespace terminating"
                if turning:
                    self.terminating.append((index, now))
                self._note(ledger.namespace_seen("shop", terminating))
            check(ledger)
        for uid in self.deleted.keys() - self.gone.keys():
            self.gone[uid] = now
            ledger.gone(uid, now)
        self._note(ledger.expire(now + WINDOW))

    def _note(self, counted: list[Counted]) -> None:
        for each in counted:
            self.counted[each.pod.uid].append(each.settled)


ENDS = {Settled.RECEIVED, Settled.MISSING, Settled.FORGOTTEN, Settled.EXCUSED}


def settled(run: Run, once: bool = True) -> None:
    """Each pod seen being deleted ends counted: exactly once within the bound; at least once past
    it, where the ledger may let go of a settled pod and a later event of it (a pod still being
    deleted after more than max_pods others settled) expects it again. A report alone counts
    nothing; a late one only right after missing."""
    for uid in run.deleted:
        ends = len([s for s in run.counted[uid] if s in ENDS])
        assert ends == 1 if once else ends >= 1, (uid, run.counted[uid])
    assert run.counted.keys() <= run.deleted.keys(), "a report alone counts nothing"
    for counted in run.counted.values():
        for before, each in zip([None, *counted[:-1]], counted, strict=True):
            if each is Settled.LATE:
                assert before is Settled.MISSING, "late once, right after missing"


@given(OPS)
def test_every_expected_pod_ends_counted_exactly_once_received_only_when_reported_excused_only_with_its_namespace(
    ops: list[tuple[str, int, float]],
) -> None:
    run = Run(ops, MAX_PODS, lambda _: None)
    settled(run)
    for uid, deleted in run.deleted.items():
        reports, gone = run.reports[uid], run.gone[uid]
        received = Settled.RECEIVED in run.counted[uid]
        # Its namespace was known terminating when its deletion was seen, or turned so while it was awaited.
        with_namespace = uid in run.deleted_while_terminating or any(
            step > run.deleted_step[uid] and at < gone + WINDOW for step, at in run.terminating
        )
        if Settled.EXCUSED in run.counted[uid]:
            assert with_namespace, "excused only with its namespace being deleted"
        elif with_namespace:
            assert received, "with its namespace being deleted: excused, unless its report came first"
        elif any(deleted <= at < gone + WINDOW for at in reports):
            assert received, "a report after the deletion was seen and within the window is received"
        if not any(at < gone + WINDOW for at in reports):
            assert not received, "received only with a report of the pod's own name in time"
        assert Settled.FORGOTTEN not in run.counted[uid], "nothing forgotten within the bound"


@given(OPS)
def test_beyond_its_bound_no_pod_goes_uncounted_and_the_ledger_stays_bounded(
    ops: list[tuple[str, int, float]],
) -> None:
    def bounded(ledger: ReportLedger) -> None:
        assert len(ledger) <= 3 * 2

    settled(Run(ops, 2, bounded), once=False)
