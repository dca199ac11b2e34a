"""Helpers shared by the e2e suite and the benchmarks: kubectl, polling, the operator process."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lameduck_operator.logic.decision import rollout_in_progress
from lameduck_operator.names import LEARNED_CONFIGMAP, LEARNED_VERSION, LearnedField
from tests.tools import find_tool, harness_helm

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")
# A tiny image that runs forever; the local harness imports it as the pod sandbox image.
PAUSE_IMAGE = os.environ.get("LAMEDUCK_E2E_PAUSE_IMAGE", "registry.k8s.io/pause:3.10.1")
# Our images as the local harness builds them (hack/build-images.sh); on another cluster,
# load your builds (e.g. `kind load docker-image`) and name them here.
SIDECAR_IMAGE = os.environ.get("LAMEDUCK_E2E_SIDECAR_IMAGE", "docker.io/lameduck/sidecar:dev")
DEMO_IMAGE = os.environ.get("LAMEDUCK_E2E_DEMO_IMAGE", "docker.io/lameduck/demo-app:dev")
LOCAL_KUBECONFIG = "/var/lib/lameduck-cluster/admin.kubeconfig"
LOCAL_AUDIT_LOG = Path("/var/lib/lameduck-cluster/logs/audit.log")


IMAGE_INPUTS = {
    "lameduck/sidecar:dev": (REPO, "sidecar/Dockerfile", ("pyproject.toml", "operator", "sidecar")),
    "lameduck/operator:dev": (REPO, "operator/Dockerfile", ("pyproject.toml", "operator", "sidecar")),
    "lameduck/demo-app:dev": (REPO / "examples" / "demo-app", "Dockerfile", (".",)),
    "lameduck/l7proxy:dev": (REPO / "bench" / "l7proxy", "Dockerfile", (".",)),
}


def _inputs_digest(context: Path, dockerfile: str, paths: tuple[str, ...]) -> str:
    digest = hashlib.sha256((context / dockerfile).read_bytes())
    for path in paths:
        root = context / path
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" in file.parts or ".egg-info" in str(file):
                continue
            digest.update(str(file.relative_to(context)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def build_images() -> None:
    """Build the sidecar, operator and demo images into the local cluster; an image whose
    inputs are unchanged since its last build is only imported again."""
    script = str(REPO / "hack" / "build-images.sh")
    stamps = Path(os.environ.get("LAMEDUCK_CACHE", Path.home() / ".cache" / "lameduck")) / "images"
    stamps.mkdir(parents=True, exist_ok=True)
    for ref, (context, dockerfile, paths) in IMAGE_INPUTS.items():
        stamp = stamps / (ref.replace("/", "_").replace(":", "_") + ".inputs")
        digest = _inputs_digest(context, dockerfile, paths)
        spec = f"{ref}={context}"
        if stamp.exists() and stamp.read_text() == digest:
            subprocess.run(["bash", script, "--import-only", spec], check=True, timeout=600)
            continue
        subprocess.run(["bash", script, "--dockerfile", dockerfile, spec], check=True, timeout=1800)
        stamp.write_text(digest)


def wait_until(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll until check returns something truthy; fail naming what never happened."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (subprocess.CalledProcessError, KeyError, IndexError, TypeError, ValueError) as err:
            last_error = err
        time.sleep(interval)  # the poll interval of wait_until
    raise AssertionError(
        f"timed out after {timeout}s waiting until {what}" + (f" (last error: {last_error})" if last_error else "")
    )


def pause_deployment(
    name: str,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    replicas: int = 1,
    **pod: Any,
) -> dict[str, Any]:
    """A Deployment of the pause image: it runs anywhere the harness runs, pulls nothing."""
    meta: dict[str, Any] = {"name": name, "labels": labels or {}}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": PAUSE_IMAGE,
                            "imagePullPolicy": "Never",
                            "ports": [{"containerPort": 8080}],
                        }
                    ],
                    **pod,
                },
            },
        },
    }


def demo_app(name: str = "demo", replicas: int = 3) -> list[dict[str, Any]]:
    """The demo app behind a ClusterIP Service; labelled `lameduck: yes` for policies to select."""
    labels = {"app": name}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"lameduck": "yes"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": DEMO_IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
                        }
                    ],
                },
            },
        },
    }
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    return [deployment, svc]


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl, saying what kubectl said."""

    def __str__(self) -> str:
        return f"kubectl {' '.join(self.cmd[3:])} failed ({self.returncode}): {(self.stderr or '').strip()[:500]}"


class Kube:
    """kubectl against one kubeconfig."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.binary = shutil.which("kubectl") or "kubectl"

    def run(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.binary, "--kubeconfig", self.kubeconfig, *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise KubectlError(done.returncode, done.args, done.stdout, done.stderr)
        return done

    def apply(
        self, *objects: dict[str, Any], namespace: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """kubectl apply (client-side, as most users and CI pipelines do)."""
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        return self.run(*args, input=yaml.safe_dump_all(objects), check=check)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        args = ["get", kind, name, "-o", "json", "--show-managed-fields"]
        if namespace:
            args += ["-n", namespace]
        body = json.loads(self.run(*args).stdout)
        assert isinstance(body, dict)
        return body

    def items(self, kind: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace, "-o", "json"] + (["-l", selector] if selector else [])
        return list(json.loads(self.run(*args).stdout)["items"])

    def create_namespace(self, name: str, timeout: float = 180) -> None:
        """Create it, first waiting out an earlier one of that name that is still terminating."""
        wait_until(
            lambda: self.run("get", "ns", name, "-o", "jsonpath={.status.phase}", check=False).stdout != "Terminating",
            timeout,
            f"an earlier namespace {name} is gone",
            1,
        )
        self.run("create", "namespace", name, check=False)


RELEASE = "lameduck"
OPERATOR_NAMESPACE = "lameduck-system"
CHART = REPO / "charts" / "lameduck"
OPERATOR_IMAGE = os.environ.get("LAMEDUCK_E2E_OPERATOR_IMAGE", "docker.io/lameduck/operator:dev")
OPERATOR_SELECTOR = "app.kubernetes.io/name=lameduck"
LEASE = "lameduck-operator"


def helm_binary() -> str:
    """$LAMEDUCK_HELM, helm on the PATH, or the one the harness builds (hack/build-k8s.sh helm)."""
    return find_tool("helm", "LAMEDUCK_HELM", harness_helm()) or str(harness_helm())


def image_values(image: str) -> tuple[str, str]:
    repository, _, tag = image.rpartition(":")
    return (repository, tag) if repository and "/" not in tag else (image, "latest")


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
        args = ["upgrade", "--install", RELEASE, str(CHART), "--create-namespace", "--wait", "--timeout", "240s"]
        args += ["-f", str(CHART / "ci" / "local-values.yaml")]
        for value in sets:
            args += ["--set", value]
        self.helm(*args)
        wait_until(self.leader, 60, "a replica holds the leader Lease")

    def uninstall(self) -> None:
        self.helm("uninstall", RELEASE, "--wait", "--timeout", "180s", check=False)

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


def guarded(namespace: str, **spec: Any) -> dict[str, Any]:
    """A GracefulPolicy `guard` (the defaults, `apply: Immediate`) over Deployments labelled
    `lameduck: yes`; spec: more of its fields (hold, drainTimeout, ...)."""
    return {
        "apiVersion": "lameduck.dev/v1alpha1",
        "kind": "GracefulPolicy",
        "metadata": {"name": "guard", "namespace": namespace},
        "spec": {"apply": "Immediate", "selector": {"matchLabels": {"lameduck": "yes"}}, **spec},
    }


def steady(kube: Kube, namespace: str, name: str = "demo", replicas: int = 3) -> bool:
    """No rollout in progress, and exactly `replicas` pods, all ready and none being deleted."""
    pods = kube.items("pods", namespace, f"app={name}")
    ready = [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and p.get("status", {}).get("containerStatuses")
        and all(c.get("ready") for c in p["status"]["containerStatuses"])
    ]
    return (
        not rollout_in_progress(kube.get("deployment", name, namespace))
        and len(pods) == replicas
        and len(ready) == replicas
    )


def learned_config_map(delays: Mapping[str, float]) -> dict[str, Any]:
    """The namespace's lameduck-learned ConfigMap as the operator keeps it: per Deployment, the
    pooled delay its earlier holds showed."""
    values = {
        name: json.dumps(
            {LearnedField.VERSION: LEARNED_VERSION, LearnedField.POOLED_DELAY_SECONDS: delay, LearnedField.REPORTS: 1}
        )
        for name, delay in delays.items()
    }
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": LEARNED_CONFIGMAP}, "data": values}


def start_guarded_demo(
    kube: Kube,
    namespace: str,
    *,
    replicas: int = 3,
    app_env: Mapping[str, str] | None = None,
    grace_period: int | None = None,
    learned: float | None = 0.0,
    **spec: Any,
) -> None:
    """The demo app (`replicas`, its container's env plus app_env, the template's
    terminationGracePeriodSeconds if given: lameduck never lowers the API server's default of
    30 s) behind a ClusterIP Service, under guarded(namespace, **spec); returns once compliant
    and steady with its sidecars.

    `learned`: the demo's history, as if earlier rollouts had taught it (0: its late traffic
    was only pinned clients, so a busy keep-alive connection is waited for propagationDelay, as
    the tests that assert `quiet` holds under pinned load expect); None: no history, so every
    hold learns and waits for busy connections until they go quiet, up to maxHold."""
    if learned is not None:
        kube.apply(learned_config_map({"demo": learned}), namespace=namespace)
    deployment, service = demo_app(replicas=replicas)
    if app_env:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        container["env"] = [{"name": k, "value": v} for k, v in app_env.items()]
    if grace_period is not None:
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = grace_period
    kube.apply(deployment, service, namespace=namespace)
    kube.apply(guarded(namespace, **spec))
    wait_until(
        lambda: kube.get("gracefulpolicy", "guard", namespace).get("status", {}).get("compliant") == 1,
        60,
        "the demo is compliant",
    )
    wait_until(lambda: steady(kube, namespace, replicas=replicas), 180, "the demo runs with its sidecars", 0.5)


class SidecarLog:
    """Follows one pod's sidecar log (`kubectl logs -f`, until the pod is gone) into a file;
    reads its hold records (one JSON line each, written when the hold ends)."""

    def __init__(self, kube: Kube, namespace: str, pod: str, path: Path) -> None:
        self.pod = pod
        self.path = path
        self.process = subprocess.Popen(
            [kube.binary, "--kubeconfig", kube.kubeconfig, "logs", "-f", pod, "-c", "lameduck", "-n", namespace],
            stdout=path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: b'"event": "start"' in path.read_bytes(), 30, f"the sidecar log of {pod} is followed")

    def holds(self) -> list[dict[str, Any]]:
        """The hold records logged so far (answers at once included)."""
        lines = self.path.read_text().splitlines()
        return [json.loads(line) for line in lines if '"event": "hold"' in line]

    def hold(self, index: int = 0, *, last: bool = True, timeout: float = 120) -> dict[str, Any]:
        """The index-th hold record, waiting for it; last: stop following."""
        try:
            record: dict[str, Any] = wait_until(
                lambda: self.holds()[index] if len(self.holds()) > index else None,
                timeout,
                f"the sidecar of {self.pod} logs hold record {index}",
            )
            return record
        finally:
            if last:
                self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
