"""The TCP sockets of this network namespace, read from the kernel over NETLINK_SOCK_DIAG.

Faster than parsing /proc/net/tcp when TIME_WAIT sockets pile up, and it carries per-socket
receive counters (tcp_info), so requests arriving on connections already open are seen too.
Building requests and parsing replies is pure; `dump` is the one function doing I/O.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address

Address = IPv4Address | IPv6Address

# TCP states as the kernel numbers them (include/net/tcp_states.h).
ESTABLISHED = 1
SYN_SENT = 2
SYN_RECV = 3
FIN_WAIT1 = 4
FIN_WAIT2 = 5
TIME_WAIT = 6
CLOSE = 7
CLOSE_WAIT = 8
LAST_ACK = 9
LISTEN = 10
CLOSING = 11
NEW_SYN_RECV = 12  # a request socket: the handshake is not done yet


def mask(*states: int) -> int:
    """The states bitmask of a request asking for these states."""
    bits = 0
    for state in states:
        bits |= 1 << state
    return bits


ALL_STATES = 0xFFFF_FFFF  # the kernel ignores bits of states it does not have

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_INFO = 2
INET_DIAG_BC_JMP = 1
INET_DIAG_BC_D_COND = 8  # the remote ("destination") address equals, in inet_diag terms
TCPI_BYTES_RECEIVED = 128  # offset of tcpi_bytes_received (u64) in struct tcp_info

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# inet_diag_req_v2: family, protocol, ext, pad, states, and an all-zero (wildcard) inet_diag_sockid
REQUEST = struct.Struct("=BBBxI48x")
# inet_diag_msg, the fields we read: family, state, sport, dport (both big-endian, read natively
# and swapped with ntohs), dst[16], rqueue. src, if, cookie, expires, wqueue, uid, inode skipped.
DIAG_MSG = struct.Struct("=BB2xHH16x16s12x4xI12x")
RTATTR = struct.Struct("=HH")  # len (header included), type; rtattr and nlattr are the same
ERRNO = struct.Struct("=i")  # first field of struct nlmsgerr, also the payload of NLMSG_DONE
U64 = struct.Struct("=Q")
BC_OP = struct.Struct("=BBH")  # inet_diag_bc_op: code, yes, no (byte offsets to jump by)
HOSTCOND = struct.Struct("=BBxxi")  # inet_diag_hostcond: family, prefix_len, port; addr follows

RECEIVE_BUFFER = 256 * 1024  # the kernel fills at most ~32 KiB per datagram; room to spare


@dataclass(frozen=True, slots=True)
class TcpSocket:
    """One socket as the kernel reports it: the local side's port, the remote side's address."""

    state: int
    local_port: int
    remote: Address  # an IPv4-mapped IPv6 peer (dual-stack listener) is given as IPv4
    remote_port: int
    rqueue: int  # bytes not yet read by the app; for a LISTEN socket, its accept queue length
    bytes_received: int | None  # tcpi_bytes_received; None without tcp_info (TIME_WAIT has none)


class SockDiagError(OSError):
    """The kernel refused a request (errno set), or sent a reply that does not parse."""


def build_request(
    family: int, states: int, *, with_info: bool, remote_addresses: Collection[Address] = (), seq: int = 1
) -> bytes:
    """One SOCK_DIAG_BY_FAMILY dump request for the TCP sockets of `family` in `states`.

    With remote_addresses, a bytecode filter makes the kernel itself return only sockets whose
    remote address is one of them. Per family, what applies: to AF_INET, the IPv4 addresses; to
    AF_INET6, the IPv6 ones and also the IPv4 ones, which the kernel matches against IPv4-mapped
    peers (::ffff:a.b.c.d) of dual-stack sockets. When no address applies to `family`, there is
    nothing to ask it (see `applicable`) and this raises ValueError rather than build a request
    that would, unfiltered, return everything.
    """
    ext = 1 << (INET_DIAG_INFO - 1) if with_info else 0
    payload = REQUEST.pack(family, socket.IPPROTO_TCP, ext, states)
    if remote_addresses:
        addresses = applicable(family, remote_addresses)
        if not addresses:
            raise ValueError(f"no remote address applies to address family {family}")
        bytecode = remote_address_filter(addresses)
        payload += RTATTR.pack(RTATTR.size + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    return (
        NLMSGHDR.pack(NLMSGHDR.size + len(payload), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + payload
    )


def applicable(family: int, remote_addresses: Collection[Address]) -> list[Address]:
    """The remote addresses a socket of `family` can have, in a stable order."""
    addresses = {unmapped(a) for a in remote_addresses}
    if family == socket.AF_INET:
        addresses = {a for a in addresses if isinstance(a, IPv4Address)}
    return sorted(addresses, key=lambda a: (a.version, int(a)))


def remote_address_filter(addresses: Collection[Address]) -> bytes:
    """inet_diag bytecode accepting a socket whose remote address is any of `addresses`.

    The kernel runs it as: each op jumps `yes` bytes on a match, `no` bytes otherwise; landing
    exactly on the end accepts, landing past it rejects. Its verifier also insists that
    following every `yes` from the start visits every op, so an OR is laid out as ss(8) does:

        cond1 JMP cond2 JMP ... condN

    A condition's yes steps onto the JMP after it, whose no (a JMP always takes no) goes to the
    end: accept. A condition's no steps over that JMP to the next condition; the last one's no
    lands 4 bytes past the end: reject. The last one's yes lands on the end: accept.
    """
    if not addresses:
        raise ValueError("a filter needs at least one address")
    conditions = [
        HOSTCOND.pack(socket.AF_INET if a.version == 4 else socket.AF_INET6, a.max_prefixlen, -1) + a.packed
        for a in addresses
    ]
    total = sum(BC_OP.size + len(c) for c in conditions) + BC_OP.size * (len(conditions) - 1)
    if total > 0xFFFF - RTATTR.size:
        raise ValueError(f"too many remote addresses for one filter: {len(conditions)}")
    ops = []
    offset = 0
    for i, condition in enumerate(conditions):
        size = BC_OP.size + len(condition)
        ops.append(BC_OP.pack(INET_DIAG_BC_D_COND, size, size + BC_OP.size) + condition)
        offset += size
        if i < len(conditions) - 1:
            ops.append(BC_OP.pack(INET_DIAG_BC_JMP, BC_OP.size, total - offset))
            offset += BC_OP.size
    return b"".join(ops)


def parse_messages(data: bytes | bytearray | memoryview) -> tuple[list[TcpSocket], bool]:
    """(sockets, done) from one read of netlink messages; done once NLMSG_DONE is seen."""
    sockets: list[TcpSocket] = []
    offset, end = 0, len(data)
    while offset + NLMSGHDR.size <= end:
        length, kind, _flags, _seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > end:
            raise SockDiagError(errno.EBADMSG, f"netlink message of length {length} at {offset} of {end}")
        body = offset + NLMSGHDR.size
        if kind == SOCK_DIAG_BY_FAMILY:
            family, state, sport, dport, dst, rqueue = DIAG_MSG.unpack_from(data, body)
            sockets.append(
                TcpSocket(
                    state,
                    socket.ntohs(sport),
                    _remote_address(family, dst),
                    socket.ntohs(dport),
                    rqueue,
                    _bytes_received(data, body + DIAG_MSG.size, offset + length),
                )
            )
        elif kind in (NLMSG_ERROR, NLMSG_DONE):
            # nlmsgerr.error, or DONE's status: a negative errno, or 0 (for ERROR, an ack)
            (error,) = ERRNO.unpack_from(data, body) if length >= NLMSGHDR.size + ERRNO.size else (0,)
            if error < 0:
                raise SockDiagError(-error, os.strerror(-error))
            if kind == NLMSG_DONE:
                return sockets, True
        offset += (length + 3) & ~3
    return sockets, False


def _bytes_received(data: bytes | bytearray | memoryview, offset: int, end: int) -> int | None:
    """tcpi_bytes_received from the INET_DIAG_INFO attribute among those in data[offset:end]."""
    while offset + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size:
            break
        if kind == INET_DIAG_INFO:
            # older kernels send a shorter tcp_info, without this field
            if length >= RTATTR.size + TCPI_BYTES_RECEIVED + U64.size:
                return int(U64.unpack_from(data, offset + RTATTR.size + TCPI_BYTES_RECEIVED)[0])
            return None
        offset += (length + 3) & ~3
    return None


@lru_cache(maxsize=4096)
def _remote_address(family: int, dst: bytes) -> Address:
    # Cached: a pod's thousands of sockets have a few peers, and building addresses is slow.
    if family == socket.AF_INET:
        return IPv4Address(dst[:4])
    return unmapped(IPv6Address(dst))


def unmapped(address: Address) -> Address:
    """An IPv4 peer of a dual-stack socket (::ffff:a.b.c.d) as the IPv4 address it is."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def dump(states: int, *, with_info: bool, remote_addresses: Collection[Address] = ()) -> list[TcpSocket]:
    """The IPv4 and IPv6 TCP sockets of this network namespace in `states`; see build_request.

    Raises SockDiagError when the kernel refuses (e.g. no inet_diag module), OSError when
    netlink itself is unavailable: callers may then fall back to /proc/net/tcp.
    """
    sockets: list[TcpSocket] = []
    buffer = bytearray(RECEIVE_BUFFER)
    view = memoryview(buffer)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as netlink:
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
            if remote_addresses and not applicable(family, remote_addresses):
                continue
            request = build_request(family, states, with_info=with_info, remote_addresses=remote_addresses, seq=seq)
            netlink.sendto(request, (0, 0))  # the kernel
            done = False
            while not done:
                received = netlink.recv_into(buffer)
                found, done = parse_messages(view[:received])
                sockets += found
    return sockets
