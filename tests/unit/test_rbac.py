"""Which service accounts the sidecar's RoleBinding must name: templates that run it, and pods that still do."""

from __future__ import annotations

from typing import Any

import pytest

from lameduck_operator.logic.rbac import service_accounts_needing_access, sidecar_role, sidecar_role_binding
from lameduck_operator.settings import SidecarSettings
from tests.unit.builders import container, deployment

SIDECAR = SidecarSettings(image="example.com/lameduck/sidecar:0.2.0")
OURS = {"name": "lameduck", "image": "example.com/lameduck/sidecar:0.1.0", "restartPolicy": "Always"}
CLASSIC = {"name": "lameduck", "image": "example.com/lameduck/sidecar:0.1.0"}


def pod(
    phase: str = "Running",
    account: str | None = "api",
    init: list[dict[str, Any]] | None = None,
    containers: list[dict[str, Any]] | None = None,
    **meta: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers or [container("app", 8080)], "initContainers": init or []}
    if account:
        spec["serviceAccountName"] = account
    return {"metadata": {"name": "api-1", "namespace": "shop", **meta}, "spec": spec, "status": {"phase": phase}}


@pytest.mark.parametrize(
    ("pods", "accounts"),
    [
        pytest.param([pod(init=[OURS])], ["api"], id="a running pod with the native sidecar needs access"),
        pytest.param(
            [pod(containers=[container("app"), CLASSIC])],
            ["api"],
            id="a classic sidecar counts the same",
        ),
        pytest.param([pod(account=None, init=[OURS])], ["default"], id="no service account is the default one"),
        pytest.param([pod("Pending", init=[OURS])], ["api"], id="a pending pod still needs it"),
        pytest.param(
            [pod(init=[OURS], deletionTimestamp="2026-01-01T00:00:00Z")],
            ["api"],
            id="a terminating pod holds and needs it",
        ),
        pytest.param([pod("Succeeded", init=[OURS])], [], id="a succeeded pod needs nothing"),
        pytest.param([pod("Failed", init=[OURS])], [], id="a failed pod needs nothing"),
        pytest.param([pod()], [], id="a pod without the sidecar needs nothing"),
        pytest.param(
            [pod(init=[{**OURS, "image": "example.com/other:1"}])],
            [],
            id="a foreign container named lameduck is not ours",
        ),
        pytest.param(
            [pod(init=[OURS]), pod(account="batch", init=[OURS]), pod(init=[OURS])],
            ["api", "batch"],
            id="each account once, sorted",
        ),
    ],
)
def test_pods_that_still_run_the_sidecar_need_access(pods: list[dict[str, Any]], accounts: list[str]) -> None:
    assert service_accounts_needing_access([], SIDECAR, pods) == accounts


def test_templates_and_pods_together_name_every_account() -> None:
    web = deployment("web", initContainers=[OURS], serviceAccountName="web")
    plain = deployment("plain", serviceAccountName="plain")
    assert service_accounts_needing_access([web, plain], SIDECAR) == ["web"]
    assert service_accounts_needing_access([web, plain], SIDECAR, [pod(init=[OURS])]) == ["api", "web"]


MANAGED = {"app.kubernetes.io/managed-by": "lameduck", "app.kubernetes.io/part-of": "lameduck"}


def test_the_sidecar_role_grants_only_what_a_hold_needs() -> None:
    assert sidecar_role("shop") == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "lameduck-sidecar", "namespace": "shop", "labels": MANAGED},
        "rules": [
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["lameduck-learned"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        ],
    }


def test_the_sidecar_role_binding_names_each_service_account_of_the_namespace() -> None:
    assert sidecar_role_binding("shop", ["api", "default"]) == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "lameduck-sidecar", "namespace": "shop", "labels": MANAGED},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lameduck-sidecar"},
        "subjects": [
            {"kind": "ServiceAccount", "name": "api", "namespace": "shop"},
            {"kind": "ServiceAccount", "name": "default", "namespace": "shop"},
        ],
    }
