"""harness/tools.py finds helm 4 and helm 3 where hack/build-k8s.sh puts them, or where the
environment says, and never takes a `helm` from the PATH."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness.tools import ToolUnusable, find_helm, harness_helm, pinned
from tests.unit.repo_data import REPO


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("LAMEDUCK_HELM", "LAMEDUCK_HELM3", "HELM_VERSION", "HELM3_VERSION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LAMEDUCK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_the_pins_are_helm_4_and_helm_3(cache: Path) -> None:
    assert pinned("HELM_VERSION").startswith("4.")
    assert pinned("HELM3_VERSION").startswith("3.")


def test_each_helm_is_looked_for_where_hack_common_sh_says_build_k8s_sh_puts_it(cache: Path) -> None:
    shell = subprocess.run(
        ["bash", "-c", '. "$HACK/common.sh"; echo "$HELM_BIN/helm"; echo "$HELM3_BIN/helm"'],
        env={**os.environ, "HACK": str(REPO / "hack")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout.split() == [str(harness_helm(4)), str(harness_helm(3))]
    assert harness_helm(4) == cache / "helm" / f"v{pinned('HELM_VERSION')}" / "bin" / "helm"
    assert harness_helm(3) == cache / "helm" / f"v{pinned('HELM3_VERSION')}" / "bin" / "helm"


def test_the_built_helms_are_found_and_one_on_the_path_never(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _executable(tmp_path / "path" / "helm")
    monkeypatch.setenv("PATH", f"{tmp_path / 'path'}{os.pathsep}{os.environ['PATH']}")
    assert find_helm(4) is None
    assert find_helm(3) is None
    built = _executable(harness_helm(4))
    assert find_helm(4) == str(built)
    assert find_helm(3) is None


def test_the_environment_names_each_helm(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _executable(harness_helm(4))
    mine = _executable(tmp_path / "mine" / "helm")
    monkeypatch.setenv("LAMEDUCK_HELM", str(mine))
    assert find_helm(4) == str(mine)
    monkeypatch.setenv("LAMEDUCK_HELM3", str(tmp_path / "missing"))
    with pytest.raises(ToolUnusable, match="LAMEDUCK_HELM3"):
        find_helm(3)
