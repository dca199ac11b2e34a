"""The webhook's server answers reviews over TLS from its own thread, whatever the operator's loop is doing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.certificates import self_signed
from harness.wide import deployment as large_deployment
from lameduck_operator.admission_server import (
    MAX_EXCEPTION_CHARS,
    MAX_REVIEW_BYTES,
    WEBHOOK_PATH,
    AdmissionServer,
    AdmissionServerFailed,
)
from lameduck_operator.http_bounds import ReadBounds
from lameduck_operator.logic.admission import Refusal
from lameduck_operator.logic.decision import MAX_TEMPLATE_CONTAINERS, Decision
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.names import ANNOTATIONS_MAX_BYTES
from tests.unit.builders import container, deployment
from tests.unit.test_admission import ENFORCE, judge_for, request

ANSWER_WAIT_SECONDS = 20.0


def serving(
    certificate: tuple[Path, Path],
    metrics: OperatorMetrics,
    *,
    judge: Any = None,
    port: int = 0,
    bounds: ReadBounds | None = None,
    cert_reload_seconds: float = ANSWER_WAIT_SECONDS,
) -> AdmissionServer:
    cert, key = certificate
    return AdmissionServer(
        judge or judge_for([ENFORCE]),
        metrics,
        port,
        cert,
        key,
        host="127.0.0.1",
        bounds=bounds or ReadBounds(),
        cert_reload_seconds=cert_reload_seconds,
    )


@pytest.fixture
def server(certificate: tuple[Path, Path], metrics: OperatorMetrics) -> Iterator[AdmissionServer]:
    started = serving(certificate, metrics)
    started.start()
    yield started
    started.stop()


def post(server: AdmissionServer, cert: Path, body: bytes) -> tuple[int, dict[str, Any]]:
    context = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{server.bound_port}{WEBHOOK_PATH}"
    sent = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(sent, context=context, timeout=ANSWER_WAIT_SECONDS) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def rollout_review() -> bytes:
    written = deployment(containers=[container("app", 8080)])
    return json.dumps(request("CREATE", written)).encode()


def patch_of(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(json.loads(base64.b64decode(answer["response"]["patch"])))


def count(metrics: OperatorMetrics, result: str) -> float:
    return metrics.registry.get_sample_value("lameduck_webhook_requests_total", {"result": result}) or 0.0


async def test_a_review_is_answered_while_the_operators_loop_is_blocked(
    certificate: tuple[Path, Path], metrics: OperatorMetrics
) -> None:
    # Started from the operator's loop, as the runtime does.
    server = serving(certificate, metrics)
    await asyncio.to_thread(server.start)
    answered = threading.Event()
    answers: list[tuple[int, dict[str, Any]]] = []

    def review_from_the_api_server() -> None:
        answers.append(post(server, certificate[0], rollout_review()))
        answered.set()

    try:
        threading.Thread(target=review_from_the_api_server, daemon=True).start()
        # This loop is blocked until the answer arrives: served on it, the review never would be.
        answered_while_blocked = answered.wait(ANSWER_WAIT_SECONDS)
    finally:
        await asyncio.to_thread(server.stop)
    assert answered_while_blocked
    status, answer = answers[0]
    assert status == 200
    assert answer["response"]["allowed"] is True
    assert any(op["path"].startswith("/spec/template") for op in patch_of(answer)), "the intent rides along"
    assert count(metrics, "patched") == 1


def raising(err: Exception) -> Callable[[Mapping[str, Any]], Decision]:
    def judge(_: Mapping[str, Any]) -> Decision:
        raise err

    return judge


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or r.exc_text or "Traceback" in r.getMessage()]


@dataclass(frozen=True)
class Unanswered:
    body: bytes | None  # None: a rollout's review
    judge: Callable[[Mapping[str, Any]], Decision] | None
    refusal: Refusal
    result: str


# A body that is no review is the writer's fault (400, BadRequest); a failure inside lameduck is
# lameduck's (500, InternalError), whatever the type of the exception, a ValueError too.
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(Unanswered(b"{not json", None, Refusal.BAD_REQUEST, "invalid"), id="not JSON"),
        pytest.param(
            Unanswered(b"[" * 2 * sys.getrecursionlimit(), None, Refusal.BAD_REQUEST, "invalid"),
            id="nested past the recursion limit",
        ),
        pytest.param(Unanswered(b"[]", None, Refusal.BAD_REQUEST, "invalid"), id="no review"),
        pytest.param(
            Unanswered(None, raising(KeyError("a bug")), Refusal.INTERNAL_ERROR, "error"), id="judge KeyError"
        ),
        pytest.param(
            Unanswered(None, raising(ValueError("a bug")), Refusal.INTERNAL_ERROR, "error"), id="judge ValueError"
        ),
        pytest.param(
            Unanswered(None, raising(RecursionError()), Refusal.INTERNAL_ERROR, "error"), id="judge RecursionError"
        ),
    ],
)
def test_a_request_without_an_answer_gets_a_status_with_a_typed_reason_and_is_counted_by_it(
    certificate: tuple[Path, Path], metrics: OperatorMetrics, caplog: pytest.LogCaptureFixture, case: Unanswered
) -> None:
    caplog.set_level(logging.INFO)
    server = serving(certificate, metrics, judge=case.judge)
    server.start()
    try:
        status, answer = post(server, certificate[0], rollout_review() if case.body is None else case.body)
        # Not a review answer: under failurePolicy Ignore the API server admits the write unchanged.
        code = case.refusal.code
        assert (status, answer["code"], answer["reason"], answer["status"]) == (
            code,
            code,
            case.refusal.value,
            "Failure",
        )
        assert "response" not in answer, "no patch: the write goes through as written"
        assert {r: count(metrics, r) for r in ("invalid", "error")} == {
            r: float(r == case.result) for r in ("invalid", "error")
        }
        # The server lives on: the next request is answered too.
        assert post(server, certificate[0], b"[]")[0] == 400
    finally:
        server.stop()
    assert not tracebacks(caplog), "no traceback per request below DEBUG"


@pytest.mark.parametrize(("level", "with_traceback"), [(logging.INFO, False), (logging.DEBUG, True)])
def test_a_failure_inside_lameduck_is_logged_once_with_its_traceback_only_at_debug(
    certificate: tuple[Path, Path],
    metrics: OperatorMetrics,
    caplog: pytest.LogCaptureFixture,
    level: int,
    with_traceback: bool,
) -> None:
    caplog.set_level(level)
    server = serving(certificate, metrics, judge=raising(KeyError("a bug")))
    server.start()
    try:
        assert post(server, certificate[0], rollout_review())[0] == 500
    finally:
        server.stop()
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1
    assert "KeyError" in failures[0].getMessage() or failures[0].exc_info is not None
    assert bool(tracebacks(caplog)) is with_traceback


def test_a_port_already_taken_fails_the_start_with_a_typed_error(
    certificate: tuple[Path, Path], metrics: OperatorMetrics
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        server = serving(certificate, metrics, port=taken.getsockname()[1])
        with pytest.raises(AdmissionServerFailed):
            server.start()


def test_a_certificate_that_does_not_load_fails_the_start_with_a_typed_error(
    tmp_path: Path, certificate: tuple[Path, Path], metrics: OperatorMetrics
) -> None:
    other = self_signed(tmp_path, "127.0.0.1", "IP:127.0.0.1")
    server = serving((certificate[0], other[1]), metrics)
    with pytest.raises(AdmissionServerFailed):
        server.start()


# ---- the webhook's server: a body over the limit is refused before it is parsed --------


def tls_connection(server: AdmissionServer, cert: Path) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(cert))
    raw = socket.create_connection(("127.0.0.1", server.bound_port or 0), timeout=ANSWER_WAIT_SECONDS)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def head(framing: str) -> bytes:
    """A request's line and headers, with the header that frames its body."""
    lines = [f"POST {WEBHOOK_PATH} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", framing]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(body: bytes, size: int = 64 * 1024) -> bytes:
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n\r\n"


def statuses(received: bytes) -> list[int]:
    """The status of each whole answer in `received` (each with a Content-Length, as aiohttp's are)."""
    found = []
    while b"\r\n\r\n" in received:
        header, rest = received.split(b"\r\n\r\n", 1)
        lines = header.split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
        if len(rest) < length:
            break
        found.append(int(lines[0].split()[1]))
        received = rest[length:]
    return found


def answers(sent: bytes, server: AdmissionServer, cert: Path, expected: int) -> list[int]:
    """The status of each answer to `sent`, written at once on one connection: read until
    `expected` answers are in, or the server closes."""
    received = b""
    with tls_connection(server, cert) as tls:
        # Closed while sending: what was answered until then is still to read.
        with contextlib.suppress(OSError):
            tls.sendall(sent)
        while len(statuses(received)) < expected:
            try:
                chunk = tls.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            received += chunk
    return statuses(received)


OVER = b"{" + b" " * MAX_REVIEW_BYTES + b"}"


@dataclass(frozen=True)
class Oversized:
    sent: bytes
    answered: list[int] | None  # None: not checked
    result: str | None  # counted as, once


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            Oversized(head(f"Content-Length: {len(OVER)}") + OVER, [413], "body_too_large"), id="Content-Length"
        ),
        pytest.param(
            Oversized(head("Transfer-Encoding: chunked") + chunked(OVER), [413], "body_too_large"), id="chunked"
        ),
        # Refused from the header alone, before the body it announces arrives (it never does).
        pytest.param(
            Oversized(head(f"Content-Length: {len(OVER)}") + b"{}", [413], "body_too_large"),
            id="Content-Length lies up",
        ),
        # The body is what the header says: the rest is no request, which aiohttp refuses within
        # its first line, closing the connection. Whether the review before it is answered first
        # depends on how the bytes arrive, and the client, still sending, may read a reset rather
        # than the answers: neither is checked.
        pytest.param(Oversized(head("Content-Length: 2") + b"{}" + OVER, None, None), id="Content-Length lies down"),
    ],
)
def test_a_review_body_over_the_limit_is_refused_without_a_traceback_and_others_are_still_served(
    server: AdmissionServer,
    certificate: tuple[Path, Path],
    metrics: OperatorMetrics,
    caplog: pytest.LogCaptureFixture,
    case: Oversized,
) -> None:
    caplog.set_level(logging.INFO)
    got = answers(case.sent, server, certificate[0], expected=len(case.answered or [None, None]))
    if case.answered is not None:
        assert got == case.answered
    if case.result is not None:
        assert count(metrics, case.result) == 1
    assert not tracebacks(caplog)
    # A line for what was refused, not the refused bytes: the filter cuts a quoted request line.
    assert all(len(r.getMessage()) < 2 * MAX_EXCEPTION_CHARS for r in caplog.records)
    status, _ = post(server, certificate[0], rollout_review())
    assert status == 200
    assert count(metrics, "patched") == 1


def eventually(check: Callable[[], bool], what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + ANSWER_WAIT_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"not within {ANSWER_WAIT_SECONDS}s: {what}"
        time.sleep(every)


def test_a_client_that_leaves_before_its_body_ends_is_counted_invalid_without_a_traceback(
    server: AdmissionServer, certificate: tuple[Path, Path], metrics: OperatorMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with tls_connection(server, certificate[0]) as tls:
        tls.sendall(head("Content-Length: 100") + b"{")
    eventually(lambda: count(metrics, "invalid") == 1, "the review counted invalid")
    assert count(metrics, "error") == 0
    assert not tracebacks(caplog)


def test_the_413_answer_is_a_status_saying_why(
    server: AdmissionServer, certificate: tuple[Path, Path], metrics: OperatorMetrics
) -> None:
    status, answer = post(server, certificate[0], OVER)
    assert (status, answer["code"], answer["reason"]) == (413, 413, Refusal.REQUEST_ENTITY_TOO_LARGE.value)
    assert count(metrics, "invalid") == 0


def test_a_review_over_the_container_bound_is_admitted_unchanged_and_counted(
    server: AdmissionServer, certificate: tuple[Path, Path], metrics: OperatorMetrics
) -> None:
    status, answer = post(
        server, certificate[0], json.dumps(request("CREATE", large_deployment(MAX_TEMPLATE_CONTAINERS + 1))).encode()
    )
    assert status == 200
    assert "patch" not in answer["response"]
    assert count(metrics, "too_large") == 1


def test_a_review_without_room_for_lameducks_annotations_is_admitted_unchanged_and_counted(
    server: AdmissionServer, certificate: tuple[Path, Path], metrics: OperatorMetrics
) -> None:
    written = deployment(annotations={"example.com/filler": "x" * ANNOTATIONS_MAX_BYTES})
    status, answer = post(server, certificate[0], json.dumps(request("CREATE", written)).encode())
    assert status == 200
    assert "patch" not in answer["response"]
    assert answer["response"]["warnings"][0].startswith("lameduck: GracefulPolicy shop/p not applied: no room")
    assert (count(metrics, "no_room"), count(metrics, "unchanged")) == (1, 0)
