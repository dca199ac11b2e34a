"""The webhook's server drops a client that is slow to finish its handshake, its headers or its
body, within the bound for that phase (http_bounds.ReadBounds), and keeps an idle connection
open for the next review."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lameduck_operator.admission_server import WEBHOOK_PATH, AdmissionServer
from lameduck_operator.http_bounds import ReadBounds
from lameduck_operator.metrics import OperatorMetrics
from tests.unit.test_admission_server import (
    ANSWER_WAIT_SECONDS,
    count,
    head,
    rollout_review,
    serving,
    statuses,
    tls_connection,
)

# Short bounds, so that the tests take seconds; each phase's distinct, to tell which one closed.
BOUNDS = ReadBounds(handshake=0.4, headers=0.6, body=0.8, idle=ANSWER_WAIT_SECONDS, linger=0.3)
# Scheduling on a busy machine: how late a close may come after its bound and still count.
SLACK_SECONDS = 2.0
# The server's clock for a phase starts a little before the client's (it ends the handshake first).
EARLY_SECONDS = 0.2


@pytest.fixture
def server(certificate: tuple[Path, Path], metrics: OperatorMetrics) -> Iterator[AdmissionServer]:
    started = serving(certificate, metrics, bounds=BOUNDS)
    started.start()
    yield started
    started.stop()


def until_closed(connection: socket.socket, trickled: bytes, every: float) -> tuple[float, bytes]:
    """Send `trickled` a byte at a time, `every` seconds apart (often enough that no wait for
    silence would ever end), then nothing; the seconds until the server closed the connection,
    and what it sent meanwhile."""
    started = time.monotonic()
    received = b""
    connection.settimeout(every)
    while time.monotonic() - started < ANSWER_WAIT_SECONDS:
        if trickled:
            try:
                connection.sendall(trickled[:1])
            except OSError:
                break
            trickled = trickled[1:]
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # reset, or a TLS connection ended without its close_notify
            break
        if not chunk:
            break
        received += chunk
    else:
        raise AssertionError(f"the connection was still open after {ANSWER_WAIT_SECONDS}s")
    return time.monotonic() - started, received


@dataclass(frozen=True)
class Slow:
    tls: bool  # False: a TCP connection that never says hello
    at_once: bytes  # sent first, at once
    trickled: bytes  # then a byte at a time
    bound: float  # the server closes the connection this long after
    answered: list[int]  # what it answers first


SLOW_HEADERS = head("Content-Length: 2") + b"{}"


@pytest.mark.parametrize(
    "case",
    [
        # asyncio's handshake timeout.
        pytest.param(Slow(False, b"", b"", BOUNDS.handshake, []), id="no TLS handshake"),
        pytest.param(Slow(True, b"", b"", BOUNDS.headers, []), id="no request"),
        pytest.param(Slow(True, b"", SLOW_HEADERS, BOUNDS.headers, []), id="headers a byte at a time"),
        pytest.param(Slow(True, SLOW_HEADERS[:-5], b"", BOUNDS.headers, []), id="headers never ended"),
        # The body's bound is answered 408 (a Status), then the connection closes.
        pytest.param(
            Slow(True, head("Content-Length: 100"), b"{" * 100, BOUNDS.body + BOUNDS.linger, [408]),
            id="body a byte at a time",
        ),
    ],
)
def test_a_slow_client_is_dropped_within_the_bound_of_its_phase(
    server: AdmissionServer, certificate: tuple[Path, Path], metrics: OperatorMetrics, case: Slow
) -> None:
    if case.tls:
        connection: socket.socket = tls_connection(server, certificate[0])
    else:
        connection = socket.create_connection(("127.0.0.1", server.bound_port or 0), timeout=ANSWER_WAIT_SECONDS)
    with connection:
        connection.sendall(case.at_once)
        seconds, received = until_closed(connection, case.trickled, every=BOUNDS.handshake / 4)
    # Not before: it is that phase's bound that closed it, and a client within it is served.
    assert case.bound - EARLY_SECONDS <= seconds <= case.bound + SLACK_SECONDS
    assert statuses(received) == case.answered
    assert count(metrics, "timeout") == len(case.answered)


# The first request: a review, or one to no route of the server's (answered by aiohttp's router).
@pytest.mark.parametrize(("method", "path", "status"), [("POST", WEBHOOK_PATH, 200), ("GET", "/", 404)])
def test_a_connection_kept_alive_longer_than_the_header_bound_serves_the_next_review(
    server: AdmissionServer, certificate: tuple[Path, Path], method: str, path: str, status: int
) -> None:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server.bound_port or 0, context=context, timeout=ANSWER_WAIT_SECONDS
    )
    headers = {"Content-Type": "application/json"}
    try:
        connection.request(method, path, body=rollout_review(), headers=headers)
        first = connection.getresponse()
        first.read()
        kept = connection.sock
        # The protocol's own wait: idle past every read bound, as the API server's pooled
        # connections are between reviews.
        time.sleep(max(BOUNDS.headers, BOUNDS.body) + BOUNDS.linger)
        connection.request("POST", WEBHOOK_PATH, body=rollout_review(), headers=headers)
        second = connection.getresponse()
        second.read()
        reused = connection.sock
    finally:
        connection.close()
    assert (first.status, second.status) == (status, 200)
    assert kept is not None
    assert reused is kept, "the same connection both times"
