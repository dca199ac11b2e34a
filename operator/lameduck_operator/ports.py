"""The ports: what the loops need from the API, as interfaces. k8s/ implements them; unit tests fake
them. Below both the loops and the adapters, so neither depends on the other."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, Protocol

from lameduck_operator.logic.decision import DeploymentEvent
from lameduck_operator.logic.event_batches import PolicyEvent
from lameduck_operator.logic.readiness import PodView
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.model import PolicyRef


class FleetApi(Protocol):
    async def apply_deployment(self, intent: Mapping[str, Any], force: bool) -> dict[str, Any]: ...

    async def patch_deployment(self, ref: DeploymentRef, patch: list[dict[str, Any]]) -> dict[str, Any]:
        """A JSON patch (RFC 6902) as lameduck; the stored Deployment."""
        ...

    async def take_over(
        self, ref: DeploymentRef, patch: list[dict[str, Any]], intent: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The JSON patch as lameduck-takeover, the intent applied as lameduck (forced), then
        lameduck-takeover's managedFields entry removed; the stored Deployment."""
        ...

    async def apply_policy_status(self, ref: PolicyRef, status: Mapping[str, Any]) -> None: ...

    async def set_policy_finalizer(self, ref: PolicyRef, present: bool) -> None: ...

    async def post_event(self, deployment: Mapping[str, Any], event: DeploymentEvent) -> None: ...

    async def post_policy_event(self, event: PolicyEvent, uid: str | None) -> None:
        """An Event on event.policy (uid: the policy's, None when not known)."""
        ...

    async def apply_sidecar_rbac(self, namespace: str, service_accounts: list[str]) -> None: ...

    async def delete_sidecar_rbac(self, namespace: str) -> None: ...

    async def list_pods(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's pods; of each, at least its spec's serviceAccountName, containers and
        initContainers (name, image) and its status.phase."""
        ...


class LearnedApi(Protocol):
    """The per-namespace ConfigMap of what was learned about each Deployment (lameduck-learned)."""

    async def read_learned(self, namespace: str) -> dict[str, str] | None:
        """Its data; None when the namespace has none."""
        ...

    async def apply_learned(self, namespace: str, data: Mapping[str, str]) -> None:
        """Server-side apply as lameduck with exactly these keys: keys lameduck applied before and
        left out are removed."""
        ...


class WriteResult(StrEnum):
    WRITTEN = "Written"
    GONE = "Gone"  # the pod no longer exists
    CONFLICT = "Conflict"  # the pod changed since it was judged (or is another pod of that name)


class GateApi(Protocol):
    async def patch_pod_condition(self, pod: PodView, condition: Mapping[str, Any], guard: bool) -> WriteResult:
        """Merge the condition into the pod's status.conditions (keyed by type) on the status
        subresource, only if the pod still has the view's uid, and with guard, only if it is
        still at the view's resourceVersion."""
        ...


def one_line(err: Exception) -> str:
    """One line for a log or a status: the API client's errors carry whole HTTP responses; keep
    their status and message."""
    status = getattr(err, "status", None)
    body = getattr(err, "body", None)
    message = None
    if isinstance(body, str | bytes):
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
    text = str(message or getattr(err, "reason", "") or err).strip()
    text = text.splitlines()[0] if text else type(err).__name__
    return f"{status} {text}" if status else text


# A timer: after so many seconds, call back. The loops take one so that tests can step time.
CallLater = Callable[[float, Callable[[], None]], object]


def call_later_on_running_loop(delay: float, callback: Callable[[], None]) -> object:
    """The running event loop's timer, which the loops use unless given another."""
    return asyncio.get_running_loop().call_later(delay, callback)
