"""What the readiness gate writes and reads: lameduck's condition on pods (guarded by uid and
resourceVersion), and the Services and EndpointSlices listed at start-up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from lameduck_operator.k8s.clients import STRATEGIC_MERGE, ApiClients
from lameduck_operator.logic.readiness import PodView
from lameduck_operator.names import FIELD_MANAGER
from lameduck_operator.ports import WriteResult

# A condition write that takes longer than this is retried rather than waited on.
CONDITION_TIMEOUT_SECONDS = 10


def invalid_fields(body: object) -> set[str]:
    """The field paths a 422 Status names in details.causes (the API server's structured
    answer, not its message text); none when the body is not such a Status."""
    try:
        status = json.loads(body) if isinstance(body, str | bytes) else None
    except ValueError:
        return set()
    if not isinstance(status, dict):
        return set()
    causes = (status.get("details") or {}).get("causes") or []
    return {str(c["field"]) for c in causes if isinstance(c, dict) and c.get("field")}


class PodConditions(ApiClients):
    def _patch_pod_condition(self, pod: PodView, condition: Mapping[str, Any], guard: bool) -> WriteResult:
        # The uid (and with guard the resourceVersion) make it a precondition: the API server
        # answers 422 (metadata.uid is immutable) when the pod of that name is another one, and
        # 409 when it has changed since.
        meta: dict[str, str] = {"uid": pod.uid}
        if guard:
            meta["resourceVersion"] = pod.resource_version
        # status.conditions is a list merged by type: only lameduck's condition is written.
        body = {"metadata": meta, "status": {"conditions": [dict(condition)]}}
        try:
            self.core.patch_namespaced_pod_status(
                pod.name,
                pod.namespace,
                body,
                field_manager=FIELD_MANAGER,
                _content_type=STRATEGIC_MERGE,
                _preload_content=False,
                _request_timeout=CONDITION_TIMEOUT_SECONDS,
            )
        except ApiException as err:
            if err.status == 404 or (err.status == 422 and "metadata.uid" in invalid_fields(err.body)):
                return WriteResult.GONE
            if err.status == 409:
                return WriteResult.CONFLICT
            raise
        return WriteResult.WRITTEN

    async def patch_pod_condition(self, pod: PodView, condition: Mapping[str, Any], guard: bool) -> WriteResult:
        return await asyncio.to_thread(self._patch_pod_condition, pod, condition, guard)

    def list_services(self) -> list[dict[str, Any]]:
        return self._list_all(self.core.list_service_for_all_namespaces)

    def list_endpoint_slices(self) -> list[dict[str, Any]]:
        return self._list_all(self.discovery.list_endpoint_slice_for_all_namespaces)
