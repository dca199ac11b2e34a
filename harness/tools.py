"""Where the tests and benchmarks find the binaries they run (helm, promtool, prometheus):
the path an environment variable names, else the one on the PATH, else the one the harness
puts in its cache (hack/build-k8s.sh, hack/prometheus.sh), at the version hack/versions.env
pins."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from harness import REPO


class ToolUnusable(Exception):
    """The environment names a binary that is not an executable file."""


def pinned(name: str) -> str:
    """A version: the environment's, else the default hack/versions.env gives it."""
    given = os.environ.get(name)
    if given:
        return given
    found = re.search(
        rf'^{name}="\$\{{{name}:-([^}}]+)\}}"', (REPO / "hack" / "versions.env").read_text(), re.MULTILINE
    )
    if found is None:
        raise LookupError(f"hack/versions.env has no {name} line")
    return found[1]


def harness_helm() -> Path:
    """Where hack/build-k8s.sh installs helm (CACHE_ROOT of hack/common.sh)."""
    cache = Path(os.environ.get("LAMEDUCK_CACHE") or Path.home() / ".cache" / "lameduck")
    return cache / "k8s" / f"v{pinned('K8S_VERSION')}" / "bin" / "helm"


def harness_prometheus_dir() -> Path:
    """Where hack/prometheus.sh unpacks promtool and prometheus."""
    cache = os.environ.get("LAMEDUCK_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "lameduck"
    )
    return Path(cache) / "prometheus" / pinned("PROMETHEUS_DEB_VERSION")


def find_tool(name: str, env_var: str, cached: Path) -> str | None:
    """$env_var (which must then be executable), `name` on the PATH, or `cached`; None if none."""
    explicit = os.environ.get(env_var)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ToolUnusable(f"{env_var}={explicit} is not an executable {name}")
        return explicit
    return shutil.which(name) or (str(cached) if os.access(cached, os.X_OK) else None)
