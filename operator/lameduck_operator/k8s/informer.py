"""A lean list-and-watch of one resource kind across the cluster, for Deployments and Pods.

kopf keeps memory and runs a task per object it watches, and dispatches every event through its
own structures: at fleet scale (5,000 Deployments and their pods) that was the largest part of
the operator's work per event. lameduck reads these two kinds itself: the list in pages, then one
watch from the list's resourceVersion, each event parsed once and handed to `seen` as a dict.
A watch that ends is resumed from the last version seen (bookmarks keep it recent); one whose
version the API server no longer has (410 Gone) lists again, and objects missing from the new
list are handed over as deleted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes import client

log = logging.getLogger("lameduck.informer")

PAGE_SIZE = 100
# The API server ends a watch after this long; it is then resumed from the last version seen.
WATCH_SECONDS = 270
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0
GONE = 410

Seen = Callable[[Mapping[str, Any], bool], None]
ObjectKey = tuple[str, str]


class Expired(Exception):
    """The version to list or watch from is too old for the API server (410 Gone): list again."""


class WatchFailed(Exception):
    """The API server answered a list or watch with an error other than 410."""


@dataclass(frozen=True)
class ApiEndpoint:
    """Where the API server is and how to authenticate, from the API client's configuration:
    the token is read at every request, as the client does (service account tokens rotate)."""

    server: str
    ssl_context: ssl.SSLContext | bool
    configuration: client.Configuration

    @classmethod
    def of(cls, configuration: client.Configuration) -> ApiEndpoint:
        context: ssl.SSLContext | bool = False
        if configuration.verify_ssl:
            context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
            if configuration.cert_file:
                context.load_cert_chain(configuration.cert_file, configuration.key_file)
        return cls(str(configuration.host).rstrip("/"), context, configuration)

    def headers(self) -> dict[str, str]:
        """The API client's own authentication headers (it refreshes an expiring token)."""
        headers = {"Accept": "application/json"}
        settings: dict[str, dict[str, Any]] = dict(self.configuration.auth_settings())  # type: ignore[arg-type]
        for setting in settings.values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[str(setting["key"])] = str(setting["value"])
        return headers


def _key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


class Informer:
    """Lists and watches `path` (such as /apis/apps/v1/deployments) across all namespaces until
    cancelled; `synced` is set once the first list has been handed over."""

    def __init__(
        self,
        endpoint: ApiEndpoint,
        path: str,
        kind: str,
        seen: Seen,
        *,
        page_size: int = PAGE_SIZE,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self.endpoint = endpoint
        self.path = path
        # Listed items lack apiVersion and kind (watch events carry them): set as the path says.
        self.api_version = path.removeprefix("/apis/").removeprefix("/api/").rsplit("/", 1)[0]
        self.kind = kind
        self.seen = seen
        self.page_size = page_size
        self.watch_seconds = watch_seconds
        self.synced = asyncio.Event()
        # Every object handed over and not deleted since, with its uid: what a new list is
        # compared with to hand over deletions a broken watch missed.
        self._known: dict[ObjectKey, str] = {}

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self.endpoint.ssl_context, limit=2)
        async with aiohttp.ClientSession(connector=connector) as session:
            delay = RETRY_FIRST_SECONDS
            while True:
                try:
                    version = await self._list(session)
                    self.synced.set()
                    delay = RETRY_FIRST_SECONDS
                    while True:
                        version = await self._watch(session, version)
                except Expired:
                    log.info("%s: the watch's version expired; listing again", self.path)
                except (aiohttp.ClientError, TimeoutError, WatchFailed, ValueError) as err:
                    log.warning("%s: list or watch failed (retry in %.0fs): %s", self.path, delay, err)
                    await asyncio.sleep(delay)
                    delay = min(RETRY_MAX_SECONDS, delay * 2)

    async def _get(self, session: aiohttp.ClientSession, params: dict[str, str], timeout: float) -> bytes:
        async with session.get(
            self.endpoint.server + self.path,
            params=params,
            headers=self.endpoint.headers(),
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            body = await response.read()
            if response.status == GONE:
                raise Expired()
            if response.status >= 300:
                raise WatchFailed(f"{response.status}: {body[:200]!r}")
            return body

    async def _list(self, session: aiohttp.ClientSession) -> str:
        listed: set[ObjectKey] = set()
        params = {"limit": str(self.page_size)}
        while True:
            page = json.loads(await self._get(session, params, timeout=60))
            for item in page.get("items") or []:
                item.setdefault("apiVersion", self.api_version)
                item.setdefault("kind", self.kind)
                key = _key(item)
                listed.add(key)
                self._known[key] = _uid(item)
                self._hand_over(item, False)
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                break
            params["continue"] = str(meta["continue"])
        for key in [k for k in self._known if k not in listed]:
            uid = self._known.pop(key)
            gone = {"apiVersion": self.api_version, "kind": self.kind}
            self._hand_over({**gone, "metadata": {"namespace": key[0], "name": key[1], "uid": uid}}, True)
        return str(meta.get("resourceVersion") or "")

    async def _watch(self, session: aiohttp.ClientSession, version: str) -> str:
        params = {
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_seconds),
        }
        async with session.get(
            self.endpoint.server + self.path,
            params=params,
            headers=self.endpoint.headers(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=self.watch_seconds + 30),
        ) as response:
            if response.status == GONE:
                raise Expired()
            if response.status >= 300:
                raise WatchFailed(f"{response.status}: {(await response.read())[:200]!r}")
            pending = bytearray()
            async for chunk in response.content.iter_any():
                pending += chunk
                end = pending.rfind(b"\n")
                if end < 0:
                    continue
                lines = bytes(pending[:end]).split(b"\n")
                del pending[: end + 1]
                for line in lines:
                    if line.strip():
                        version = self._event(json.loads(line), version)
        return version

    def _event(self, event: Mapping[str, Any], version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == GONE:
                raise Expired()
            raise WatchFailed(f"{obj.get('code')}: {obj.get('message')}")
        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        if kind == "BOOKMARK":
            return version
        key, deleted = _key(obj), kind == "DELETED"
        if deleted:
            self._known.pop(key, None)
        else:
            self._known[key] = _uid(obj)
        self._hand_over(obj, deleted)
        return version

    def _hand_over(self, obj: Mapping[str, Any], deleted: bool) -> None:
        try:
            self.seen(obj, deleted)
        except Exception:  # one object that cannot be handled never stops the watch
            log.exception("%s: handling %s/%s failed", self.path, *_key(obj))
