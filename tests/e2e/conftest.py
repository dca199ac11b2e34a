"""Fixtures for the e2e suite: a real cluster ($KUBECONFIG, or the local one hack/ brings up),
lameduck installed with its Helm chart (two replicas, the webhook), a namespace per test.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import REPO
from harness.images import build_images
from harness.install import Operator, install_lameduck
from harness.kube import Kube, is_local, wait_until
from lameduck_operator.names import GROUP, PLURALS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)


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
def images(kube: Kube) -> None:
    """On the local cluster, build our images; elsewhere they must already be loaded."""
    if is_local(kube.kubeconfig):
        build_images()


@pytest.fixture(scope="session")
def crds(kube: Kube) -> None:
    kube.run("apply", "--server-side", "-f", str(REPO / "crds"))

    def established(name: str) -> bool:
        # Polled rather than `kubectl wait`: a CRD the API server has not given conditions yet
        # makes kubectl wait fail at once ("accessor error: <nil>") instead of waiting.
        conditions = (kube.get("crd", name).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    names = [f"{plural}.{GROUP}" for plural in PLURALS.values()]
    wait_until(lambda: all(established(name) for name in names), 60, f"the CRDs {names} are established")


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"e2e-{request.node.name[5:25].strip('_').replace('_', '-').lower()}-{secrets.token_hex(3)}"
    kube.run("create", "namespace", name)
    yield name
    kube.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator(kube: Kube, crds: None, images: None) -> Iterator[Operator]:
    running = install_lameduck(kube)
    try:
        yield running
    finally:
        logs = running.logs()
        # Policies in test namespaces carry lameduck's finalizer: the operator stays until they are gone.
        wait_until(
            lambda: (
                not [n for n in kube.run("get", "ns", "-o", "name").stdout.split() if n.startswith("namespace/e2e-")]
            ),
            300,
            "the test namespaces are gone",
            2,
        )
        running.uninstall()
        problems = [line for line in logs.splitlines() if " ERROR " in line or "Traceback" in line]
        assert not problems, "operator logged errors:\n" + "\n".join(problems[:20])
