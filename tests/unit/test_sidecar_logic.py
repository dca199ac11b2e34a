"""The sidecar's pure parts: the hold state machine, slice judgement, /proc/net/tcp, config."""

from __future__ import annotations

from pathlib import Path

import pytest

from lameduck_sidecar.config import ConfigError, load_config
from lameduck_sidecar.hold import Hold, HoldSettings, Outcome
from lameduck_sidecar.slices import listings, released
from lameduck_sidecar.tcp import ConnectionTracker, inbound, parse, passive_opens

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
                hold.connections(now, n)
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


def test_kernel_counted_connections_beyond_the_probes_share_count() -> None:
    settings = HoldSettings(propagation_delay=0.0, quiet_period=1.0, max_hold=30.0, probes_per_second=1.0)
    hold = Hold(settings, 0.0)
    hold.slices_released(0.0, listed=True)
    hold.inbound(0.5, 1)  # a probe
    hold.inbound(0.9, 1)  # and another: still within the probes' share (2 per second window)
    assert hold.result(1.0) is not None, "probes alone do not hold the pod"
    busy = Hold(settings, 0.0)
    busy.slices_released(0.0, listed=True)
    for i in range(1, 10):
        busy.inbound(i * 0.1, 1)
    assert busy.result(1.0) is None, "nine connections in a second are traffic"
    assert busy.last_connection == 0.9, "each probes share exceeded marks traffic"


def test_result_reports_stages_and_late_connections() -> None:
    hold = Hold(S, 10.0)
    hold.connections(10.5, 3)
    hold.slices_released(11.0, listed=True)
    hold.connections(12.0, 2)
    assert hold.result(12.5) is None
    assert hold.wake_at() == 13.0
    result = hold.result(13.0)
    assert result is not None
    assert (result.outcome, result.total, result.stage1, result.stage2) == (Outcome.QUIET, 3.0, 1.0, 2.0)
    assert result.connections_after_stage1 == 2


def endpoint(ready: bool | None, uid: str = "u1", ip: str = "10.0.0.5") -> dict[str, object]:
    conditions = {} if ready is None else {"ready": ready}
    return {"addresses": [ip], "conditions": conditions, "targetRef": {"kind": "Pod", "uid": uid, "name": "p"}}


@pytest.mark.parametrize(
    ("slices", "readiness", "done"),
    [
        ([], [], True),
        ([{"endpoints": [endpoint(True)]}], [True], False),
        ([{"endpoints": [endpoint(False)]}], [False], True),
        ([{"endpoints": [endpoint(None)]}], [True], False),  # unknown reads as ready
        ([{"endpoints": [endpoint(False)]}, {"endpoints": [endpoint(True)]}], [False, True], False),
        ([{"endpoints": [endpoint(True, uid="other", ip="10.0.0.9")]}], [], True),
        ([{"endpoints": None}], [], True),
        # matched by address when the targetRef is missing
        ([{"endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": True}}]}], [True], False),
    ],
)
def test_slices(slices: list[dict[str, object]], readiness: list[bool], done: bool) -> None:
    found = listings(slices, "u1", "p-other-name", "10.0.0.5")
    assert found == readiness
    assert released(found) is done


PROC_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:26AD 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0500000A:1F90 0100000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 0500000A:1F90 0100000A:C351 06 00000000:00000000 00:00000000 00000000     0        0 0 3 0 0 0 0 0 0
   4: 0500000A:26AD 0100000A:C352 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
   5: 0500000A:D431 0800000A:0050 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0 20 4 30 10 -1
"""


def test_parse_proc_net_tcp() -> None:
    listening, connections = parse(PROC_TCP)
    assert listening == {8080, 9901}
    assert (8080, "0100000A", 50000) in connections
    assert (8080, "0100000A", 50001) in connections, "TIME_WAIT still counts: it came and went"
    # only the app's ports: not the sidecar's own, not the app's outbound connections
    assert inbound(listening, connections, frozenset(), 9901) == {(8080, "0100000A", 50000), (8080, "0100000A", 50001)}
    assert inbound(listening, connections, frozenset({9901}), 9901) == set()


def test_tracker_counts_only_new_connections(tmp_path: Path) -> None:
    (tmp_path / "tcp").write_text(PROC_TCP)
    tracker = ConnectionTracker(frozenset({8080}), 9901, tmp_path)
    assert tracker.new_connections() == 2
    assert tracker.new_connections() == 0
    (tmp_path / "tcp").write_text(PROC_TCP + "   6: 0500000A:1F90 0100000A:C353 03 0 0 0 0 0 7\n")
    assert tracker.new_connections() == 1


def test_passive_opens() -> None:
    snmp = "Tcp: RtoAlgorithm RtoMin PassiveOpens CurrEstab\nTcp: 1 200 12362 166\nUdp: InDatagrams\nUdp: 5\n"
    assert passive_opens(snmp) == 12362
    assert passive_opens("Udp: x\nUdp: 1\n") is None


def test_tracker_counts_kernel_accepts(tmp_path: Path) -> None:
    (tmp_path / "snmp").write_text("Tcp: PassiveOpens\nTcp: 10\n")
    tracker = ConnectionTracker(frozenset({8080}), 9901, tmp_path)
    assert tracker.new_opens() == 0
    (tmp_path / "snmp").write_text("Tcp: PassiveOpens\nTcp: 14\n")
    assert tracker.new_opens() == 4


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


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LAMEDUCK_MAX_HOLD": "30"}, "LAMEDUCK_MAX_HOLD must be a duration"),
        ({"LAMEDUCK_APP_PORTS": "http"}, "take port numbers"),
    ],
)
def test_bad_config_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env)
