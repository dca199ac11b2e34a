"""The sidecar's only contact with the API: list and watch EndpointSlices of its namespace
and get its own Pod, with the pod's service-account token, over the aiohttp client it
already carries."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import aiohttp

SLICES = "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
POD = "/api/v1/namespaces/{namespace}/pods/{name}"
# Served from the API server's watch cache, not etcd: a fleet's holds during a large rollout
# cost the cache a read each. The watch that follows delivers anything newer.
FROM_CACHE = {"resourceVersion": "0"}


class ApiError(Exception):
    """The API could not be asked (unreachable, forbidden, malformed answer)."""


class NamespaceApi:
    def __init__(
        self,
        api_url: str,
        namespace: str,
        pod_name: str,
        token_file: str,
        ca_file: str,
        *,
        on_request: Callable[[], None] = lambda: None,
    ) -> None:
        self.url = api_url.rstrip("/") + SLICES.format(namespace=namespace)
        self.pod_url = api_url.rstrip("/") + POD.format(namespace=namespace, name=pod_name)
        self.on_request = on_request
        self.token_file = token_file
        self.ca_file = ca_file

    def _session(self) -> aiohttp.ClientSession:
        try:
            token = Path(self.token_file).read_text().strip()
        except OSError as err:
            raise ApiError(f"no service-account token: {err}") from err
        context: ssl.SSLContext | bool = True
        if self.url.startswith("https") and Path(self.ca_file).exists():
            context = ssl.create_default_context(cafile=self.ca_file)
        return aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            connector=aiohttp.TCPConnector(ssl=context),
        )

    async def own_pod(self) -> dict[str, Any]:
        async with self._session() as session:
            try:
                self.on_request()
                async with session.get(self.pod_url, params=FROM_CACHE) as response:
                    if response.status != 200:
                        raise ApiError(f"getting the pod: HTTP {response.status}")
                    pod: dict[str, Any] = await response.json()
                    return pod
            except aiohttp.ClientError as err:
                raise ApiError(f"getting the pod: {err}") from err

    async def slices(self) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Yields the namespace's slices: first as listed, then after every watch event."""
        async with self._session() as session:
            slices: dict[str, dict[str, Any]] = {}
            try:
                self.on_request()
                async with session.get(self.url, params=FROM_CACHE) as response:
                    if response.status != 200:
                        raise ApiError(f"listing EndpointSlices: HTTP {response.status}")
                    listed = await response.json()
            except aiohttp.ClientError as err:
                raise ApiError(f"listing EndpointSlices: {err}") from err
            for item in listed.get("items", []):
                slices[item["metadata"]["name"]] = item
            yield list(slices.values())
            params = {
                "watch": "1",
                "resourceVersion": listed["metadata"]["resourceVersion"],
                "allowWatchBookmarks": "true",
            }
            try:
                self.on_request()
                async with session.get(self.url, params=params, timeout=aiohttp.ClientTimeout(total=None)) as watch:
                    if watch.status != 200:
                        raise ApiError(f"watching EndpointSlices: HTTP {watch.status}")
                    async for line in watch.content:
                        event = json.loads(line)
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            raise ApiError(f"watch ended: {obj.get('message')}")
                        if kind == "BOOKMARK":
                            continue
                        name = obj["metadata"]["name"]
                        if kind == "DELETED":
                            slices.pop(name, None)
                        else:
                            slices[name] = obj
                        yield list(slices.values())
            except aiohttp.ClientError as err:
                raise ApiError(f"watching EndpointSlices: {err}") from err
