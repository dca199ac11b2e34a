"""The sidecar's access on a real cluster follows the pods that run it, not only the templates:
after a revert, its Role and RoleBinding stay while an old pod still holds, and go once it is gone.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.install import Operator
from harness.kube import Kube, wait_until
from harness.manifests import demo_app
from lameduck_operator.logic.decision import rollout_in_progress

pytestmark = pytest.mark.e2e

MANAGED = "app.kubernetes.io/managed-by=lameduck"
# The sidecar holds at least propagationDelay after the slices let go of the pod: a window
# of 20 s in which the old pod runs the sidecar while its template no longer does.
HOLD = {"propagationDelay": "20s", "maxHold": "30s"}


def guard(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "lameduck.dev/v1alpha1",
        "kind": "GracefulPolicy",
        "metadata": {"name": "guard", "namespace": namespace},
        "spec": {"apply": "Immediate", "selector": {"matchLabels": {"lameduck": "yes"}}, "hold": HOLD},
    }


def runs_sidecar(pod_spec: dict[str, Any]) -> bool:
    return any(c["name"] == "lameduck" for c in [*pod_spec.get("containers", []), *pod_spec.get("initContainers", [])])


def template_runs_sidecar(kube: Kube, namespace: str) -> bool:
    return runs_sidecar(kube.get("deployment", "demo", namespace)["spec"]["template"]["spec"])


def sidecar_pods(kube: Kube, namespace: str) -> dict[str, dict[str, Any]]:
    """The demo's pods that still run the sidecar (terminating ones too), by name."""
    return {
        p["metadata"]["name"]: p
        for p in kube.items("pods", namespace, "app=demo")
        if runs_sidecar(p["spec"]) and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
    }


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def access(kube: Kube, namespace: str) -> tuple[bool, bool]:
    """Whether the sidecar's Role and its RoleBinding exist."""
    return bool(kube.items("roles", namespace, MANAGED)), bool(kube.items("rolebindings", namespace, MANAGED))


def steady(kube: Kube, namespace: str) -> bool:
    pods = kube.items("pods", namespace, "app=demo")
    return (
        template_runs_sidecar(kube, namespace)
        and not rollout_in_progress(kube.get("deployment", "demo", namespace))
        and len(pods) == 1
        and runs_sidecar(pods[0]["spec"])
        and ready(pods[0])
    )


def test_a_revert_keeps_the_sidecars_access_until_the_last_pod_running_it_is_gone(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    kube.apply(*demo_app(replicas=1), namespace=namespace)
    kube.apply(guard(namespace))
    wait_until(lambda: steady(kube, namespace), 180, "the demo runs with its sidecar", 0.5)
    wait_until(lambda: access(kube, namespace) == (True, True), 60, "the operator grants the sidecar its access")
    (old,) = sidecar_pods(kube, namespace)

    kube.run("delete", "gracefulpolicy", "guard", "-n", namespace, "--wait=false")
    wait_until(lambda: not template_runs_sidecar(kube, namespace), 60, "the operator reverts the template")

    held_with_access: list[str] = []

    def old_pod_gone() -> bool:
        # Access first, then the pod: a pod seen after the access went was there when it went.
        granted = access(kube, namespace)
        pod = sidecar_pods(kube, namespace).get(old)
        if pod is None:
            return True
        assert granted == (True, True), f"the sidecar's Role/RoleBinding {granted} went while {old} still runs it"
        if pod["metadata"].get("deletionTimestamp"):
            held_with_access.append(old)
        return False

    wait_until(old_pod_gone, 180, f"the old pod {old} is gone", 0.5)
    assert held_with_access, f"{old} was never seen terminating (holding) with the template reverted"
    wait_until(lambda: access(kube, namespace) == (False, False), 60, "the sidecar's Role and RoleBinding are removed")
