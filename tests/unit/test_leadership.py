"""The campaign for the leader Lease: a replica that led stops once when its election ends or
fails; one that never led campaigns again, logging its failures at a bounded rate."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from kubernetes import client

from lameduck_operator.k8s.leadership import (
    FAILURE_LOG_SECONDS,
    RETRY_PERIOD_SECONDS,
    Election,
    campaign,
    client_elections,
    lease_lock,
)

REFUSED = ConnectionRefusedError(111, "Connection refused")


@dataclass
class FakeElection:
    """Plays one election's part, step by step: "lead" and "lose" call the callbacks the
    campaign gave it, "raise" raises as the client's election does on a refused connection,
    "keep-lead" keeps its on_lead for the test to call late (the client's thread that runs it)."""

    steps: tuple[str, ...]
    on_lead: Callable[[], object]
    on_lost: Callable[[], object]
    kept: list[Callable[[], object]]

    def run(self) -> None:
        for step in self.steps:
            if step == "lead":
                self.on_lead()
            elif step == "lose":
                self.on_lost()
            elif step == "keep-lead":
                self.kept.append(self.on_lead)
            elif step == "raise":
                raise REFUSED


@dataclass
class Campaign:
    """What a campaign over scripted elections did, on a clock that moves only in its sleeps."""

    elections: list[tuple[str, ...]]
    told: list[str] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    started: int = 0
    now: float = 0.0
    kept: list[Callable[[], object]] = field(default_factory=list)

    def new_election(self, on_lead: Callable[[], object], on_lost: Callable[[], object]) -> Election:
        assert self.started < len(self.elections), "campaigned again after the script's last election"
        steps = self.elections[self.started]
        self.started += 1
        return FakeElection(steps, on_lead, on_lost, self.kept)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        for late in self.kept:  # the client's on_lead thread, running only now
            late()
        self.kept.clear()

    def run(self) -> None:
        campaign(
            self.new_election,
            on_lead=lambda: self.told.append("lead"),
            on_lost=lambda: self.told.append("lost"),
            sleep=self.sleep,
            monotonic=lambda: self.now,
        )


LEADS_AND_LOSES = ("lead", "lose")  # the client's run(): leads, renews, stops leading, returns
MINUTE_OF_FAILURES = int(FAILURE_LOG_SECONDS / RETRY_PERIOD_SECONDS)


@dataclass(frozen=True)
class Case:
    name: str
    elections: list[tuple[str, ...]]
    # What the campaign told the runtime, how many elections it started, the lines it logged.
    told: tuple[str, ...]
    started: int
    warnings: int = 0
    errors: int = 0


CASES = [
    Case("a leader that can renew no more stops", [LEADS_AND_LOSES], ("lead", "lost"), 1),
    Case("a leader whose election raises stops, told once", [("lead", "raise")], ("lead", "lost"), 1, errors=1),
    Case("a leader stopped then raising is told once", [("lead", "lose", "raise")], ("lead", "lost"), 1, errors=1),
    Case("a standby that raises campaigns again", [("raise",), LEADS_AND_LOSES], ("lead", "lost"), 2, warnings=1),
    Case(
        "a standby that keeps raising keeps campaigning and is never stopped",
        [("raise",)] * 5 + [LEADS_AND_LOSES],
        ("lead", "lost"),
        6,
        warnings=1,
    ),
    Case("an election that ends without leading is followed", [(), LEADS_AND_LOSES], ("lead", "lost"), 2),
    Case(
        "an on_lead that comes after its election failed starts nothing",
        [("keep-lead", "raise"), LEADS_AND_LOSES],
        ("lead", "lost"),
        2,
        warnings=1,
    ),
    Case(
        "ten minutes of failures are ten lines",
        [("raise",)] * (10 * MINUTE_OF_FAILURES) + [LEADS_AND_LOSES],
        ("lead", "lost"),
        10 * MINUTE_OF_FAILURES + 1,
        warnings=10,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_campaign(case: Case, caplog: pytest.LogCaptureFixture) -> None:
    script = Campaign(case.elections)
    with caplog.at_level(logging.INFO, logger="lameduck.leadership"):
        script.run()
    assert tuple(script.told) == case.told
    assert script.started == case.started
    assert script.sleeps == [RETRY_PERIOD_SECONDS] * (case.started - 1), "each new election after the retry period"
    levels = [r.levelno for r in caplog.records]
    assert (levels.count(logging.WARNING), levels.count(logging.ERROR)) == (case.warnings, case.errors)


def test_each_line_of_repeated_failures_tells_how_many_it_stands_for(caplog: pytest.LogCaptureFixture) -> None:
    script = Campaign([("raise",)] * (2 * MINUTE_OF_FAILURES + 1) + [LEADS_AND_LOSES])
    with caplog.at_level(logging.WARNING, logger="lameduck.leadership"):
        script.run()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "more since" not in lines[0]
    assert all(f"({MINUTE_OF_FAILURES - 1} more since the last report)" in line for line in lines[1:])
    assert all("Connection refused" in line for line in lines)


class Stop(BaseException):
    """Ends a campaign that would go on for ever."""


def refused_port() -> int:
    """A local port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_the_clients_election_raises_on_a_refused_connection_and_a_standby_campaigns_again() -> None:
    """The client's own election against an API server that refuses connections: it raises
    (rather than count a failed try), and the campaign starts another instead of stopping."""
    configuration = client.Configuration(host=f"http://127.0.0.1:{refused_port()}")
    configuration.retries = False
    lock = lease_lock(client.ApiClient(configuration), namespace="lameduck", name="lease", identity="replica-0")
    told: list[str] = []
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise Stop

    with pytest.raises(Stop):
        campaign(
            client_elections(lock),
            on_lead=lambda: told.append("lead"),
            on_lost=lambda: told.append("lost"),
            sleep=sleep,
        )
    assert told == []
    assert sleeps == [RETRY_PERIOD_SECONDS] * 3
