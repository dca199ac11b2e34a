"""FleetApi on the official Kubernetes client: server-side apply with field manager lameduck."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lameduck_operator.logic.decision import DeploymentEvent
from lameduck_operator.logic.rbac import FINISHED_PHASES, sidecar_role, sidecar_role_binding
from lameduck_operator.logic.readiness import PodView
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.model import PolicyRef
from lameduck_operator.names import (
    API_VERSION,
    EVENT_COMPONENT,
    FIELD_MANAGER,
    FINALIZER,
    GROUP,
    KIND_CLUSTER,
    MANAGED_LABELS,
    PLURALS,
    SIDECAR_RBAC_NAME,
    TAKEOVER_MANAGER,
    VERSION,
)
from lameduck_operator.ports import WriteResult

APPLY = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
POD_PAGE = 500
LIST_PAGE = 500
# A condition write that takes longer than this is retried rather than waited on.
CONDITION_TIMEOUT_SECONDS = 10
# Finished pods run nothing: the API server leaves them out (the pure rule skips them too).
UNFINISHED = ",".join(f"status.phase!={phase}" for phase in FINISHED_PHASES)


def _json(response: Any) -> dict[str, Any]:
    data = json.loads(response.data)
    assert isinstance(data, dict)
    return data


def _sidecar_view(pod: Mapping[str, Any]) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}

    def containers(key: str) -> list[dict[str, Any]]:
        return [{"name": c.get("name"), "image": c.get("image")} for c in spec.get(key) or []]

    return {
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": {
            "serviceAccountName": spec.get("serviceAccountName"),
            "containers": containers("containers"),
            "initContainers": containers("initContainers"),
        },
        "status": {"phase": (pod.get("status") or {}).get("phase")},
    }


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


class KubeApi:
    """Blocking client calls run in threads so the operator's event loop never stalls."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.rbac = client.RbacAuthorizationV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self.instance = socket.gethostname()

    # ---- Deployments ----------------------------------------------------------------

    def _apply(self, intent: Mapping[str, Any], force: bool) -> dict[str, Any]:
        meta = intent["metadata"]
        return _json(
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
        return _json(
            self.apps.patch_namespaced_deployment(
                meta["name"], meta["namespace"], cleanup, _content_type=JSON_PATCH, _preload_content=False
            )
        )

    async def take_over_prestops(
        self, deployment: Mapping[str, Any], containers: tuple[str, ...], intent: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self._take_over, deployment, containers, intent)

    def _patch(self, ref: DeploymentRef, patch: list[dict[str, Any]]) -> dict[str, Any]:
        return _json(
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

    # ---- policies -------------------------------------------------------------------

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
            listed = _json(self.custom.list_cluster_custom_object(GROUP, VERSION, plural, _preload_content=False))
            for item in listed.get("items", []):
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", API_VERSION)
                found.append(item)
        return found

    def list_namespaces(self) -> list[dict[str, Any]]:
        return list(_json(self.core.list_namespace(_preload_content=False)).get("items", []))

    # ---- the sidecar's access -----------------------------------------------------------

    def _apply_rbac(self, namespace: str, service_accounts: list[str]) -> None:
        kwargs: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": APPLY}
        self.rbac.patch_namespaced_role(SIDECAR_RBAC_NAME, namespace, sidecar_role(namespace), **kwargs)
        self.rbac.patch_namespaced_role_binding(
            SIDECAR_RBAC_NAME, namespace, sidecar_role_binding(namespace, service_accounts), **kwargs
        )

    async def apply_sidecar_rbac(self, namespace: str, service_accounts: list[str]) -> None:
        await asyncio.to_thread(self._apply_rbac, namespace, service_accounts)

    def _delete_rbac(self, namespace: str) -> None:
        for delete in (self.rbac.delete_namespaced_role_binding, self.rbac.delete_namespaced_role):
            try:
                delete(SIDECAR_RBAC_NAME, namespace)
            except ApiException as err:
                if err.status != 404:
                    raise

    async def delete_sidecar_rbac(self, namespace: str) -> None:
        await asyncio.to_thread(self._delete_rbac, namespace)

    def _list_pods(self, namespace: str) -> list[dict[str, Any]]:
        # In pages, keeping of each pod only what tells whether its sidecar still needs access.
        found: list[dict[str, Any]] = []
        more: str | None = None
        while True:
            kwargs: dict[str, Any] = {"field_selector": UNFINISHED, "limit": POD_PAGE, "_preload_content": False}
            if more:
                kwargs["_continue"] = more
            listed = _json(self.core.list_namespaced_pod(namespace, **kwargs))
            found.extend(_sidecar_view(pod) for pod in listed.get("items", []))
            more = (listed.get("metadata") or {}).get("continue")
            if not more:
                return found

    async def list_pods(self, namespace: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._list_pods, namespace)

    def list_sidecar_access(self) -> dict[str, tuple[str, ...]]:
        """Where lameduck's sidecar RoleBindings exist, and their subjects (to clean up later)."""
        selector = ",".join(f"{k}={v}" for k, v in MANAGED_LABELS.items())
        listed = _json(self.rbac.list_role_binding_for_all_namespaces(label_selector=selector, _preload_content=False))
        return {
            item["metadata"]["namespace"]: tuple(sorted(s["name"] for s in item.get("subjects") or []))
            for item in listed.get("items", [])
            if item["metadata"]["name"] == SIDECAR_RBAC_NAME
        }

    def list_outdated_sidecar_roles(self) -> set[str]:
        """Namespaces whose sidecar Role grants other rules than this version's (an upgrade
        that changed what a hold needs): they are applied again."""
        selector = ",".join(f"{k}={v}" for k, v in MANAGED_LABELS.items())
        listed = _json(self.rbac.list_role_for_all_namespaces(label_selector=selector, _preload_content=False))
        return {
            item["metadata"]["namespace"]
            for item in listed.get("items", [])
            if item["metadata"]["name"] == SIDECAR_RBAC_NAME
            and item.get("rules") != sidecar_role(item["metadata"]["namespace"])["rules"]
        }

    # ---- events ---------------------------------------------------------------------

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

    # ---- the readiness gate ---------------------------------------------------------------

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

    def _list_all(self, lister: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        more: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": LIST_PAGE, "_preload_content": False}
            if more:
                kwargs["_continue"] = more
            listed = _json(lister(**kwargs))
            found.extend(listed.get("items", []))
            more = (listed.get("metadata") or {}).get("continue")
            if not more:
                return found

    def list_services(self) -> list[dict[str, Any]]:
        return self._list_all(self.core.list_service_for_all_namespaces)

    def list_endpoint_slices(self) -> list[dict[str, Any]]:
        return self._list_all(self.discovery.list_endpoint_slice_for_all_namespaces)
