"""The sidecar's access in one namespace: a Role and RoleBinding lameduck owns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lameduck_operator.logic.intent import pod_spec, runs_sidecar
from lameduck_operator.names import LEARNED_CONFIGMAP, MANAGED_LABELS, SIDECAR_RBAC_NAME
from lameduck_operator.settings import SidecarSettings

FINISHED_PHASES = ("Succeeded", "Failed")


def service_accounts_needing_access(
    deployments: Iterable[Mapping[str, Any]], sidecar: SidecarSettings, pods: Iterable[Mapping[str, Any]] = ()
) -> list[str]:
    """Service accounts of the pods that run lameduck's sidecar: those the Deployments' templates
    will start, and those of the given pods still running it (a terminating pod holds there)."""
    specs = [pod_spec(d) for d in deployments]
    specs += [p.get("spec") or {} for p in pods if (p.get("status") or {}).get("phase") not in FINISHED_PHASES]
    return sorted({str(s.get("serviceAccountName") or "default") for s in specs if runs_sidecar(s, sidecar)})


def sidecar_role(namespace: str) -> dict[str, Any]:
    """Only what the sidecar does while holding: list and watch the namespace's EndpointSlices,
    get its own Pod (the grace period it is being deleted with), get the one ConfigMap of what
    was learned about its Deployment (by name: no other ConfigMap) and create one Event (the hold
    report). Events cannot be limited to a name the pod does not know before creating it, nor
    to an involved object: anyone bound here can write a report, so the operator believes one
    only when it fits what it observed itself (logic/report_trust.py)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": SIDECAR_RBAC_NAME, "namespace": namespace, "labels": MANAGED_LABELS},
        "rules": [
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [LEARNED_CONFIGMAP], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
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
