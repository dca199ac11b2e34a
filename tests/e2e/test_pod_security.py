"""Pod Security Admission `restricted` on a real cluster: the operator's namespace enforces it
(the harness labels it before installing the chart), and an app namespace that enforces it
admits the demo app with lameduck's sidecar injected, while refusing a pod that breaks it."""

from __future__ import annotations

from typing import Any

from harness.install import OPERATOR_NAMESPACE, RESTRICTED, Operator, enforce_restricted
from harness.kube import Kube, wait_until
from harness.manifests import demo_app, guarded

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}


def ready_with_sidecar(pod: dict[str, Any]) -> bool:
    spec = pod["spec"]
    names = [c["name"] for c in [*spec.get("initContainers", []), *spec["containers"]]]
    conditions = pod.get("status", {}).get("conditions", [])
    return "lameduck" in names and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_the_operator_s_namespace_enforces_restricted_and_its_pods_run(kube: Kube, operator: Operator) -> None:
    labels = kube.get("namespace", OPERATOR_NAMESPACE)["metadata"].get("labels", {})
    assert {k: labels.get(k) for k in RESTRICTED} == RESTRICTED
    pods = operator.pods()
    assert len(pods) == 2
    assert all(p["status"].get("phase") == "Running" for p in pods)


def test_restricted_admits_the_demo_app_with_the_sidecar_and_refuses_a_privileged_pod(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    enforce_restricted(kube, namespace)
    refused = kube.run(
        "run",
        "privileged",
        "-n",
        namespace,
        "--image=registry.k8s.io/pause:3.10.1",
        "--overrides",
        '{"spec": {"containers": [{"name": "privileged", "image": "registry.k8s.io/pause:3.10.1",'
        ' "securityContext": {"privileged": true}}]}}',
        check=False,
    )
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr
    kube.apply(guarded(namespace), namespace=namespace)
    deployment, service = demo_app("demo", replicas=2)
    pod_spec = deployment["spec"]["template"]["spec"]
    pod_spec["securityContext"] = RESTRICTED_POD
    for container in pod_spec["containers"]:
        container["securityContext"] = RESTRICTED_CONTAINER
    kube.apply(deployment, service, namespace=namespace)
    wait_until(
        lambda: len([p for p in kube.items("pods", namespace, "app=demo") if ready_with_sidecar(p)]) == 2,
        180,
        "two demo pods with the sidecar are Ready",
    )
    refusals = [e["message"] for e in kube.items("events", namespace) if e.get("reason") == "FailedCreate"]
    assert refusals == []
