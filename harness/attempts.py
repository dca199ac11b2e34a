"""Connection attempts one at a time, each on a new TCP connection and never retried, with the
outcome of each and when it began and ended: for tests that compare what a client saw refused
or reset with what the pod's kernel counted (the sidecar's `lostAfterRelease`).

harness/loadgen.py's open-loop clients are aiohttp's, which sends a GET again on a new
connection after a reset: there one request can be two connection attempts, and a reset that
the retry hides counts as no error at all.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType

# Per step of an attempt (connecting, sending, each read): a SYN dropped rather than refused.
ATTEMPT_TIMEOUT = 2.0


class Outcome(StrEnum):
    OK = "ok"  # a 2xx status line, then the server's close
    REFUSED = "refused"  # the SYN was answered with RST
    RESET = "reset"  # connected, then reset (RST) before the server's close
    # connected, then closed by the server (FIN) with no 2xx status line: no answer, or an error
    CLOSED = "closed"
    TIMEOUT = "timeout"  # a step got no answer in time
    FAILED = "failed"  # any other error (no route to the host, ...)


# What the pod's kernel answered with RST: a refused connection attempt, a reset connection.
RST_OUTCOMES = frozenset({Outcome.REFUSED, Outcome.RESET})


@dataclass(frozen=True)
class Attempt:
    # Wall clock (time.time()): comparable with the times the sidecar logs.
    began: float
    ended: float
    outcome: Outcome


def _exchange(host: str, port: int, timeout: float) -> Outcome:
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    request = f"GET / HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n".encode()
    answer = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                answer += chunk
    except ConnectionRefusedError:
        return Outcome.REFUSED
    # EPIPE: the RST came while this side was sending (after the server's FIN, Linux says so).
    except (ConnectionResetError, BrokenPipeError):
        return Outcome.RESET
    except TimeoutError:
        return Outcome.TIMEOUT
    except OSError:
        return Outcome.FAILED
    # Read to the server's close (the request asked for it), so this side sends no RST.
    return Outcome.OK if answer[:10] in (b"HTTP/1.1 2", b"HTTP/1.0 2") else Outcome.CLOSED


def attempt(host: str, port: int, timeout: float = ATTEMPT_TIMEOUT) -> Attempt:
    """One GET on a new connection, never retried."""
    began = time.time()
    outcome = _exchange(host, port, timeout)
    return Attempt(began, time.time(), outcome)


class Attempts:
    """attempt() again and again from a thread, from entering the block until stop() or its end:
    each `1/rate` s after the last one began, or as soon as it ended if it took longer, so never
    more than `rate` a second and never two at once. Nothing is in flight once stop() returns."""

    def __init__(self, host: str, port: int, rate: float, timeout: float = ATTEMPT_TIMEOUT) -> None:
        self.host = host
        self.port = port
        self.interval = 1.0 / rate
        self.timeout = timeout
        self.made: list[Attempt] = []  # appended by the thread only; read a copy
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="attempts", daemon=True)

    def __enter__(self) -> Attempts:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> list[Attempt]:
        """Stop after the attempt in flight, and return every attempt made."""
        self._stop.set()
        # An attempt lasts at most one timeout per step (connect, send, and the few reads of a
        # short answer); a thread still running then is one this client cannot account for.
        self._thread.join(timeout=4 * self.timeout + 1)
        if self._thread.is_alive():
            raise AssertionError(f"an attempt to {self.host}:{self.port} is still out after stop()")
        return list(self.made)

    def count(self, outcomes: frozenset[Outcome]) -> int:
        return sum(1 for a in list(self.made) if a.outcome in outcomes)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.made.append(attempt(self.host, self.port, self.timeout))
            self._stop.wait(max(0.0, began + self.interval - time.monotonic()))  # the client's pacing
