"""Leader election on a coordination.k8s.io Lease, by the official client's implementation.

Timings: a killed leader's Lease expires LEASE_DURATION after its last renewal, and a
follower that polls every RETRY_PERIOD takes it over; so a new leader reconciles within
about LEASE_DURATION + RETRY_PERIOD (12 s) of the old one's death.

A leader stops (on_lost; the runtime then exits) when it may no longer lead. When the API
server answers its renewals with errors, the client retries every RETRY_PERIOD for
RENEW_DEADLINE and then, after one more RETRY_PERIOD of sleep, gives up: about LEASE_DURATION
after the last renewal, so with little margin before a follower may take over. When a Lease
call raises instead (a refused connection while the API server is down), the client's election
raises, and `campaign` stops a leader at once rather than keep it through such failures too.
A replica that never led has nothing to stop: it campaigns again after RETRY_PERIOD, logging
the failures at most once per FAILURE_LOG_SECONDS. (Every replica used to exit on it, standbys
too: 3 exits in bench.faults' 30 s outage.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from kubernetes import client
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from lameduck_operator.ports import one_line

LEASE_DURATION_SECONDS = 10
RENEW_DEADLINE_SECONDS = 7
RETRY_PERIOD_SECONDS = 2
# A standby's failed elections, every RETRY_PERIOD while the API server is down: one line per minute.
FAILURE_LOG_SECONDS = 60.0
log = logging.getLogger("lameduck.leadership")


class Election(Protocol):
    """One election (the client's LeaderElection): campaigns, calls its on_lead when it leads,
    renews, and calls its on_lost and returns when it can renew no more; or raises."""

    def run(self) -> None: ...


# An election that calls the given (on_lead, on_lost).
NewElection = Callable[[Callable[[], object], Callable[[], object]], Election]


class _Term:
    """One election's leadership, told at most once each way. The client calls on_lead in a
    thread of its own, which may run only after the election has ended (a renewal that raised
    right after the Lease was taken): that late on_lead starts nothing, as nothing renews it."""

    def __init__(self, on_lead: Callable[[], object], on_lost: Callable[[], object]) -> None:
        self._on_lead = on_lead
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._over = False
        self._led = False
        self._told_lost = False

    def lead(self) -> None:
        with self._lock:
            if self._over:
                return
            self._led = True
        self._on_lead()

    def end(self) -> bool:
        """The election is over: on_lost if it led (once, however often this is called).
        Whether it led."""
        with self._lock:
            self._over = True
            tell = self._led and not self._told_lost
            self._told_lost = self._told_lost or tell
            led = self._led
        if tell:
            self._on_lost()
        return led


def campaign(
    new_election: NewElection,
    *,
    on_lead: Callable[[], object],
    on_lost: Callable[[], object],
    sleep: Callable[[float], object] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    retry_seconds: float = RETRY_PERIOD_SECONDS,
    log_every_seconds: float = FAILURE_LOG_SECONDS,
) -> None:
    """Campaign until this process has led and lost: then on_lost, once, and return. An election
    that ends without having led (raised, mostly) is followed by a new one after retry_seconds;
    its failure is logged if none was in the last log_every_seconds, with how many were not."""
    unlogged = 0
    logged_at: float | None = None
    while True:
        term = _Term(on_lead, on_lost)
        election = new_election(term.lead, term.end)
        failure: Exception | None = None
        try:
            election.run()
        except Exception as err:
            failure = err
        if term.end():
            if failure is not None:
                log.error("leader election failed while leading: stopping (%s)", one_line(failure))
            return
        if failure is not None:
            now = monotonic()
            if logged_at is None or now - logged_at >= log_every_seconds:
                also = f" ({unlogged} more since the last report)" if unlogged else ""
                log.warning(
                    "leader election failed, campaigning again every %gs%s: %s", retry_seconds, also, one_line(failure)
                )
                logged_at, unlogged = now, 0
            else:
                unlogged += 1
        sleep(retry_seconds)


def lease_lock(api_client: client.ApiClient, *, namespace: str, name: str, identity: str) -> LeaseLock:
    """The Lease the replicas campaign for. The election reads it, creates it when there is none
    and replaces it to renew (the chart's leader-election Role grants just that)."""
    lock = LeaseLock(name, namespace, identity)  # type: ignore[no-untyped-call]
    # The lock makes its own API object on the client's default configuration: use ours.
    lock.api_instance = client.CoordinationV1Api(api_client)
    return lock


def client_elections(lock: LeaseLock) -> NewElection:
    """The client's elections for the Lease, with lameduck's timings."""

    def new_election(on_lead: Callable[[], object], on_lost: Callable[[], object]) -> Election:
        config = electionconfig.Config(  # type: ignore[no-untyped-call]
            lock, LEASE_DURATION_SECONDS, RENEW_DEADLINE_SECONDS, RETRY_PERIOD_SECONDS, on_lead, on_lost
        )
        election: Election = leaderelection.LeaderElection(config)  # type: ignore[no-untyped-call]
        return election

    return new_election


def start_election(
    api_client: client.ApiClient,
    *,
    namespace: str,
    name: str,
    identity: str,
    on_lead: Callable[[], object],
    on_lost: Callable[[], object],
) -> threading.Thread:
    """Campaign in a thread of its own (see campaign); on_lead when this process leads, on_lost
    when it no longer may (the callbacks run in the election's threads)."""
    elections = client_elections(lease_lock(api_client, namespace=namespace, name=name, identity=identity))

    def run() -> None:
        try:
            campaign(elections, on_lead=on_lead, on_lost=on_lost)
        except Exception:  # campaign's own failure: stop, and the restart campaigns afresh
            log.exception("leader election stopped")
            on_lost()

    thread = threading.Thread(target=run, name="lameduck-leader-election", daemon=True)
    thread.start()
    return thread
