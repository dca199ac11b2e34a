"""New inbound connections to the app, from /proc/net/tcp and tcp6 of the pod's network
namespace (the sidecar shares it with the app). Parsing is pure; reading is one call."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

LISTEN = "0A"
# A connection is one (local port, remote address, remote port); closed ones linger in
# TIME_WAIT, so even a request that came and went between two polls is seen.
Connection = tuple[int, str, int]


def parse(text: str) -> tuple[set[int], set[Connection]]:
    """(listening ports, connections) from the text of /proc/net/tcp or /proc/net/tcp6."""
    listening: set[int] = set()
    connections: set[Connection] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        local, remote, state = fields[1], fields[2], fields[3]
        local_port = int(local.rsplit(":", 1)[1], 16)
        if state == LISTEN:
            listening.add(local_port)
            continue
        remote_address, remote_port = remote.rsplit(":", 1)
        connections.add((local_port, remote_address, int(remote_port, 16)))
    return listening, connections


def inbound(
    listening: set[int], connections: Iterable[Connection], app_ports: frozenset[int], own_port: int
) -> set[Connection]:
    """Connections to the app's ports (or, when none are known, to any listening port but ours)."""
    ports = set(app_ports) if app_ports else listening
    ports.discard(own_port)
    return {c for c in connections if c[0] in ports}


def passive_opens(snmp: str) -> int | None:
    """The kernel's count of accepted TCP connections (Tcp: PassiveOpens in /proc/net/snmp)."""
    rows = [line.split() for line in snmp.splitlines() if line.startswith("Tcp:")]
    if len(rows) < 2 or "PassiveOpens" not in rows[0]:
        return None
    return int(rows[1][rows[0].index("PassiveOpens")])


class ConnectionTracker:
    """Counts connections not seen before."""

    def __init__(self, app_ports: frozenset[int], own_port: int, proc: Path = Path("/proc/net")) -> None:
        self.app_ports = app_ports
        self.own_port = own_port
        self.files = [proc / "tcp", proc / "tcp6"]
        self.snmp = proc / "snmp"
        self.seen: set[Connection] = set()
        self.opened: int | None = None

    def read(self) -> set[Connection]:
        listening: set[int] = set()
        connections: set[Connection] = set()
        for file in self.files:
            try:
                ports, found = parse(file.read_text())
            except OSError:
                continue
            listening |= ports
            connections |= found
        return inbound(listening, connections, self.app_ports, self.own_port)

    def new_connections(self) -> int:
        current = self.read()
        fresh = current - self.seen
        self.seen |= current
        return len(fresh)

    def new_opens(self) -> int:
        """Connections the kernel accepted for the pod since the last call (0 when unknown)."""
        try:
            current = passive_opens(self.snmp.read_text())
        except OSError:
            return 0
        if current is None:
            return 0
        fresh = 0 if self.opened is None else current - self.opened
        self.opened = current
        return fresh
