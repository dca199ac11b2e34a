"""kubectl against one kubeconfig, and polling until something happens."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
# The local cluster of hack/cluster.sh.
LOCAL_KUBECONFIG = "/var/lib/lameduck-cluster/admin.kubeconfig"


def is_local(kubeconfig: str) -> bool:
    """Whether the kubeconfig is the local harness's (hack/cluster.sh), whose node is this host."""
    return os.path.realpath(kubeconfig) == os.path.realpath(LOCAL_KUBECONFIG)


LOCAL_AUDIT_LOG = Path("/var/lib/lameduck-cluster/logs/audit.log")


def kind_kubeconfig() -> Path:
    """The kubeconfig hack/kind.sh writes for its cluster (KUBECONFIG_OUT there: the kind cache's
    directory, $LAMEDUCK_KIND_CACHE or $LAMEDUCK_CACHE/kind, and the cluster's name, $KIND_CLUSTER)."""
    cache = Path(os.environ.get("LAMEDUCK_CACHE") or Path.home() / ".cache" / "lameduck")
    kind_dir = Path(os.environ.get("LAMEDUCK_KIND_CACHE") or cache / "kind")
    return kind_dir / f"{os.environ.get('KIND_CLUSTER') or 'lameduck'}.kubeconfig"


def is_kind(kubeconfig: str) -> bool:
    """Whether the kubeconfig is the kind cluster of hack/kind.sh, whose node runs on this host."""
    return os.path.realpath(kubeconfig) == os.path.realpath(kind_kubeconfig())


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
