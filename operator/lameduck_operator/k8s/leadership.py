"""Leader election on a coordination.k8s.io Lease, by the official client's implementation.

Timings: a killed leader's Lease expires LEASE_DURATION after its last renewal, and a
follower that polls every RETRY_PERIOD takes it over; so a new leader reconciles within
about LEASE_DURATION + RETRY_PERIOD (12 s) of the old one's death. A leader that cannot
renew for RENEW_DEADLINE stops before its Lease can expire, so two never reconcile at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kubernetes import client
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

LEASE_DURATION_SECONDS = 10
RENEW_DEADLINE_SECONDS = 7
RETRY_PERIOD_SECONDS = 2
log = logging.getLogger("lameduck.leadership")


def lease_lock(api_client: client.ApiClient, *, namespace: str, name: str, identity: str) -> LeaseLock:
    """The Lease the replicas campaign for. The election reads it, creates it when there is none
    and replaces it to renew (the chart's leader-election Role grants just that)."""
    lock = LeaseLock(name, namespace, identity)  # type: ignore[no-untyped-call]
    # The lock makes its own API object on the client's default configuration: use ours.
    lock.api_instance = client.CoordinationV1Api(api_client)
    return lock


def start_election(
    api_client: client.ApiClient,
    *,
    namespace: str,
    name: str,
    identity: str,
    on_lead: Callable[[], object],
    on_lost: Callable[[], object],
) -> threading.Thread:
    """Campaign in a thread of its own; on_lead when this process leads, on_lost when it no longer
    may (the callbacks run in that thread). An election that fails in any way counts as lost."""
    lock = lease_lock(api_client, namespace=namespace, name=name, identity=identity)
    config = electionconfig.Config(  # type: ignore[no-untyped-call]
        lock, LEASE_DURATION_SECONDS, RENEW_DEADLINE_SECONDS, RETRY_PERIOD_SECONDS, on_lead, on_lost
    )
    election = leaderelection.LeaderElection(config)  # type: ignore[no-untyped-call]

    def campaign() -> None:
        try:
            election.run()  # type: ignore[no-untyped-call]
        except Exception:
            log.exception("leader election failed")
            on_lost()

    thread = threading.Thread(target=campaign, name="lameduck-leader-election", daemon=True)
    thread.start()
    return thread
