"""When the sidecar posts a failed hold report again, and when it gives up (report_retry.py, pure):
tables of the decision, and whole API server outages played through it."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from lameduck_sidecar.after_release import POST_MARGIN_SECONDS, last_post_start
from lameduck_sidecar.report_retry import MAX_ATTEMPTS, RetrySchedule, next_attempt, retryable

DEFAULT = RetrySchedule()


@pytest.mark.parametrize(
    ("schedule", "waits"),
    [
        (DEFAULT, [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]),
        (RetrySchedule(first_wait=0.5, max_wait=3.0), [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]),
    ],
    ids=["default: 1, 2, 4 s, then 4 s", "its own first wait and cap"],
)
def test_the_wait_doubles_up_to_its_cap(schedule: RetrySchedule, waits: list[float]) -> None:
    assert [schedule.wait_after(n) for n in range(1, len(waits) + 1)] == waits
    assert schedule.wait_after(10_000) == schedule.max_wait, "no overflow however many attempts"


@pytest.mark.parametrize(
    ("status", "may_pass"),
    [
        (None, True),  # no answer: unreachable, reset, timed out
        (429, True),
        (500, True),
        (503, True),
        (599, True),
        (400, False),
        (401, False),
        (403, False),  # the sidecar's Role lost `create events`
        (404, False),
        (409, False),
        (422, False),  # invalid: the same body is refused again
        (600, False),
    ],
)
def test_only_failures_that_waiting_may_cure_are_retried(status: int | None, may_pass: bool) -> None:
    assert retryable(status) is may_pass


class Case(NamedTuple):
    attempts: int  # failed so far
    now: float  # when the latest failed
    may_pass: bool
    last_start: float | None  # None: the grace period is unknown
    terminated: bool
    again: float | None  # when to try again; None: give up


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(Case(1, 10.2, True, 100.0, False, 11.2), id="the first failure waits 1 s"),
        pytest.param(Case(3, 20.0, True, 100.0, False, 24.0), id="the third waits 4 s"),
        pytest.param(Case(6, 50.0, True, 100.0, False, 54.0), id="the wait is capped at 4 s"),
        pytest.param(Case(1, 10.0, False, 100.0, False, None), id="a failure waiting does not cure: given up"),
        pytest.param(
            Case(MAX_ATTEMPTS + 5, 60.0, True, 100.0, False, 64.0), id="grace period known: no cap on attempts"
        ),
        pytest.param(Case(MAX_ATTEMPTS - 1, 60.0, True, None, False, 64.0), id="unknown grace: the last but one"),
        pytest.param(Case(MAX_ATTEMPTS, 70.0, True, None, False, None), id="unknown grace: all failed, given up"),
        pytest.param(Case(4, 97.0, True, 100.0, False, 100.0), id="a wait past the last start is cut to it"),
        pytest.param(Case(5, 100.0, True, 100.0, False, None), id="no attempt can end before the grace period"),
        pytest.param(Case(5, 101.0, True, 100.0, False, None), id="past the last start"),
        pytest.param(Case(2, 30.0, True, 100.0, True, 32.0), id="grace period known: SIGTERM does not end it"),
        pytest.param(Case(2, 30.0, True, None, False, 32.0), id="grace period unknown: waits, SIGTERM may cut it"),
        pytest.param(
            Case(2, 30.0, True, None, True, None), id="grace period unknown: the attempt at SIGTERM was the last"
        ),
        pytest.param(Case(1, 30.0, False, None, False, None), id="grace period unknown, not curable: given up"),
    ],
)
def test_when_a_failed_report_is_posted_again(case: Case) -> None:
    found = next_attempt(
        DEFAULT,
        attempts=case.attempts,
        now=case.now,
        may_pass=case.may_pass,
        last_start=case.last_start,
        terminated=case.terminated,
    )
    assert found == (None if case.again is None else pytest.approx(case.again))


def test_the_last_start_leaves_the_api_timeout_and_a_margin_before_the_grace_period_ends() -> None:
    assert last_post_start(started=10.0, grace_period=65.0, api_timeout=3.0) == 10.0 + 65.0 - 3.0 - POST_MARGIN_SECONDS
    assert last_post_start(started=10.0, grace_period=None, api_timeout=3.0) is None


def play_outage(
    down_until: float, failure_seconds: float, last_start: float | None, schedule: RetrySchedule = DEFAULT
) -> tuple[list[float], bool]:
    """Attempts from 0 on an API server that fails every attempt started before `down_until`, each
    failure taking `failure_seconds` (0.01: refused at once; 3: the API timeout), as the reporter
    makes them: the attempt times, and whether the report was stored."""
    attempts: list[float] = []
    at: float | None = 0.0
    while at is not None:
        attempts.append(at)
        if at >= down_until:
            return attempts, True
        now = at + failure_seconds
        at = next_attempt(
            schedule, attempts=len(attempts), now=now, may_pass=True, last_start=last_start, terminated=True
        )
    return attempts, False


@pytest.mark.parametrize(
    ("failure_seconds", "stored_at"),
    [(0.01, 31.09), (3.0, 30.0)],
    ids=["connection refused", "each attempt timing out"],
)
def test_a_report_outlives_an_api_server_outage_of_30s(failure_seconds: float, stored_at: float) -> None:
    """A native sidecar's report, posted at its SIGTERM 10 s into the hold, the API server down for
    30 s from then, the pod's grace period 65 s from the hold's start (maxHold 30 s + drainTimeout
    30 s + 5 s): stored after the outage, before the grace period ends."""
    last_start = last_post_start(started=-10.0, grace_period=65.0, api_timeout=3.0)
    attempts, stored = play_outage(30.0, failure_seconds, last_start)
    assert stored
    assert attempts[-1] == pytest.approx(stored_at)
    assert last_start is not None
    assert attempts[-1] <= last_start


def test_an_outage_longer_than_the_grace_period_gives_up_with_a_last_attempt_in_time() -> None:
    last_start = last_post_start(started=-10.0, grace_period=30.0, api_timeout=3.0)  # 16 s after the first
    attempts, stored = play_outage(300.0, 0.01, last_start)
    assert not stored
    assert attempts[-1] == last_start, "the last attempt at the last moment that still ends in time"
    assert attempts == sorted(set(attempts)), "no two attempts at once: no busy loop"


def test_a_report_outlives_the_harness_outage_that_a_cap_on_attempts_lost() -> None:
    """bench.faults holds-outage (faults-holds-under-way.json): the app exited 4 s into the hold,
    the API server stopped then, slowly (20 s), and was down 30 s more: back 54.3 s after the
    first post, the grace period 65 s from the hold's start. The old cap (10 attempts, 8 s apart)
    gave up at 55 s with every report of the run; the grace period alone bounds it now."""
    last_start = last_post_start(started=-4.0, grace_period=65.0, api_timeout=3.0)
    assert last_start is not None
    attempts, stored = play_outage(54.3, 0.01, last_start)
    assert stored
    assert 54.3 <= attempts[-1] <= last_start
    assert len(attempts) > 10
