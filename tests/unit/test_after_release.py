"""After release (pure): the loss count, each late connection's fate, when the watch ends; what
was learned, as read from the ConfigMap; the report's bounds; and the hold's invariants over
seeded random runs."""

from __future__ import annotations

import json
import math
import random
from ipaddress import ip_address
from typing import Any

import pytest

from lameduck_sidecar.after_release import (
    ConnectionFates,
    LossCount,
    app_listening,
    listening_ports,
    observation_deadline,
    observation_over,
)
from lameduck_sidecar.calls import MAX_CONTAINERS, bounded_names
from lameduck_sidecar.hold import Hold, HoldSettings, Outcome
from lameduck_sidecar.learned import deployment_name, learned_delay
from lameduck_sidecar.report import report_message
from lameduck_sidecar.sockdiag import CLOSE_WAIT, ESTABLISHED, FIN_WAIT1, LISTEN, TcpSocket
from lameduck_sidecar.traffic import Probe

PEER = ip_address("10.1.0.9")
ANY = ip_address("0.0.0.0")
APP = 8080
OWN = 9901


def listener(port: int = APP) -> TcpSocket:
    return TcpSocket(LISTEN, port, ANY, 0, 0, None)


def conn(peer_port: int, received: int, state: int = ESTABLISHED) -> TcpSocket:
    return TcpSocket(state, APP, PEER, peer_port, 0, received)


# LossCount: the RSTs sent from release on, less kubelet's probes of a port with no listener.


def test_resets_after_release_are_the_loss() -> None:
    loss = LossCount(())
    loss.observe(10.0, 100, frozenset({APP}))  # the baseline, at release
    loss.observe(10.1, 100, frozenset({APP}))
    assert loss.lost() == 0, "nothing refused, nothing reset"
    loss.observe(10.2, 103, frozenset())
    assert loss.lost() == 3


@pytest.mark.parametrize(
    ("counters", "lost"),
    [
        ([None, 5], None),  # no counter at release
        ([5, None], None),  # lost on the way
        ([5, 7, 3], None),  # went backwards: not the same counter any more
        ([5], 0),  # released and ended at once
    ],
)
def test_a_counter_that_cannot_be_trusted_is_not_measured(counters: list[int | None], lost: int | None) -> None:
    loss = LossCount(())
    for i, value in enumerate(counters):
        loss.observe(float(i), value, frozenset())
    assert loss.lost() == lost


def test_a_probe_of_a_port_with_no_listener_is_not_a_loss_once_per_period() -> None:
    """kubelet probes a terminating container: each probe of a closed port is refused."""
    loss = LossCount((Probe(APP, 1.0),))
    loss.observe(0.0, 50, frozenset({APP}))
    for step in range(1, 31):  # 3 s without a listener, polled every 0.1 s
        loss.observe(step / 10, 50 + (step - 1) // 10 + 1, frozenset())
    assert loss.lost() == 0, "three probes, three refusals"
    loss.observe(3.05, 55, frozenset())
    assert loss.lost() == 2, "more than one per period is counted"


def test_a_probe_of_a_listening_port_vouches_for_nothing() -> None:
    loss = LossCount((Probe(APP, 1.0),))
    loss.observe(0.0, 50, frozenset({APP}))
    loss.observe(2.0, 52, frozenset({APP}))
    assert loss.lost() == 2


# ConnectionFates: pooled (went quiet while open) or pinned (busy until closed).


def fates_over(
    timeline: list[tuple[float, list[TcpSocket]]], released_at: float, stage1: float = 1.0
) -> ConnectionFates:
    fates = ConnectionFates(frozenset({APP}), OWN, quiet_period=1.0, since=0.0)
    done = False
    for now, sockets in timeline:
        if now >= stage1 and fates.since != stage1:
            fates.stage1_ended(stage1)
        fates.observe(now, [listener(), *sockets])
        if now >= released_at and not done:
            done = True
            fates.released(now)
    return fates


def busy_then(until: float, end: float, after: str, step: float = 0.1) -> list[tuple[float, list[TcpSocket]]]:
    """One connection open since 0, receiving every poll until `until`; then `after`: "quiet"
    (open, silent), "closed" (gone), "closing" (the app's FIN sent)."""
    timeline = []
    received = 0
    for i in range(round(end / step) + 1):
        now = round(i * step, 2)
        if now <= until:
            received += 100
            timeline.append((now, [conn(40000, received)]))
        elif after == "quiet":
            timeline.append((now, [conn(40000, received)]))
        elif after == "closing":
            timeline.append((now, [conn(40000, received, FIN_WAIT1)]))
        else:
            timeline.append((now, []))
    return timeline


@pytest.mark.parametrize(
    ("until", "after", "released_at", "pooled", "pinned"),
    [
        # busy past release (3 s), then quiet on its own at 5 s: a proxy let go 4 s after stage 1
        (5.0, "quiet", 3.0, 4.0, 0),
        # busy until the app closed it after release: pinned
        (5.0, "closed", 3.0, None, 1),
        (5.0, "closing", 3.0, None, 1),
        # quiet before release (a learning hold waited for it): still what the proxy needed
        (2.5, "quiet", 4.0, 1.5, 0),
        # closed while busy before release: neither (not busy at release)
        (2.5, "closed", 4.0, None, 0),
        # busy only before stage 1 (1 s), quiet since: nothing after stage 1 to learn from
        (0.5, "quiet", 3.0, None, 0),
    ],
    ids=["pooled-after-release", "pinned-gone", "pinned-fin", "pooled-during-hold", "closed-in-hold", "before-stage1"],
)
def test_each_busy_connection_turns_out_pooled_or_pinned(
    until: float, after: str, released_at: float, pooled: float | None, pinned: int
) -> None:
    fates = fates_over(busy_then(until, 8.0, after), released_at)
    assert fates.pooled_quiet == (None if pooled is None else pytest.approx(pooled))
    assert fates.pinned_until_closed == pinned


def test_the_largest_quiet_time_is_kept_and_a_connection_counts_once() -> None:
    timeline = []
    a = b = 0
    for i in range(80):
        now = round(i * 0.1, 2)
        a += 100 if now <= 3.0 else 0
        b += 100 if now <= 5.0 else 0
        timeline.append((now, [conn(40000, a), conn(40001, b, CLOSE_WAIT if now > 7.0 else ESTABLISHED)]))
    fates = fates_over(timeline, released_at=2.0)
    assert fates.pooled_quiet == pytest.approx(4.0), "the later of 2 s and 4 s after stage 1"
    assert fates.pinned_until_closed == 0, "a connection that went quiet is not pinned when it closes later"


def test_the_sidecars_own_port_and_new_connections_are_no_reused_connections() -> None:
    fates = ConnectionFates(frozenset({APP}), OWN, quiet_period=1.0, since=0.0)
    own = TcpSocket(ESTABLISHED, OWN, PEER, 50000, 0, 0)
    for i in range(30):
        now = i / 10
        own = TcpSocket(ESTABLISHED, OWN, PEER, 50000, 0, i * 100)
        # a new connection every poll, each seen once: probes, short clients
        fates.observe(now, [listener(), own, conn(41000 + i, 300)])
        if i == 10:
            fates.released(now)
    assert (fates.pooled_quiet, fates.pinned_until_closed) == (None, 0)


# When the watch after release ends.


@pytest.mark.parametrize(
    ("native", "terminated", "listening", "now", "over"),
    [
        (True, False, False, 5.0, False),  # native: the app may be gone, its peers not yet told
        (True, True, True, 5.0, True),  # kubelet's signal comes after the app containers exited
        (False, True, True, 5.0, False),  # classic: signalled with the app, which still listens
        (False, True, False, 5.0, True),
        (True, False, True, 10.0, True),  # the deadline ends it either way
        (False, True, True, 10.0, True),
    ],
)
def test_the_watch_after_release_ends_with_the_app(
    native: bool, terminated: bool, listening: bool, now: float, over: bool
) -> None:
    assert observation_over(native=native, terminated=terminated, listening=listening, now=now, deadline=10.0) is over


@pytest.mark.parametrize(
    ("native", "grace", "drain", "deadline"),
    [
        (False, 60.0, 30.0, 45.0),  # classic: drainTimeout after release (15 s)
        (False, 20.0, 30.0, 16.0),  # but never so late that the report misses the grace period
        (True, 60.0, 30.0, 56.0),  # native: until its signal, within the grace period
        (True, None, 30.0, 45.0),  # grace period unknown: drainTimeout
        (False, 10.0, 30.0, 15.0),  # a grace period already over: at once
    ],
)
def test_the_watch_after_release_is_bounded(native: bool, grace: float | None, drain: float, deadline: float) -> None:
    found = observation_deadline(
        native=native, released=15.0, started=0.0, grace_period=grace, drain_timeout=drain, api_timeout=3.0
    )
    assert found == deadline


def test_the_app_listens_on_its_declared_ports_or_any_but_the_sidecars() -> None:
    assert app_listening(frozenset({APP}), listening_ports(OWN, [listener(APP), listener(OWN)]))
    assert not app_listening(frozenset({APP}), listening_ports(OWN, [listener(OWN), listener(9090)]))
    assert app_listening(frozenset(), listening_ports(OWN, [listener(9090)]))
    assert not app_listening(frozenset(), listening_ports(OWN, [listener(OWN), conn(40000, 0)]))


# What was learned, from the ConfigMap.

POD = {
    "metadata": {
        "labels": {"pod-template-hash": "7d9f8c"},
        "ownerReferences": [{"kind": "ReplicaSet", "name": "web-api-7d9f8c"}],
    }
}


@pytest.mark.parametrize(
    ("pod", "name"),
    [
        (POD, "web-api"),
        ({"metadata": {"labels": {"pod-template-hash": "7d9f8c"}}}, None),  # a bare pod
        ({"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d9f8c"}]}}, None),  # no hash
        ({"metadata": {**POD["metadata"], "labels": {"pod-template-hash": "0000"}}}, None),  # not its suffix
        ({"metadata": {**POD["metadata"], "ownerReferences": [{"kind": "StatefulSet", "name": "db"}]}}, None),
        (None, None),  # unreadable
    ],
)
def test_the_deployment_is_the_replica_set_less_its_template_hash(pod: Any, name: str | None) -> None:
    assert deployment_name(pod) == name


def value(**fields: Any) -> str:
    return json.dumps({"version": 1, "pooledDelaySeconds": 5.5, "reports": 4} | fields)


@pytest.mark.parametrize(
    ("data", "delay"),
    [
        ({"web-api": value()}, 5.5),
        ({"web-api": value(pooledDelaySeconds=0)}, 0.0),  # only pinned clients so far: history
        ({"other": value()}, None),  # no key for this Deployment
        ({"web-api": value(version=2)}, None),
        ({"web-api": value(pooledDelaySeconds=-1)}, None),
        ({"web-api": value(pooledDelaySeconds="5")}, None),
        ({"web-api": value(pooledDelaySeconds=True)}, None),
        ({"web-api": value(reports=0)}, None),
        ({"web-api": json.dumps({"version": 1, "pooledDelaySeconds": 5.5})}, None),
        ({"web-api": "NaN"}, None),
        ({"web-api": "{not json"}, None),
        ({"web-api": value() + " " * 300}, None),  # longer than anything the operator writes
        (None, None),
    ],
)
def test_a_learned_delay_is_read_only_from_a_value_this_sidecar_understands(data: Any, delay: float | None) -> None:
    assert learned_delay({"data": data}, "web-api") == delay


def test_no_config_map_or_no_deployment_is_no_history() -> None:
    assert learned_delay(None, "web-api") is None
    assert learned_delay({"data": {"web-api": value()}}, None) is None


# The report stays small whatever the callers send.


def test_container_names_are_bounded_in_number_and_length() -> None:
    names = [f"c{i}" for i in range(1000)] + ["x" * 10_000]
    bounded = bounded_names(["app", "app", "x" * 10_000, *names])
    assert bounded[:2] == ["app", "x" * 63]
    assert len(bounded) == MAX_CONTAINERS
    hold = Hold(HoldSettings(2.0, 1.0, 30.0), 0.0)
    hold.slices_released(0.5, listed=True)
    result = hold.result(3.0)
    assert result is not None
    message = report_message(
        result, policy="", max_hold=30.0, grace_period=None, pod=None, containers=["y" * 100_000] * 10_000
    )
    assert len(json.dumps(message)) < 2048


# The hold's invariants over seeded random runs (hypothesis is not installed).


def random_run(rng: random.Random) -> tuple[HoldSettings, float | None, dict[str, float | None], Any]:
    settings = HoldSettings(
        propagation_delay=rng.choice([0.0, 0.5, 2.0, 6.0]),
        quiet_period=rng.choice([0.2, 1.0, 3.0]),
        max_hold=rng.choice([5.0, 10.0, 30.0]),
        fallback_delay=rng.choice([1.0, 10.0]),
    )
    learned = rng.choice([None, 0.0, 1.0, 4.0, 50.0])
    hold = Hold(settings, 0.0, learned)
    stage1_at = rng.choice([None, rng.uniform(0, 40)])
    fallback = rng.random() < 0.2
    busy_until = rng.uniform(0, 40)
    step, now = 0.1, 0.0
    while True:
        if stage1_at is not None and now >= stage1_at:
            if fallback:
                hold.api_failed(now)
            else:
                hold.slices_released(now, listed=True)
        if now <= busy_until:
            new = 1 if rng.random() < 0.3 else 0
            hold.traffic(now, new, streaks=(rng.uniform(0, now),) if rng.random() < 0.5 else ())
        result = hold.result(now)
        if result is not None:
            marks = {"stage1": hold.stage1_end, "busy_until": busy_until}
            return settings, learned, marks, result
        now = round(now + step, 2)


@pytest.mark.parametrize("seed", range(300))
def test_hold_invariants(seed: int) -> None:
    settings, learned, marks, result = random_run(random.Random(seed))
    assert result.total <= settings.max_hold + 1e-9, "never after maxHold"
    stage1 = marks["stage1"]
    if result.outcome is not Outcome.TIMEOUT and result.outcome is not Outcome.FALLBACK:
        assert stage1 is not None, "released only after stage 1"
        assert result.total >= stage1, "never before stage 1"
        # never before propagationDelay after stage 1, whatever was learned
        assert result.total + 1e-9 >= stage1 + settings.propagation_delay
    if result.outcome is Outcome.TIMEOUT:
        assert math.isclose(result.total, settings.max_hold, abs_tol=0.1)
    assert result.learned_delay == learned


def test_a_learned_delay_never_releases_a_busy_connection_sooner_than_the_policy() -> None:
    """The same traffic under every learned delay: none ends the hold before no learned delay
    of 0 does, and a longer one never ends it sooner."""
    settings = HoldSettings(propagation_delay=2.0, quiet_period=1.0, max_hold=30.0)
    ends = []
    for learned in (0.0, 1.0, 2.0, 5.0, 10.0):
        hold = Hold(settings, 0.0, learned)
        now = 0.0
        while (result := hold.result(now)) is None:
            if now >= 1.0:
                hold.slices_released(1.0, listed=True)
            hold.traffic(now, 0, streaks=(0.0,))  # busy without a pause throughout
            now = round(now + 0.1, 2)
        ends.append(result.total)
    assert ends == sorted(ends)
    assert ends[0] == ends[1] == ends[2], "a learned delay up to propagationDelay changes nothing"
