"""harness/attempts.py's client against small servers on loopback, each in a thread of its own
(the client blocks: an asyncio server in the test's loop could not answer it)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise

import pytest

from harness.attempts import Attempts, Outcome, attempt
from harness.kube import wait_until

OK_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


@dataclass
class Served:
    port: int
    requests: list[bytes] = field(default_factory=list)  # one per connection, as received


Answer = Callable[[socket.socket], None]


def answer_ok(conn: socket.socket) -> None:
    conn.sendall(OK_ANSWER)


def answer_503(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def close_without_answer(_conn: socket.socket) -> None:
    pass


def never_answer(_conn: socket.socket) -> None:
    time.sleep(0.5)  # longer than the client's timeout in the test that uses it


@contextmanager
def server(answer: Answer) -> Iterator[Served]:
    """Reads each connection's request (up to its blank line), answers it, closes it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    served = Served(listener.getsockname()[1])
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                request = b""
                while b"\r\n\r\n" not in request and (chunk := conn.recv(4096)):
                    request += chunk
                served.requests.append(request)
                answer(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_each_attempt_is_one_get_on_a_connection_of_its_own() -> None:
    with server(answer_ok) as served, Attempts("127.0.0.1", served.port, rate=50) as client:
        time.sleep(0.3)  # the window of attempts (not a poll)
    made = client.made
    assert len(made) >= 5
    assert {a.outcome for a in made} == {Outcome.OK}
    assert len(served.requests) == len(made), "one connection per attempt"
    assert all(r.startswith(b"GET / HTTP/1.1\r\n") and b"\r\nConnection: close\r\n" in r for r in served.requests)
    assert all(a.began <= a.ended <= time.time() for a in made)


def test_never_more_than_the_rate_and_never_two_at_once() -> None:
    with server(answer_ok) as served, Attempts("127.0.0.1", served.port, rate=20) as client:
        time.sleep(0.5)  # the window of attempts (not a poll)
    made = client.made
    assert 3 <= len(made) <= 11
    assert all(b.began - a.began >= 0.045 for a, b in pairwise(made))
    assert all(b.began >= a.ended for a, b in pairwise(made))


def test_a_port_nobody_listens_on_is_refused() -> None:
    assert attempt("127.0.0.1", free_port()).outcome is Outcome.REFUSED


def test_a_reset_is_one_attempt_never_tried_again() -> None:
    """Unlike aiohttp's client, which sends a GET again on a new connection after a reset."""
    with server(reset) as served:
        assert attempt("127.0.0.1", served.port).outcome is Outcome.RESET
        time.sleep(0.2)  # time for a retry to arrive, if the client made one (not a poll)
    assert len(served.requests) == 1


@pytest.mark.parametrize("answer", [close_without_answer, answer_503])
def test_a_close_without_a_2xx_answer_is_closed(answer: Answer) -> None:
    with server(answer) as served:
        assert attempt("127.0.0.1", served.port).outcome is Outcome.CLOSED
    assert len(served.requests) == 1


def test_no_answer_in_time_is_a_timeout() -> None:
    with server(never_answer) as served:
        assert attempt("127.0.0.1", served.port, timeout=0.2).outcome is Outcome.TIMEOUT


def test_stop_returns_every_attempt_with_none_in_flight() -> None:
    with server(answer_ok) as served:
        client = Attempts("127.0.0.1", served.port, rate=100)
        with client:
            wait_until(lambda: len(client.made) >= 3, 5, "three attempts", 0.01)
            made = client.stop()
        assert made == client.made
        assert len(served.requests) == len(made)
