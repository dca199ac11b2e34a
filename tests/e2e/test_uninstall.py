"""Uninstalling as the chart's README says: policies first, while the operator runs, then helm.

Runs last (file order): it takes lameduck out of the cluster and puts it back.
"""

from __future__ import annotations

from harness.install import OPERATOR_NAMESPACE, Operator
from harness.kube import Kube, wait_until
from harness.manifests import pause_deployment as workload
from tests.e2e.test_operator import policy, status


def exists(kube: Kube, *what: str) -> bool:
    return bool(kube.run("get", *what, "--ignore-not-found", "-o", "name", check=False).stdout.strip())


def test_deleting_the_policies_then_uninstalling_leaves_every_deployment_as_written(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    kube.apply(workload("web", {"tier": "web"}), namespace=namespace)
    written = kube.get("deployment", "web", namespace)["spec"]["template"]
    kube.apply(policy("web", namespace, apply="Immediate", selector={"matchLabels": {"tier": "web"}}))
    wait_until(lambda: status(kube, namespace, "web").get("compliant") == 1, 60, "web is compliant")
    try:
        kube.run("delete", "gracefulpolicies", "--all", "-n", namespace, "--wait=true", "--timeout=60s")
        operator.uninstall()
        for what in (
            ("mutatingwebhookconfiguration", "lameduck"),
            ("clusterrole", "lameduck-operator"),
            ("deployment", "lameduck-operator", "-n", OPERATOR_NAMESPACE),
        ):
            assert not exists(kube, *what), f"{' '.join(what)} is left after helm uninstall"
        assert exists(kube, "crd", "gracefulpolicies.lameduck.dev"), "helm never deletes CRDs"
        assert kube.get("deployment", "web", namespace)["spec"]["template"] == written
    finally:
        operator.install()
