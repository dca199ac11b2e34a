"""Writes to Deployments as lameduck: server-side apply, JSON patch, and the take-over of other
managers' preStop hooks (what each writes is decided in logic/takeover.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from lameduck_operator.k8s.clients import APPLY, JSON_PATCH, ApiClients, json_body
from lameduck_operator.logic.ownership import entries_removal_patch
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

    def _take_over(self, ref: DeploymentRef, patch: list[dict[str, Any]], intent: Mapping[str, Any]) -> dict[str, Any]:
        # One template change replaces the other handler kind (an apply alone would leave both,
        # which the API server rejects), as a manager of its own: the forced apply then owns what
        # it wrote, and that manager's entry goes.
        self.apps.patch_namespaced_deployment(
            ref.name, ref.namespace, patch, field_manager=TAKEOVER_MANAGER, _content_type=JSON_PATCH
        )
        stored = self._apply(intent, True)
        cleanup = entries_removal_patch(stored, TAKEOVER_MANAGER)
        if not cleanup:
            return stored
        return json_body(
            self.apps.patch_namespaced_deployment(
                ref.name, ref.namespace, cleanup, _content_type=JSON_PATCH, _preload_content=False
            )
        )

    async def take_over(
        self, ref: DeploymentRef, patch: list[dict[str, Any]], intent: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self._take_over, ref, patch, intent)

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
