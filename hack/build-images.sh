#!/usr/bin/env bash
# Build container images offline and load them into the harness's containerd.
#
#   hack/build-images.sh [options] NAME:TAG=SOURCE ...
#   SOURCE is one of
#     DIR                      context DIR, DIR/Dockerfile (like `docker build DIR`)
#     FILE                     Dockerfile FILE, context . (like `docker build -f FILE .`)
#     FILE@CONTEXT             Dockerfile FILE, context CONTEXT
#   e.g. (from the repo root)
#     hack/build-images.sh --target operator lameduck/operator:dev=Dockerfile
#     hack/build-images.sh --target sidecar lameduck/sidecar:dev=Dockerfile
#     hack/build-images.sh lameduck/demo-app:dev=examples/demo-app
#
# 1. A Python base image, from `debootstrap --variant=minbase` (cached per suite), committed
#    with buildah as $BASE_IMAGE (default localhost/lameduck/python-base:$BASE_SUITE).
# 2. Each Dockerfile is built with `--build-arg BASE=$BASE_IMAGE` (declare
#    `ARG BASE` before `FROM ${BASE}`) and `--build-arg PIP_CERT=<CA bundle>`: pip reaches
#    PyPI here only through a proxy whose CA is in the host's bundle, so a stage that runs
#    pip must declare `ARG PIP_CERT`. The host bundle is copied into the base image at
#    /usr/local/share/lameduck/build-ca-bundle.crt (local test images only), because
#    buildah 1.28 skips its layer cache for every build given a `-v` mount; BUILD_CA_MOUNT=1
#    mounts /etc/ssl/certs/ca-certificates.crt read-only instead (no layer cache then).
# 3. Each image is written to $LAMEDUCK_CACHE/images/NAME_TAG.oci.tar and imported into the
#    cluster's containerd (namespace k8s.io) when hack/cluster.sh runs it. `name:tag` is
#    stored normalised (app:dev -> docker.io/library/app:dev, me/app:dev -> docker.io/me/app:dev),
#    as the CRI looks names up; use imagePullPolicy: Never in pod specs.
#
# Options: --no-import (only build/export)   --import-only (import cached archives)
#          --base-only (only the base image) --dockerfile NAME (default Dockerfile)
#          --target STAGE (the Dockerfile's stage to build, for every image given; default its last)
# Env: BASE_SUITE (versions.env), LAMEDUCK_CACHE, LAMEDUCK_RUN_DIR, DEBIAN_MIRROR,
#      BUILDAH_EXTRA (extra args for `buildah bud`), BUILD_CA_MOUNT=1 (see 2.)
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HACK/common.sh"

CTRD_SOCK="$RUN/containerd/containerd.sock"
IMAGES="$CACHE_ROOT/images"
ROOTFS_DIR="$CACHE_ROOT/base/$BASE_SUITE-python"
BASE_IMAGE="${BASE_IMAGE:-localhost/lameduck/python-base:$BASE_SUITE}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
BUILD_CA=/usr/local/share/lameduck/build-ca-bundle.crt   # the host bundle, inside the base image

# buildah: vfs storage of our own under the cache, chroot isolation (no daemon, no userns)
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
BUILDAH=(buildah --root "$CACHE_ROOT/buildah/storage" --runroot /run/lameduck-buildah --storage-driver vfs)

log() { printf '[build-images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, buildah chroot)"
mkdir -p "$IMAGES" "$CACHE_ROOT/logs"
LOGF="$CACHE_ROOT/logs/build-images.log"

do_import=1; import_only=0; base_only=0; dockerfile=Dockerfile; target=""
specs=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-import) do_import=0 ;;
    --import-only) import_only=1 ;;
    --base-only) base_only=1 ;;
    --dockerfile) dockerfile="$2"; shift ;;
    --target) target="$2"; shift ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *=*) specs+=("$1") ;;
    *) die "bad argument '$1' (want NAME:TAG=DIR, NAME:TAG=FILE or NAME:TAG=FILE@CONTEXT)" ;;
  esac
  shift
done

# docker-style normalisation, as the CRI does for pod image names:
# app:dev -> docker.io/library/app:dev, me/app:dev -> docker.io/me/app:dev
normalize_ref() {
  local r="$1" first="${1%%/*}"
  if [[ "$r" != */* ]]; then
    r="docker.io/library/$r"
  elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then
    r="docker.io/$r"
  fi
  echo "$r"
}

archive_of() { local n="${1//\//_}"; echo "$IMAGES/${n//:/_}.oci.tar"; }

ensure_base() {
  if [[ ! -f "$ROOTFS_DIR/.done" ]]; then
    command -v debootstrap >/dev/null || die "debootstrap missing: run hack/install-deps.sh"
    log "debootstrap $BASE_SUITE (minbase + python3) into $ROOTFS_DIR (about a minute; log: $LOGF)"
    rm -rf "$ROOTFS_DIR"; mkdir -p "$ROOTFS_DIR"
    nice -n 10 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      "$BASE_SUITE" "$ROOTFS_DIR/rootfs" "$DEBIAN_MIRROR" >>"$LOGF" 2>&1 ||
      { tail -n 20 "$LOGF" >&2; die "debootstrap failed"; }
    # slim it: apt lists/caches, docs and man pages are not needed in an image
    rm -rf "$ROOTFS_DIR/rootfs/var/cache/apt/"*.bin "$ROOTFS_DIR/rootfs/var/cache/apt/archives/"*.deb \
      "$ROOTFS_DIR/rootfs/var/lib/apt/lists/"* "$ROOTFS_DIR/rootfs/usr/share/doc/"* \
      "$ROOTFS_DIR/rootfs/usr/share/man/"* "$ROOTFS_DIR/rootfs/usr/share/locale/"*
    date -u +%FT%TZ >"$ROOTFS_DIR/.done"
  fi
  local stamp
  local ca_sum=none
  [[ -f "$CA_BUNDLE" ]] && ca_sum="$(sha256sum <"$CA_BUNDLE")"
  stamp="$ROOTFS_DIR/.image-$(sha256sum <<<"$BASE_IMAGE$(<"$ROOTFS_DIR/.done")$ca_sum" | cut -c1-12)"
  if [[ -f "$stamp" ]] && "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image $BASE_IMAGE: cached"
    return
  fi
  log "committing base image $BASE_IMAGE"
  local c
  c="$("${BUILDAH[@]}" from --name lameduck-base-work scratch 2>>"$LOGF" ||
       { "${BUILDAH[@]}" rm lameduck-base-work >/dev/null 2>&1; "${BUILDAH[@]}" from --name lameduck-base-work scratch; })"
  "${BUILDAH[@]}" copy "$c" "$ROOTFS_DIR/rootfs" / >>"$LOGF" 2>&1
  if [[ -f "$CA_BUNDLE" ]]; then
    "${BUILDAH[@]}" copy --chmod 0644 "$c" "$CA_BUNDLE" "$BUILD_CA" >>"$LOGF" 2>&1
  fi
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --env PYTHONUNBUFFERED=1 --cmd '["python3"]' \
    --label org.opencontainers.image.description="lameduck offline python base ($BASE_SUITE)" "$c"
  "${BUILDAH[@]}" commit --rm "$c" "$BASE_IMAGE" >>"$LOGF" 2>&1
  rm -f "$ROOTFS_DIR"/.image-*
  touch "$stamp"
}

import_archive() {  # archive
  if [[ ! -S "$CTRD_SOCK" ]]; then
    log "cluster containerd not running ($CTRD_SOCK); skipped import of $(basename "$1") - run hack/cluster.sh up, then $0 --import-only NAME:TAG=DIR"
    return 0
  fi
  ctr --address "$CTRD_SOCK" -n k8s.io images import --all-platforms "$1" >>"$LOGF" 2>&1 ||
    { tail -n 5 "$LOGF" >&2; die "import of $1 failed"; }
}

build_one() {  # NAME:TAG=SOURCE
  local ref="${1%%=*}" src="${1#*=}" archive file ctx
  [[ "${ref##*/}" == *:* ]] || ref="$ref:latest"
  archive="$(archive_of "$ref")"
  if [[ "$src" == *@* ]]; then
    file="${src%%@*}"; ctx="${src#*@}"
  elif [[ -d "$src" ]]; then
    file="$src/$dockerfile"; ctx="$src"
  else
    file="$src"; ctx="."
  fi
  if [[ $import_only == 0 ]]; then
    [[ -f "$file" ]] || die "no Dockerfile $file (for $ref)"
    [[ -d "$ctx" ]] || die "no build context $ctx (for $ref)"
    log "building $ref from $file (context $ctx)"
    local t0=$SECONDS
    local ca_args=(--build-arg "PIP_CERT=$BUILD_CA") target_args=()
    [[ -z "$target" ]] || target_args=(--target "$target")
    if [[ -n "${BUILD_CA_MOUNT:-}" ]]; then
      ca_args=(--build-arg "PIP_CERT=$CA_BUNDLE" -v "$CA_BUNDLE:$CA_BUNDLE:ro")
    fi
    # shellcheck disable=SC2086
    "${BUILDAH[@]}" bud --isolation chroot --layers --pull-never \
      --build-arg "BASE=$BASE_IMAGE" "${ca_args[@]}" "${target_args[@]}" ${BUILDAH_EXTRA:-} \
      -f "$file" -t "$ref" "$ctx" >"$LOGF.one" 2>&1 ||
      { cat "$LOGF.one" >>"$LOGF"; tail -n 25 "$LOGF.one" >&2; die "build of $ref failed (full log: $LOGF)"; }
    cat "$LOGF.one" >>"$LOGF"
    mkdir -p "$KEEP"
    sed -n 's/^--> \(Using cache \)\{0,1\}\([0-9a-f]\{11,\}\)$/\2/p' "$LOGF.one" >"$KEEP/${ref//[\/:]/_}"
    rm -f "$LOGF.one"
    local id
    id="$("${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$ref" 2>/dev/null || true)"
    if [[ -n "$id" && -f "$archive" && -f "$archive.id" && "$(<"$archive.id")" == "$id" ]]; then
      log "  $ref unchanged (image $id); keeping $archive"
    else
      rm -f "$archive" "$archive.id"
      "${BUILDAH[@]}" push --disable-compression "$ref" "oci-archive:$archive:$(normalize_ref "$ref")" >>"$LOGF" 2>&1 ||
        { tail -n 5 "$LOGF" >&2; die "export of $ref failed"; }
      [[ -z "$id" ]] || echo "$id" >"$archive.id"
    fi
    log "  $ref built in $((SECONDS - t0))s -> $archive"
  fi
  [[ -f "$archive" ]] || die "no archive $archive for $ref (build it first)"
  if [[ $do_import == 1 ]]; then
    import_archive "$archive"
    log "  $ref imported into the cluster's containerd (k8s.io)"
  fi
}

# vfs storage copies every layer in full, so untagged leftovers of earlier builds add up
# fast (5 GB after a few dozen builds). Each build records the intermediate images it made
# or reused (its layer cache, build stages included) in $KEEP/<ref>; everything untagged
# and not recorded there is removed.
KEEP="$CACHE_ROOT/buildah/keep"
prune_storage() {
  local keep id name n=0
  keep="$(cat "$KEEP"/* 2>/dev/null || true)"
  while read -r id name; do
    [[ -n "$id" && "$name" == "<none>:<none>" ]] || continue
    grep -q "^${id:0:11}" <<<"$keep" && continue
    "${BUILDAH[@]}" rmi "$id" >/dev/null 2>&1 && n=$((n + 1))
  done < <("${BUILDAH[@]}" images -a --format '{{.ID}} {{.Name}}:{{.Tag}}' 2>/dev/null)
  ((n == 0)) || log "pruned $n unused image(s) from the buildah storage"
}

# one build at a time (buildah on vfs is I/O-bound anyway, and the prune must not race a build)
mkdir -p "$CACHE_ROOT/buildah"
exec 8>"$CACHE_ROOT/buildah/.lock"
flock -w 1800 8 || die "another build-images.sh holds $CACHE_ROOT/buildah/.lock"

T0=$SECONDS
[[ $import_only == 1 ]] || ensure_base
[[ $base_only == 1 ]] && { log "base image ready: $BASE_IMAGE"; exit 0; }
[[ ${#specs[@]} -gt 0 ]] || die "nothing to build: pass NAME:TAG=DIR arguments"
for s in "${specs[@]}"; do build_one "$s"; done
[[ $import_only == 1 ]] || prune_storage
log "done in $((SECONDS - T0))s"
