"""The target table and counters of the simulated external load balancer
(bench/external_lb.py): which pod addresses it sends new connections to, as a cloud load
balancer with IP targets (AWS NLB/ALB `target-type: ip`, a GCP NEG) does. Pure: the time and
the ready endpoints observed are arguments; bench/tests/test_lb_targets.py drives it.

A target (ip, port) goes through these phases:

- seen ready: *registering*. It takes new connections `registration_delay` later, the time a
  real LB's health checks take to pass. Not ready again before then: dropped, never used.
- *registered*: takes new connections, round robin with the other targets in rotation.
- not ready, or gone from the EndpointSlices, while registered: *draining*. The controller has
  asked the LB to deregister it, but the LB's data plane has not converged: it goes on
  picking the target for new connections for `deregistration_delay` (aws-load-balancer-
  controller #2366 and #1834 report 30 s to minutes), then the target leaves the table.
- ready again while draining: registered again at once (it never left the rotation). Seen
  ready after it left the table (a pod IP reused, or a pod back): registering anew.
"""

from __future__ import annotations

import errno
import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

DEFAULT_REGISTRATION_DELAY = 2.0
DEFAULT_DEREGISTRATION_DELAY = 45.0


@dataclass(frozen=True, order=True)
class Target:
    ip: str  # normalised: IPv6 in its compressed form, so one address is one target
    port: int

    @classmethod
    def of(cls, ip: str, port: int) -> Target:
        return cls(str(ipaddress.ip_address(ip)), port)

    @property
    def address(self) -> str:
        """ip:port, written as bench.dataplane's slice view writes endpoints (so the two compare)."""
        return f"{self.ip}:{self.port}"


class Phase(Enum):
    REGISTERING = "registering"
    REGISTERED = "registered"
    DRAINING = "draining"


class NegativeDelayError(ValueError):
    pass


@dataclass(frozen=True)
class LbSettings:
    registration_delay: float = DEFAULT_REGISTRATION_DELAY
    deregistration_delay: float = DEFAULT_DEREGISTRATION_DELAY

    def __post_init__(self) -> None:
        if self.registration_delay < 0 or self.deregistration_delay < 0:
            raise NegativeDelayError("the registration and deregistration delays must not be negative")


@dataclass(frozen=True)
class Pick:
    target: Target
    draining: bool  # picked while its deregistration was under way


@dataclass
class _Entry:
    phase: Phase
    since: float  # registering: when seen ready; draining: when seen not ready; registered: unused


class TargetTable:
    """The targets of one listener; `observe` each change of the endpoints, `pick` for each
    new connection. `now` must not go backwards between calls."""

    def __init__(self, settings: LbSettings = LbSettings()) -> None:
        self.settings = settings
        self._entries: dict[Target, _Entry] = {}
        self._last: Target | None = None

    def observe(self, now: float, ready: Iterable[Target]) -> None:
        """The endpoints ready now (every other target is not ready, or gone)."""
        self._advance(now)
        ready_now = set(ready)
        for target in ready_now:
            entry = self._entries.get(target)
            if entry is None:
                self._entries[target] = _Entry(Phase.REGISTERING, now)
            elif entry.phase is Phase.DRAINING:
                self._entries[target] = _Entry(Phase.REGISTERED, now)
        for target, entry in list(self._entries.items()):
            if target in ready_now:
                continue
            if entry.phase is Phase.REGISTERING:
                del self._entries[target]
            elif entry.phase is Phase.REGISTERED:
                self._entries[target] = _Entry(Phase.DRAINING, now)

    def pick(self, now: float) -> Pick | None:
        """The next target in rotation, round robin (in address order, after the last one
        picked); None when none is in rotation."""
        rotation = self.rotation(now)
        if not rotation:
            return None
        chosen = next((t for t in rotation if self._last is None or t > self._last), rotation[0])
        self._last = chosen
        return Pick(chosen, self._entries[chosen].phase is Phase.DRAINING)

    def rotation(self, now: float) -> tuple[Target, ...]:
        """The targets new connections go to now: registered and draining ones."""
        self._advance(now)
        return tuple(sorted(t for t, e in self._entries.items() if e.phase is not Phase.REGISTERING))

    def phases(self, now: float) -> dict[Target, Phase]:
        self._advance(now)
        return {t: e.phase for t, e in sorted(self._entries.items())}

    def settled(self, now: float) -> bool:
        """Nothing registering or draining: the LB sends exactly to the ready endpoints."""
        return all(phase is Phase.REGISTERED for phase in self.phases(now).values())

    def _advance(self, now: float) -> None:
        for target, entry in list(self._entries.items()):
            if entry.phase is Phase.REGISTERING and now >= entry.since + self.settings.registration_delay:
                self._entries[target] = _Entry(Phase.REGISTERED, entry.since + self.settings.registration_delay)
            elif entry.phase is Phase.DRAINING and now >= entry.since + self.settings.deregistration_delay:
                del self._entries[target]


# -- counters -----------------------------------------------------------------------------


class ConnectFailure(Enum):
    """Why the LB could not open a connection to the target it picked."""

    REFUSED = "refused"  # nothing listens: the pod's app has exited
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"  # no route or no host: the pod and its address are gone
    OTHER = "other"


_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


def connect_failure(err: BaseException) -> ConnectFailure:
    if isinstance(err, TimeoutError):
        return ConnectFailure.TIMEOUT
    if isinstance(err, ConnectionRefusedError):
        return ConnectFailure.REFUSED
    if isinstance(err, OSError) and err.errno in _UNREACHABLE:
        return ConnectFailure.UNREACHABLE
    return ConnectFailure.OTHER


@dataclass
class LbCounters:
    """What one listener did since its counters were last reset."""

    accepted: int = 0
    no_target: int = 0  # connections closed at once: no target in rotation
    connections: Counter[Target] = field(default_factory=Counter)  # sent to each target (failed ones too)
    while_draining: Counter[Target] = field(default_factory=Counter)  # of those, picked while draining
    connect_failures: Counter[tuple[Target, ConnectFailure]] = field(default_factory=Counter)
    resets: int = 0  # relayed connections that ended in a reset from either side

    def as_dict(self) -> dict[str, Any]:
        failures: dict[str, dict[str, int]] = {}
        for (target, kind), count in sorted(self.connect_failures.items(), key=lambda i: (i[0][0], i[0][1].value)):
            failures.setdefault(target.address, {})[kind.value] = count
        return {
            "accepted": self.accepted,
            "no_target": self.no_target,
            "connections": {t.address: n for t, n in sorted(self.connections.items())},
            "connections_while_draining": {t.address: n for t, n in sorted(self.while_draining.items())},
            "connect_failures": failures,
            "connect_failures_total": sum(self.connect_failures.values()),
            "resets": self.resets,
        }
