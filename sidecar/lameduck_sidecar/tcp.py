"""What the kernel shows of the pod's network namespace (the sidecar shares it with the app):
its TCP sockets through sock_diag, with /proc/net/tcp as the fallback, and the count of
accepted connections from /proc/net/snmp. Parsing is pure; reading is one call each."""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Collection
from pathlib import Path

from lameduck_sidecar import sockdiag
from lameduck_sidecar.sockdiag import LISTEN, NEW_SYN_RECV, SYN_RECV, TIME_WAIT, Address, TcpSocket, unmapped
from lameduck_sidecar.traffic import Snapshot, default_gateways

log = logging.getLogger("lameduck.sidecar")
# Request sockets (SYN_RECV, NEW_SYN_RECV) are not connections yet: the kernel counts an
# accept once the handshake ends, and so do we.
OPEN_STATES = sockdiag.ALL_STATES & ~sockdiag.mask(TIME_WAIT, SYN_RECV, NEW_SYN_RECV)


def _address(hex_text: str) -> Address:
    """An address as /proc/net/tcp{,6} prints it: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_text)
    data = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return unmapped(ipaddress.ip_address(data))


def parse(text: str) -> list[TcpSocket]:
    """The sockets in the text of /proc/net/tcp or /proc/net/tcp6 (no byte counters there)."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5:
            continue
        local, remote, state = fields[1], fields[2], int(fields[3], 16)
        remote_address, remote_port = remote.rsplit(":", 1)
        local_port, rqueue = int(local.rsplit(":", 1)[1], 16), int(fields[4].split(":")[1], 16)
        found.append(TcpSocket(state, local_port, _address(remote_address), int(remote_port, 16), rqueue, None))
    return found


def snmp_counter(snmp: str, name: str, table: str = "Tcp") -> int | None:
    """One counter of /proc/net/snmp (or /proc/net/netstat): each table is a line of names
    and a line of values, both starting with `<table>:`. None when it is not there."""
    rows = [line.split() for line in snmp.splitlines() if line.startswith(f"{table}:")]
    if len(rows) < 2 or name not in rows[0][1:] or len(rows[1]) != len(rows[0]):
        return None
    try:
        return int(rows[1][rows[0].index(name)])
    except ValueError:
        return None


def passive_opens(snmp: str) -> int | None:
    """The kernel's count of accepted TCP connections (Tcp: PassiveOpens in /proc/net/snmp)."""
    return snmp_counter(snmp, "PassiveOpens")


def resets_sent(snmp: str) -> int | None:
    """The kernel's count of TCP segments the namespace sent with RST (Tcp: OutRsts): a SYN to
    a port nobody listens on, a segment for a connection that is gone or was closed with data
    unread, an abortive close. See after_release.py for what it tells."""
    return snmp_counter(snmp, "OutRsts")


class KernelView:
    """Reads a Snapshot: the accept counter, then the sockets (see traffic.py for why only
    the node's TIME_WAIT sockets are asked for), then the sidecar's own count."""

    def __init__(
        self,
        own_port: int,
        own_accepted: Callable[[], int],
        node_addresses: Collection[Address],
        proc: Path = Path("/proc/net"),
    ) -> None:
        self.own_port = own_port
        self.own_accepted = own_accepted
        self.node_addresses = frozenset(node_addresses)
        self.proc = proc
        self.netlink = True

    def sockets(self) -> list[TcpSocket]:
        if self.netlink:
            try:
                found = sockdiag.dump(OPEN_STATES, with_info=True)
                if self.node_addresses:
                    found += sockdiag.dump(
                        sockdiag.mask(TIME_WAIT), with_info=False, remote_addresses=self.node_addresses
                    )
                return found
            except OSError as err:  # sock_diag refused (a seccomp profile, an old kernel)
                self.netlink = False
                log.warning(json.dumps({"event": "sock_diag_unavailable", "reason": str(err)}))
        found = []
        for name in ("tcp", "tcp6"):
            try:
                found += parse((self.proc / name).read_text())
            except OSError:
                continue
        return [s for s in found if s.state not in (SYN_RECV, NEW_SYN_RECV)]

    def snmp(self) -> str:
        try:
            return (self.proc / "snmp").read_text()
        except OSError:
            return ""

    def accepted(self) -> int | None:
        return passive_opens(self.snmp())

    def snapshot(self) -> Snapshot:
        snmp = self.snmp()  # one read gives both counters
        sockets = self.sockets()
        pending = sum(s.rqueue for s in sockets if s.state == LISTEN and s.local_port == self.own_port)
        return Snapshot(passive_opens(snmp), self.own_accepted(), pending, sockets, resets_sent(snmp))


def node_addresses(host_ip: str, proc: Path = Path("/proc/net")) -> set[Address]:
    """Where the node's own connections to the pod come from: its address, and with bridge
    CNIs the pod's default gateway."""
    found: set[Address] = set()
    if host_ip:
        try:
            found.add(ipaddress.ip_address(host_ip))
        except ValueError:
            log.warning(json.dumps({"event": "bad_host_ip", "host_ip": host_ip}))
    texts = []
    for name in ("route", "ipv6_route"):
        try:
            texts.append((proc / name).read_text())
        except OSError:
            texts.append("")
    return found | default_gateways(*texts)
