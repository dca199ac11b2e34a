"""HTTP/1.1 to the API server on asyncio's streams (h11), as much as k8s.py asks: a request answered
whole, or an answer streamed line by line (a watch). A session keeps one connection alive for
requests in sequence (the list, then its watch) and closes it when it ends or an answer is left
unread. TLS with the context k8s.py makes (the pod's CA), the host's name or address checked.

Loaded with the hold (serving.py). Not aiohttp's client: it adds 25 MiB on its own, and loaded
only when a hold starts, its import (185 ms) would delay the hold's first request
(docs/sidecar.md#memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import h11

READ_SIZE = 64 * 1024
# A watch event's line at most; an EndpointSlice holds at most 1,000 endpoints, well under this.
MAX_LINE = 16 * 1024 * 1024
USER_AGENT = "lameduck-sidecar"


class HttpError(Exception):
    """No answer: no connection, TLS refused, a broken or too long answer, or none in time."""


# What a failed request raises as HttpError (ssl.SSLError is an OSError); anything else, such as
# a cancellation, as it is.
FAILURES = (HttpError, TimeoutError, OSError, h11.ProtocolError)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


@dataclass
class _Link:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    http: h11.Connection


class Streamed:
    """An answer being read: its status, then its body line by line."""

    def __init__(self, session: Session, link: _Link, status: int, read_timeout: float) -> None:
        self._session = session
        self._link = link
        self.status = status
        self._read_timeout = read_timeout

    async def lines(self) -> AsyncIterator[bytes]:
        """Each line with its newline; the last one without, if the body ends without one."""
        pending = b""
        while True:
            event = await self._session._event(self._link, self._read_timeout)
            if isinstance(event, h11.EndOfMessage):
                self._session._finished(self._link)
                if pending:
                    yield pending
                return
            if not isinstance(event, h11.Data):
                raise HttpError(f"unexpected {type(event).__name__} in a body")
            pending += bytes(event.data)
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line + b"\n"
            if len(pending) > MAX_LINE:
                raise HttpError(f"a line longer than {MAX_LINE} bytes")


class Session:
    """Requests to one server (base_url: scheme, host, port and any path prefix), in sequence."""

    def __init__(self, base_url: str, headers: Mapping[str, str], context: ssl.SSLContext | None) -> None:
        parts = urlsplit(base_url)
        self.tls = context if parts.scheme == "https" else None
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.headers = [("host", parts.netloc), ("user-agent", USER_AGENT), *headers.items()]
        self._link: _Link | None = None

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._link is not None:
            self._link.writer.close()
            self._link = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float,
    ) -> Reply:
        """One request, its answer read whole, within timeout (connecting included)."""
        try:
            async with asyncio.timeout(timeout):
                link = await self._send(method, path, params, body)
                status = await self._status(link, None)
                chunks = []
                while not isinstance(event := await self._event(link, None), h11.EndOfMessage):
                    if isinstance(event, h11.Data):
                        chunks.append(bytes(event.data))
                self._finished(link)
                return Reply(status, b"".join(chunks))
        except FAILURES as err:
            self.close()
            raise HttpError(_text(err)) from err
        except BaseException:  # cancelled
            self.close()
            raise

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, *, params: Mapping[str, str], connect_timeout: float, read_timeout: float
    ) -> AsyncIterator[Streamed]:
        """A GET whose answer is read as it comes: connecting within connect_timeout, and every
        read within read_timeout. Leaving early closes the connection."""
        try:
            async with asyncio.timeout(connect_timeout):
                link = await self._send("GET", path, params, None)
            yield Streamed(self, link, await self._status(link, read_timeout), read_timeout)
        except FAILURES as err:
            self.close()
            raise HttpError(_text(err)) from err
        finally:
            if self._link is not None and self._link.http.our_state is not h11.IDLE:
                self.close()  # left before the answer's end: the connection cannot carry another

    async def _send(self, method: str, path: str, params: Mapping[str, str] | None, body: bytes | None) -> _Link:
        link = self._link
        if link is None or link.reader.at_eof() or link.writer.is_closing() or link.http.our_state is not h11.IDLE:
            self.close()
            server_hostname = self.host if self.tls is not None else None
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.tls, server_hostname=server_hostname
            )
            link = self._link = _Link(reader, writer, h11.Connection(h11.CLIENT))
        target = self.prefix + path + (f"?{urlencode(params)}" if params else "")
        headers = list(self.headers)
        if body is not None:
            headers += [("content-type", "application/json"), ("content-length", str(len(body)))]
        data = link.http.send(h11.Request(method=method, target=target, headers=headers)) or b""
        if body:
            data += link.http.send(h11.Data(data=body)) or b""
        data += link.http.send(h11.EndOfMessage()) or b""
        link.writer.write(data)
        await link.writer.drain()
        return link

    async def _status(self, link: _Link, read_timeout: float | None) -> int:
        while not isinstance(event := await self._event(link, read_timeout), h11.Response):
            if not isinstance(event, h11.InformationalResponse):
                raise HttpError(f"unexpected {type(event).__name__} before the status")
        return event.status_code

    async def _event(self, link: _Link, read_timeout: float | None) -> object:
        while (event := link.http.next_event()) is h11.NEED_DATA:
            if read_timeout is None:
                data = await link.reader.read(READ_SIZE)
            else:
                async with asyncio.timeout(read_timeout):
                    data = await link.reader.read(READ_SIZE)
            link.http.receive_data(data)
        if isinstance(event, h11.ConnectionClosed):
            raise HttpError("the server closed the connection")
        return event

    def _finished(self, link: _Link) -> None:
        """The answer was read to its end: keep the connection for the next request, if it can carry one."""
        if link.http.our_state is h11.DONE and link.http.their_state is h11.DONE:
            link.http.start_next_cycle()
        else:
            self.close()


def _text(err: BaseException) -> str:
    return str(err) if isinstance(err, HttpError) else f"{type(err).__name__} {err}"
