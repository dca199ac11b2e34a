"""The lean list-and-watch against a scripted API server: pages, resumed watches, bookmarks, an
expired version that lists again and hands over what went missing as deleted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes import client

from lameduck_operator.k8s.informer import ApiEndpoint, Informer

PATH = "/apis/apps/v1/deployments"


def item(name: str, version: str = "1") -> dict[str, Any]:
    return {"metadata": {"namespace": "shop", "name": name, "uid": f"uid-{name}", "resourceVersion": version}}


def event(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": {"apiVersion": "apps/v1", "kind": "Deployment", **obj}}).encode()


class ScriptedApi:
    """Answers lists from `lists` (each a list of pages) and watches from `watches` (each the
    lines of one watch response), in order; the last watch stays open."""

    def __init__(self, lists: list[list[dict[str, Any]]], watches: list[list[bytes]]) -> None:
        self.lists = lists
        self.watches = watches
        self.requests: list[dict[str, str]] = []
        self.authorizations: set[str] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.query))
        self.authorizations.add(request.headers.get("Authorization", ""))
        if request.query.get("watch") != "true":
            pages = self.lists[0]
            index = int(request.query.get("continue", "0"))
            if index + 1 == len(pages):
                self.lists.pop(0)
            return web.json_response(pages[index])
        response = web.StreamResponse()
        await response.prepare(request)
        lines = self.watches.pop(0) if self.watches else None
        if lines is None:
            await asyncio.sleep(30)  # the last watch: open until the test ends
            return response
        # Split mid-line, as a network may: the informer must join the pieces.
        payload = b"\n".join(lines) + b"\n"
        middle = len(payload) // 2
        for piece in (payload[:middle], payload[middle:]):
            await response.write(piece)
            await asyncio.sleep(0.01)
        return response


def page(items: list[dict[str, Any]], version: str, next_page: str = "") -> dict[str, Any]:
    return {"kind": "DeploymentList", "metadata": {"resourceVersion": version, "continue": next_page}, "items": items}


async def run_until(informer: Informer, done: Callable[[], bool]) -> None:
    """Runs the informer until done() (10 s at most), then stops it."""
    task = asyncio.create_task(informer.run())
    try:
        async with asyncio.timeout(10):
            while not done():
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def served() -> AsyncIterator[tuple[ScriptedApi, ApiEndpoint]]:
    api = ScriptedApi(
        lists=[
            [page([item("a"), item("b")], "10", "1"), page([item("c")], "10")],
            [page([item("a", "11"), item("d", "15")], "20")],
        ],
        watches=[
            [
                event("MODIFIED", item("a", "11")),
                event("DELETED", item("b", "13")),
                event("BOOKMARK", {"metadata": {"resourceVersion": "14"}}),
            ],
            [json.dumps({"type": "ERROR", "object": {"kind": "Status", "code": 410}}).encode()],
        ],
    )
    app = web.Application()
    app.router.add_get(PATH, api.handle)
    async with TestServer(app) as server:
        configuration = client.Configuration()
        # As the client's in-cluster and kubeconfig loaders set a token.
        configuration.api_key = {"BearerToken": "token-1"}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
        yield api, ApiEndpoint(str(server.make_url("")), False, configuration)


async def test_lists_in_pages_then_watches_resumes_and_lists_again_when_the_version_expired(
    served: tuple[ScriptedApi, ApiEndpoint],
) -> None:
    api, endpoint = served
    seen: list[tuple[str, bool, Mapping[str, Any]]] = []
    informer = Informer(
        endpoint, PATH, "Deployment", lambda obj, deleted: seen.append((obj["metadata"]["name"], deleted, obj))
    )
    informer.page_size = 2
    await run_until(informer, lambda: len(seen) >= 8)
    assert [(name, deleted) for name, deleted, _ in seen] == [
        ("a", False),
        ("b", False),
        ("c", False),  # the list's second page
        ("a", False),  # MODIFIED
        ("b", True),  # DELETED
        ("a", False),  # listed again after 410
        ("d", False),
        ("c", True),  # missing from the new list: deleted while no watch saw it
    ]
    assert informer.synced.is_set()
    assert all(obj["apiVersion"] == "apps/v1" and obj["kind"] == "Deployment" for _, _, obj in seen)
    assert seen[-1][2]["metadata"]["uid"] == "uid-c", "a deletion from a list names the object's uid"
    watches = [r for r in api.requests if r.get("watch") == "true"]
    # Resumed from the last version seen (a bookmark's), never from the first list's again.
    assert [w["resourceVersion"] for w in watches] == ["10", "14", "20"]
    assert all(w["allowWatchBookmarks"] == "true" for w in watches)
    lists = [r for r in api.requests if r.get("watch") != "true"]
    assert [r.get("continue") for r in lists] == [None, "1", None]
    assert all(r["limit"] == "2" for r in lists)
    assert api.authorizations == {"Bearer token-1"}


async def test_an_object_its_handler_cannot_take_does_not_stop_the_watch(
    served: tuple[ScriptedApi, ApiEndpoint],
) -> None:
    _, endpoint = served
    seen: list[str] = []

    def handler(obj: Mapping[str, Any], deleted: bool) -> None:
        if obj["metadata"]["name"] == "b":
            raise KeyError("spec")
        seen.append(obj["metadata"]["name"])

    await run_until(Informer(endpoint, PATH, "Deployment", handler), lambda: len(seen) >= 6)
    # b's two events failed; everything after them was still handed over.
    assert seen == ["a", "c", "a", "a", "d", "c"]
