"""Add labels to the one image of an OCI archive (an OCI image layout in a tar), in place.

    python3 hack/oci_labels.py ARCHIVE KEY=VALUE ...

hack/images.sh labels each release image with its version and commit here rather than in the
build: buildah 1.28's layer cache ignores build-arg values (a LABEL from an ARG keeps the first
value it was built with), and its `--label` lands on the Dockerfile's last stage, not on the
`--target` one. Only the config, the manifest and index.json change; the layers are copied as
they are. Standard library only: it runs with the host's python3.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any


def _blob_name(digest: str) -> str:
    algorithm, hexdigest = digest.split(":", 1)
    return f"blobs/{algorithm}/{hexdigest}"


def _encode(document: dict[str, Any]) -> tuple[bytes, str]:
    data = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def relabel(archive: Path, labels: dict[str, str]) -> str:
    """Set `labels` on the archive's image; returns the image's new manifest digest."""
    with tarfile.open(archive) as tar:
        members = {m.name.removeprefix("./"): (m, tar.extractfile(m)) for m in tar.getmembers()}
        contents = {name: (member, file.read() if file else None) for name, (member, file) in members.items()}
    index = json.loads(contents["index.json"][1] or b"{}")
    if len(index.get("manifests", [])) != 1:
        raise ValueError(f"{archive}: {len(index.get('manifests', []))} manifests in index.json, want one image")
    old_manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads(contents[_blob_name(old_manifest_digest)][1] or b"{}")
    old_config_digest = manifest["config"]["digest"]
    config = json.loads(contents[_blob_name(old_config_digest)][1] or b"{}")

    config.setdefault("config", {})
    config["config"]["Labels"] = {**(config["config"].get("Labels") or {}), **labels}
    config_data, config_digest = _encode(config)
    manifest["config"] = {**manifest["config"], "digest": config_digest, "size": len(config_data)}
    manifest_data, manifest_digest = _encode(manifest)
    index["manifests"][0] = {**index["manifests"][0], "digest": manifest_digest, "size": len(manifest_data)}
    index_data, _ = _encode(index)

    replaced = {"index.json", _blob_name(old_manifest_digest), _blob_name(old_config_digest)}
    written = {_blob_name(config_digest): config_data, _blob_name(manifest_digest): manifest_data}
    written["index.json"] = index_data
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w") as out:
        for name, (member, data) in contents.items():
            if name in replaced or name in written:
                continue
            out.addfile(member, io.BytesIO(data) if data is not None else None)
        for name, data in written.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            out.addfile(info, io.BytesIO(data))
    partial.replace(archive)  # whole or not at all
    return manifest_digest


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not all("=" in pair for pair in argv[1:]):
        print("usage: oci_labels.py ARCHIVE KEY=VALUE ...", file=sys.stderr)
        return 2
    labels = dict(pair.split("=", 1) for pair in argv[1:])
    print(relabel(Path(argv[0]), labels))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
