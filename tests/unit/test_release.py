"""hack/release.sh: what it pushes where, and the install line it prints, read from a dry run
(no registry, no crane or helm run) over an images.json like the one `make images` writes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from lameduck_operator import __version__
from tests.unit.repo_data import REPO

SCRIPT = REPO / "hack" / "release.sh"
OPERATOR_DIGEST = "sha256:" + "1" * 64
SIDECAR_DIGEST = "sha256:" + "2" * 64


def dist(tmp_path: Path) -> Path:
    images = {
        name: {
            "repository": f"lameduck/{name}",
            "tag": __version__,
            "digest": digest,
            "archive": f"{name}.oci.tar",
            "sbom": f"{name}.spdx.json",
        }
        for name, digest in (("operator", OPERATOR_DIGEST), ("sidecar", SIDECAR_DIGEST))
    }
    manifest = {"version": __version__, "chart": f"lameduck-{__version__}.tgz", "images": images}
    (tmp_path / "images.json").write_text(json.dumps(manifest))
    return tmp_path


def release(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LAMEDUCK_DIST=str(tmp_path))
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, check=False, timeout=60
    )


def commands(out: str) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in out.splitlines() if line.startswith("+ ")]


def test_a_dry_run_pushes_each_image_archive_as_an_oci_layout_and_the_chart(tmp_path: Path) -> None:
    done = release(dist(tmp_path), "--dry-run", "--plain-http", "127.0.0.1:5000")
    assert done.returncode == 0, done.stderr
    pushes = [c for c in commands(done.stdout) if len(c) > 1 and c[1] == "push"]
    crane = [c for c in pushes if c[0].endswith("crane")]
    assert [c[-1] for c in crane] == [f"127.0.0.1:5000/lameduck/{n}:{__version__}" for n in ("operator", "sidecar")]
    assert all("--insecure" in c for c in crane)
    untar = [c for c in commands(done.stdout) if c[0] == "tar"]
    assert [(c[2], c[-1]) for c in untar] == [
        (str(tmp_path / f"{n}.oci.tar"), c[-2]) for n, c in zip(("operator", "sidecar"), crane, strict=True)
    ]
    (helm,) = [c for c in pushes if c[0].endswith("helm")]
    assert helm[2:] == [str(tmp_path / f"lameduck-{__version__}.tgz"), "oci://127.0.0.1:5000/charts", "--plain-http"]


def test_the_install_line_takes_the_chart_from_the_registry_and_both_images_by_digest(tmp_path: Path) -> None:
    done = release(dist(tmp_path), "--dry-run", "registry.example.com/team/")
    assert done.returncode == 0, done.stderr
    install = shlex.split(done.stdout.splitlines()[-1])
    assert install[:4] == ["helm", "install", "lameduck", "oci://registry.example.com/team/charts/lameduck"]
    assert install[install.index("--version") + 1] == __version__
    assert "--plain-http" not in install, "HTTPS unless asked otherwise"
    sets = [install[i + 1] for i, word in enumerate(install) if word == "--set"]
    assert sets == [
        "image.repository=registry.example.com/team/lameduck/operator",
        f"image.digest={OPERATOR_DIGEST}",
        "sidecar.image.repository=registry.example.com/team/lameduck/sidecar",
        f"sidecar.image.digest={SIDECAR_DIGEST}",
    ]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param(("--dry-run", "http://127.0.0.1:5000"), "without a scheme", id="a scheme"),
        pytest.param(("--dry-run",), "usage", id="no registry"),
        pytest.param(("--dry-run", "--force", "r.example"), "unknown option", id="an unknown option"),
    ],
)
def test_bad_arguments_are_refused_saying_why(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    done = release(dist(tmp_path), *args)
    assert done.returncode == 2
    assert says in done.stderr


def test_without_make_images_it_says_to_run_it(tmp_path: Path) -> None:
    done = release(tmp_path, "--dry-run", "r.example")
    assert done.returncode == 2
    assert "make images" in done.stderr


def cluster(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """hack/cluster.sh with a run dir of the test's own: the subcommands used here touch nothing else."""
    env = dict(os.environ, LAMEDUCK_RUN_DIR=str(tmp_path))
    return subprocess.run(
        ["bash", str(REPO / "hack" / "cluster.sh"), *args], capture_output=True, text=True, env=env, check=False
    )


def test_registry_trust_lets_containerd_pull_from_a_loopback_registry_over_http_until_untrusted(
    tmp_path: Path,
) -> None:
    assert cluster(tmp_path, "registry-trust", "127.0.0.1:41234").returncode == 0
    hosts = tmp_path / "containerd" / "certs.d" / "127.0.0.1:41234" / "hosts.toml"
    text = hosts.read_text()
    assert 'server = "http://127.0.0.1:41234"' in text
    assert '[host."http://127.0.0.1:41234"]' in text
    assert 'capabilities = ["pull", "resolve"]' in text
    assert cluster(tmp_path, "registry-untrust", "127.0.0.1:41234").returncode == 0
    assert not hosts.parent.exists()


@pytest.mark.parametrize("address", ["10.0.0.1:5000", "registry.example.com:5000", "127.0.0.1", "127.0.0.1:5000/x"])
def test_registry_trust_refuses_anything_but_a_loopback_address_with_a_port(tmp_path: Path, address: str) -> None:
    done = cluster(tmp_path, "registry-trust", address)
    assert done.returncode != 0
    assert "loopback" in done.stderr
    assert not (tmp_path / "containerd" / "certs.d").exists()
