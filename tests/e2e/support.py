"""Helpers shared by the e2e suite and the benchmarks: kubectl, polling, the operator process."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

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


@dataclass
class Operator:
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    def metric(self, name: str, labels: str = "") -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + ("{" if labels or "{" in line.split(" ")[0] else " ")) and labels in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def ready(self) -> bool:
        try:
            return bool(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status == 200)
        except OSError:
            return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _service_account_kubeconfig(kube: Kube, path: Path) -> None:
    """A kubeconfig that authenticates as the operator's ServiceAccount, so its RBAC is what is tested."""
    token = kube.run("create", "token", "lameduck-operator", "-n", "lameduck-system", "--duration=2h").stdout.strip()
    view = json.loads(kube.run("config", "view", "--minify", "--raw", "-o", "json").stdout)
    cluster = view["clusters"][0]["cluster"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "e2e", "cluster": cluster}],
                "users": [{"name": "lameduck-operator", "user": {"token": token}}],
                "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "lameduck-operator"}}],
                "current-context": "e2e",
            }
        )
    )


def _die_with_parent() -> None:
    """Linux: the operator gets SIGTERM when the test or benchmark process dies, however it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_operator(kube: Kube, workdir: Path, **env_overrides: str) -> Operator:
    """The operator as a process on this machine, with exactly the RBAC of deploy/rbac.yaml."""
    kube.run("create", "namespace", "lameduck-system", check=False)
    kube.run("apply", "-f", str(REPO / "deploy" / "rbac.yaml"))
    sa_config = workdir / "kubeconfig"
    _service_account_kubeconfig(kube, sa_config)
    port = _free_port()
    log = workdir / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": str(sa_config),
        "LAMEDUCK_HTTP_PORT": str(port),
        "LAMEDUCK_STATUS_INTERVAL_MS": "300",
        "LAMEDUCK_NAMESPACE": "lameduck-system",
        "LAMEDUCK_SIDECAR_IMAGE": SIDECAR_IMAGE,
        **env_overrides,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lameduck_operator.main"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only sets the parent-death signal
        )
    running = Operator(port, log, process)
    wait_until(running.ready, 60, "the operator is ready")
    return running


def stop_operator(running: Operator) -> None:
    running.process.terminate()
    try:
        running.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()
