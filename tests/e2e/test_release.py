"""Installing as a user does from a release: `make images` (hack/images.sh) builds both images as
OCI archives with digests and SBOMs and packages the chart, hack/release.sh pushes them to an OCI
registry, and the `helm install` line it prints takes the chart from that registry and both images
by digest (docs/release.md). Once, in the whole suite.

The registry is crane's (`crane registry serve`) at a port the kernel picks, owned by this test and
stopped by its pid, on an address of this host the cluster's node reaches: on the local harness,
whose node is this host, its loopback (its containerd is told to pull over plain HTTP from there
with `hack/cluster.sh registry-trust`); on hack/kind.sh's kind cluster, this host's address on the
node container's network (`hack/kind.sh registry-host`, trusted by the node's containerd with
`hack/kind.sh registry-trust`). On any other cluster set LAMEDUCK_E2E_RELEASE_REGISTRY to a
registry both this host and the cluster's nodes reach (LAMEDUCK_E2E_RELEASE_PLAIN_HTTP=1 if it
speaks HTTP); without it the test says why it cannot run there.

It takes the session's lameduck out (as test_uninstall.py does), installs the release in its place
under the same release name, and puts the session's back at the end.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import REPO
from harness.install import OPERATOR_NAMESPACE, RELEASE, Operator, helm_binary
from harness.kube import Kube, is_kind, is_local, wait_until
from harness.manifests import pause_deployment as workload
from harness.tools import harness_crane
from tests.e2e.test_operator import policy, status

REGISTRY_ENV = "LAMEDUCK_E2E_RELEASE_REGISTRY"
PLAIN_HTTP_ENV = "LAMEDUCK_E2E_RELEASE_PLAIN_HTTP"


def on_local_harness(kube: Kube) -> bool:
    return is_local(kube.kubeconfig)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `make images` writes, into a folder of this test's."""
    out = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, LAMEDUCK_DIST=str(out))
    # cold: crane and syft are built from their Go modules first (docs/release.md says how long)
    subprocess.run(["bash", str(REPO / "hack" / "images.sh")], check=True, env=env, timeout=3600)
    return out


def serve_registry(storage: Path, log: Path, host: str) -> tuple[subprocess.Popen[bytes], str]:
    """crane's registry on `host` at a port the kernel picks (read back from its log)."""
    crane = harness_crane()
    storage.mkdir(parents=True, exist_ok=True)  # its disk store writes there and never creates it
    if not crane.exists():
        subprocess.run(["bash", str(REPO / "hack" / "build-k8s.sh"), "crane"], check=True, timeout=1800)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(crane), "registry", "serve", "--address", f"{host}:0", "--disk", str(storage)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def port() -> str | None:
        if process.poll() is not None:
            raise AssertionError(f"crane registry serve exited {process.returncode}: {log.read_text()[-2000:]}")
        found = re.search(r"serving on port (\d+)", log.read_text())
        return found[1] if found else None

    return process, f"{host}:{wait_until(port, 30, 'the registry says its port')}"


@pytest.fixture(scope="module")
def registry(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, bool]]:
    """(address, plain HTTP) of a registry the cluster pulls from."""
    given = os.environ.get(REGISTRY_ENV)
    if given:
        yield given, os.environ.get(PLAIN_HTTP_ENV) == "1"
        return
    if on_local_harness(kube):
        cluster, host = ["bash", str(REPO / "hack" / "cluster.sh")], "127.0.0.1"
    elif is_kind(kube.kubeconfig):
        cluster = ["bash", str(REPO / "hack" / "kind.sh")]
        host = subprocess.run([*cluster, "registry-host"], check=True, capture_output=True, text=True).stdout.strip()
    else:
        pytest.skip(
            f"{kube.kubeconfig} is neither the local harness nor hack/kind.sh's kind cluster, whose nodes reach "
            f"this host: set {REGISTRY_ENV} (and {PLAIN_HTTP_ENV}=1 for HTTP) to a registry both reach "
            "(docs/release.md)."
        )
    root = tmp_path_factory.mktemp("registry")
    process, address = serve_registry(root / "blobs", root / "registry.log", host)
    try:
        subprocess.run([*cluster, "registry-trust", address], check=True, timeout=60)
        yield address, True
    finally:
        subprocess.run([*cluster, "registry-untrust", address], check=False, timeout=60)
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def release(dist: Path, address: str, plain_http: bool) -> list[str]:
    """Push with hack/release.sh; the install line it prints, split as a shell would."""
    args = ["bash", str(REPO / "hack" / "release.sh"), *(["--plain-http"] if plain_http else []), address]
    done = subprocess.run(
        args, env=dict(os.environ, LAMEDUCK_DIST=str(dist)), capture_output=True, text=True, timeout=1800, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = shlex.split(done.stdout.strip().splitlines()[-1])
    assert line[:2] == ["helm", "install"], done.stdout
    return line


def image_of(pod: dict[str, object], name: str) -> tuple[str, str]:
    """(image, imageID) of a pod's container or init container `name`."""
    status = pod["status"]
    assert isinstance(status, dict)
    for found in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        if found["name"] == name:
            return found["image"], found.get("imageID", "")
    raise AssertionError(f"no container {name} in {pod['metadata']}")


def image_labels(archive: Path) -> dict[str, str]:
    """The labels in the config of an OCI archive's one image."""
    with tarfile.open(archive) as tar:

        def blob(digest: str) -> dict[str, Any]:
            member = tar.extractfile("blobs/" + digest.replace(":", "/"))
            assert member is not None, f"{archive} has no blob {digest}"
            loaded: dict[str, Any] = json.load(member)
            return loaded

        index = tar.extractfile("index.json")
        assert index is not None
        manifest = blob(json.load(index)["manifests"][0]["digest"])
        labels: dict[str, str] = blob(manifest["config"]["digest"])["config"].get("Labels") or {}
        return labels


def test_the_released_chart_installs_from_the_oci_registry_with_both_images_by_digest(
    kube: Kube, operator: Operator, namespace: str, dist: Path, registry: tuple[str, bool]
) -> None:
    address, plain_http = registry
    manifest = json.loads((dist / "images.json").read_text())
    digests = {name: image["digest"] for name, image in manifest["images"].items()}
    for name in ("operator", "sidecar"):
        sbom = json.loads((dist / manifest["images"][name]["sbom"]).read_text())
        packages = {p["name"] for p in sbom["packages"]}
        assert {"python3.11", "lameduck"} <= packages, f"the {name} SBOM lists the Debian and the Python packages"
    head = ["git", "-C", str(REPO), "rev-parse", "HEAD"]
    revision = subprocess.run(head, check=False, capture_output=True, text=True).stdout
    for name in ("operator", "sidecar"):
        labels = image_labels(dist / manifest["images"][name]["archive"])
        # their own image IDs, not those of the :dev builds (hack/images.sh says why)
        assert labels.get("org.opencontainers.image.version") == manifest["version"], labels
        assert labels.get("org.opencontainers.image.revision") == (revision.strip() or "unknown"), labels
    assert "kopf" in {p["name"] for p in json.loads((dist / "operator.spdx.json").read_text())["packages"]}
    install = release(dist, address, plain_http)
    operator_image = f"{address}/lameduck/operator@{digests['operator']}"
    sidecar_image = f"{address}/lameduck/sidecar@{digests['sidecar']}"

    operator.uninstall()
    try:
        started = time.monotonic()
        done = subprocess.run(
            [helm_binary(), "--kubeconfig", kube.kubeconfig, *install[1:], "--wait", "--timeout", "300s"],
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert install[install.index("--namespace") + 1] == OPERATOR_NAMESPACE
        assert install[2] == RELEASE

        # the session's pods (same labels) may still be on their way out
        def only_released_pods() -> list[dict[str, object]] | None:
            pods = operator.pods()
            released = [p for p in pods if p["spec"]["containers"][0]["image"] == operator_image]
            return released if released and len(released) == len(pods) else None

        pods = wait_until(only_released_pods, 180, "only the released operator's pods are left")
        wait_until(operator.leader, 120, "a replica of the released operator holds the Lease")
        print(f"installed from oci://{address} and ready in {time.monotonic() - started:.0f} s")
        for pod in pods:
            image, image_id = image_of(pod, "operator")
            assert image_id.endswith(digests["operator"]), f"{pod['metadata']} runs {image} ({image_id})"

        kube.apply(workload("web", {"tier": "web"}), namespace=namespace)
        kube.apply(policy("web", namespace, apply="Immediate", selector={"matchLabels": {"tier": "web"}}))
        wait_until(lambda: status(kube, namespace, "web").get("compliant") == 1, 90, "web is compliant")
        template = kube.get("deployment", "web", namespace)["spec"]["template"]["spec"]
        assert template["initContainers"][0]["image"] == sidecar_image

        def sidecar_runs() -> bool:
            for pod in kube.items("pods", namespace, "app=web"):  # the Deployment's pods: app=<name>
                statuses = pod["status"].get("initContainerStatuses") or []
                if any(s["name"] == "lameduck" and s.get("started") for s in statuses):
                    image, image_id = image_of(pod, "lameduck")
                    assert image_id.endswith(digests["sidecar"]), f"the sidecar runs {image} ({image_id})"
                    return True
            return False

        wait_until(sidecar_runs, 120, "a web pod runs the sidecar pulled by digest from the registry")
        kube.run("delete", "gracefulpolicies", "--all", "-n", namespace, "--wait=true", "--timeout=60s")
    finally:
        operator.uninstall()
        # The session's :dev images run again (pull policy Never) only because the release images
        # carry their own labels: kubelet >= 1.35 would refuse an image ID it has pulled under
        # another name (hack/images.sh).
        operator.install()
