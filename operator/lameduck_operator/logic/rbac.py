"""The sidecar's access in one namespace: a Role and RoleBinding lameduck owns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lameduck_operator.logic.intent import carries_sidecar, pod_spec
from lameduck_operator.settings import SidecarSettings

SIDECAR_RBAC_NAME = "lameduck-sidecar"
MANAGED_LABELS = {"app.kubernetes.io/managed-by": "lameduck", "app.kubernetes.io/part-of": "lameduck"}


def service_accounts_needing_access(deployments: Iterable[Mapping[str, Any]], sidecar: SidecarSettings) -> list[str]:
    """Service accounts of the pods that run lameduck's sidecar."""
    return sorted(
        {str(pod_spec(d).get("serviceAccountName") or "default") for d in deployments if carries_sidecar(d, sidecar)}
    )


def sidecar_role(namespace: str) -> dict[str, Any]:
    """Only what the sidecar does while holding: list and watch the namespace's EndpointSlices,
    and get its own Pod (the grace period it is being deleted with)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": SIDECAR_RBAC_NAME, "namespace": namespace, "labels": MANAGED_LABELS},
        "rules": [
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        ],
    }


def sidecar_role_binding(namespace: str, service_accounts: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": SIDECAR_RBAC_NAME, "namespace": namespace, "labels": MANAGED_LABELS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SIDECAR_RBAC_NAME},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace} for sa in service_accounts],
    }
