"""The sidecar's only contact with the API, and only when a call to the hold comes: get its own
Pod (pod_reads.py bounds how often); while its pod is being deleted, list and watch the
EndpointSlices of its namespace, get the ConfigMap of what the operator learned
(LEARNED_CONFIGMAP) and post one Event (the hold report); with the pod's service-account token,
over HTTP/1.1 (http_client.py), loaded with the hold."""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from lameduck_sidecar.http_client import HttpError, Session
from lameduck_sidecar.names import LEARNED_CONFIGMAP

SLICES = "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
POD = "/api/v1/namespaces/{namespace}/pods/{name}"
EVENTS = "/api/v1/namespaces/{namespace}/events"
CONFIGMAP = "/api/v1/namespaces/{namespace}/configmaps/{name}"
NOT_FOUND = 404
# Served from the API server's watch cache, not etcd: a fleet's holds during a large rollout
# cost the cache a read each. The watch that follows delivers anything newer.
FROM_CACHE = {"resourceVersion": "0"}
GONE = 410


class ApiError(Exception):
    """The API could not be asked (unreachable, forbidden, malformed answer). `status` is the HTTP
    status it answered with; None when no answer came."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


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
        read_seconds: float = 10.0,
        watch_seconds: int = 60,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.slices_path = SLICES.format(namespace=namespace)
        self.pod_path = POD.format(namespace=namespace, name=pod_name)
        self.events_path = EVENTS.format(namespace=namespace)
        self.learned_path = CONFIGMAP.format(namespace=namespace, name=LEARNED_CONFIGMAP)
        self.on_request = on_request
        self.read_seconds = read_seconds
        self.watch_seconds = watch_seconds
        self.token_file = token_file
        self.ca_file = ca_file

    def _session(self) -> Session:
        try:
            token = Path(self.token_file).read_text().strip()
        except OSError as err:
            raise ApiError(f"no service-account token: {err}") from err
        context = None
        if self.api_url.startswith("https"):
            cafile = self.ca_file if Path(self.ca_file).exists() else None  # else the system's
            try:
                context = ssl.create_default_context(cafile=cafile)
            except OSError as err:  # ssl.SSLError included
                raise ApiError(f"unusable CA file: {err}") from err
        return Session(self.api_url, {"authorization": f"Bearer {token}", "accept": "application/json"}, context)

    async def own_pod(self) -> dict[str, Any]:
        """The sidecar's Pod as etcd has it now (a consistent read): the API server's cache may lag
        behind the deletion kubelet acted on."""
        async with self._session() as session:
            found = await self._get(session, self.pod_path, {}, "the pod")
        if not isinstance(found, dict):
            raise ApiError("getting the pod: not an object")
        return found

    async def learned(self) -> dict[str, Any] | None:
        """The namespace's LEARNED_CONFIGMAP from the API server's cache; None when there is none."""
        async with self._session() as session:
            found = await self._get(session, self.learned_path, FROM_CACHE, LEARNED_CONFIGMAP, missing_ok=True)
        if found is not None and not isinstance(found, dict):
            raise ApiError(f"getting {LEARNED_CONFIGMAP}: not an object")
        return found

    async def post_event(self, event: dict[str, Any]) -> None:
        """Create an Event in the pod's namespace (the hold report)."""
        self.on_request()
        async with self._session() as session:
            try:
                body = json.dumps(event).encode()
                posted = await session.request("POST", self.events_path, body=body, timeout=self.read_seconds)
            except HttpError as err:
                raise ApiError(f"posting the hold report: {err}") from err
        if posted.status != 201:
            raise ApiError(f"posting the hold report: HTTP {posted.status}", status=posted.status)

    async def _get(
        self, session: Session, path: str, params: dict[str, str], what: str, *, missing_ok: bool = False
    ) -> Any:
        """The answer's JSON; None for 404 when missing_ok."""
        self.on_request()
        try:
            got = await session.request("GET", path, params=params, timeout=self.read_seconds)
        except HttpError as err:
            raise ApiError(f"getting {what}: {err}") from err
        if missing_ok and got.status == NOT_FOUND:
            return None
        if got.status != 200:
            raise ApiError(f"getting {what}: HTTP {got.status}")
        try:
            return json.loads(got.body)
        except ValueError as err:
            raise ApiError(f"getting {what}: {type(err).__name__} {err}") from err

    async def slices(self) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Yields the namespace's slices: first as listed, then after every watch event. A
        watch the server ends (it does after timeoutSeconds) is started again from the last
        version seen; when that version is gone (410), the slices are listed again."""
        async with self._session() as session:
            while True:
                listed = await self._get(session, self.slices_path, FROM_CACHE, "EndpointSlices")
                try:
                    slices = {item["metadata"]["name"]: item for item in listed.get("items") or []}
                    version: str | None = listed["metadata"]["resourceVersion"]
                except (KeyError, TypeError, AttributeError) as err:
                    raise ApiError(f"listing EndpointSlices: malformed answer ({err!r})") from err
                yield list(slices.values())
                while version is not None:
                    async with contextlib.aclosing(self._watch(session, version, slices)) as events:
                        async for seen, changed in events:
                            version = seen
                            if changed:
                                yield list(slices.values())

    async def _watch(
        self, session: Session, version: str, slices: dict[str, dict[str, Any]]
    ) -> AsyncGenerator[tuple[str | None, bool], None]:
        """One watch from version, applying its events to slices: yields (the version to go
        on from, whether slices changed); None when the version is gone."""
        params = {
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_seconds),
        }
        self.on_request()
        try:
            # A healthy watch is silent at most until the server ends it: longer is a stall.
            async with session.stream(
                self.slices_path, params=params, connect_timeout=self.read_seconds, read_timeout=self.watch_seconds + 10
            ) as watch:
                if watch.status == GONE:
                    yield None, False
                    return
                if watch.status != 200:
                    raise ApiError(f"watching EndpointSlices: HTTP {watch.status}")
                async for line in watch.lines():
                    kind, obj = _event(line)
                    if kind == "ERROR":
                        if obj.get("code") == GONE:
                            yield None, False
                            return
                        raise ApiError(f"watch ended: {obj.get('message')}")
                    try:
                        version = obj["metadata"].get("resourceVersion") or version
                        if kind == "DELETED":
                            slices.pop(obj["metadata"]["name"], None)
                        elif kind != "BOOKMARK":
                            slices[obj["metadata"]["name"]] = obj
                    except (KeyError, TypeError) as err:
                        raise ApiError(f"watching EndpointSlices: malformed event ({err!r})") from err
                    yield version, kind != "BOOKMARK"
        except HttpError as err:
            raise ApiError(f"watching EndpointSlices: {err}") from err
        yield version, False  # ended by the server: watch again from here


def _event(line: bytes) -> tuple[str, dict[str, Any]]:
    try:
        event = json.loads(line)
        kind, obj = event["type"], event.get("object") or {}
    except (ValueError, KeyError, TypeError) as err:
        raise ApiError(f"watching EndpointSlices: malformed event ({err!r})") from err
    if not isinstance(kind, str) or not isinstance(obj, dict):
        raise ApiError("watching EndpointSlices: malformed event")
    return kind, obj
