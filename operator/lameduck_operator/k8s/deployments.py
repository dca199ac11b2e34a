"""Writes to Deployments as lameduck: server-side apply, JSON patch, and the take-over of other
managers' preStop hooks."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from lameduck_operator.k8s.clients import APPLY, JSON_PATCH, ApiClients, json_body
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.names import FIELD_MANAGER, TAKEOVER_MANAGER


class DeploymentWriter(ApiClients):
    def _apply(self, intent: Mapping[str, Any], force: bool) -> dict[str, Any]:
        meta = intent["metadata"]
        return json_body(
            self.apps.patch_namespaced_deployment(
                meta["name"],
                meta["namespace"],
                dict(intent),
                field_manager=FIELD_MANAGER,
                force=force,
                _content_type=APPLY,
                _preload_content=False,
            )
        )

    async def apply_deployment(self, intent: Mapping[str, Any], force: bool) -> dict[str, Any]:
        return await asyncio.to_thread(self._apply, intent, force)

    def _take_over(
        self, deployment: Mapping[str, Any], containers: tuple[str, ...], intent: Mapping[str, Any]
    ) -> dict[str, Any]:
        meta = deployment["metadata"]
        wanted = {c["name"]: c["lifecycle"]["preStop"] for c in intent["spec"]["template"]["spec"]["containers"]}
        ops: list[dict[str, Any]] = []
        for index, container in enumerate(deployment["spec"]["template"]["spec"]["containers"]):
            if container["name"] in containers:
                path = f"/spec/template/spec/containers/{index}"
                ops.append({"op": "test", "path": f"{path}/name", "value": container["name"]})
                ops.append({"op": "replace", "path": f"{path}/lifecycle/preStop", "value": wanted[container["name"]]})
        # One template change replaces the other handler kind with ours (apply alone would
        # leave both, which the API rejects); the apply then owns the result.
        self.apps.patch_namespaced_deployment(
            meta["name"], meta["namespace"], ops, field_manager=TAKEOVER_MANAGER, _content_type=JSON_PATCH
        )
        stored = self._apply(intent, True)
        entries = stored["metadata"].get("managedFields") or []
        cleanup: list[dict[str, Any]] = []
        for index in reversed(range(len(entries))):
            if entries[index].get("manager") == TAKEOVER_MANAGER:
                path = f"/metadata/managedFields/{index}"
                cleanup.append({"op": "test", "path": f"{path}/manager", "value": TAKEOVER_MANAGER})
                cleanup.append({"op": "remove", "path": path})
        if not cleanup:
            return stored
        return json_body(
            self.apps.patch_namespaced_deployment(
                meta["name"], meta["namespace"], cleanup, _content_type=JSON_PATCH, _preload_content=False
            )
        )

    async def take_over_prestops(
        self, deployment: Mapping[str, Any], containers: tuple[str, ...], intent: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self._take_over, deployment, containers, intent)

    def _patch(self, ref: DeploymentRef, patch: list[dict[str, Any]]) -> dict[str, Any]:
        return json_body(
            self.apps.patch_namespaced_deployment(
                ref.name,
                ref.namespace,
                patch,
                field_manager=FIELD_MANAGER,
                _content_type=JSON_PATCH,
                _preload_content=False,
            )
        )

    async def patch_deployment(self, ref: DeploymentRef, patch: list[dict[str, Any]]) -> dict[str, Any]:
        return await asyncio.to_thread(self._patch, ref, patch)
