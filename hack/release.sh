#!/usr/bin/env bash
# Push what `make images` built to an OCI registry, and print how to install it from there.
#
#   hack/release.sh [--dry-run] [--plain-http] REGISTRY
#     REGISTRY   host[:port][/path], e.g. registry.example.com/team or 127.0.0.1:5000
#     --plain-http   the registry speaks HTTP, not HTTPS (crane --insecure, helm --plain-http)
#     --dry-run      print every command instead of running it (needs neither crane nor helm)
#
# From $LAMEDUCK_DIST (default ${LAMEDUCK_CACHE:-~/.cache/lameduck}/dist/v<appVersion>), images.json:
#   1. each image's OCI archive -> REGISTRY/lameduck/<name>:<version> (`crane push` of its OCI
#      layout); the digest the registry answers must be the one images.json recorded
#   2. the chart -> oci://REGISTRY/charts/lameduck:<version> (`helm push`)
#   3. prints, last on stdout, the `helm install` line that takes the chart from REGISTRY and
#      references both images by digest (image.digest, sidecar.image.digest).
# Log in first where the registry wants it (`crane auth login`, `helm registry login`).
# crane and helm: $CRANE / $HELM, else the ones hack/build-k8s.sh builds (cached by version).
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HACK/common.sh"

log() { printf '[release %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

dry=0; plain=0; registry=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --plain-http) plain=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) [[ -z "$registry" ]] || die "one REGISTRY only"; registry="${1%/}" ;;
  esac
  shift
done
[[ -n "$registry" ]] || die "usage: hack/release.sh [--dry-run] [--plain-http] REGISTRY"
[[ "$registry" != *://* ]] || die "REGISTRY is host[:port][/path], without a scheme: $registry"

# shellcheck source-path=SCRIPTDIR source=release-dist.sh
. "$HACK/release-dist.sh"
[[ -f "$DIST/images.json" ]] || die "no $DIST/images.json: run make images first"

# name repository tag digest archive, one image a line; the chart's file name last
read_manifest() {
  python3 - "$DIST/images.json" <<'PY'
import json, sys
manifest = json.load(open(sys.argv[1]))
for name, image in sorted(manifest["images"].items()):
    print(name, image["repository"], image["tag"], image["digest"], image["archive"])
print("chart", manifest["chart"])
PY
}

run() {  # print the command; run it unless --dry-run (its output to stderr: stdout is for the install line)
  if [[ $dry == 1 ]]; then printf '+ %s\n' "$*"; else log "\$ $*"; "$@" >&2; fi
}

if [[ $dry == 0 ]]; then
  [[ -n "${CRANE:-}" && -n "${HELM:-}" ]] || bash "$HACK/build-k8s.sh" crane helm >&2
fi
CRANE="${CRANE:-$CRANE_BIN/crane}"
HELM="${HELM:-$HELM_BIN/helm}"
crane_flags=(); helm_flags=()
if [[ $plain == 1 ]]; then crane_flags=(--insecure); helm_flags=(--plain-http); fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
declare -A digest_of
chart=""
while read -r name repository tag digest archive; do
  if [[ "$name" == chart ]]; then chart="$repository"; continue; fi
  target="$registry/$repository:$tag"
  layout="$work/$name"
  run mkdir -p "$layout"
  run tar -xf "$DIST/$archive" -C "$layout"
  if [[ $dry == 1 ]]; then
    run "$CRANE" push "${crane_flags[@]}" "$layout" "$target"
  else
    log "\$ $CRANE push ${crane_flags[*]} $layout $target"
    pushed="$("$CRANE" push "${crane_flags[@]}" "$layout" "$target")"
    [[ "${pushed##*@}" == "$digest" ]] ||
      die "$target: the registry has ${pushed##*@}, images.json says $digest"
    log "  $pushed"
  fi
  digest_of[$name]="$digest"
done < <(read_manifest)
[[ -n "$chart" && -n "${digest_of[operator]:-}" && -n "${digest_of[sidecar]:-}" ]] || die "images.json is incomplete"

run "$HELM" push "$DIST/$chart" "oci://$registry/charts" "${helm_flags[@]}"

install=(helm install lameduck "oci://$registry/charts/lameduck" --version "$VERSION"
  --namespace lameduck-system --create-namespace "${helm_flags[@]}"
  --set "image.repository=$registry/lameduck/operator" --set "image.digest=${digest_of[operator]}"
  --set "sidecar.image.repository=$registry/lameduck/sidecar" --set "sidecar.image.digest=${digest_of[sidecar]}")
log "pushed; install with:"
echo "${install[*]}"
