"""The lameduck-learned ConfigMap of each namespace: read back once (what an earlier leader
learned) and written by server-side apply."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from lameduck_operator.k8s.clients import APPLY, ApiClients, json_body
from lameduck_operator.logic.learning import learned_config_map
from lameduck_operator.names import FIELD_MANAGER, LEARNED_CONFIGMAP


class LearnedConfigMaps(ApiClients):
    def _read_learned(self, namespace: str) -> dict[str, str] | None:
        try:
            body = json_body(self.core.read_namespaced_config_map(LEARNED_CONFIGMAP, namespace, _preload_content=False))
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        data = body.get("data") or {}
        return {str(k): v for k, v in data.items() if isinstance(v, str)}

    async def read_learned(self, namespace: str) -> dict[str, str] | None:
        return await asyncio.to_thread(self._read_learned, namespace)

    def _apply_learned(self, namespace: str, data: Mapping[str, str]) -> None:
        kwargs: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": APPLY}
        body = learned_config_map(namespace, data)
        self.core.patch_namespaced_config_map(LEARNED_CONFIGMAP, namespace, body, **kwargs)

    async def apply_learned(self, namespace: str, data: Mapping[str, str]) -> None:
        await asyncio.to_thread(self._apply_learned, namespace, data)
