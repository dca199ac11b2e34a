"""New work from the kernel's view: connections, probes, the sidecar's own, reused connections."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import ip_address

import pytest

from lameduck_sidecar.sockdiag import ESTABLISHED, LISTEN, TIME_WAIT, TcpSocket
from lameduck_sidecar.traffic import Probe, Snapshot, TrafficCounter, default_gateways, parse_probes

Conn = tuple[int, str, int]
NODE = ip_address("10.244.0.1")
CLIENT = ip_address("10.244.0.9")
APP, OTHER_APP, OWN = 8080, 8081, 9901


def listening(port: int, queued: int = 0) -> TcpSocket:
    return TcpSocket(LISTEN, port, ip_address("0.0.0.0"), 0, queued, None)


@dataclass
class Pod:
    """A pod's network namespace as a test drives it: the kernel's accept counter, the
    sidecar's own count, and the sockets there are."""

    accepted: int = 100
    own: int = 0
    own_queued: int = 0
    sockets: dict[Conn, TcpSocket] = field(default_factory=dict)
    next_port: int = 40000

    def connect(self, remote: object, port: int = APP, *, state: int = ESTABLISHED, received: int | None = 0) -> Conn:
        """A connection the kernel accepted; it stays in the table (open or TIME_WAIT)."""
        self.accepted += 1
        self.next_port += 1
        k = (port, str(remote), self.next_port)
        self.sockets[k] = TcpSocket(state, port, ip_address(str(remote)), self.next_port, 0, received)
        return k

    def came_and_went(self, count: int = 1) -> None:
        """Connections accepted and gone before the table was read (the client closed first)."""
        self.accepted += count

    def receive(self, k: Conn, count: int) -> None:
        sock = self.sockets[k]
        self.sockets[k] = TcpSocket(
            sock.state, sock.local_port, sock.remote, sock.remote_port, 0, (sock.bytes_received or 0) + count
        )

    def close(self, k: Conn) -> None:
        del self.sockets[k]

    def snapshot(self, *, with_counter: bool = True) -> Snapshot:
        table = [listening(APP), listening(OTHER_APP), listening(OWN, self.own_queued), *self.sockets.values()]
        return Snapshot(self.accepted if with_counter else None, self.own, self.own_queued, table)


def counter(probes: tuple[Probe, ...] = (), app_ports: frozenset[int] = frozenset({APP, OTHER_APP})) -> TrafficCounter:
    return TrafficCounter(app_ports, OWN, probes, frozenset({NODE}), quiet_period=1.0)


def seen(traffic: TrafficCounter, now: float, snapshot: Snapshot) -> tuple[int, int]:
    """(new connections, open connections that received data)."""
    work = traffic.observe(now, snapshot)
    return work.new_connections, len(work.streaks)


def test_what_is_open_when_the_hold_starts_is_not_new() -> None:
    pod = Pod()
    pod.connect(CLIENT)
    traffic = counter()
    assert seen(traffic, 0.0, pod.snapshot()) == (0, 0)
    assert seen(traffic, 0.1, pod.snapshot()) == (0, 0)


def test_every_accepted_connection_counts_even_one_gone_before_the_table_was_read() -> None:
    pod = Pod()
    traffic = counter()
    traffic.observe(0.0, pod.snapshot())
    pod.connect(CLIENT)
    pod.came_and_went(2)
    assert seen(traffic, 0.1, pod.snapshot()) == (3, 0)
    assert seen(traffic, 0.2, pod.snapshot()) == (0, 0)


def test_the_sidecars_own_connections_never_count() -> None:
    pod = Pod()
    traffic = counter()
    traffic.observe(0.0, pod.snapshot())
    # kubelet's preStop call from a second container, still in the sidecar's accept queue
    pod.accepted += 1
    pod.own_queued = 1
    assert seen(traffic, 0.1, pod.snapshot()) == (0, 0)
    pod.own, pod.own_queued = 1, 0  # the server took it
    assert seen(traffic, 0.2, pod.snapshot()) == (0, 0)
    pod.accepted += 3
    pod.own += 3
    assert seen(traffic, 0.3, pod.snapshot()) == (0, 0)


def test_probes_on_schedule_never_count() -> None:
    pod = Pod()
    traffic = counter((Probe(APP, 1.0),))
    traffic.observe(0.0, pod.snapshot())
    counted = 0
    now = 0.0
    for tick in range(1, 101):  # ten seconds of polls every 0.1 s
        now = tick / 10
        if tick % 10 == 3:  # kubelet's probe, once a second, closed by the app: TIME_WAIT
            pod.connect(NODE, state=TIME_WAIT, received=None)
        counted += traffic.observe(now, pod.snapshot()).new_connections
    assert counted == 0


def test_a_probe_the_counter_and_the_table_see_at_different_polls_is_one_probe() -> None:
    pod = Pod()
    traffic = counter((Probe(APP, 1.0),))
    traffic.observe(0.0, pod.snapshot())
    probe = pod.connect(NODE, state=TIME_WAIT, received=None)
    pod.accepted -= 1  # in the table (read second) before the counter (read first) has it
    assert seen(traffic, 1.0, pod.snapshot()) == (0, 0)
    pod.accepted += 1
    assert seen(traffic, 1.1, pod.snapshot()) == (0, 0), "the dip recovers, nothing is told"
    pod.connect(CLIENT)
    assert seen(traffic, 1.2, pod.snapshot()) == (1, 0), "and real traffic after it still counts"
    pod.close(probe)
    pod.came_and_went()  # the next probe, its client closed first: gone before the table was read
    assert seen(traffic, 2.0, pod.snapshot()) == (0, 0)
    pod.came_and_went()  # a second unseen connection in the same period is not the probe
    assert seen(traffic, 2.1, pod.snapshot()) == (1, 0)


def test_connections_from_the_node_beyond_one_per_probe_period_count() -> None:
    pod = Pod()
    traffic = counter((Probe(APP, 10.0),))
    traffic.observe(0.0, pod.snapshot())
    pod.connect(NODE, state=TIME_WAIT, received=None)  # the probe
    assert seen(traffic, 1.0, pod.snapshot()) == (0, 0)
    pod.connect(NODE)  # a NodePort client, SNATed to the node's address
    assert seen(traffic, 2.0, pod.snapshot()) == (1, 0)
    pod.connect(NODE, state=TIME_WAIT, received=None)  # the next probe, on time
    assert seen(traffic, 11.0, pod.snapshot()) == (0, 0)


@pytest.mark.parametrize(
    ("remote", "port", "counted"),
    [
        (CLIENT, APP, 1),  # a pod's connection to the probed port is never a probe
        (NODE, OTHER_APP, 1),  # the node's connection to a port no probe checks
        (NODE, APP, 0),
    ],
)
def test_only_the_nodes_connections_to_a_probed_port_can_be_a_probe(remote: object, port: int, counted: int) -> None:
    pod = Pod()
    traffic = counter((Probe(APP, 10.0),))
    traffic.observe(0.0, pod.snapshot())
    pod.connect(remote, port, state=TIME_WAIT, received=None)
    assert seen(traffic, 1.0, pod.snapshot()) == (counted, 0)


def test_two_probes_on_one_port_vouch_for_two_connections_a_period() -> None:
    pod = Pod()
    traffic = counter((Probe(APP, 5.0), Probe(APP, 5.0)))
    traffic.observe(0.0, pod.snapshot())
    pod.connect(NODE, state=TIME_WAIT, received=None)
    pod.connect(NODE, state=TIME_WAIT, received=None)
    assert seen(traffic, 1.0, pod.snapshot()) == (0, 0)
    pod.connect(NODE, state=TIME_WAIT, received=None)
    assert seen(traffic, 2.0, pod.snapshot()) == (1, 0)


def test_requests_on_open_connections_count_as_reused() -> None:
    pod = Pod()
    pooled = pod.connect(CLIENT, received=300)
    other = pod.connect(CLIENT, OTHER_APP, received=0)
    traffic = counter()
    traffic.observe(0.0, pod.snapshot())
    pod.receive(pooled, 120)
    pod.receive(other, 50)
    assert seen(traffic, 0.1, pod.snapshot()) == (0, 2)
    assert seen(traffic, 0.2, pod.snapshot()) == (0, 0), "nothing new received"


def test_data_on_connections_that_are_not_the_apps_is_not_work() -> None:
    pod = Pod()
    own = pod.connect(NODE, OWN, received=0)  # kubelet's preStop call to the sidecar
    outbound = pod.connect(ip_address("10.96.0.1"), 41234, received=0)  # the app's own client connection
    pod.accepted -= 1
    traffic = counter()
    traffic.observe(0.0, pod.snapshot())
    pod.receive(own, 10)
    pod.receive(outbound, 5000)
    assert seen(traffic, 0.1, pod.snapshot()) == (0, 0)


def test_without_declared_ports_every_listening_port_but_the_sidecars_is_the_apps() -> None:
    pod = Pod()
    conn = pod.connect(CLIENT, OTHER_APP, received=0)
    traffic = counter(app_ports=frozenset())
    traffic.observe(0.0, pod.snapshot())
    pod.receive(conn, 1)
    assert seen(traffic, 0.1, pod.snapshot()) == (0, 1)


def test_a_probe_connection_receiving_its_request_is_not_reuse() -> None:
    pod = Pod()
    traffic = counter((Probe(APP, 10.0),))
    traffic.observe(0.0, pod.snapshot())
    probe = pod.connect(NODE, received=0)
    assert seen(traffic, 0.1, pod.snapshot()) == (0, 0)
    pod.receive(probe, 110)  # its GET /healthz arrives after the handshake
    assert seen(traffic, 0.2, pod.snapshot()) == (0, 0)


def test_without_the_kernel_counter_the_table_alone_counts() -> None:
    pod = Pod()
    traffic = counter((Probe(APP, 10.0),))
    traffic.observe(0.0, pod.snapshot(with_counter=False))
    pod.connect(CLIENT)
    pod.connect(NODE, state=TIME_WAIT, received=None)
    assert seen(traffic, 0.1, pod.snapshot(with_counter=False)) == (1, 0)


def test_memory_follows_the_table_not_the_history() -> None:
    pod = Pod()
    traffic = counter()
    traffic.observe(0.0, pod.snapshot())
    for tick in range(1, 2001):
        k = pod.connect(CLIENT)
        traffic.observe(tick / 10, pod.snapshot())
        pod.close(k)
    assert len(traffic._bytes) <= 1
    assert len(traffic._last_data) <= 1
    assert len(traffic._streak) <= 1


def test_default_gateways_from_the_route_tables() -> None:
    route = (
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "eth0\t00000000\t0100F40A\t0003\t0\t0\t0\t00000000\n"
        "eth0\t0000F40A\t00000000\t0001\t0\t0\t0\t0000FFFF\n"
        "eth0\t0000000A\t0200F40A\t0003\t0\t0\t0\t000000FF\n"  # a route with a gateway, not the default
        "eth1\t00000000\t00000000\t0001\t0\t0\t0\t00000000\n"  # a default route with no gateway
    )
    ipv6_route = (
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "fd000000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n"
        "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n"
        "fd990000000000000000000000000000 40 00000000000000000000000000000000 00 "
        "fd000000000000000000000000000002 00000400 00000001 00000000 00000003 eth0\n"
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 00000400 00000001 00000000 00000001 eth1\n"
    )
    assert default_gateways(route, ipv6_route) == {ip_address("10.244.0.1"), ip_address("fd00::1")}
    assert default_gateways("Iface\tDestination\tGateway\n", "") == set()


def test_a_busy_streak_starts_again_only_after_a_pause_as_long_as_the_quiet_period() -> None:
    pod = Pod()
    pooled = pod.connect(CLIENT, received=0)
    traffic = counter()
    traffic.observe(0.0, pod.snapshot())
    starts = []
    for now in (0.5, 1.2, 1.9, 3.5, 4.0):  # a pause of 1.6 s before 3.5
        pod.receive(pooled, 10)
        starts.append(traffic.observe(now, pod.snapshot()).streaks)
    assert starts == [(0.0,), (0.0,), (0.0,), (3.5,), (3.5,)], "busy since the hold began, then again from 3.5"


def test_a_connection_opened_during_the_hold_starts_its_streak_when_first_seen() -> None:
    pod = Pod()
    traffic = counter()
    traffic.observe(0.0, pod.snapshot())
    conn = pod.connect(CLIENT, received=0)
    assert seen(traffic, 2.0, pod.snapshot()) == (1, 0)
    pod.receive(conn, 10)
    assert traffic.observe(2.5, pod.snapshot()).streaks == (2.0,)


def test_without_the_kernel_counter_each_poll_adds_what_it_sees() -> None:
    pod = Pod()
    traffic = counter()
    traffic.observe(0.0, pod.snapshot(with_counter=False))
    pod.connect(CLIENT)
    pod.connect(CLIENT)
    assert seen(traffic, 0.1, pod.snapshot(with_counter=False)) == (2, 0)
    pod.connect(CLIENT)
    assert seen(traffic, 0.2, pod.snapshot(with_counter=False)) == (1, 0)


def test_a_counter_that_goes_away_leaves_the_table_to_count() -> None:
    pod = Pod()
    traffic = counter()
    traffic.observe(0.0, pod.snapshot())
    pod.connect(CLIENT)
    assert seen(traffic, 0.1, pod.snapshot(with_counter=False)) == (1, 0)


def test_a_probe_exactly_one_period_less_the_allowance_after_the_last_is_still_the_probe() -> None:
    pod = Pod()
    traffic = counter((Probe(APP, 1.0),))
    traffic.observe(0.0, pod.snapshot())
    pod.connect(NODE, state=TIME_WAIT, received=None)
    assert seen(traffic, 1.0, pod.snapshot()) == (0, 0)
    pod.connect(NODE, state=TIME_WAIT, received=None)
    assert seen(traffic, 1.75, pod.snapshot()) == (0, 0), "1.0 + 1 s - 0.25 s"


def test_a_connection_the_sidecar_is_slow_to_take_is_its_own_for_as_long_as_it_waits() -> None:
    pod = Pod()
    traffic = counter()
    traffic.observe(0.0, pod.snapshot())
    pod.accepted += 1
    pod.own_queued = 1  # kubelet's call waits in the sidecar's queue for three polls
    for now in (0.1, 0.2, 0.3):
        assert seen(traffic, now, pod.snapshot()) == (0, 0)
    pod.connect(CLIENT)
    pod.connect(CLIENT)
    assert seen(traffic, 0.4, pod.snapshot()) == (2, 0), "and real traffic after it counts in full"


def test_a_pause_exactly_as_long_as_the_quiet_period_starts_a_new_streak() -> None:
    pod = Pod()
    pooled = pod.connect(CLIENT, received=0)
    traffic = counter()
    traffic.observe(0.0, pod.snapshot())
    pod.receive(pooled, 1)
    assert traffic.observe(0.5, pod.snapshot()).streaks == (0.0,)
    pod.receive(pooled, 1)
    assert traffic.observe(1.5, pod.snapshot()).streaks == (1.5,)


def test_empty_items_in_the_probe_list_are_skipped() -> None:
    assert parse_probes("8080:1,,9090:2, ") == (Probe(8080, 1.0), Probe(9090, 2.0))
