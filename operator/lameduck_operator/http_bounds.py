"""How long an HTTPS server of the operator waits on a client, phase by phase, and the one
bound aiohttp has no setting for: the time to read a request's headers.

Every open connection holds a socket, buffers and a task; a client that trickles its headers
or body a byte at a time would otherwise hold them for as long as it likes (aiohttp closes only
connections idle between requests, after an hour by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True)
class ReadBounds:
    """Seconds per phase. The API server writes a review's headers and body at once, over the
    cluster network, in milliseconds, and stops waiting for the webhook after its timeoutSeconds
    (3 s by default, 10 s at most in the chart), closing the connection. A phase bound above the
    default timeout never cuts a review the API server still waits for at that setting, even
    after this thread was held up for a while (an expired deadline runs before the handler that
    would have ended it); a client slower than the bounds is stalled or hostile."""

    # From accepting the connection to the end of the TLS handshake (asyncio's default is 60 s).
    handshake: float = 5.0
    # From a request's first byte (a new connection's handshake) to the end of its headers.
    headers: float = 5.0
    # From the end of the headers to the end of the body.
    body: float = 5.0
    # Between requests on a kept-alive connection: longer than the API server's own idle timeout
    # (Go's 90 s, which Kubernetes' client keeps), so that the API server closes idle
    # connections first and never sends a review down one this server is closing.
    idle: float = 120.0
    # After a refusal (413, 408) with the body unread: reading and dropping the rest of it for
    # this long lets the client read the answer rather than a reset. Also the longest a closing
    # TLS connection waits for the client's close_notify (asyncio's default is 30 s).
    linger: float = 1.0


class HeaderDeadline(asyncio.Protocol):
    """aiohttp's protocol for one connection, wrapped: everything is passed on as it comes, and
    the connection is dropped when a request's headers are not all in within `seconds` of its
    first byte (of the handshake, on a new connection). The request's handler ends the wait
    (`headers_read`) and hands the connection back (`request_done`) when it has answered: the
    app's `request_middleware` does both, for every route (a 404 as well).

    A new deadline starts with the first byte after an answer, not at the answer: a connection
    kept alive for the next review may sit idle for as long as `ReadBounds.idle`.
    """

    def __init__(self, inner: asyncio.Protocol, seconds: float, log: logging.Logger) -> None:
        self._inner = inner
        self._seconds = seconds
        self._log = log
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._in_request = False

    @staticmethod
    def of(request: web.BaseRequest) -> HeaderDeadline | None:
        """The deadline of the connection a request came on (None once it is closed)."""
        transport = request.transport
        protocol = transport.get_protocol() if transport is not None else None
        return protocol if isinstance(protocol, HeaderDeadline) else None

    def headers_read(self) -> None:
        self._in_request = True
        self._cancel()

    def request_done(self) -> None:
        self._in_request = False

    async def drain(self, request: web.BaseRequest) -> None:
        """Reads and drops what is left of a request's body, within the header bound: a body the
        handler left unread (a 404, a refusal) may still be arriving, and its bytes must not
        start the next request's header wait (which would drop a kept-alive connection)."""
        if not request.can_read_body or request.content.at_eof():
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._seconds):
                while await request.content.readany():
                    pass

    def _start(self) -> None:
        if self._timer is None and not self._in_request:
            self._timer = asyncio.get_running_loop().call_later(self._seconds, self._expire)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._log.debug("dropped a connection that sent no whole request headers within %ss", self._seconds)
            # abort, not close: a polite TLS close would wait on the same slow client.
            self._transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._start()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if data:
            self._start()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._transport = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


@web.middleware
async def request_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Ends the header wait of the connection a request came on, and starts the next one's."""
    deadline = HeaderDeadline.of(request)
    if deadline is not None:
        deadline.headers_read()
    try:
        return await handler(request)
    finally:
        if deadline is not None:
            await deadline.drain(request)
            deadline.request_done()
