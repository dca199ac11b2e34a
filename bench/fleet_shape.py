"""The fleet's shape beyond its Deployments' count, for bench/fleet.py: which Deployments carry
the readiness gate, how the fleet's rollout limit is shared between its two policies, how many
pods the churn deletes by when, and how many pods the fake nodes must take. Pure:
bench/tests/test_fleet.py drives it with time as an argument.
"""

from __future__ import annotations

import math

# Deployment i opts out with i % OPT_OUT_EVERY == 0 (bench.fleet.fleet_deployment).
OPT_OUT_EVERY = 10
# The burst phase's maxConcurrentRollouts (the most a policy allows).
BURST_LIMIT = 1000


def gate_every(share: float) -> int:
    """Every k-th Deployment carries the gate for a share of about 1/k (0.1: every 10th); 0: none."""
    if not 0 <= share <= 1:
        raise ValueError(f"a share is from 0 to 1, got {share}")
    return 0 if share == 0 else max(1, round(1 / share))


def is_gated(i: int, every: int) -> bool:
    """The last of each run of `every`, so that at every 10th the gated ones are not the
    opted-out ones (every 10th from 0)."""
    return every > 0 and i % every == every - 1


def split_limit(limit: int, every: int) -> tuple[int, int]:
    """maxConcurrentRollouts for the main policy and the gated one, in proportion to the
    Deployments each selects, so that the fleet as a whole keeps to `limit` (a policy takes
    at least 1)."""
    if every == 0:
        return limit, 0
    gated = max(1, round(limit / every))
    return max(1, limit - gated), gated


def pods_due(pods: int, fraction_per_minute: float, elapsed_seconds: float) -> int:
    """Deletions due after elapsed_seconds at a steady fraction_per_minute of `pods` a minute."""
    return math.floor(pods * fraction_per_minute * elapsed_seconds / 60)


def pods_to_delete(pods: int, fraction_per_minute: float, elapsed_seconds: float, started: int) -> int:
    """The deletions to start now, `started` having been started: those due and not started,
    so that a tick that ran late is caught up by the next."""
    return max(0, pods_due(pods, fraction_per_minute, elapsed_seconds) - started)


def pods_at_most(deployments: int, replicas: int, rolling_at_once: int) -> int:
    """The fleet's pods at its busiest: every replica, and a Deployment's surge of new pods
    (maxSurge 25 %, rounded up) for each of the Deployments rolling at once."""
    return deployments * replicas + min(deployments, rolling_at_once) * math.ceil(replicas / 4)


def rolling_at_once(plain_client_updates: int, webhook_updates: int) -> int:
    """The most Deployments bench.fleet has rolling at once: the plain client's updates, or the
    burst's and then the webhook phase's, which start before the burst's rollouts are done."""
    return max(plain_client_updates, BURST_LIMIT + webhook_updates)


def room_on_fake_nodes(pods: int, nodes: int, pods_per_node: int) -> str | None:
    """Why the fake nodes cannot take `pods`, or None when they can."""
    if nodes * pods_per_node >= pods:
        return None
    return (
        f"{nodes} fake nodes of {pods_per_node} pods take {nodes * pods_per_node:,} pods, "
        f"the fleet needs up to {pods:,}: raise --nodes (at most 255) or --pods-per-node (at most 250)"
    )


def setup_timeout_seconds(pods: int) -> float:
    """How long the fleet's pods may take to start: 30 minutes, or 10 pods a second when more
    (5,000 took 180 to 270 s)."""
    return max(1800.0, pods / 10)
