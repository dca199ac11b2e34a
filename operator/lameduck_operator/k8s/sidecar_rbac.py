"""The sidecar's Role and RoleBinding per namespace, and the pods that tell whose sidecar still
needs them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from lameduck_operator.k8s.clients import APPLY, ApiClients, json_body
from lameduck_operator.logic.rbac import FINISHED_PHASES, sidecar_role, sidecar_role_binding
from lameduck_operator.names import FIELD_MANAGER, MANAGED_LABELS, SIDECAR_RBAC_NAME

POD_PAGE = 500
# Finished pods run nothing: the API server leaves them out (the pure rule skips them too).
UNFINISHED = ",".join(f"status.phase!={phase}" for phase in FINISHED_PHASES)
# Only lameduck's Role and RoleBinding, asked for by name: the API server then authorizes the
# list against RBAC rules limited to that name (resourceNames), so the operator needs no right to
# list anyone else's. The labels leave out one of that name that lameduck did not write.
NAMED = f"metadata.name={SIDECAR_RBAC_NAME}"
MANAGED = ",".join(f"{k}={v}" for k, v in MANAGED_LABELS.items())


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


class SidecarRbac(ApiClients):
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
            listed = json_body(self.core.list_namespaced_pod(namespace, **kwargs))
            found.extend(_sidecar_view(pod) for pod in listed.get("items", []))
            more = (listed.get("metadata") or {}).get("continue")
            if not more:
                return found

    async def list_pods(self, namespace: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._list_pods, namespace)

    @staticmethod
    def _ours(lister: Any) -> list[dict[str, Any]]:
        listed = json_body(lister(field_selector=NAMED, label_selector=MANAGED, _preload_content=False))
        return list(listed.get("items", []))

    def list_sidecar_access(self) -> dict[str, tuple[str, ...]]:
        """Where lameduck's sidecar RoleBindings exist, and their subjects (to clean up later)."""
        return {
            item["metadata"]["namespace"]: tuple(sorted(s["name"] for s in item.get("subjects") or []))
            for item in self._ours(self.rbac.list_role_binding_for_all_namespaces)
        }

    def list_outdated_sidecar_roles(self) -> set[str]:
        """Namespaces whose sidecar Role grants other rules than this version's (an upgrade
        that changed what a hold needs): they are applied again."""
        return {
            item["metadata"]["namespace"]
            for item in self._ours(self.rbac.list_role_for_all_namespaces)
            if item.get("rules") != sidecar_role(item["metadata"]["namespace"])["rules"]
        }
