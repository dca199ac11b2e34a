"""The harness builds an image again when its inputs changed or when the cached archive is not
the one its stamp was written for (another checkout built the same name into the shared cache),
and only imports it otherwise."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness import images


class Builds:
    """What build_images asked hack/build-images.sh to do, per image: build or import."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.calls: list[tuple[str, str]] = []

    def run(self, args: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        ref = args[-1].split("=", 1)[0]
        name = ref.replace("/", "_").replace(":", "_")
        if "--import-only" in args:
            self.calls.append(("import", ref))
        else:
            self.calls.append(("build", ref))
            (self.cache / "images" / f"{name}.oci.tar.id").write_text(f"sha256:built-{len(self.calls)}\n")
        return subprocess.CompletedProcess(args, 0)

    def of(self, ref: str) -> list[str]:
        return [what for what, r in self.calls if r == ref]


@pytest.fixture
def builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Builds:
    monkeypatch.setenv("LAMEDUCK_CACHE", str(tmp_path))
    (tmp_path / "images").mkdir()
    recorded = Builds(tmp_path)
    monkeypatch.setattr(subprocess, "run", recorded.run)
    return recorded


OPERATOR = "lameduck/operator:dev"


def test_a_first_build_then_imports_while_nothing_changed(builds: Builds) -> None:
    images.build_images()
    images.build_images()
    assert builds.of(OPERATOR) == ["build", "import"]


def test_an_archive_another_checkout_built_since_is_built_again(builds: Builds) -> None:
    images.build_images()
    archive_id = builds.cache / "images" / "lameduck_operator_dev.oci.tar.id"
    archive_id.write_text("sha256:from-another-worktree\n")  # same name, other inputs
    images.build_images()
    assert builds.of(OPERATOR) == ["build", "build"]


def test_a_stamp_without_its_archive_is_built_again(builds: Builds) -> None:
    images.build_images()
    (builds.cache / "images" / "lameduck_operator_dev.oci.tar.id").unlink()
    images.build_images()
    assert builds.of(OPERATOR) == ["build", "build"]
