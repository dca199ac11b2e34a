"""Events on Deployments, posted as lameduck's operator."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from lameduck_operator.k8s.clients import ApiClients
from lameduck_operator.logic.decision import DeploymentEvent
from lameduck_operator.names import EVENT_COMPONENT, FIELD_MANAGER


class EventPoster(ApiClients):
    def _post_event(self, deployment: Mapping[str, Any], event: DeploymentEvent) -> None:
        meta = deployment["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": event.reason,
            "message": event.message[:1024],
            "type": "Warning" if event.warning else "Normal",
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": EVENT_COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        # The client takes plain dicts as request bodies; its annotation names only the model.
        self.core.create_namespaced_event(meta["namespace"], body)  # type: ignore[arg-type]

    async def post_event(self, deployment: Mapping[str, Any], event: DeploymentEvent) -> None:
        await asyncio.to_thread(self._post_event, deployment, event)
