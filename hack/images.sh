#!/usr/bin/env bash
# `make images`: lameduck's release artifacts, built here without a registry, in $DIST
# (default ${LAMEDUCK_CACHE:-~/.cache/lameduck}/dist/v<appVersion>):
#   operator.oci.tar, sidecar.oci.tar       the two images as OCI archives (hack/build-images.sh,
#                                           the Dockerfile's stages; not imported into any cluster)
#   operator.spdx.json, sidecar.spdx.json   an SBOM of each image (syft, SPDX 2.3 JSON): the Debian
#                                           packages of the base and the Python packages of the venv
#   images.json                             per image: repository, tag, manifest digest, archive
#                                           and its sha256, SBOM; the seconds each step took
#   lameduck-<version>.tgz                  `helm package` of charts/lameduck
# hack/release.sh pushes them to an OCI registry (docs/release.md).
#
# crane, syft and helm come from their Go modules (hack/build-k8s.sh crane syft helm; cached by
# version). Env: LAMEDUCK_DIST (the output dir), LAMEDUCK_CACHE, and build-images.sh's.
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK/.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HACK/common.sh"

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# shellcheck source-path=SCRIPTDIR source=release-dist.sh
. "$HACK/release-dist.sh"
[[ -n "$VERSION" ]] || die "no appVersion in charts/lameduck/Chart.yaml"
IMAGES="$CACHE_ROOT/images"
mkdir -p "$DIST"
T0=$SECONDS
timings="$DIST/.timings"
: >"$timings"
step() { echo "$1 $((SECONDS - $2))" >>"$timings"; }  # NAME START: seconds since START

t=$SECONDS
bash "$HACK/build-k8s.sh" crane syft helm >&2
step tools "$t"

# Each release image is labelled with its version and commit (hack/oci_labels.py says why not in
# the build). The labels also give it an image ID of its own: kubelet >= 1.35
# (KubeletEnsureSecretPulledImages) treats an image ID it has pulled under one name as not
# preloaded under any other, so a release image identical to a local :dev build would stop the
# pods that run the :dev one with pull policy Never (docs/release.md).
REVISION="$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
for image in operator sidecar; do
  t=$SECONDS
  (cd "$REPO_ROOT" && bash "$HACK/build-images.sh" --no-import --target "$image" "lameduck/$image:$VERSION=Dockerfile")
  cp "$IMAGES/lameduck_${image}_$VERSION.oci.tar" "$DIST/$image.oci.tar"
  python3 "$HACK/oci_labels.py" "$DIST/$image.oci.tar" "org.opencontainers.image.title=lameduck-$image" \
    "org.opencontainers.image.version=$VERSION" "org.opencontainers.image.revision=$REVISION" >/dev/null
  step "build_$image" "$t"
  t=$SECONDS
  log "$image: SBOM (syft, SPDX JSON)"
  # no update check: syft would otherwise ask its vendor's server for a newer release
  SYFT_CHECK_FOR_APP_UPDATE=false "$SYFT_BIN/syft" scan --quiet "oci-archive:$DIST/$image.oci.tar" \
    --source-name "lameduck/$image" --source-version "$VERSION" -o "spdx-json=$DIST/$image.spdx.json"
  step "sbom_$image" "$t"
done

t=$SECONDS
rm -f "$DIST"/lameduck-*.tgz
"$HELM_BIN/helm" package "$REPO_ROOT/charts/lameduck" -d "$DIST" >&2
step chart "$t"
step total "$T0"

python3 - "$DIST" "$VERSION" <<'PY'
import hashlib, json, sys, tarfile
from pathlib import Path

dist, version = Path(sys.argv[1]), sys.argv[2]
images = {}
for name in ("operator", "sidecar"):
    archive = dist / f"{name}.oci.tar"
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))
    manifests = index["manifests"]
    if len(manifests) != 1:
        sys.exit(f"{archive}: {len(manifests)} manifests, want one image")
    images[name] = {
        "repository": f"lameduck/{name}",
        "tag": version,
        "digest": manifests[0]["digest"],
        "mediaType": manifests[0]["mediaType"],
        "archive": archive.name,
        "archiveSha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        "sbom": f"{name}.spdx.json",
        "sbomFormat": "SPDX-2.3+json",
    }
timings = dict(line.split() for line in (dist / ".timings").read_text().splitlines())
manifest = {
    "version": version,
    "chart": f"lameduck-{version}.tgz",
    "images": images,
    "seconds": {k: int(v) for k, v in timings.items()},
}
(dist / "images.json").write_text(json.dumps(manifest, indent=2) + "\n")
PY
rm -f "$timings"
log "done in $((SECONDS - T0)) s: $DIST"
cat "$DIST/images.json"
