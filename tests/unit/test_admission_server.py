"""The webhook's server answers reviews over TLS from its own thread, whatever the operator's loop is doing."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from harness.certificates import self_signed
from harness.wide import deployment as large_deployment
from lameduck_operator.admission_server import (
    MAX_REVIEW_BYTES,
    WEBHOOK_PATH,
    AdmissionServer,
    AdmissionServerFailed,
)
from lameduck_operator.logic.decision import MAX_TEMPLATE_CONTAINERS, Decision
from lameduck_operator.metrics import OperatorMetrics
from tests.unit.builders import container, deployment
from tests.unit.test_admission import ENFORCE, judge_for, request

ANSWER_WAIT_SECONDS = 20.0


def serving(
    certificate: tuple[Path, Path],
    metrics: OperatorMetrics,
    *,
    judge: Any = None,
    port: int = 0,
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


def eventually(check: Callable[[], bool], what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + ANSWER_WAIT_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"not within {ANSWER_WAIT_SECONDS}s: {what}"
        time.sleep(every)


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


def test_a_body_that_is_not_json_is_answered_400_and_counted_invalid(
    server: AdmissionServer, certificate: tuple[Path, Path], metrics: OperatorMetrics
) -> None:
    status, answer = post(server, certificate[0], b"{not json")
    # Not a review answer: under failurePolicy Ignore the API server admits the write unchanged.
    assert status == 400
    assert answer["status"] == "Failure"
    assert count(metrics, "invalid") == 1


def test_a_judge_that_raises_is_answered_500_and_counted_and_the_server_lives_on(
    certificate: tuple[Path, Path], metrics: OperatorMetrics
) -> None:
    def broken(_: Mapping[str, Any]) -> Decision:
        raise KeyError("a bug")

    server = serving(certificate, metrics, judge=broken)
    server.start()
    try:
        status, answer = post(server, certificate[0], rollout_review())
        assert status == 500
        assert answer["status"] == "Failure"
        assert "response" not in answer, "no patch: the write goes through as written"
        assert count(metrics, "error") == 1
        # The server lives on: the next review is answered too.
        assert post(server, certificate[0], b"[]")[0] == 400
    finally:
        server.stop()


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


def test_a_review_body_over_the_limit_is_answered_413_and_counted_and_others_are_still_served(
    server: AdmissionServer, certificate: tuple[Path, Path], metrics: OperatorMetrics
) -> None:
    status, answer = post(server, certificate[0], b"{" + b" " * MAX_REVIEW_BYTES + b"}")
    assert (status, answer["code"]) == (413, 413)
    assert count(metrics, "body_too_large") == 1
    assert count(metrics, "invalid") == 0
    status, _ = post(server, certificate[0], rollout_review())
    assert status == 200
    assert count(metrics, "patched") == 1


def test_a_review_over_the_container_bound_is_admitted_unchanged_and_counted(
    server: AdmissionServer, certificate: tuple[Path, Path], metrics: OperatorMetrics
) -> None:
    status, answer = post(
        server, certificate[0], json.dumps(request("CREATE", large_deployment(MAX_TEMPLATE_CONTAINERS + 1))).encode()
    )
    assert status == 200
    assert "patch" not in answer["response"]
    assert count(metrics, "too_large") == 1
