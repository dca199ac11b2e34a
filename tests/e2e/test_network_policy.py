"""The chart's NetworkPolicy (`networkPolicy.enabled`) on a cluster that enforces NetworkPolicy: the
metrics port lets in the pods of the scrapers' namespace, the webhook port the API server, and a
pod of another namespace is refused on both.

The local harness and kind enforce NetworkPolicy while kube-router's firewall runs on their node
(hack/netpol.sh, docs/cluster.md "NetworkPolicy"): this module starts it with `hack/cluster.sh
netpol-start` or `hack/kind.sh netpol-start` when it is not running, and stops it at the end if
it started it. A canary first proves that the cluster enforces: a pod that a deny-all policy must
shut off. If it is not shut off the test fails, on the local harness and on kind always; on any
other cluster it skips instead when LAMEDUCK_E2E_ALLOW_NO_NETPOL=1 says that cluster need not
enforce NetworkPolicy.

Then the release is upgraded with the policy on: the webhook's peers are the addresses of the
`kubernetes` EndpointSlice (the API server's), a /32 each, the metrics' peers a namespace the test
creates. On one node the API server's calls come from the node, which NetworkPolicy always lets
in, so the webhook check shows that the policy does not shut the API server out, not that an
ipBlock narrows it. The release is put back with the values it had, and the policy is gone.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import REPO
from harness.images import DEMO_IMAGE, DEMO_PYTHON
from harness.install import OPERATOR_NAMESPACE, RELEASE, Operator, carries_lameduck, every_replica_injects
from harness.kube import Kube, is_kind, is_local, wait_until
from harness.manifests import pause_deployment as workload
from tests.e2e.test_operator import policy

ALLOW_NO_NETPOL_ENV = "LAMEDUCK_E2E_ALLOW_NO_NETPOL"
METRICS_PORT, WEBHOOK_PORT = 8080, 9443
# A connection not made within this is refused: an enforcer that drops lets it time out.
CONNECT_TIMEOUT_SECONDS = 3
# How long an enforcer may take to act on a new policy, or on a new pod's address.
ENFORCE_SECONDS = 30

# Run in a pod of the demo image, with the timeout and targets (host:port, or host:port/path) as
# arguments: one JSON line, each target's "ok" (connected; with a path, an HTTP GET of it answered
# with lameduck's metrics) or the name of the error (a REJECT: ConnectionRefusedError; a DROP:
# TimeoutError), all tried at once.
PROBE = """
import json, socket, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor

timeout, targets = float(sys.argv[1]), sys.argv[2:]


def reach(target):
    address, _, path = target.partition("/")
    host, _, port = address.rpartition(":")
    try:
        if path:
            with urllib.request.urlopen(f"http://{address}/{path}", timeout=timeout) as answer:
                return "ok" if b"lameduck_" in answer.read() else "answered without lameduck's metrics"
        socket.create_connection((host, int(port)), timeout=timeout).close()
        return "ok"
    except OSError as err:
        return type(err).__name__


with ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(dict(zip(targets, pool.map(reach, targets)))))
"""


def harness_script(kube: Kube) -> Path | None:
    """The script that runs this cluster's enforcer, if the cluster is the harness's own."""
    if is_local(kube.kubeconfig):
        return REPO / "hack" / "cluster.sh"
    if is_kind(kube.kubeconfig):
        return REPO / "hack" / "kind.sh"
    return None


@pytest.fixture(scope="module")
def enforcer(kube: Kube) -> Iterator[Path | None]:
    """On the local harness and on kind, kube-router's firewall running (started here if it was
    not, stopped at the end if so); the script that runs it, or None on another cluster."""
    script = harness_script(kube)
    if script is None:
        yield None
        return
    # cold, this builds kube-router first (a few minutes, once: docs/cluster.md)
    done = subprocess.run(
        ["bash", str(script), "netpol-start"], capture_output=True, text=True, timeout=1800, check=False
    )
    assert done.returncode == 0, f"{script.name} netpol-start failed:\n{done.stderr[-3000:]}"
    started = done.stdout.strip().endswith("started")
    try:
        yield script
    finally:
        if started:
            subprocess.run(["bash", str(script), "netpol-stop"], capture_output=True, timeout=300, check=False)


def demo_pod(name: str) -> dict[str, Any]:
    """A pod of the demo app (it serves on 8080) labelled app=name; no API token, no lameduck."""
    app = {"name": "app", "image": DEMO_IMAGE, "imagePullPolicy": "IfNotPresent"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 1, "containers": [app]},
    }


def deny_all_ingress(app: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"deny-{app}"},
        "spec": {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Ingress"]},
    }


def pod_ip(kube: Kube, namespace: str, name: str) -> str:
    ip: str = kube.get("pod", name, namespace)["status"]["podIP"]
    return ip


def probe(kube: Kube, namespace: str, pod: str, targets: list[str]) -> dict[str, str]:
    """PROBE, from that pod: each target's "ok" or the error that stopped it."""
    done = kube.run(
        "exec", "-n", namespace, pod, "--", DEMO_PYTHON, "-c", PROBE, str(CONNECT_TIMEOUT_SECONDS), *targets
    )
    found: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def canary_shut_off(kube: Kube, namespace: str) -> bool:
    """Whether a deny-all ingress policy on the demo pod `canary` stops the pod `outsider`
    connecting to it within ENFORCE_SECONDS (it connects before the policy)."""
    target = f"{pod_ip(kube, namespace, 'canary')}:{METRICS_PORT}"
    wait_until(lambda: probe(kube, namespace, "outsider", [target])[target] == "ok", 60, "the canary answers")
    kube.apply(deny_all_ingress("canary"), namespace=namespace)
    try:
        wait_until(
            lambda: probe(kube, namespace, "outsider", [target])[target] != "ok",
            ENFORCE_SECONDS,
            "the canary refuses the outsider",
            1,
        )
    except AssertionError:  # wait_until's timeout: the policy is not enforced here
        return False
    return True


def api_server_peers(kube: Kube) -> list[str]:
    """The API server's addresses as the `kubernetes` EndpointSlice has them, each as a host CIDR."""
    slices = kube.items("endpointslices", "default", "kubernetes.io/service-name=kubernetes")
    addresses = sorted(
        {address for s in slices for endpoint in s.get("endpoints") or [] for address in endpoint["addresses"]}
    )
    assert addresses, "the kubernetes EndpointSlice names no address"
    return [f"{a}/{ipaddress.ip_address(a).max_prefixlen}" for a in addresses]


def user_values(operator: Operator) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(operator.helm("get", "values", RELEASE, "-o", "json").stdout) or {}
    return found


def chart_policies(kube: Kube) -> list[str]:
    return kube.run("get", "networkpolicies", "-n", OPERATOR_NAMESPACE, "-o", "name").stdout.split()


def test_the_charts_network_policy_lets_in_the_api_server_and_the_scrapers_and_refuses_another_pod(
    kube: Kube, operator: Operator, namespace: str, enforcer: Path | None
) -> None:
    """The canary is shut off first (else fail, or skip where allowed: the module's docstring).
    With the chart's policy on, and each within ENFORCE_SECONDS: a pod of the scrapers' namespace
    reads /metrics of every operator pod; a pod of another namespace gets no connection to either
    port of any of them within CONNECT_TIMEOUT_SECONDS, while the scraper still reads them; every
    replica's webhook injects server-side dry runs, and a Deployment created under a policy is
    stored injected by admission (generation 1: not by the reconciler afterwards). Put back:
    the release's values as before, no NetworkPolicy in lameduck's namespace."""
    scrapers = f"{namespace}-scrapers"
    kube.create_namespace(scrapers)
    try:
        kube.apply(demo_pod("canary"), demo_pod("outsider"), namespace=namespace)
        kube.apply(demo_pod("scraper"), namespace=scrapers)
        kube.run("wait", "-n", namespace, "--for=condition=Ready", "pod/canary", "pod/outsider", "--timeout=100s")
        kube.run("wait", "-n", scrapers, "--for=condition=Ready", "pod/scraper", "--timeout=100s")
        if not canary_shut_off(kube, namespace):
            if enforcer is None and os.environ.get(ALLOW_NO_NETPOL_ENV) == "1":
                pytest.skip(
                    f"{kube.kubeconfig}: a pod under a deny-all NetworkPolicy still takes connections: this "
                    f"cluster does not enforce NetworkPolicy, and {ALLOW_NO_NETPOL_ENV}=1 says it need not"
                )
            how = f"with {enforcer.name} netpol-start" if enforcer else f"(set {ALLOW_NO_NETPOL_ENV}=1 if it need not)"
            pytest.fail(
                f"a pod under a deny-all NetworkPolicy still took connections after {ENFORCE_SECONDS}s: "
                f"{kube.kubeconfig} does not enforce NetworkPolicy {how}"
            )
        assert chart_policies(kube) == [], "lameduck's namespace has a NetworkPolicy before the test"
        before = user_values(operator)
        peers = api_server_peers(kube)
        print(json.dumps({"webhook_peers": peers, "metrics_peers": scrapers}))
        try:
            operator.install(
                "networkPolicy.enabled=true",
                *(f"networkPolicy.webhook.from[{i}].ipBlock.cidr={cidr}" for i, cidr in enumerate(peers)),
                f"networkPolicy.metrics.from[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={scrapers}",
            )
            assert len(chart_policies(kube)) == 1, "the release has its NetworkPolicy"
            ips = sorted(pod_ip(kube, OPERATOR_NAMESPACE, name) for name in operator.serving())
            assert len(ips) >= 2, f"two replicas or more serve: {ips}"
            metrics = [f"{ip}:{METRICS_PORT}/metrics" for ip in ips]
            both_ports = [f"{ip}:{port}" for ip in ips for port in (METRICS_PORT, WEBHOOK_PORT)]

            def scraped() -> dict[str, str] | None:
                found = probe(kube, scrapers, "scraper", metrics)
                return found if set(found.values()) == {"ok"} else None

            def refused() -> dict[str, str] | None:
                found = probe(kube, namespace, "outsider", both_ports)
                return found if "ok" not in found.values() else None

            wait_until(scraped, ENFORCE_SECONDS, "a pod of the scrapers' namespace reads every replica's /metrics", 1)
            print(json.dumps({"outsider": wait_until(refused, ENFORCE_SECONDS, "the outsider is refused", 1)}))
            assert scraped(), "the scraper still reads /metrics while the outsider is refused"

            kube.apply(policy("web", namespace, apply="Immediate", selector={"matchLabels": {"tier": "web"}}))
            every_replica_injects(kube, namespace, workload("web", {"tier": "web"}))
            kube.apply(workload("web", {"tier": "web"}), namespace=namespace)
            created = kube.get("deployment", "web", namespace)
            assert carries_lameduck(created), "the API server reached the webhook"
            assert created["metadata"]["generation"] == 1, "injected at admission, not later by the reconciler"
        finally:
            operator.install()
        assert user_values(operator) == before, "the release has the values it had"
        assert chart_policies(kube) == [], "the release's NetworkPolicy is gone"
    finally:
        kube.run("delete", "namespace", scrapers, "--wait=false", check=False)
