"""New work reaching the app, from what the kernel shows of the pod's network namespace. Pure.

Each poll gives a `Snapshot`: the kernel's count of accepted connections (PassiveOpens, which
misses none however short-lived), how many of those the sidecar's own server took, and the
namespace's TCP sockets (every open one with its received-bytes counter, and the closed ones
in TIME_WAIT whose peer is the node). From two snapshots in a row `TrafficCounter` tells:

- new connections: accepted - the sidecar's own - kubelet's probes. The sidecar counts its
  own exactly (its server sees each connection). Each probe (readiness or liveness, from the
  pod spec) vouches for one connection per period: a connection from the node to its port,
  or one accepted and gone before the table was read (a probe whose client closed first
  leaves no socket behind). So probes alone never make a pod un-quiet, and any connection
  beyond one per probe per period is counted.
- reused connections: open inbound connections whose received bytes grew (new requests on
  pooled or keep-alive connections, which open nothing new), each with the start of its
  busy streak: since when it has carried data with no pause as long as quietPeriod. The hold
  (hold.py) tells by that start a data plane choosing the pod again from a connection that is
  only pinned to it (see `Hold.traffic`).

What it cannot tell apart: a connection from the node's address (a NodePort or load balancer
that SNATs, a client on the host) to a probed port, or one too short-lived to be seen, at
most once per probe period, looks like that probe when the probe itself does not come; any
data received counts as work (HTTP/2 or gRPC keepalive pings included).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from lameduck_sidecar.sockdiag import LISTEN, Address, TcpSocket

# (local port, remote address, remote port): one connection while its socket exists.
Key = tuple[int, Address, int]
# A probe may run this much earlier than one period after the last (scheduling, the poll).
PROBE_EARLY_SECONDS = 0.25


@dataclass(frozen=True)
class Probe:
    port: int
    period: float


@dataclass(frozen=True)
class Snapshot:
    accepted: int | None  # the kernel's PassiveOpens counter; None when unknown
    own_accepted: int  # connections the sidecar's own server accepted, cumulative
    # Connections to the sidecar's port the kernel accepted that its server has yet to take
    # (its listening socket's queue): the kernel's counter already has them.
    own_pending: int
    sockets: Sequence[TcpSocket]
    # The kernel's OutRsts counter (after_release.py); None when unknown.
    resets_sent: int | None = None


def key(sock: TcpSocket) -> Key:
    return (sock.local_port, sock.remote, sock.remote_port)


def watched_ports(app_ports: frozenset[int], own_port: int, sockets: Iterable[TcpSocket]) -> set[int]:
    """The app's ports: those declared, and any other that listens (never the sidecar's)."""
    ports = set(app_ports) | {s.local_port for s in sockets if s.state == LISTEN}
    ports.discard(own_port)
    return ports


@dataclass
class _ProbeClock:
    probe: Probe
    next_at: float = -math.inf

    def vouch(self, now: float) -> bool:
        """Whether a connection now may be this probe's; if so, its period starts again."""
        if now < self.next_at:
            return False
        self.next_at = now + max(0.0, self.probe.period - PROBE_EARLY_SECONDS)
        return True


class Work(NamedTuple):
    """New work since the last poll."""

    new_connections: int
    # The busy-streak start of every open connection that received data.
    streaks: tuple[float, ...] = ()


class Traffic(Protocol):
    """Turns the kernel's view into new work (TrafficCounter; a fake in tests)."""

    def observe(self, now: float, snapshot: Snapshot) -> Work: ...


@dataclass
class TrafficCounter:
    app_ports: frozenset[int]  # the app's declared ports; its listening ports count too
    own_port: int
    probes: Sequence[Probe]
    node_addresses: frozenset[Address]
    quiet_period: float
    _clocks: list[_ProbeClock] = field(init=False)
    _baseline: bool = field(init=False, default=False)
    _accepted: int | None = field(init=False, default=None)
    _own: int = field(init=False, default=0)
    _bytes: dict[Key, int | None] = field(init=False, default_factory=dict)
    _probe_keys: set[Key] = field(init=False, default_factory=set)
    # Per open connection: when it last received data, and when its busy streak began.
    _last_data: dict[Key, float] = field(init=False, default_factory=dict)
    _streak: dict[Key, float] = field(init=False, default_factory=dict)
    # New connections counted so far, and the most that has been told (see observe).
    _count: int = field(init=False, default=0)
    _told: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._clocks = [_ProbeClock(p) for p in self.probes]

    def observe(self, now: float, snapshot: Snapshot) -> Work:
        """New work since the last snapshot; the first one only sets the baseline: what is
        open when the hold starts is not new, and is taken as busy since then."""
        ports = watched_ports(self.app_ports, self.own_port, snapshot.sockets)
        current: dict[Key, int | None] = {}
        fresh = 0
        fresh_from_node: list[Key] = []
        streaks: list[float] = []
        for sock in snapshot.sockets:
            if sock.state == LISTEN or sock.local_port not in ports:
                continue
            k = key(sock)
            current[k] = sock.bytes_received
            if k not in self._bytes:
                fresh += 1
                self._last_data[k] = self._streak[k] = now
                if sock.remote in self.node_addresses:
                    fresh_from_node.append(k)
                continue
            before = self._bytes[k]
            if (
                sock.bytes_received is not None
                and before is not None
                and sock.bytes_received > before
                and k not in self._probe_keys
            ):
                if now - self._last_data.get(k, now) >= self.quiet_period:
                    self._streak[k] = now  # it paused: a new streak
                self._last_data[k] = now
                streaks.append(self._streak.setdefault(k, now))
        if not self._baseline:
            self._baseline = True
            self._keep(snapshot, current, [])
            return Work(0)
        probes = [k for k in fresh_from_node if self._vouch(now, k[0])]
        if snapshot.accepted is not None and self._accepted is not None:
            own = snapshot.own_accepted + snapshot.own_pending
            others = (snapshot.accepted - self._accepted) - (own - self._own)
            # Accepted but gone before the table was read: a probe whose client closed first
            # leaves no socket on the pod's side, so a due probe may vouch for one of these.
            unseen = max(0, others - fresh)
            vouched = sum(1 for _ in range(unseen) if self._vouch(now, None))
            self._count += others - len(probes) - vouched
        else:  # no kernel counter: only what the socket table shows
            self._count += fresh - len(probes)
        # The counter is read before the table, so the table may show a connection the
        # counter has yet to count: the running count can dip and recover. Tell only what
        # passes its high mark, so nothing is told twice.
        new = max(0, self._count - self._told)
        self._told = max(self._told, self._count)
        self._keep(snapshot, current, probes)
        return Work(new, tuple(streaks))

    def _keep(self, snapshot: Snapshot, current: dict[Key, int | None], probes: list[Key]) -> None:
        if snapshot.accepted is not None:
            self._accepted = snapshot.accepted
        self._own = snapshot.own_accepted + snapshot.own_pending
        self._bytes = current
        self._probe_keys = {k for k in (*self._probe_keys, *probes) if k in current}
        for gone in [k for k in self._last_data if k not in current]:
            del self._last_data[gone]
            self._streak.pop(gone, None)

    def _vouch(self, now: float, port: int | None) -> bool:
        """Whether a due probe (on this port; None: on any) may have made a connection now."""
        return any(c.vouch(now) for c in self._clocks if port is None or c.probe.port == port)


def parse_probes(text: str) -> tuple[Probe, ...]:
    """`port:periodSeconds,...` as the operator writes LAMEDUCK_PROBES."""
    probes = []
    for item in text.split(","):
        if not item.strip():
            continue
        port, _, period = item.strip().partition(":")
        probes.append(Probe(int(port), float(period)))
    return tuple(probes)


def default_gateways(route: str, ipv6_route: str) -> set[Address]:
    """The pod's default gateways, from /proc/net/route and /proc/net/ipv6_route: with bridge
    CNIs the node reaches the pod (kubelet's probes included) from that address."""
    found: set[Address] = set()
    for line in route.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
            found.add(ipaddress.IPv4Address(int(fields[2], 16).to_bytes(4, "little")))
    for line in ipv6_route.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[0] == "0" * 32 and fields[1] == "00" and fields[4] != "0" * 32:
            found.add(ipaddress.IPv6Address(bytes.fromhex(fields[4])))
    return found
