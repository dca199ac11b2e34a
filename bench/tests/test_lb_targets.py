"""The simulated external LB's target table (bench/lb_targets.py): registration and
deregistration delays, round robin, an address that returns, IPv6. Time is an argument."""

from __future__ import annotations

import errno

import pytest

from bench.lb_targets import (
    ConnectFailure,
    LbCounters,
    LbSettings,
    NegativeDelayError,
    Phase,
    Pick,
    Target,
    TargetTable,
    connect_failure,
)

A = Target.of("10.0.0.1", 8080)
B = Target.of("10.0.0.2", 8080)
C = Target.of("10.0.0.3", 8080)


def table(registration: float = 2.0, deregistration: float = 45.0) -> TargetTable:
    return TargetTable(LbSettings(registration_delay=registration, deregistration_delay=deregistration))


def test_a_ready_endpoint_takes_connections_only_after_the_registration_delay() -> None:
    lb = table(registration=2.0)
    lb.observe(100.0, {A})
    assert lb.rotation(101.9) == ()
    assert lb.pick(101.9) is None
    assert lb.phases(101.9) == {A: Phase.REGISTERING}
    assert lb.rotation(102.0) == (A,)
    assert lb.pick(102.0) == Pick(A, draining=False)


def test_zero_registration_delay_registers_at_once() -> None:
    lb = table(registration=0.0)
    lb.observe(5.0, {A})
    assert lb.rotation(5.0) == (A,)


def test_an_endpoint_not_ready_before_its_registration_is_never_used() -> None:
    lb = table(registration=2.0)
    lb.observe(100.0, {A})
    lb.observe(101.0, set())
    assert lb.rotation(110.0) == ()
    assert lb.phases(110.0) == {}


def test_a_not_ready_target_keeps_taking_new_connections_for_the_deregistration_delay() -> None:
    lb = table(registration=0.0, deregistration=45.0)
    lb.observe(0.0, {A, B})
    lb.observe(10.0, {B})  # A's endpoint turns not ready
    assert lb.rotation(54.9) == (A, B)
    assert lb.phases(54.9) == {A: Phase.DRAINING, B: Phase.REGISTERED}
    picks = [lb.pick(30.0) for _ in range(4)]
    assert [(p.target, p.draining) for p in picks if p] == [(A, True), (B, False), (A, True), (B, False)]
    assert lb.rotation(55.0) == (B,)
    assert lb.phases(55.0) == {B: Phase.REGISTERED}


def test_an_endpoint_gone_from_the_slices_drains_like_a_not_ready_one() -> None:
    lb = table(registration=0.0, deregistration=45.0)
    lb.observe(0.0, {A})
    lb.observe(1.0, set())  # the slice no longer lists A, and nothing else is ready
    assert lb.pick(45.9) == Pick(A, draining=True)
    assert lb.pick(46.0) is None


def test_draining_is_counted_from_the_first_not_ready_observation() -> None:
    lb = table(registration=0.0, deregistration=45.0)
    lb.observe(0.0, {A})
    lb.observe(10.0, set())
    lb.observe(30.0, set())  # seen not ready again: the clock does not restart
    assert lb.rotation(55.0) == ()


def test_a_target_registered_late_in_time_then_not_ready_drains_from_then() -> None:
    # registered at 2 s by the passing of time alone, not ready at 3 s
    lb = table(registration=2.0, deregistration=45.0)
    lb.observe(0.0, {A})
    lb.observe(3.0, set())
    assert lb.rotation(47.9) == (A,)
    assert lb.rotation(48.0) == ()


def test_round_robin_over_the_rotation_in_address_order() -> None:
    lb = table(registration=0.0)
    lb.observe(0.0, {C, A, B})
    assert [p.target for p in (lb.pick(1.0) for _ in range(6)) if p] == [A, B, C, A, B, C]


def test_round_robin_goes_on_after_the_last_pick_when_the_rotation_changes() -> None:
    lb = table(registration=0.0, deregistration=0.0)
    lb.observe(0.0, {A, B, C})
    assert lb.pick(1.0) == Pick(A, draining=False)
    lb.observe(2.0, {A, C})  # B leaves; the next after A is C
    assert lb.pick(2.0) == Pick(C, draining=False)
    assert lb.pick(2.0) == Pick(A, draining=False)


def test_ready_again_while_draining_stays_registered() -> None:
    lb = table(registration=2.0, deregistration=45.0)
    lb.observe(0.0, {A})
    lb.observe(10.0, set())
    lb.observe(20.0, {A})  # back before its deregistration completed: never left the rotation
    assert lb.phases(20.0) == {A: Phase.REGISTERED}
    assert lb.rotation(100.0) == (A,)


def test_an_address_that_returns_after_deregistration_registers_anew() -> None:
    lb = table(registration=2.0, deregistration=45.0)
    lb.observe(0.0, {A})
    lb.observe(10.0, set())
    assert lb.rotation(60.0) == ()
    lb.observe(60.0, {A})  # the same pod IP, on a new pod
    assert lb.phases(60.0) == {A: Phase.REGISTERING}
    assert lb.rotation(61.9) == ()
    assert lb.rotation(62.0) == (A,)


def test_settled_only_when_nothing_registers_or_drains() -> None:
    lb = table(registration=2.0, deregistration=45.0)
    assert lb.settled(0.0)
    lb.observe(0.0, {A})
    assert not lb.settled(1.0)
    assert lb.settled(2.0)
    lb.observe(3.0, set())
    assert not lb.settled(47.9)
    assert lb.settled(48.0)


def test_ipv6_targets_are_one_target_per_address_however_written() -> None:
    long_form = Target.of("fd00:0:0:0:0:0:0:a", 8080)
    short_form = Target.of("fd00::a", 8080)
    assert long_form == short_form
    assert short_form.address == "fd00::a:8080"
    lb = table(registration=0.0, deregistration=45.0)
    lb.observe(0.0, {long_form, A})
    lb.observe(1.0, {short_form})  # the same address, written otherwise: still ready; A drains
    assert lb.phases(1.0) == {A: Phase.DRAINING, short_form: Phase.REGISTERED}


def test_settings_refuse_negative_delays() -> None:
    with pytest.raises(NegativeDelayError):
        LbSettings(registration_delay=-1)
    with pytest.raises(NegativeDelayError):
        LbSettings(deregistration_delay=-1)


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), ConnectFailure.REFUSED),
        (TimeoutError(), ConnectFailure.TIMEOUT),
        (OSError(errno.EHOSTUNREACH, "no route to host"), ConnectFailure.UNREACHABLE),
        (OSError(errno.ENETUNREACH, "network unreachable"), ConnectFailure.UNREACHABLE),
        (OSError(errno.EACCES, "permission denied"), ConnectFailure.OTHER),
    ],
)
def test_connect_failure_kinds(err: BaseException, kind: ConnectFailure) -> None:
    assert connect_failure(err) is kind


def test_counters_as_dict_by_address() -> None:
    counters = LbCounters(accepted=3, no_target=1)
    counters.connections[A] += 2
    counters.while_draining[A] += 1
    counters.connect_failures[(A, ConnectFailure.REFUSED)] += 1
    assert counters.as_dict() == {
        "accepted": 3,
        "no_target": 1,
        "connections": {"10.0.0.1:8080": 2},
        "connections_while_draining": {"10.0.0.1:8080": 1},
        "connect_failures": {"10.0.0.1:8080": {"refused": 1}},
        "connect_failures_total": 1,
        "resets": 0,
    }
