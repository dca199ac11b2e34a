"""The app's lame-duck mode, where the policy names one (spec.hold.lameDuck): asked for once when
a hold starts. Pure: holder.py sends `request` and reads the status line, judged here.

Why: a connection an L7 proxy keeps busy from its pool (waiting helps) and one pinned to the pod
(only the app closing it helps) look alike from inside the pod. An app in lame-duck mode keeps
serving but closes each connection after its current response, so every later request comes on a
new connection, which the hold counts: to the pod while a data plane still chooses it, elsewhere
once none does. The hold then needs no guess about busy connections (hold.Hold.traffic).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

# The app has this long to answer; it is asked before the hold's first observation, so this
# bounds how much later that observation can start.
ANSWER_TIMEOUT_SECONDS = 1.0
# Only the status line is read.
MAX_STATUS_LINE = 256

_TARGET = re.compile(r"([0-9]{1,5})(/[!-~]{0,255})")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: [^\r\n]*)?\r?\n?")


class LameDuckState(StrEnum):
    """What came of asking, in the hold report and the log."""

    OFF = "off"  # the policy names no lame-duck mode
    ON = "on"  # the app answered 2xx: it closes each connection after its response
    REFUSED = "refused"  # the app answered, not 2xx
    FAILED = "failed"  # no answer in time, no connection, or not HTTP


@dataclass(frozen=True)
class LameDuckTarget:
    port: int
    path: str


def parse_target(text: str) -> LameDuckTarget | None:
    """<port><path> as the operator sets it (8080/lameduck); None when unset or malformed."""
    match = _TARGET.fullmatch(text.strip())
    if match is None or not 0 < int(match.group(1)) < 65536:
        return None
    return LameDuckTarget(int(match.group(1)), match.group(2))


def request(target: LameDuckTarget) -> bytes:
    """The one request: HTTP/1.1, closed after the answer, so the app holds no connection of ours."""
    return (f"GET {target.path} HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\nConnection: close\r\n\r\n").encode("ascii")


def judge(status_line: bytes | None) -> LameDuckState:
    """The app's answer, from its status line (None: none came)."""
    if not status_line:
        return LameDuckState.FAILED
    match = _STATUS_LINE.fullmatch(status_line[:MAX_STATUS_LINE])
    if match is None:
        return LameDuckState.FAILED
    return LameDuckState.ON if 200 <= int(match.group(1)) < 300 else LameDuckState.REFUSED
