"""The cluster itself: a Ready node, our image running, a Service answering through
kube-proxy from this machine, a rollout restart completing."""

from __future__ import annotations

import urllib.request

from harness.kube import Kube, wait_until
from harness.manifests import demo_app


def test_node_is_ready(kube: Kube) -> None:
    nodes = kube.run("get", "nodes", "-o", 'jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}')
    assert nodes.stdout.split()
    assert set(nodes.stdout.split()) == {"True"}


def test_demo_app_serves_through_its_cluster_ip_and_restarts(kube: Kube, images: None, namespace: str) -> None:
    kube.apply(*demo_app("smoke", replicas=2), namespace=namespace)
    kube.run("wait", "--for=condition=Available", "deployment/smoke", "-n", namespace, "--timeout=120s")
    ip = kube.get("service", "smoke", namespace)["spec"]["clusterIP"]

    def answers() -> set[str]:
        """Both backends, once 20 requests in a row all succeed."""
        seen = set()
        try:
            for _ in range(20):
                with urllib.request.urlopen(f"http://{ip}/", timeout=2) as response:
                    seen.add(response.read().decode().strip())
        except OSError:  # the data plane may still point at a pod that is gone
            return set()
        return seen if len(seen) == 2 else set()

    backends = wait_until(answers, 60, "both pods answer through the ClusterIP")
    assert len(backends) == 2
    kube.run("rollout", "restart", "deployment/smoke", "-n", namespace)
    kube.run("rollout", "status", "deployment/smoke", "-n", namespace, "--timeout=120s")
    wait_until(lambda: (now := answers()) and now.isdisjoint(backends), 60, "the new pods answer")
