"""Where the tests and benchmarks find the binaries they run (helm 4 and helm 3, promtool,
prometheus, and the dashboard type check's node_modules): the path an environment variable
names, else the one the harness puts in its cache (hack/build-k8s.sh, hack/prometheus.sh,
hack/dashboard-schema.sh) at the version hack/versions.env pins (the node_modules: at the hash
of their lock file); promtool and prometheus may also come from the PATH, helm never does (a
`helm` on the PATH is of either major, and `hack/cluster.sh env` of an older checkout put an
unapproved helm there)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
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


# For each major: the hack/versions.env pin and the variable that names a binary instead.
HELMS = {4: ("HELM_VERSION", "LAMEDUCK_HELM"), 3: ("HELM3_VERSION", "LAMEDUCK_HELM3")}


def harness_helm(major: int = 4) -> Path:
    """Where hack/build-k8s.sh installs helm `major` (HELM_BIN / HELM3_BIN of hack/common.sh)."""
    cache = Path(os.environ.get("LAMEDUCK_CACHE") or Path.home() / ".cache" / "lameduck")
    return cache / "helm" / f"v{pinned(HELMS[major][0])}" / "bin" / "helm"


def harness_crane() -> Path:
    """Where hack/build-k8s.sh installs crane (CRANE_BIN of hack/common.sh)."""
    cache = Path(os.environ.get("LAMEDUCK_CACHE") or Path.home() / ".cache" / "lameduck")
    return cache / "crane" / f"v{pinned('CRANE_VERSION')}" / "bin" / "crane"


def find_helm(major: int = 4) -> str | None:
    """$LAMEDUCK_HELM (helm 4) or $LAMEDUCK_HELM3 (helm 3), which must then be executable, else the
    harness's build of the pinned version; None if neither."""
    return find_tool("helm", HELMS[major][1], harness_helm(major), on_path=False)


def helm_version(binary: str) -> str:
    """What a helm binary says its version is, e.g. v4.3.2."""
    done = subprocess.run(
        [binary, "version", "--template", "{{.Version}}"], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise ToolUnusable(f"{binary} version failed: {done.stderr.strip()[:300]}")
    return done.stdout.strip()


def harness_prometheus_dir() -> Path:
    """Where hack/prometheus.sh unpacks promtool and prometheus."""
    cache = os.environ.get("LAMEDUCK_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "lameduck"
    )
    return Path(cache) / "prometheus" / pinned("PROMETHEUS_DEB_VERSION")


def harness_nginx() -> Path:
    """Where hack/nginx.sh unpacks Debian's nginx binary."""
    cache = os.environ.get("LAMEDUCK_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "lameduck"
    )
    return Path(cache) / "nginx" / pinned("NGINX_DEB_VERSION") / "nginx"


# The npm packages of the dashboard's type check (tests/unit/test_dashboard_schema.py).
DASHBOARD_SCHEMA = REPO / "tests" / "dashboard_schema"


def harness_dashboard_schema_dir() -> Path:
    """Where hack/dashboard-schema.sh installs the dashboard type check's node_modules: keyed by
    the hash of its package-lock.json, so a changed lock installs afresh."""
    cache = os.environ.get("LAMEDUCK_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "lameduck"
    )
    lock = hashlib.sha256((DASHBOARD_SCHEMA / "package-lock.json").read_bytes()).hexdigest()
    return Path(cache) / "dashboard-schema" / lock[:16]


def find_tool(name: str, env_var: str, cached: Path, *, on_path: bool = True) -> str | None:
    """$env_var (which must then be executable), `name` on the PATH (if on_path), or `cached`;
    None if none."""
    explicit = os.environ.get(env_var)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ToolUnusable(f"{env_var}={explicit} is not an executable {name}")
        return explicit
    return (shutil.which(name) if on_path else None) or (str(cached) if os.access(cached, os.X_OK) else None)
