"""Fixtures for the e2e suite: a real cluster ($KUBECONFIG, or the local one hack/ brings up),
the CRDs, the operator running with its own ServiceAccount's RBAC, a namespace per test.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")
# A tiny image that runs forever; the local harness imports it as the pod sandbox image.
PAUSE_IMAGE = os.environ.get("LAMEDUCK_E2E_PAUSE_IMAGE", "registry.k8s.io/pause:3.10.1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)


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
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting until {what}" + (f" (last error: {last_error})" if last_error else "")
    )


class Kube:
    """kubectl against one kubeconfig."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.binary = shutil.which("kubectl") or "kubectl"

    def run(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, "--kubeconfig", self.kubeconfig, *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

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


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    given = os.environ.get("KUBECONFIG")
    if given:
        return given
    subprocess.run(["bash", str(REPO / "hack" / "cluster.sh"), "up"], check=True, timeout=1800)
    out = subprocess.run(
        ["bash", str(REPO / "hack" / "cluster.sh"), "kubeconfig"], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


@pytest.fixture(scope="session")
def kube(kubeconfig: str) -> Kube:
    kube = Kube(kubeconfig)
    wait_until(
        lambda: (
            "True"
            in kube.run(
                "get", "nodes", "-o", 'jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}'
            ).stdout
        ),
        180,
        "a node is Ready",
    )
    return kube


@pytest.fixture(scope="session")
def crds(kube: Kube) -> None:
    kube.run("apply", "--server-side", "-f", str(REPO / "crds"))
    kube.run(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/gracefulpolicies.lameduck.dev",
        "crd/clustergracefulpolicies.lameduck.dev",
    )


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"e2e-{request.node.name[5:25].strip('_').replace('_', '-').lower()}-{secrets.token_hex(3)}"
    kube.run("create", "namespace", name)
    yield name
    kube.run("delete", "namespace", name, "--wait=false", check=False)


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


@pytest.fixture(scope="session")
def operator(kube: Kube, crds: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator as a process on this machine, with exactly the RBAC of deploy/rbac.yaml."""
    kube.run("create", "namespace", "lameduck-system", check=False)
    kube.run("apply", "-f", str(REPO / "deploy" / "rbac.yaml"))
    workdir = tmp_path_factory.mktemp("operator")
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
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lameduck_operator.main"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    running = Operator(port, log, process)
    try:
        wait_until(running.ready, 60, "the operator is ready")
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(f"operator log: {log}")
        problems = [line for line in log.read_text().splitlines() if " ERROR " in line or "Traceback" in line]
        assert not problems, "operator logged errors:\n" + "\n".join(problems[:20])
