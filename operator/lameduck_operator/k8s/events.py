"""Events on Deployments and on policies, posted as lameduck's operator."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from lameduck_operator.k8s.clients import ApiClients
from lameduck_operator.logic.decision import DeploymentEvent
from lameduck_operator.logic.event_batches import MAX_MESSAGE, PolicyEvent
from lameduck_operator.names import API_VERSION, EVENT_COMPONENT, FIELD_MANAGER

# Where the API server files an Event on a cluster-scoped object (it accepts no other
# namespace for an involvedObject without one): as client-go's recorder does for Nodes.
CLUSTER_SCOPED_EVENTS_NAMESPACE = "default"


class EventPoster(ApiClients):
    def _create(self, namespace: str, involved: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:MAX_MESSAGE],
            "type": "Warning" if warning else "Normal",
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": EVENT_COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        # The client takes plain dicts as request bodies; its annotation names only the model.
        self.core.create_namespaced_event(namespace, body)  # type: ignore[arg-type]

    def _post_event(self, deployment: Mapping[str, Any], event: DeploymentEvent) -> None:
        meta = deployment["metadata"]
        involved = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        self._create(meta["namespace"], involved, event.reason, event.message, event.warning)

    async def post_event(self, deployment: Mapping[str, Any], event: DeploymentEvent) -> None:
        await asyncio.to_thread(self._post_event, deployment, event)

    def _post_policy_event(self, event: PolicyEvent, uid: str | None) -> None:
        ref = event.policy
        involved: dict[str, Any] = {"apiVersion": API_VERSION, "kind": ref.kind, "name": ref.name, "uid": uid}
        if ref.namespace:
            involved["namespace"] = ref.namespace
        namespace = ref.namespace or CLUSTER_SCOPED_EVENTS_NAMESPACE
        self._create(namespace, involved, event.reason, event.message, event.warning)

    async def post_policy_event(self, event: PolicyEvent, uid: str | None) -> None:
        await asyncio.to_thread(self._post_policy_event, event, uid)
