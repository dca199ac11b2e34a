"""hack/oci_labels.py: the labels land in the image's config, every blob is still named by its
digest, the layers are untouched, and an archive of more than one image is refused."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from harness import REPO


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oci_labels", REPO / "hack" / "oci_labels.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def write_archive(path: Path, images: int = 1) -> dict[str, bytes]:
    """A minimal OCI layout (as `buildah push oci-archive:` writes) with `images` images."""
    layer_digest, layer = blob(b"a layer's bytes")
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "blobs/sha256/" + layer_digest[7:]: layer}
    manifests = []
    for n in range(images):
        config = {"architecture": "amd64", "config": {"Labels": {"kept": "yes", "n": str(n)}}, "rootfs": {}}
        config_digest, config_data = blob(json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest},
            "layers": [{"digest": layer_digest, "size": len(layer)}],
        }
        manifest_digest, manifest_data = blob(json.dumps(manifest).encode())
        files["blobs/sha256/" + config_digest[7:]] = config_data
        files["blobs/sha256/" + manifest_digest[7:]] = manifest_data
        manifests.append({"digest": manifest_digest, "annotations": {"org.opencontainers.image.ref.name": "x:1"}})
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": manifests}).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return files


def read_archive(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: f.read() for m in tar.getmembers() if (f := tar.extractfile(m))}


def document(files: dict[str, bytes], digest: str) -> Any:
    return json.loads(files["blobs/sha256/" + digest.removeprefix("sha256:")])


def test_the_labels_land_in_the_config_and_every_blob_is_named_by_its_digest(tmp_path: Path) -> None:
    archive = tmp_path / "image.oci.tar"
    before = write_archive(archive)
    new_digest = load_tool().relabel(archive, {"org.opencontainers.image.version": "1.2.3", "kept": "no"})
    after = read_archive(archive)

    for name, data in after.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1], f"{name} is not its digest"
    index = json.loads(after["index.json"])
    assert [m["digest"] for m in index["manifests"]] == [new_digest]
    assert index["manifests"][0]["annotations"] == {"org.opencontainers.image.ref.name": "x:1"}
    manifest = document(after, new_digest)
    config = document(after, manifest["config"]["digest"])
    assert manifest["config"]["size"] == len(after["blobs/sha256/" + manifest["config"]["digest"][7:]])
    assert config["config"]["Labels"] == {"kept": "no", "n": "0", "org.opencontainers.image.version": "1.2.3"}
    layer = manifest["layers"][0]["digest"]
    assert after["blobs/sha256/" + layer[7:]] == before["blobs/sha256/" + layer[7:]]
    old_manifest = json.loads(before["index.json"])["manifests"][0]["digest"]
    assert "blobs/sha256/" + old_manifest[7:] not in after, "the replaced manifest is not left behind"


def test_an_archive_of_two_images_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    archive = tmp_path / "two.oci.tar"
    write_archive(archive, images=2)
    before = archive.read_bytes()
    with pytest.raises(ValueError, match="2 manifests"):
        load_tool().relabel(archive, {"a": "b"})
    assert archive.read_bytes() == before


def test_the_command_line_wants_an_archive_and_key_value_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_tool().main(["only-an-archive"]) == 2
    assert load_tool().main(["a.tar", "no-equals-sign"]) == 2
    assert "usage" in capsys.readouterr().err
