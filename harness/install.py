"""lameduck installed with its Helm chart, as a user installs it, and what the tests ask of the
running operator: its leader, metrics and logs, and whether its webhook injects."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness import REPO
from harness.images import OPERATOR_IMAGE, SIDECAR_IMAGE, built_image_id, image_values
from harness.kube import Kube, wait_until
from harness.tools import find_helm, harness_helm

RELEASE = "lameduck"
OPERATOR_NAMESPACE = "lameduck-system"
CHART = REPO / "charts" / "lameduck"
OPERATOR_SELECTOR = "app.kubernetes.io/name=lameduck"
LEASE = "lameduck-operator"
# The Pod Security Standard the operator's namespace enforces wherever the harness installs it
# (the e2e suite, the benchmarks): the chart's pods must be admitted under it.
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def enforce_restricted(kube: Kube, namespace: str) -> None:
    """The namespace (created if missing) admits only pods of the `restricted` standard."""
    kube.run("create", "namespace", namespace, check=False)
    kube.run("label", "namespace", namespace, "--overwrite", *(f"{k}={v}" for k, v in RESTRICTED.items()))


def helm_binary() -> str:
    """$LAMEDUCK_HELM, else the helm 4 the harness builds (hack/build-k8s.sh helm)."""
    return find_helm(4) or str(harness_helm(4))


def upgrade_args(values_file: str, sets: list[str]) -> list[str]:
    """`helm upgrade --install` as the harness runs it. Each flag is in both Helm 4 and Helm 3
    (a unit test reads their --help): `--wait` alone is Helm 4's `watcher` strategy (every object
    ready by kstatus; without it Helm 4 would wait for hooks only) and Helm 3's plain wait. Helm 4
    installs by server-side apply, and upgrades the same way (`--server-side` auto follows the
    release)."""
    args = ["upgrade", "--install", RELEASE, str(CHART), "--create-namespace", "--wait", "--timeout", "240s"]
    args += ["-f", values_file]
    for value in sets:
        args += ["--set", value]
    return args


UNINSTALL_ARGS = ("uninstall", RELEASE, "--wait", "--timeout", "180s")


@dataclass
class Operator:
    """lameduck as `helm install` put it in the cluster: every replica serves the webhook, the
    Lease holder reconciles."""

    kube: Kube

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [helm_binary(), "--kubeconfig", self.kube.kubeconfig, "-n", OPERATOR_NAMESPACE, *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args[:2])} failed: {done.stderr.strip()[:1000]}")
        return done

    def install(self, *values: str) -> None:
        """helm upgrade --install with the local images; values as --set key=value."""
        operator_repo, operator_tag = image_values(OPERATOR_IMAGE)
        sidecar_repo, sidecar_tag = image_values(SIDECAR_IMAGE)
        sets = [
            f"image.repository={operator_repo}",
            f"image.tag={operator_tag}",
            f"sidecar.image.repository={sidecar_repo}",
            f"sidecar.image.tag={sidecar_tag}",
            "statusIntervalMs=300",
            *values,
        ]
        # The same tag over a rebuilt image changes no value, so helm would leave the running
        # pods on the old build: the build's ID in their template rolls them.
        if image_id := built_image_id(OPERATOR_IMAGE):
            sets.append(f"podAnnotations.lameduck\\.dev/operator-build=id-{image_id}")
        enforce_restricted(self.kube, OPERATOR_NAMESPACE)
        self.helm(*upgrade_args(str(CHART / "ci" / "local-values.yaml"), sets))
        wait_until(self.leader, 60, "a replica holds the leader Lease")

    def uninstall(self) -> None:
        self.helm(*UNINSTALL_ARGS, check=False)

    def pods(self) -> list[dict[str, Any]]:
        return self.kube.items("pods", OPERATOR_NAMESPACE, OPERATOR_SELECTOR)

    def leader(self) -> str | None:
        """The pod holding the Lease (its identity is pod name _ process id), if it is running."""
        done = self.kube.run(
            "get", "lease", LEASE, "-n", OPERATOR_NAMESPACE, "-o", "jsonpath={.spec.holderIdentity}", check=False
        )
        holder = done.stdout.strip().rsplit("_", 1)[0]
        return holder if holder in self.serving() else None

    def serving(self) -> set[str]:
        """Pods running, ready and not being deleted (one on its way out may still hold the Lease)."""
        return {
            p["metadata"]["name"]
            for p in self.pods()
            if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
        }

    def metrics_text(self, pod: str | None = None) -> str:
        target = pod or self.leader()
        assert target, "no operator replica leads"
        path = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods/{target}:8080/proxy/metrics"
        return self.kube.run("get", "--raw", path).stdout

    def metric(self, name: str, labels: str = "", pod: str | None = None) -> float:
        """The sum of a metric's samples (optionally those whose labels contain `labels`), on the leader."""
        total = 0.0
        for line in self.metrics_text(pod).splitlines():
            if line.startswith(name + ("{" if labels or "{" in line.split(" ")[0] else " ")) and labels in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def logs(self) -> str:
        done = self.kube.run(
            "logs", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR, "--prefix", "--tail=-1", check=False
        )
        return done.stdout


def install_lameduck(kube: Kube, *values: str) -> Operator:
    running = Operator(kube)
    running.install(*values)
    return running


def carries_lameduck(owner: Mapping[str, Any]) -> bool:
    """Whether a Deployment's or ReplicaSet's pod template has lameduck's sidecar."""
    spec = owner["spec"]["template"]["spec"]
    return any(c["name"] == "lameduck" for c in spec.get("initContainers") or [])


def every_replica_injects(kube: Kube, namespace: str, manifest: dict[str, Any], timeout: float = 30) -> None:
    """Wait until server-side dry runs of creating manifest (each calls the webhook, on any
    replica) come back injected 6 times in a row: every replica has seen the policy."""
    streak = 0

    def injected_again() -> bool:
        nonlocal streak
        done = kube.run(
            "apply", "--dry-run=server", "-o", "json", "-n", namespace, "-f", "-", input=json.dumps(manifest)
        )
        streak = streak + 1 if carries_lameduck(json.loads(done.stdout)) else 0
        return streak >= 6

    wait_until(injected_again, timeout, "dry runs of the write come back injected 6 times in a row")
