"""The images the harness runs: lameduck's operator and sidecar, the demo app and the L7
proxies (HAProxy, nginx), built into the local cluster (hack/build-images.sh); the names a
test cluster knows them by."""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness import REPO

# A tiny image that runs forever; the local harness imports it as the pod sandbox image.
PAUSE_IMAGE = os.environ.get("LAMEDUCK_E2E_PAUSE_IMAGE", "registry.k8s.io/pause:3.10.1")
# Our images as the local harness builds them (hack/build-images.sh); on another cluster,
# load your builds (e.g. `kind load docker-image`) and name them here.
SIDECAR_IMAGE = os.environ.get("LAMEDUCK_E2E_SIDECAR_IMAGE", "docker.io/lameduck/sidecar:dev")
DEMO_IMAGE = os.environ.get("LAMEDUCK_E2E_DEMO_IMAGE", "docker.io/lameduck/demo-app:dev")
OPERATOR_IMAGE = os.environ.get("LAMEDUCK_E2E_OPERATOR_IMAGE", "docker.io/lameduck/operator:dev")
# The demo image's interpreter (the venv of examples/demo-app/Dockerfile): tests run scripts of
# their own in pods of that image.
DEMO_PYTHON = "/opt/demo/bin/python3"


@dataclass(frozen=True)
class ImageSource:
    """What an image is built from: the context, its Dockerfile and the stage built (None: the
    last), and the paths in the context whose contents decide whether to build it again."""

    context: Path
    dockerfile: str
    inputs: tuple[str, ...]
    target: str | None = None


IMAGE_SOURCES = {
    # requirements/: the hashed locks the Dockerfile installs from
    "lameduck/sidecar:dev": ImageSource(REPO, "Dockerfile", ("pyproject.toml", "requirements", "sidecar"), "sidecar"),
    "lameduck/operator:dev": ImageSource(
        REPO, "Dockerfile", ("pyproject.toml", "requirements", "operator", "sidecar"), "operator"
    ),
    "lameduck/demo-app:dev": ImageSource(REPO / "examples" / "demo-app", "Dockerfile", (".",)),
    "lameduck/l7proxy:dev": ImageSource(REPO / "bench" / "l7proxy", "Dockerfile", (".",)),
    "lameduck/nginxproxy:dev": ImageSource(REPO / "bench" / "nginxproxy", "Dockerfile", (".",)),
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


def _stamps() -> Path:
    return Path(os.environ.get("LAMEDUCK_CACHE", Path.home() / ".cache" / "lameduck")) / "images"


def built_image_id(ref: str) -> str | None:
    """The ID of the archive build_images last built for ref (docker.io/ or not), if it built one here."""
    name = ref.removeprefix("docker.io/").replace("/", "_").replace(":", "_")
    archive_id = _stamps() / f"{name}.oci.tar.id"
    return archive_id.read_text().strip() if archive_id.exists() else None


def build_images() -> None:
    """Build the sidecar, operator, demo and L7 proxy images into the local cluster; an image whose
    inputs are unchanged since its last build is only imported again."""
    script = str(REPO / "hack" / "build-images.sh")
    stamps = _stamps()
    stamps.mkdir(parents=True, exist_ok=True)
    for ref, source in IMAGE_SOURCES.items():
        name = ref.replace("/", "_").replace(":", "_")
        stamp, archive_id = stamps / f"{name}.inputs", stamps / f"{name}.oci.tar.id"
        digest = _inputs_digest(source.context, source.dockerfile, source.inputs)
        spec = f"{ref}={source.context}"
        # The stamp names the archive it was written for: an archive another checkout built
        # into the same cache since (same name, other inputs) is built again, not imported.
        if stamp.exists() and archive_id.exists() and stamp.read_text() == f"{digest} {archive_id.read_text().strip()}":
            subprocess.run(["bash", script, "--import-only", spec], check=True, timeout=600)
            continue
        target = ["--target", source.target] if source.target else []
        subprocess.run(["bash", script, "--dockerfile", source.dockerfile, *target, spec], check=True, timeout=1800)
        stamp.write_text(f"{digest} {archive_id.read_text().strip()}" if archive_id.exists() else digest)


def image_values(image: str) -> tuple[str, str]:
    repository, _, tag = image.rpartition(":")
    return (repository, tag) if repository and "/" not in tag else (image, "latest")
