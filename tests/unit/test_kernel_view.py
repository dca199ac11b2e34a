"""The sidecar's view of its network namespace: snapshots from sock_diag or /proc, node addresses."""

from __future__ import annotations

import json
import socket
from ipaddress import ip_address
from pathlib import Path

import pytest

from lameduck_sidecar import sockdiag
from lameduck_sidecar.sockdiag import ESTABLISHED, LISTEN, TIME_WAIT
from lameduck_sidecar.tcp import KernelView, node_addresses, parse, passive_opens, resets_sent, snmp_counter

PROC_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:26AD 00000000:0000 0A 00000000:0000001C 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0500000A:1F90 0100000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 0500000A:1F90 0100000A:C351 06 00000000:00000000 00:00000000 00000000     0        0 0 3 0 0 0 0 0 0
   4: 0500000A:1F90 0900000A:C351 03 00000000:00000000 00:00000000 00000000     0        0 0 3 0 0 0 0 0 0
"""
PROC_TCP6 = """  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 0000000000000000FFFF00000500000A:1F90 0000000000000000FFFF00000100000A:C352 01 00000000:00000000 00
   1: 000080FE00000000FF7E4A1C3E2F01FE:1F90 000080FE00000000FF7E4A1C3E2F01FE:C353 01 00000000:00000000 00
"""
SNMP = "Tcp: RtoAlgorithm PassiveOpens OutRsts\nTcp: 1 4242 17\n"
# /proc/net/snmp as a 6.x kernel writes it (Ip, Icmp and Udp tables cut short), and as a 3.x
# kernel did, before InCsumErrors.
TCP_NAMES = (
    "Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab"
    " InSegs OutSegs RetransSegs InErrs OutRsts"
)
SNMP_6 = f"""Ip: Forwarding DefaultTTL InReceives InHdrErrors
Ip: 1 64 231545 0
IcmpMsg: InType3 OutType3
IcmpMsg: 4 3
{TCP_NAMES} InCsumErrors
Tcp: 1 200 120000 -1 12694 12166 237 1499 150 232794 210282 35 0 1338 0
Udp: InDatagrams NoPorts InErrors OutDatagrams
Udp: 449 0 0 451
"""
SNMP_3 = f"""{TCP_NAMES}
Tcp: 1 200 120000 -1 3 5 0 0 2 120 118 0 0 4
"""


def test_parse_proc_net_tcp() -> None:
    found = parse(PROC_TCP)
    assert [(s.state, s.local_port, str(s.remote), s.remote_port) for s in found] == [
        (LISTEN, 8080, "0.0.0.0", 0),
        (LISTEN, 9901, "0.0.0.0", 0),
        (ESTABLISHED, 8080, "10.0.0.1", 50000),
        (TIME_WAIT, 8080, "10.0.0.1", 50001),
        (3, 8080, "10.0.0.9", 50001),
    ]
    assert [s.rqueue for s in found[:2]] == [2, 28], "a listening socket's accept queue, in hex"
    assert all(s.bytes_received is None for s in found)


def test_parse_proc_net_tcp6_reads_mapped_and_native_addresses() -> None:
    mapped, native = parse(PROC_TCP6)
    assert (str(mapped.remote), mapped.remote_port) == ("10.0.0.1", 50002)
    assert (str(native.remote), native.local_port) == ("fe80::1c4a:7eff:fe01:2f3e", 8080)


def test_passive_opens() -> None:
    snmp = "Tcp: RtoAlgorithm RtoMin PassiveOpens CurrEstab\nTcp: 1 200 12362 166\nUdp: InDatagrams\nUdp: 5\n"
    assert passive_opens(snmp) == 12362
    assert passive_opens("Udp: x\nUdp: 1\n") is None


@pytest.mark.parametrize(
    ("snmp", "accepted", "resets"),
    [
        (SNMP_6, 12166, 1338),
        (SNMP_3, 5, 4),
        ("Udp: InDatagrams\nUdp: 5\n", None, None),  # no Tcp table
        ("Tcp: RtoAlgorithm PassiveOpens\nTcp: 1 9\n", 9, None),  # no OutRsts column
        ("Tcp: RtoAlgorithm PassiveOpens OutRsts\n", None, None),  # names without values
        ("Tcp: RtoAlgorithm PassiveOpens OutRsts\nTcp: 1 9\n", None, None),  # a short value line
        ("Tcp: RtoAlgorithm PassiveOpens OutRsts\nTcp: 1 9 x\n", 9, None),  # not a number
        ("", None, None),
    ],
    ids=["kernel-6", "kernel-3", "no-tcp", "no-outrsts", "no-values", "short", "garbled", "empty"],
)
def test_counters_of_proc_net_snmp(snmp: str, accepted: int | None, resets: int | None) -> None:
    assert (passive_opens(snmp), resets_sent(snmp)) == (accepted, resets)


def test_a_counter_is_read_from_its_own_table_only() -> None:
    assert snmp_counter(SNMP_6, "InReceives", table="Ip") == 231545
    assert snmp_counter(SNMP_6, "InReceives") is None, "not a Tcp counter"
    assert snmp_counter(SNMP_6, "Tcp:") is None, "the table's label is no counter"


def proc(tmp_path: Path) -> Path:
    (tmp_path / "tcp").write_text(PROC_TCP)
    (tmp_path / "tcp6").write_text(PROC_TCP6)
    (tmp_path / "snmp").write_text(SNMP)
    return tmp_path


def test_without_sock_diag_the_snapshot_comes_from_proc(tmp_path: Path) -> None:
    view = KernelView(9901, lambda: 7, {ip_address("10.0.0.1")}, proc(tmp_path))
    view.netlink = False
    snapshot = view.snapshot()
    assert (snapshot.accepted, snapshot.own_accepted, snapshot.own_pending) == (4242, 7, 28)
    assert snapshot.resets_sent == 17, "the same read of /proc/net/snmp gives the RSTs sent"
    assert [(s.state, s.local_port, str(s.remote), s.remote_port) for s in snapshot.sockets] == [
        (LISTEN, 8080, "0.0.0.0", 0),
        (LISTEN, 9901, "0.0.0.0", 0),
        (ESTABLISHED, 8080, "10.0.0.1", 50000),
        (TIME_WAIT, 8080, "10.0.0.1", 50001),
        (ESTABLISHED, 8080, "10.0.0.1", 50002),  # from tcp6, an IPv4 peer of a dual-stack listener
        (ESTABLISHED, 8080, "fe80::1c4a:7eff:fe01:2f3e", 50003),
    ], "both files read; a half-open SYN_RECV is not a connection yet"


def test_an_unreadable_proc_gives_an_empty_view_not_an_error(tmp_path: Path) -> None:
    view = KernelView(9901, lambda: 0, set(), tmp_path / "missing")
    view.netlink = False
    snapshot = view.snapshot()
    assert (snapshot.accepted, snapshot.sockets, snapshot.own_pending) == (None, [], 0)


def test_on_this_kernel_the_snapshot_sees_open_sockets_their_bytes_and_the_sidecars_queue() -> None:
    own = socket.create_server(("127.0.0.1", 0))
    app = socket.create_server(("127.0.0.1", 0))
    queued = socket.create_connection(own.getsockname())  # never accepted: waits in the sidecar's queue
    client = socket.create_connection(app.getsockname())
    served, _ = app.accept()
    try:
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")
        served.recv(100)
        view = KernelView(own.getsockname()[1], lambda: 0, {ip_address("127.0.0.9")})
        snapshot = view.snapshot()
        assert view.netlink, "sock_diag answered"
        assert isinstance(snapshot.accepted, int)
        assert snapshot.own_pending == 1
        (seen,) = [
            s
            for s in snapshot.sockets
            if s.local_port == app.getsockname()[1] and s.remote_port == client.getsockname()[1]
        ]
        assert seen.state == ESTABLISHED
        assert seen.bytes_received == 18
    finally:
        for sock in (queued, client, served, own, app):
            sock.close()


def test_the_nodes_addresses_are_its_ip_and_the_pods_default_gateways(tmp_path: Path) -> None:
    (tmp_path / "route").write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "eth0\t00000000\t0100F40A\t0003\t0\t0\t0\t00000000\n"
    )
    assert node_addresses("192.0.2.7", tmp_path) == {ip_address("192.0.2.7"), ip_address("10.244.0.1")}
    assert node_addresses("", tmp_path) == {ip_address("10.244.0.1")}
    assert node_addresses("not-an-ip", tmp_path / "missing") == set(), "a bad address is logged, not fatal"


def test_when_sock_diag_is_refused_the_view_says_so_once_and_reads_proc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def refused(*args: object, **kwargs: object) -> list[object]:
        calls.append(args)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(sockdiag, "dump", refused)
    view = KernelView(9901, lambda: 0, set(), proc(tmp_path))
    assert len(view.snapshot().sockets) == 6
    assert len(view.snapshot().sockets) == 6
    assert len(calls) == 1, "not asked again"
    (record,) = [json.loads(r.getMessage()) for r in caplog.records if "sock_diag" in r.getMessage()]
    assert record["event"] == "sock_diag_unavailable"
    assert "not permitted" in record["reason"]


def test_on_this_kernel_only_the_nodes_closed_connections_are_asked_for() -> None:
    """TIME_WAIT sockets pile up by the thousand; only those whose peer is the node can be
    probes, so only those are dumped (the kernel filters them)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    peers = {}
    for node_or_not in ("127.0.0.3", "127.0.0.4"):
        client = socket.socket()
        client.bind((node_or_not, 0))
        client.connect(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server closes first: TIME_WAIT on its side
        client.close()
        peers[node_or_not] = client
    try:
        view = KernelView(9901, lambda: 0, {ip_address("127.0.0.3")})
        closed = {str(s.remote) for s in view.snapshot().sockets if s.local_port == port and s.state == TIME_WAIT}
        assert closed == {"127.0.0.3"}
        assert view.netlink
    finally:
        server.close()


def test_the_nodes_ipv6_gateway_counts_and_a_bad_node_address_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "ipv6_route").write_text(
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n"
    )
    assert node_addresses("fd00::7", tmp_path) == {ip_address("fd00::7"), ip_address("fe80::1")}
    assert node_addresses("10.0.0.300", tmp_path) == {ip_address("fe80::1")}
    (record,) = [json.loads(r.getMessage()) for r in caplog.records if "bad_host_ip" in r.getMessage()]
    assert record == {"event": "bad_host_ip", "host_ip": "10.0.0.300"}


def test_an_ipv6_only_proc_and_bytes_waiting_on_the_sidecars_connections(tmp_path: Path) -> None:
    (tmp_path / "tcp6").write_text(
        PROC_TCP6 + "   2: 000080FE00000000FF7E4A1C3E2F01FE:26AD 000080FE00000000FF7E4A1C3E2F01FE:C354 01 "
        "00000000:00000005 00\n"
    )
    view = KernelView(9901, lambda: 0, set(), tmp_path)
    view.netlink = False
    snapshot = view.snapshot()
    assert len(snapshot.sockets) == 3, "no /proc/net/tcp: tcp6 is still read"
    assert snapshot.own_pending == 0, "unread bytes on a connection to the sidecar are no queued connection"
