"""The sidecar's port without I/O (lameduck_sidecar.endpoint): its routes, and HTTP/1.1 on one
connection as h11 reads it (keep-alive, pipelining, close, malformed requests)."""

from __future__ import annotations

import json

import pytest

from lameduck_sidecar.endpoint import Connection, HoldCall, Request, Response, answer
from lameduck_sidecar.metrics import SidecarMetrics


def get(path: str, method: str = "GET") -> Response | HoldCall:
    return answer(Request(method, path), SidecarMetrics())


def exchange(connection: Connection, data: bytes, metrics: SidecarMetrics | None = None) -> bytes:
    """What the sidecar sends back for data, answering every whole request but hold calls."""
    connection.receive(data)
    sent = b""
    while (item := connection.next_request()) is not None:
        found = answer(item, metrics or SidecarMetrics()) if isinstance(item, Request) else item
        assert isinstance(found, Response)
        sent += connection.respond(found)
    return sent


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_the_probes_are_answered_ok(path: str) -> None:
    assert get(path) == Response(200, b"ok\n", "text/plain; charset=utf-8")


def test_the_metrics_are_the_exposition() -> None:
    metrics = SidecarMetrics()
    metrics.holds.labels(outcome="quiet").inc()
    found = answer(Request("GET", "/metrics"), metrics)
    assert found == Response(200, metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8")


@pytest.mark.parametrize(
    ("path", "container"), [("/hold/app", "app"), ("/hold/%61pp", "app"), ("/hold/web-2", "web-2")]
)
def test_a_name_a_container_can_have_is_a_hold_call(path: str, container: str) -> None:
    assert get(path) == HoldCall(container)
    assert get(path, "HEAD") == HoldCall(container), "HEAD is GET without the body, as aiohttp's routes had it"


@pytest.mark.parametrize("name", ["App", "a" * 64, "x_y", "-app", "app.1", "app%0A", "%20", "a%2Fb"])
def test_a_name_no_container_can_have_is_refused_and_counted(name: str) -> None:
    metrics = SidecarMetrics()
    found = answer(Request("GET", f"/hold/{name}"), metrics)
    assert isinstance(found, Response)
    assert (found.status, json.loads(found.body)) == (400, {"error": "invalid_container"})
    assert 'lameduck_sidecar_hold_calls_total{answer="invalid_container"} 1.0' in metrics.exposition().decode()


@pytest.mark.parametrize("path", ["/", "/hold/", "/hold", "/hold/a/b", "/healthz/", "/metricsx", "/holdx/app"])
def test_other_paths_are_not_found(path: str) -> None:
    found = get(path)
    assert isinstance(found, Response)
    assert found.status == 404


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/hold/app"])
def test_other_methods_are_not_allowed(path: str) -> None:
    found = get(path, "POST")
    assert isinstance(found, Response)
    assert found.status == 405


def test_a_keep_alive_connection_carries_pipelined_requests_in_order() -> None:
    connection = Connection()
    sent = exchange(connection, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sent.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\n\r\nok\nHTTP/1.1 404 Not Found\r\n" in sent
    assert not connection.closed
    assert exchange(connection, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"\r\n\r\nok\n")


def test_a_request_split_across_reads_is_answered_once_whole() -> None:
    connection = Connection()
    assert exchange(connection, b"GET /hea") == b""
    assert exchange(connection, b"lthz HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"ok\n")


def test_a_405_names_what_is_allowed_and_a_body_is_read_and_dropped() -> None:
    connection = Connection()
    sent = exchange(connection, b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    assert sent.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"allow: GET,HEAD\r\n" in sent
    assert exchange(connection, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"ok\n")


def test_head_gets_the_headers_without_the_body() -> None:
    sent = exchange(Connection(), b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sent.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 3\r\n" in sent
    assert sent.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    "request_",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.0\r\n\r\n",  # kubelet's probes ask to close; HTTP/1.0 closes by default
    ],
)
def test_a_connection_asked_to_close_is_closed_after_its_answer(request_: bytes) -> None:
    connection = Connection()
    assert exchange(connection, request_).endswith(b"ok\n")
    assert connection.closed


def test_a_malformed_request_gets_a_400_and_the_connection_closes() -> None:
    connection = Connection()
    sent = exchange(connection, b"NOT HTTP AT ALL\r\n\r\n")
    assert sent.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert connection.closed


def test_headers_past_h11s_bound_are_a_400() -> None:
    connection = Connection()
    sent = exchange(connection, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
    assert sent.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert connection.closed


def test_a_client_that_closes_closes_the_connection() -> None:
    connection = Connection()
    assert exchange(connection, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"ok\n")
    assert exchange(connection, b"") == b""
    assert connection.closed
    assert connection.next_request() is None


def test_a_hold_call_is_read_whole_and_answered_when_its_hold_ends() -> None:
    connection = Connection()
    connection.receive(
        b"GET /hold/app?from=kubelet HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    request = connection.next_request()
    assert request == Request("GET", "/hold/app"), "the query is not part of the path"
    assert connection.next_request() is None, "the next request waits for this one's answer"
    sent = connection.respond(Response(200, b'{"outcome": "quiet"}', "application/json; charset=utf-8"))
    assert sent.endswith(b'{"outcome": "quiet"}')
    assert connection.next_request() == Request("GET", "/healthz")
