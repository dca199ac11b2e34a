"""The sidecar's HTTP/1.1 client (lameduck_sidecar.http_client) and the API calls made on it
(lameduck_sidecar.k8s): TLS checked against the pod's CA, one connection for a list and its
watch, a watch's lines whatever its chunks, and broken answers as ApiError."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from harness.certificates import self_signed
from lameduck_sidecar.http_client import MAX_LINE, HttpError, Session
from lameduck_sidecar.k8s import ApiError, NamespaceApi

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """An aiohttp server on 127.0.0.1 (HTTPS when given a context) that notes each request and
    the client port it came from."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[tuple[str, int]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.seen.append((request.path_qs, peer[1] if peer else 0))
        return await self.handler(request)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[tuple[Server, str]]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler, context: ssl.SSLContext | None = None) -> tuple[Server, str]:
        server = Server(handler)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", server.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return server, f"{'https' if context else 'http'}://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def api(url: str, tmp_path: Path, ca_file: Path | None = None) -> NamespaceApi:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    return NamespaceApi(url, "shop", "web-1", str(token), str(ca_file or tmp_path / "no-ca.crt"))


async def pod(request: web.Request) -> web.Response:
    assert request.headers["Authorization"] == "Bearer t0ken"
    return web.json_response({"metadata": {"name": "web-1"}})


def tls(folder: Path, san: str = "IP:127.0.0.1") -> tuple[ssl.SSLContext, Path]:
    folder.mkdir()
    cert, key = self_signed(folder, "api", san)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


async def test_tls_is_checked_against_the_pods_ca(serve: Any, tmp_path: Path) -> None:
    context, cert = tls(tmp_path / "server")
    _, url = await serve(pod, context)
    assert await api(url, tmp_path, cert).own_pod() == {"metadata": {"name": "web-1"}}
    _, other = tls(tmp_path / "other")
    with pytest.raises(ApiError, match="getting the pod: SSLCertVerificationError"):
        await api(url, tmp_path, other).own_pod()


async def test_tls_checks_the_servers_address(serve: Any, tmp_path: Path) -> None:
    context, cert = tls(tmp_path / "server", san="IP:10.9.9.9")
    _, url = await serve(pod, context)
    with pytest.raises(ApiError, match="IP address mismatch"):
        await api(url, tmp_path, cert).own_pod()


async def test_a_list_and_its_watch_share_one_connection(serve: Any, tmp_path: Path) -> None:
    async def slices(request: web.Request) -> web.StreamResponse:
        if "watch" not in request.query:
            return web.json_response({"metadata": {"resourceVersion": "7"}, "items": []})
        response = web.StreamResponse()
        await response.prepare(request)
        event = {"type": "ADDED", "object": {"metadata": {"name": "web-a", "resourceVersion": "8"}}}
        await response.write(json.dumps(event).encode() + b"\n")
        await response.write_eof()  # the server ends the watch: watched again, on the same connection
        return response

    server, url = await serve(slices)
    stream = api(url, tmp_path).slices()
    assert await anext(stream) == []
    assert [s["metadata"]["name"] for s in await anext(stream)] == ["web-a"]
    assert [s["metadata"]["name"] for s in await anext(stream)] == ["web-a"], "from the watch started again"
    await stream.aclose()
    assert [path.split("?")[1].split("&")[0] for path, _ in server.seen] == ["resourceVersion=0", "watch=1", "watch=1"]
    assert len({port for _, port in server.seen}) == 1, "one connection, kept alive"


async def lines_of(chunks: list[bytes], serve: Any) -> list[bytes]:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    _, url = await serve(chunked)
    async with (
        Session(url, {}, None) as session,
        session.stream("/w", params={}, connect_timeout=5, read_timeout=5) as s,
    ):
        return [line async for line in s.lines()]


async def test_a_watchs_lines_are_whole_whatever_its_chunks(serve: Any) -> None:
    found = await lines_of([b'{"a"', b': 1}\n{"b": 2}\n{"c"', b": 3}"], serve)
    assert found == [b'{"a": 1}\n', b'{"b": 2}\n', b'{"c": 3}'], "the last line without its newline too"


async def test_a_line_past_the_bound_is_an_error(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lameduck_sidecar.http_client.MAX_LINE", 10)
    with pytest.raises(HttpError, match="a line longer than 10 bytes"):
        await lines_of([b"x" * 11], serve)
    assert MAX_LINE >= 1024 * 1024, "an EndpointSlice's event fits"


async def test_an_answer_cut_short_is_an_api_error(tmp_path: Path) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"metadata"')
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(cut, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ApiError, match="getting the pod: RemoteProtocolError"):
            await api(f"http://127.0.0.1:{port}", tmp_path).own_pod()
    finally:
        server.close()


async def test_no_answer_in_time_is_an_api_error(tmp_path: Path) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    slow = api(f"http://127.0.0.1:{port}", tmp_path)
    slow.read_seconds = 0.2
    try:
        with pytest.raises(ApiError, match="getting the pod: TimeoutError"):
            await slow.own_pod()
    finally:
        server.close()


async def test_an_api_url_with_a_path_prefix_keeps_it(serve: Any, tmp_path: Path) -> None:
    server, url = await serve(pod)
    await api(url + "/proxy/", tmp_path).own_pod()
    assert server.seen[0][0] == "/proxy/api/v1/namespaces/shop/pods/web-1"
