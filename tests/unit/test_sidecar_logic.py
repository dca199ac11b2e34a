"""The sidecar's pure parts: the hold state machine, slice judgement, /proc/net/tcp, config."""

from __future__ import annotations

import pytest

from lameduck_sidecar.config import ConfigError, load_config
from lameduck_sidecar.hold import Hold, HoldSettings, Outcome, deletion_grace_period, should_hold
from lameduck_sidecar.slices import Listing, listings, released, same_address
from lameduck_sidecar.traffic import Probe

S = HoldSettings(propagation_delay=2.0, quiet_period=1.0, max_hold=30.0, api_timeout=3.0, fallback_delay=10.0)


def run(events: list[tuple[float, str, int]], until: float, settings: HoldSettings = S) -> tuple[float, Outcome]:
    """Feed (time, event, n) to a hold started at 0 and step time by 0.05 until it ends."""
    hold = Hold(settings, 0.0)
    now = 0.0
    pending = sorted(events)
    while now <= until:
        while pending and pending[0][0] <= now:
            _, kind, n = pending.pop(0)
            if kind == "released":
                hold.slices_released(now, listed=bool(n))
            elif kind == "api_failed":
                hold.api_failed(now)
            else:
                hold.traffic(now, n)
        result = hold.result(now)
        if result is not None:
            return round(result.total, 2), result.outcome
        now = round(now + 0.05, 2)
    raise AssertionError("hold never ended")


@pytest.mark.parametrize(
    ("events", "ends_at", "outcome"),
    [
        # slices let go at 1s; nothing more comes: propagationDelay decides
        ([(1.0, "released", 1)], 3.0, Outcome.QUIET),
        # connections keep arriving after stage 1: wait for quiet after the last one
        ([(1.0, "released", 1), (2.5, "conn", 1), (3.5, "conn", 2)], 4.5, Outcome.QUIET),
        # a connection before stage 1 ends does not extend the hold
        ([(0.5, "conn", 1), (1.0, "released", 1)], 3.0, Outcome.QUIET),
        # no slice lists the pod: no propagation to wait for, only quiet
        ([(0.2, "released", 0)], 1.2, Outcome.NOT_IN_ANY_SLICE),
        # API unreachable: stage 2 with the fallback minimum
        ([(3.0, "api_failed", 0)], 13.0, Outcome.FALLBACK),
        # slices never let go: maxHold
        ([], 30.0, Outcome.TIMEOUT),
        # traffic never stops: maxHold
        ([(1.0, "released", 1)] + [(1.0 + i * 0.5, "conn", 1) for i in range(1, 80)], 30.0, Outcome.TIMEOUT),
    ],
)
def test_hold(events: list[tuple[float, str, int]], ends_at: float, outcome: Outcome) -> None:
    assert run(events, 40) == (ends_at, outcome)


def test_fallback_never_exceeds_max_hold() -> None:
    short = HoldSettings(propagation_delay=1, quiet_period=0.5, max_hold=5, api_timeout=1, fallback_delay=10)
    assert run([(1.0, "api_failed", 0)], 10, short) == (5.0, Outcome.FALLBACK)


@pytest.mark.parametrize(
    ("grace", "drain", "ends_at", "outcome"),
    [
        # deleted with 10 s and the app needs 8 s: 2 s of hold at most, before propagation ends
        (10.0, 8.0, 2.0, Outcome.TIMEOUT),
        # the grace period leaves room: the hold ends as it would have
        (60.0, 8.0, 3.0, Outcome.QUIET),
        # the drain alone exceeds the grace period: no hold at all
        (5.0, 8.0, 0.0, Outcome.TIMEOUT),
        # never beyond maxHold, however long the grace period
        (600.0, 0.0, 30.0, Outcome.TIMEOUT),
    ],
)
def test_deletion_grace_period_caps_the_hold(grace: float, drain: float, ends_at: float, outcome: Outcome) -> None:
    settings = HoldSettings(propagation_delay=2.0, quiet_period=1.0, max_hold=30.0, drain_timeout=drain)
    hold = Hold(settings, 0.0)
    hold.grace_period(grace)
    released_at = 1.0 if outcome is Outcome.QUIET else None
    now = 0.0
    while (result := hold.result(now)) is None:
        if released_at is not None and now >= released_at:
            hold.slices_released(now, listed=True)
        now = round(now + 0.05, 2)
    assert (round(result.total, 2), result.outcome) == (ends_at, outcome)


def test_requests_after_a_pause_on_open_connections_keep_the_pod_busy_like_new_connections() -> None:
    hold = Hold(S, 0.0)
    hold.slices_released(1.0, listed=True)
    hold.traffic(3.5, new_connections=0, streaks=(3.5, 2.0))  # streaks that began after stage 1
    assert hold.result(4.4) is None, "quiet starts again after the last request"
    result = hold.result(4.5)
    assert result is not None
    assert (result.outcome, result.connections_after_stage1, result.reused_after_stage1) == (Outcome.QUIET, 0, 2)


def run_busy(
    streak_start: float, busy_from: float, busy_until: float, learned: float | None = 0.0
) -> tuple[float, Outcome, int, int]:
    """Stage 1 ends at 1 s (S: propagationDelay 2 s, quietPeriod 1 s); one open connection is
    busy every poll from busy_from to busy_until in a streak that began at streak_start. The
    Deployment's learned delay: 0 by default (its late traffic was only ever pinned clients)."""
    hold = Hold(S, 0.0, learned)
    now = 0.0
    while True:
        if now >= 1.0:
            hold.slices_released(1.0, listed=True)
        if busy_from <= now <= busy_until:
            hold.traffic(now, 0, streaks=(streak_start,))
        result = hold.result(now)
        if result is not None:
            return round(result.total, 2), result.outcome, result.reused_after_stage1, result.pinned_after_stage1
        now = round(now + 0.1, 2)


@pytest.mark.parametrize(
    ("streak_start", "busy_from", "busy_until", "ends_at", "reused", "pinned"),
    [
        # busy since before stage 1, and on: waited for until 1 + 2 s, then taken as pinned
        (0.0, 0.0, 30.0, 3.9, 20, True),
        # it stops before that: quiet after its last request
        (0.0, 0.0, 2.5, 3.5, 16, False),
        # a streak that began at 2.5 s (after a pause) is waited for until 4.5 s
        (2.5, 2.5, 30.0, 5.4, 20, True),
        # and one that stops at 4 s: quiet at 5 s
        (2.5, 2.5, 4.0, 5.0, 16, False),
    ],
)
def test_a_busy_connection_is_waited_for_until_propagation_delay_after_its_streak_began(  # noqa: PLR0917
    streak_start: float, busy_from: float, busy_until: float, ends_at: float, reused: int, pinned: bool
) -> None:
    """An L7 proxy's pool that has yet to learn, or a connection pinned to the pod, in a hold
    whose Deployment learned a delay of 0: the policy's propagationDelay decides."""
    total, outcome, counted, found_pinned = run_busy(streak_start, busy_from, busy_until)
    assert (total, outcome, counted) == (ends_at, Outcome.QUIET, reused)
    # polls every 0.1 s from the end of propagationDelay until quiet: each counted as pinned
    assert found_pinned == (10 if pinned else 0)


@pytest.mark.parametrize(
    ("learned", "busy_until", "ends_at", "outcome", "reused", "pinned"),
    [
        # a learned delay longer than propagationDelay: waited for until 1 + 4 s, then pinned
        (4.0, 30.0, 5.9, Outcome.QUIET, 40, 10),
        # a proxy that lets go at 4.5 s within the learned 4 s: quiet after it, nothing pinned
        (4.0, 4.5, 5.5, Outcome.QUIET, 36, 0),
        # a learned delay shorter than propagationDelay never shortens it: as with 0
        (1.0, 30.0, 3.9, Outcome.QUIET, 20, 10),
        # no history, a learning hold: waited for until it goes quiet...
        (None, 8.0, 9.0, Outcome.QUIET, 71, 0),
        # ...but never past maxHold (30 s)
        (None, 40.0, 30.0, Outcome.TIMEOUT, 291, 0),
    ],
    ids=["learned-longer", "learned-proxy-lets-go", "learned-shorter", "learning-quiet", "learning-max-hold"],
)
def test_a_busy_connection_is_waited_for_as_long_as_the_deployment_learned(  # noqa: PLR0917
    learned: float | None, busy_until: float, ends_at: float, outcome: Outcome, reused: int, pinned: int
) -> None:
    total, found_outcome, counted, found_pinned = run_busy(0.0, 0.0, busy_until, learned)
    assert (total, found_outcome, counted, found_pinned) == (ends_at, outcome, reused, pinned)


def test_a_hold_says_which_learned_delay_it_used() -> None:
    for learned in (None, 0.0, 4.5):
        hold = Hold(S, 0.0, learned)
        hold.slices_released(1.0, listed=True)
        result = hold.result(3.0)
        assert result is not None
        assert result.learned_delay == learned


def test_no_traffic_reported_leaves_the_quiet_period_running() -> None:
    hold = Hold(S, 0.0)
    hold.slices_released(1.0, listed=True)
    hold.traffic(2.5, 0, ())
    assert hold.last_traffic is None
    assert hold.result(3.0) is not None


@pytest.mark.parametrize(
    ("pod", "holds"),
    [
        ({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"}}, True),
        ({"metadata": {"name": "p"}}, False),  # a container restart: kubelet runs preStop then too
        ({"metadata": {"name": "p", "deletionTimestamp": None}}, False),
        ({}, False),
        (None, True),  # unreadable: a missed hold loses requests, an extra one only delays a restart
    ],
)
def test_only_a_pod_being_deleted_is_held(pod: dict[str, object] | None, holds: bool) -> None:
    assert should_hold(pod) is holds


@pytest.mark.parametrize(
    ("pod", "seconds"),
    [
        ({"metadata": {"deletionGracePeriodSeconds": 45}}, 45.0),
        ({"metadata": {"deletionGracePeriodSeconds": 0}}, 0.0),
        ({"metadata": {"deletionGracePeriodSeconds": True}}, None),
        ({"metadata": {}}, None),
        (None, None),
    ],
)
def test_deletion_grace_period(pod: dict[str, object] | None, seconds: float | None) -> None:
    assert deletion_grace_period(pod) == seconds


def test_result_reports_stages_and_late_connections() -> None:
    hold = Hold(S, 10.0)
    hold.traffic(10.5, 3)
    hold.slices_released(11.0, listed=True)
    hold.traffic(12.0, 2)
    assert hold.result(12.5) is None
    assert hold.wake_at() == 13.0
    result = hold.result(13.0)
    assert result is not None
    assert (result.outcome, result.total, result.stage1, result.stage2) == (Outcome.QUIET, 3.0, 1.0, 2.0)
    assert result.connections_after_stage1 == 2
    assert result.late_traffic == 2.0, "the last new work came 2 s after the hold began"


def test_a_hold_without_new_work_reports_no_late_traffic() -> None:
    hold = Hold(S, 10.0)
    hold.slices_released(11.0, listed=True)
    result = hold.result(20.0)
    assert result is not None
    assert result.late_traffic == 0.0


SERVICE = {"labels": {"kubernetes.io/service-name": "web"}}


def endpoint(uid: str = "u1", ip: str = "10.0.0.5", **conditions: bool) -> dict[str, object]:
    return {"addresses": [ip], "conditions": conditions, "targetRef": {"kind": "Pod", "uid": uid, "name": "p"}}


def of_service(*endpoints: dict[str, object]) -> dict[str, object]:
    return {"metadata": SERVICE, "endpoints": list(endpoints)}


HELD, RELEASED, NO_SIGNAL = Listing.HELD, Listing.RELEASED, Listing.NO_SIGNAL


@pytest.mark.parametrize(
    ("slices", "found", "done"),
    [
        ([], [], True),
        ([of_service(endpoint(ready=True, serving=True, terminating=False))], [HELD], False),
        ([of_service(endpoint(ready=False, serving=True, terminating=True))], [RELEASED], True),
        # publishNotReadyAddresses: the controller keeps a terminating pod ready
        ([of_service(endpoint(ready=True, serving=True, terminating=True))], [RELEASED], True),
        ([of_service(endpoint(ready=False))], [RELEASED], True),
        ([of_service(endpoint(ready=True))], [HELD], False),
        ([of_service(endpoint(terminating=False))], [HELD], False),
        # no condition that could ever show the termination: not waited on
        ([of_service(endpoint())], [NO_SIGNAL], True),
        ([of_service(endpoint(serving=True))], [NO_SIGNAL], True),
        (
            [of_service(endpoint(ready=False)), of_service(endpoint(ready=True))],
            [RELEASED, HELD],
            False,
        ),
        ([of_service(endpoint(uid="other", ip="10.0.0.9", ready=True))], [], True),
        ([{"metadata": SERVICE, "endpoints": None}], [], True),
        # a slice of no Service: nothing reads it
        ([{"metadata": {"labels": {}}, "endpoints": [endpoint(ready=True)]}], [], True),
        ([{"endpoints": [endpoint(ready=True)]}], [], True),
        # a slice of no Service does not hide the slices after it
        ([{"endpoints": [endpoint(ready=False)]}, of_service(endpoint(ready=True))], [HELD], False),
        # matched by address when the targetRef is missing
        ([of_service({"addresses": ["10.0.0.5"], "conditions": {"ready": True}})], [HELD], False),
        # an earlier pod of the same name (another uid) is not this pod
        (
            [of_service({"addresses": ["10.0.0.5"], "targetRef": {"kind": "Pod", "uid": "old", "name": "p-name"}})],
            [],
            True,
        ),
        # and by name when the ref carries no uid
        ([of_service({"addresses": ["10.9.9.9"], "targetRef": {"kind": "Pod", "name": "p-name"}})], [NO_SIGNAL], True),
    ],
)
def test_slices(slices: list[dict[str, object]], found: list[Listing], done: bool) -> None:
    listed = listings(slices, "u1", "p-name", "10.0.0.5")
    assert listed == found
    assert released(listed) is done


@pytest.mark.parametrize(
    ("pod_ip", "address", "same"),
    [
        ("fd00::5", "fd00:0:0::5", True),
        ("fd00::5", "FD00::5", True),
        ("fd00::5", "fd00::6", False),
        ("10.0.0.5", "10.0.0.5", True),
        ("10.0.0.5", "10.0.0.50", False),
        ("not-an-ip", "not-an-ip", True),
    ],
)
def test_ipv6_endpoints_match_by_address_not_spelling(pod_ip: str, address: str, same: bool) -> None:
    assert same_address(pod_ip, address) is same
    listed = listings([of_service({"addresses": [address], "conditions": {"ready": True}})], "u1", "p", pod_ip)
    assert listed == ([HELD] if same else [])


def test_config_from_environment() -> None:
    config = load_config(
        {
            "LAMEDUCK_POD_NAME": "web-1",
            "LAMEDUCK_POD_NAMESPACE": "shop",
            "LAMEDUCK_APP_PORTS": "8080,8443",
            "LAMEDUCK_PROPAGATION_DELAY": "1500ms",
            "LAMEDUCK_MAX_HOLD": "1m30s",
            "LAMEDUCK_DRAIN_TIMEOUT": "45s",
            "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        }
    )
    assert config.hold.drain_timeout == 45.0
    assert config.app_ports == frozenset({8080, 8443})
    assert (config.hold.propagation_delay, config.hold.quiet_period, config.hold.max_hold) == (1.5, 1.0, 90.0)
    assert config.api_url == "https://10.96.0.1:443"
    assert load_config({}).api_url is None


def test_probes_and_the_node_address_from_the_environment() -> None:
    config = load_config({"LAMEDUCK_PROBES": "8080:1,8080:10,9090:2.5", "LAMEDUCK_HOST_IP": "192.0.2.7"})
    assert config.probes == (Probe(8080, 1.0), Probe(8080, 10.0), Probe(9090, 2.5))
    assert config.host_ip == "192.0.2.7"
    assert load_config({"LAMEDUCK_PROBES": ""}).probes == ()


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("fd00:10:96::1", "https://[fd00:10:96::1]:6443"),
        ("10.96.0.1", "https://10.96.0.1:6443"),
        ("kubernetes.default.svc", "https://kubernetes.default.svc:6443"),
    ],
)
def test_the_api_url_brackets_an_ipv6_address(host: str, url: str) -> None:
    assert load_config({"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": "6443"}).api_url == url


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LAMEDUCK_MAX_HOLD": "30"}, "LAMEDUCK_MAX_HOLD must be a duration"),
        ({"LAMEDUCK_APP_PORTS": "http"}, "take port numbers"),
        ({"LAMEDUCK_PROBES": "8080"}, "LAMEDUCK_PROBES takes port:periodSeconds"),
        ({"LAMEDUCK_PROBES": "http:10"}, "LAMEDUCK_PROBES takes port:periodSeconds"),
        ({"LAMEDUCK_PROBES": "8080:0"}, "LAMEDUCK_PROBES takes port:periodSeconds"),
        ({"LAMEDUCK_PROBES": "70000:10"}, "LAMEDUCK_PROBES takes port:periodSeconds"),
    ],
)
def test_bad_config_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env)


def test_a_release_due_exactly_at_the_deadline_is_quiet_not_a_timeout() -> None:
    settings = HoldSettings(propagation_delay=2.0, quiet_period=1.0, max_hold=3.0)
    hold = Hold(settings, 0.0)
    hold.slices_released(1.0, listed=True)
    assert hold.wake_at() == 3.0
    result = hold.result(3.0)
    assert result is not None
    assert result.outcome is Outcome.QUIET


def test_a_pod_in_no_slice_waits_for_no_propagation_delay() -> None:
    settings = HoldSettings(propagation_delay=2.0, quiet_period=0.2, max_hold=30.0)
    hold = Hold(settings, 0.0)
    hold.slices_released(0.5, listed=False)
    result = hold.result(0.7)
    assert result is not None
    assert result.outcome is Outcome.NOT_IN_ANY_SLICE


def test_a_pod_in_no_slice_waits_for_quiet_only() -> None:
    hold = Hold(S, 0.0)
    hold.slices_released(0.5, listed=False)
    assert hold.result(1.4) is None
    result = hold.result(1.5)
    assert result is not None
    assert (result.outcome, result.stage1, result.stage2) == (Outcome.NOT_IN_ANY_SLICE, 0.5, 1.0)
