"""The sidecar's port without its I/O: HTTP/1.1 on one connection (h11), and the answers that need
no hold (the probes, /metrics, a name no container can have). idle.py drives it until the first
call to the hold, serving.py from then on; both count the connections they accept.

Routes: GET (or HEAD) /healthz, /readyz, /metrics and /hold/<container>; any other method on them
is 405, any other path 404. A container name arrives percent-encoded in the path and is decoded
before it is judged (calls.valid_container); a malformed request is answered 400 and closed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote

import h11

from lameduck_sidecar.calls import Answer, valid_container
from lameduck_sidecar.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from lameduck_sidecar.metrics import SidecarMetrics
from lameduck_sidecar.names import HOLD_ROUTE

# A keep-alive connection with no request, or one that never finishes its request, is closed
# after this long (aiohttp's keepalive_timeout, which the sidecar's server had before).
IDLE_SECONDS = 75.0
READ_SIZE = 64 * 1024
JSON = "application/json; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
HOLD_PREFIX = HOLD_ROUTE.removesuffix("{container}")
HEALTH = ("/healthz", "/readyz")
METHODS = ("GET", "HEAD")


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # as sent, still percent-encoded, without the query


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = TEXT


@dataclass(frozen=True)
class HoldCall:
    """A call to the hold with a name a container can have: only a hold can answer it."""

    container: str


def json_response(body: object, status: int = HTTPStatus.OK) -> Response:
    return Response(status, json.dumps(body).encode(), JSON)


def error(status: HTTPStatus) -> Response:
    return Response(status, f"{status.value}: {status.phrase}".encode())


def answer(request: Request, metrics: SidecarMetrics) -> Response | HoldCall:
    """The answer to a request, or the hold call it is."""
    path = request.path
    container = path[len(HOLD_PREFIX) :] if path.startswith(HOLD_PREFIX) else None
    if path not in (*HEALTH, "/metrics") and (not container or "/" in container):
        return error(HTTPStatus.NOT_FOUND)
    if request.method not in METHODS:
        return error(HTTPStatus.METHOD_NOT_ALLOWED)
    if path in HEALTH:
        return Response(HTTPStatus.OK, b"ok\n")
    if path == "/metrics":
        return Response(HTTPStatus.OK, metrics.exposition(), METRICS_CONTENT_TYPE)
    name = unquote(container or "")
    if not valid_container(name):  # no container has that name: refused before the API is asked
        metrics.calls.labels(answer=Answer.INVALID_CONTAINER.value).inc()
        return json_response({"error": Answer.INVALID_CONTAINER.value}, HTTPStatus.BAD_REQUEST)
    return HoldCall(name)


class OwnConnections:
    """Connections the sidecar's own server accepted: the pod's connections that are not the
    app's traffic (kubelet's preStop calls and probes of the sidecar, scrapes)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


class Connection:
    """One client's connection to the port, as h11 reads it: whole requests in order, and the
    bytes of each answer. `closed` once nothing more is to be read or sent on it: the socket is
    closed when what was sent is out."""

    def __init__(self) -> None:
        self._http = h11.Connection(h11.SERVER)
        self._request: Request | None = None
        self.closed = False

    def receive(self, data: bytes) -> None:
        """Bytes read from the socket; b"" when the client closed its side."""
        self._http.receive_data(data)

    def next_request(self) -> Request | Response | None:
        """The next whole request; a 400 to send when the client broke the protocol; None when
        more bytes are needed, or the connection is closed."""
        while not self.closed:
            try:
                event = self._http.next_event()
            except h11.RemoteProtocolError:
                return error(HTTPStatus.BAD_REQUEST)
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return None
            if isinstance(event, h11.Request):
                target = event.target.decode("ascii", "replace")
                self._request = Request(event.method.decode("ascii", "replace"), target.partition("?")[0])
            elif isinstance(event, h11.EndOfMessage) and self._request is not None:
                return self._request  # its body, if any, was read and dropped
            elif isinstance(event, h11.ConnectionClosed):
                self.closed = True
        return None

    def respond(self, response: Response) -> bytes:
        """The bytes that answer the request next_request gave (or its 400)."""
        headers = [("content-type", response.content_type), ("content-length", str(len(response.body)))]
        if response.status == HTTPStatus.METHOD_NOT_ALLOWED:
            headers.append(("allow", ",".join(METHODS)))
        reason = HTTPStatus(response.status).phrase.encode()
        head_only = self._request is not None and self._request.method == "HEAD"
        try:
            sent = self._http.send(h11.Response(status_code=response.status, headers=headers, reason=reason)) or b""
            if not head_only:
                sent += self._http.send(h11.Data(data=response.body)) or b""
            sent += self._http.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:  # the client broke the protocol mid-request: nothing to answer
            self.closed = True
            return b""
        self._request = None
        if self._http.our_state is h11.DONE and self._http.their_state is h11.DONE:
            self._http.start_next_cycle()
        else:  # the client asked to close, spoke HTTP/1.0, or broke the protocol
            self.closed = True
        return sent
