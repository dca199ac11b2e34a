"""sock_diag: the parser on hand-built kernel replies, then dump() against this machine's kernel."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from lameduck_sidecar import sockdiag
from lameduck_sidecar.sockdiag import (
    ESTABLISHED,
    LISTEN,
    TIME_WAIT,
    SockDiagError,
    TcpSocket,
    build_request,
    dump,
    mask,
    parse_messages,
)

# ---- replies built by hand, as the kernel lays them out -----------------------------------

AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def nlmsg(kind: int, payload: bytes) -> bytes:
    """nlmsghdr {u32 len; u16 type; u16 flags; u32 seq; u32 pid} + payload, padded to 4."""
    return padded(struct.pack("=IHHII", 16 + len(payload), kind, 0x2, 1, 4242) + payload)


def rtattr(kind: int, payload: bytes) -> bytes:
    return padded(struct.pack("=HH", 4 + len(payload), kind) + payload)


def tcp_info(bytes_received: int, size: int = 248) -> bytes:
    """A struct tcp_info of `size` bytes whose tcpi_bytes_received (u64 at 128) is set if it fits."""
    info = bytearray(size)
    if size >= 136:
        struct.pack_into("=Q", info, 128, bytes_received)
    info[0] = 1  # tcpi_state, so the rest of the struct is not all zeros
    return bytes(info)


def diag_msg(
    family: int, state: int, ports: tuple[int, int], addresses: tuple[str, str], *, rqueue: int = 0, attrs: bytes = b""
) -> bytes:
    """struct inet_diag_msg {u8 family, state, timer, retrans; inet_diag_sockid id;
    u32 expires, rqueue, wqueue, uid, inode} followed by attributes, in an nlmsghdr of type 20."""
    (sport, dport), (src, dst) = ports, addresses
    sockid = (
        struct.pack(">HH", sport, dport)
        + ip_address(src).packed.ljust(16, b"\0")
        + ip_address(dst).packed.ljust(16, b"\0")
        + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)  # if, cookie[2]
    )
    msg = struct.pack("=BBBB", family, state, 0, 0) + sockid + struct.pack("=IIIII", 0, rqueue, 9, 65532, 777)
    return nlmsg(20, msg + attrs)


def done() -> bytes:
    return nlmsg(3, struct.pack("=i", 0))


def error(code: int) -> bytes:
    """struct nlmsgerr {int error; struct nlmsghdr msg} as the kernel answers a bad request."""
    return nlmsg(2, struct.pack("=i", code) + struct.pack("=IHHII", 72, 20, 0x301, 1, 0))


SHUTDOWN = rtattr(8, b"\x00")  # INET_DIAG_SHUTDOWN: a 1-byte attribute, padded, before the info
INFO = 2


@pytest.mark.parametrize(
    ("data", "sockets", "finished"),
    [
        pytest.param(
            diag_msg(
                AF_INET,
                1,
                (8080, 51000),
                ("10.0.0.5", "10.0.0.9"),
                rqueue=3,
                attrs=SHUTDOWN + rtattr(INFO, tcp_info(1234)),
            ),
            [TcpSocket(1, 8080, IPv4Address("10.0.0.9"), 51000, 3, 1234)],
            False,
            id="ipv4-with-info",
        ),
        pytest.param(
            diag_msg(AF_INET6, 1, (443, 60001), ("fd00::1", "fd00::beef"), attrs=rtattr(INFO, tcp_info(2**40 + 7))),
            [TcpSocket(1, 443, IPv6Address("fd00::beef"), 60001, 0, 2**40 + 7)],
            False,
            id="ipv6-with-info",
        ),
        pytest.param(
            diag_msg(
                AF_INET6, 1, (80, 40000), ("::ffff:10.0.0.5", "::ffff:192.168.1.20"), attrs=rtattr(INFO, tcp_info(5))
            ),
            [TcpSocket(1, 80, IPv4Address("192.168.1.20"), 40000, 0, 5)],
            False,
            id="v4-mapped-normalised",
        ),
        pytest.param(
            diag_msg(AF_INET, 6, (8080, 51001), ("10.0.0.5", "10.0.0.9")),
            [TcpSocket(6, 8080, IPv4Address("10.0.0.9"), 51001, 0, None)],
            False,
            id="time-wait-without-info",
        ),
        pytest.param(
            diag_msg(AF_INET, 1, (8080, 51002), ("10.0.0.5", "10.0.0.9"), attrs=SHUTDOWN),
            [TcpSocket(1, 8080, IPv4Address("10.0.0.9"), 51002, 0, None)],
            False,
            id="other-attributes-only",
        ),
        pytest.param(
            diag_msg(AF_INET, 1, (8080, 51003), ("10.0.0.5", "10.0.0.9"), attrs=rtattr(INFO, tcp_info(99, size=104))),
            [TcpSocket(1, 8080, IPv4Address("10.0.0.9"), 51003, 0, None)],
            False,
            id="short-tcp-info-of-an-old-kernel",
        ),
        pytest.param(
            diag_msg(AF_INET, 1, (8080, 51004), ("10.0.0.5", "10.0.0.9"), attrs=rtattr(INFO, tcp_info(99, size=135))),
            [TcpSocket(1, 8080, IPv4Address("10.0.0.9"), 51004, 0, None)],
            False,
            id="tcp-info-one-byte-short",
        ),
        pytest.param(
            diag_msg(AF_INET, 10, (8080, 0), ("0.0.0.0", "0.0.0.0"), rqueue=17, attrs=rtattr(INFO, tcp_info(0))),
            [TcpSocket(10, 8080, IPv4Address("0.0.0.0"), 0, 17, 0)],
            False,
            id="listen-accept-queue",
        ),
        pytest.param(
            diag_msg(AF_INET, 10, (8080, 0), ("0.0.0.0", "0.0.0.0"))
            + diag_msg(AF_INET, 1, (8080, 51005), ("10.0.0.5", "10.0.0.7"), attrs=SHUTDOWN + rtattr(INFO, tcp_info(10)))
            + diag_msg(AF_INET6, 6, (8080, 51006), ("::1", "::1"))
            + done(),
            [
                TcpSocket(10, 8080, IPv4Address("0.0.0.0"), 0, 0, None),
                TcpSocket(1, 8080, IPv4Address("10.0.0.7"), 51005, 0, 10),
                TcpSocket(6, 8080, IPv6Address("::1"), 51006, 0, None),
            ],
            True,
            id="several-then-done",
        ),
        pytest.param(done(), [], True, id="done-alone"),
        pytest.param(error(0) + done(), [], True, id="ack-is-not-an-error"),
        pytest.param(b"", [], False, id="empty"),
    ],
)
def test_parse_messages(data: bytes, sockets: list[TcpSocket], finished: bool) -> None:
    assert parse_messages(data) == (sockets, finished)
    assert parse_messages(memoryview(bytearray(data))) == (sockets, finished)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(error(-errno.EINVAL), errno.EINVAL, id="nlmsg-error"),
        pytest.param(
            diag_msg(AF_INET, 1, (1, 2), ("10.0.0.1", "10.0.0.2")) + error(-errno.EPERM),
            errno.EPERM,
            id="after-a-socket",
        ),
        pytest.param(nlmsg(3, struct.pack("=i", -errno.ENOBUFS)), errno.ENOBUFS, id="done-with-error"),
        pytest.param(diag_msg(AF_INET, 1, (1, 2), ("10.0.0.1", "10.0.0.2"))[:50], errno.EBADMSG, id="truncated"),
        pytest.param(struct.pack("=IHHII", 8, 20, 0, 0, 0), errno.EBADMSG, id="length-below-header"),
    ],
)
def test_parse_messages_raises(data: bytes, code: int) -> None:
    with pytest.raises(SockDiagError) as raised:
        parse_messages(data)
    assert raised.value.errno == code


def test_build_request_layout() -> None:
    request = build_request(AF_INET6, mask(ESTABLISHED, LISTEN), with_info=True, seq=7)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", request)
    family, protocol, ext, pad, states = struct.unpack_from("=BBBBI", request, 16)
    assert (length, kind, flags, seq) == (len(request), 20, 0x301, 7)
    assert (family, protocol, ext, pad, states) == (AF_INET6, socket.IPPROTO_TCP, 1 << 1, 0, 0b100_0000_0010)
    assert request[24:] == bytes(48)  # a wildcard inet_diag_sockid
    assert build_request(AF_INET, 1 << 6, with_info=False)[18] == 0  # no extension asked for


def test_build_request_refuses_a_family_no_address_applies_to() -> None:
    with pytest.raises(ValueError, match="no remote address"):
        build_request(AF_INET, mask(ESTABLISHED), with_info=False, remote_addresses=[IPv6Address("::1")])
    # IPv4 peers can reach IPv6 (dual-stack) sockets, so the IPv6 family is always asked
    build_request(AF_INET6, mask(ESTABLISHED), with_info=False, remote_addresses=[IPv4Address("10.0.0.1")])


# ---- the real kernel, on loopback -----------------------------------------------------------


@pytest.fixture
def sockets() -> Iterator[Callable[[socket.socket], socket.socket]]:
    """Closes at the end whatever sockets the test registers."""
    opened: list[socket.socket] = []

    def keep(sock: socket.socket) -> socket.socket:
        opened.append(sock)
        return sock

    yield keep
    for sock in opened:
        with contextlib.suppress(OSError):
            sock.close()


def listener(host: str, keep: Callable[[socket.socket], socket.socket], dual_stack: bool = False) -> socket.socket:
    server = keep(socket.socket(AF_INET6 if ":" in host else AF_INET, socket.SOCK_STREAM))
    if dual_stack:
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind((host, 0))
    server.listen(16)
    return server


def connect(
    server: socket.socket, keep: Callable[[socket.socket], socket.socket], to: str, source: str | None = None
) -> tuple[socket.socket, socket.socket]:
    """(client, the server's side of it) of a new connection to `server` at address `to`."""
    client = keep(socket.socket(AF_INET6 if ":" in to else AF_INET, socket.SOCK_STREAM))
    if source is not None:
        client.bind((source, 0))
    client.connect((to, server.getsockname()[1]))
    accepted, _ = server.accept()
    return client, keep(accepted)


def port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def eventually(find: Callable[[], list[TcpSocket]], expect: Callable[[list[TcpSocket]], bool]) -> list[TcpSocket]:
    """find() once it satisfies expect (loopback is near-synchronous; allow the kernel a moment)."""
    deadline = time.monotonic() + 3
    found = find()
    while not expect(found) and time.monotonic() < deadline:
        time.sleep(0.02)
        found = find()
    return found


Identity = tuple[int, IPv4Address | IPv6Address, int]  # local port, remote address, remote port


def identity(local_port: int, remote: str, remote_port: int) -> Identity:
    return local_port, ip_address(remote), remote_port


def ours(found: list[TcpSocket], *wanted: Identity) -> dict[Identity, TcpSocket]:
    """The sockets of this test among all of the host's: a port alone is not enough, as IPv4
    and IPv6 sockets of others may use the same one."""
    return {key: s for s in found if (key := (s.local_port, s.remote, s.remote_port)) in wanted}


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_dump_finds_connections_and_their_received_bytes(
    host: str, sockets: Callable[[socket.socket], socket.socket]
) -> None:
    server = listener(host, sockets)
    client, accepted = connect(server, sockets, host)
    listen_port, client_port = port(server), port(client)
    listening = identity(listen_port, "::" if ":" in host else "0.0.0.0", 0)
    server_side, client_side = identity(listen_port, host, client_port), identity(client_port, host, listen_port)
    client.sendall(b"x" * 100)

    def find() -> list[TcpSocket]:
        return list(ours(dump(sockdiag.ALL_STATES, with_info=True), listening, server_side, client_side).values())

    found = eventually(find, lambda f: any(s.bytes_received == 100 for s in f))
    assert ours(found, listening, server_side, client_side) == {
        listening: TcpSocket(LISTEN, listen_port, ip_address(listening[1]), 0, 0, 0),
        server_side: TcpSocket(ESTABLISHED, listen_port, ip_address(host), client_port, 100, 100),  # 100 unread
        client_side: TcpSocket(ESTABLISHED, client_port, ip_address(host), listen_port, 0, 0),
    }

    assert accepted.recv(1000) == b"x" * 100
    client.sendall(b"y" * 50)
    found = eventually(find, lambda f: any(s.bytes_received == 150 for s in f))
    assert ours(found, server_side)[server_side].rqueue == 50
    assert ours(found, server_side)[server_side].bytes_received == 150


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_dump_sees_time_wait_of_the_side_that_closed_first(
    host: str, sockets: Callable[[socket.socket], socket.socket]
) -> None:
    server = listener(host, sockets)
    client, accepted = connect(server, sockets, host)
    listen_port, client_port = port(server), port(client)
    server_side, client_side = identity(listen_port, host, client_port), identity(client_port, host, listen_port)
    accepted.close()
    assert client.recv(10) == b""  # the server's FIN
    client.close()

    def find() -> list[TcpSocket]:
        return list(ours(dump(mask(TIME_WAIT), with_info=True), server_side, client_side).values())

    found = eventually(find, lambda f: len(f) > 0)
    assert found == [TcpSocket(TIME_WAIT, listen_port, ip_address(host), client_port, 0, None)]


def normalised(addresses: set[str]) -> set[IPv4Address | IPv6Address]:
    found = {ip_address(a) for a in addresses}
    return {a.ipv4_mapped if isinstance(a, IPv6Address) and a.ipv4_mapped else a for a in found}


CLIENTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        pytest.param({"127.0.0.2"}, {"127.0.0.2"}, id="one"),
        pytest.param({"127.0.0.1", "127.0.0.4"}, {"127.0.0.1", "127.0.0.4"}, id="first-and-last"),
        pytest.param({"127.0.0.2", "127.0.0.3", "127.0.0.4"}, {"127.0.0.2", "127.0.0.3", "127.0.0.4"}, id="three"),
        pytest.param({"127.0.0.9", "127.0.0.3", "10.1.1.1"}, {"127.0.0.3"}, id="middle-of-misses"),
        pytest.param({"127.0.0.9"}, set(), id="none"),
        pytest.param({"::1", "127.0.0.2"}, {"127.0.0.2"}, id="other-family-ignored"),
        pytest.param({"::ffff:127.0.0.3"}, {"127.0.0.3"}, id="v4-mapped-asked"),
    ],
)
def test_remote_address_filter_runs_in_the_kernel(
    wanted: set[str], expected: set[str], sockets: Callable[[socket.socket], socket.socket]
) -> None:
    server = listener("127.0.0.1", sockets)
    peers = [
        identity(port(server), source, port(connect(server, sockets, "127.0.0.1", source)[0])) for source in CLIENTS
    ]

    assert len(ours(dump(mask(ESTABLISHED), with_info=False), *peers)) == len(CLIENTS)  # unfiltered: all
    found = dump(mask(ESTABLISHED, LISTEN), with_info=False, remote_addresses=normalised(wanted))
    assert {s.remote for s in found} <= normalised(wanted)  # the host's other sockets too
    assert {str(key[1]) for key in ours(found, *peers)} == expected


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        pytest.param({"127.0.0.2"}, {"127.0.0.2"}, id="ipv4-matches-mapped-peer"),
        pytest.param({"::ffff:127.0.0.2"}, {"127.0.0.2"}, id="mapped-matches-mapped-peer"),
        pytest.param({"::1"}, {"::1"}, id="ipv6"),
        pytest.param({"::1", "127.0.0.3"}, {"::1", "127.0.0.3"}, id="both-families"),
        pytest.param({"127.0.0.9"}, set(), id="none"),
    ],
)
def test_remote_address_filter_on_a_dual_stack_listener(
    wanted: set[str], expected: set[str], sockets: Callable[[socket.socket], socket.socket]
) -> None:
    """IPv4 peers of a listener on [::] are IPv6 sockets with ::ffff:a.b.c.d remotes."""
    server = listener("::", sockets, dual_stack=True)
    peers = [
        identity(port(server), source, port(connect(server, sockets, to, source)[0]))
        for to, source in [("127.0.0.1", "127.0.0.2"), ("127.0.0.1", "127.0.0.3"), ("::1", "::1")]
    ]

    found = dump(mask(ESTABLISHED), with_info=True, remote_addresses={ip_address(a) for a in wanted})
    assert {s.remote for s in found} <= normalised(wanted)
    mine = ours(found, *peers)
    assert {str(key[1]) for key in mine} == expected
    assert all(s.bytes_received == 0 for s in mine.values())


UNPRIVILEGED_DUMP = """
import json, sys
from lameduck_sidecar import sockdiag
port, client_port = int(sys.argv[1]), int(sys.argv[2])
found = sockdiag.dump(sockdiag.mask(sockdiag.ESTABLISHED), with_info=True)
print(json.dumps([s.bytes_received for s in found if (s.local_port, s.remote_port) == (port, client_port)]))
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to drop to another user")
def test_an_unprivileged_user_reads_the_counters_of_roots_sockets(
    sockets: Callable[[socket.socket], socket.socket],
) -> None:
    """As the sidecar runs: uid 65532, no capabilities, looking at the app's (here root's) sockets."""
    server = listener("127.0.0.1", sockets)
    client, _ = connect(server, sockets, "127.0.0.1")
    client.sendall(b"z" * 321)
    server_side = identity(port(server), "127.0.0.1", port(client))
    eventually(
        lambda: list(ours(dump(mask(ESTABLISHED), with_info=True), server_side).values()),
        lambda f: any(s.bytes_received == 321 for s in f),
    )
    unprivileged = ["setpriv", "--reuid=65532", "--regid=65532", "--clear-groups", "--inh-caps=-all"]
    result = subprocess.run(
        [
            *unprivileged,
            "--bounding-set=-all",
            sys.executable,
            "-c",
            UNPRIVILEGED_DUMP,
            str(port(server)),
            str(port(client)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, "PYTHONPATH": str(sockdiag.__file__).rsplit("/lameduck_sidecar/", 1)[0]},
    )
    assert json.loads(result.stdout) == [321]
