"""The policies as lameduck writes them (their status and finalizer, by server-side apply) and the
policies and namespaces listed at start-up."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from lameduck_operator.k8s.clients import APPLY, ApiClients, json_body
from lameduck_operator.model import PolicyRef
from lameduck_operator.names import API_VERSION, FIELD_MANAGER, FINALIZER, GROUP, KIND_CLUSTER, PLURALS, VERSION


class PolicyWriter(ApiClients):
    def _apply_policy(self, ref: PolicyRef, body: dict[str, Any], status: bool) -> None:
        kwargs: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": APPLY}
        plural = PLURALS[ref.kind]
        if ref.kind == KIND_CLUSTER and status:
            self.custom.patch_cluster_custom_object_status(GROUP, VERSION, plural, ref.name, body, **kwargs)
        elif ref.kind == KIND_CLUSTER:
            self.custom.patch_cluster_custom_object(GROUP, VERSION, plural, ref.name, body, **kwargs)
        elif status:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, str(ref.namespace), plural, ref.name, body, **kwargs
            )
        else:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, str(ref.namespace), plural, ref.name, body, **kwargs
            )

    def _policy_body(self, ref: PolicyRef, **extra: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": ref.name}
        if ref.namespace:
            meta["namespace"] = ref.namespace
        return {"apiVersion": API_VERSION, "kind": ref.kind, "metadata": meta, **extra}

    async def apply_policy_status(self, ref: PolicyRef, status: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self._apply_policy, ref, self._policy_body(ref, status=dict(status)), True)

    async def set_policy_finalizer(self, ref: PolicyRef, present: bool) -> None:
        body = self._policy_body(ref)
        if present:
            body["metadata"]["finalizers"] = [FINALIZER]
        try:
            await asyncio.to_thread(self._apply_policy, ref, body, False)
        except ApiException as err:
            if err.status != 404 or present:
                raise

    def list_policies(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for kind, plural in PLURALS.items():
            listed = json_body(self.custom.list_cluster_custom_object(GROUP, VERSION, plural, _preload_content=False))
            for item in listed.get("items", []):
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", API_VERSION)
                found.append(item)
        return found

    def list_namespaces(self) -> list[dict[str, Any]]:
        return list(json_body(self.core.list_namespace(_preload_content=False)).get("items", []))
