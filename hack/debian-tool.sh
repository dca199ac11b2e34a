#!/usr/bin/env bash
# Binaries from a Debian package at a pinned version, for tools the tests run (hack/nginx.sh,
# hack/prometheus.sh). The package is only downloaded (apt-get download) and unpacked
# (dpkg-deb -x), never installed: installing nginx or prometheus would start a service. Each
# PATH-IN-PACKAGE (e.g. usr/sbin/nginx) lands, under its base name, in the directory it prints:
#   ${LAMEDUCK_CACHE:-${XDG_CACHE_HOME:-~/.cache}/lameduck}/PACKAGE/VERSION
# A second run with the same version downloads nothing.
#
# Usage: hack/debian-tool.sh [--hint TEXT] [--version-flag FLAG] PACKAGE VERSION PATH-IN-PACKAGE...
#   --hint TEXT          said when apt-get is missing: how else to supply the tool
#   --version-flag FLAG  logs what the first binary prints for FLAG once unpacked (that it runs here)
# Env: LAMEDUCK_CACHE, FORCE=1 (download and unpack again)
set -euo pipefail

usage() { echo "usage: $0 [--hint TEXT] [--version-flag FLAG] PACKAGE VERSION PATH-IN-PACKAGE..." >&2; exit 2; }

hint=""
version_flag=""
while [[ "${1:-}" == --* ]]; do
  [[ $# -ge 2 ]] || usage
  case "$1" in
    --hint) hint="$2" ;;
    --version-flag) version_flag="$2" ;;
    *) usage ;;
  esac
  shift 2
done
[[ $# -ge 3 ]] || usage
PACKAGE="$1" VERSION="$2"
shift 2
PATHS=("$@")
DIR="${LAMEDUCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lameduck}/$PACKAGE/$VERSION"

log() { printf '[%s %s] %s\n' "$PACKAGE" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

unpacked=1
for path in "${PATHS[@]}"; do
  [[ -x "$DIR/$(basename "$path")" ]] || unpacked=""
done
if [[ -z "${FORCE:-}" && -n "$unpacked" ]]; then
  echo "$DIR"
  exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found${hint:+: $hint}"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
log "downloading $PACKAGE=$VERSION (apt-get download; not installed)"
if ! apt-get download -qq -o APT::Sandbox::User="$(id -un)" "$PACKAGE=$VERSION" >&2; then
  log "not in the package lists: apt-get update, then again"
  apt-get update -qq >&2 || die "apt-get update failed"
  apt-get download -qq -o APT::Sandbox::User="$(id -un)" "$PACKAGE=$VERSION" >&2 || die "apt-get download $PACKAGE=$VERSION failed"
fi
deb=("${PACKAGE}"_*.deb)
[[ -f "${deb[0]}" ]] || die "apt-get download left no .deb in $tmp"
dpkg-deb -x "${deb[0]}" root
for path in "${PATHS[@]}"; do
  [[ -x "root/$path" ]] || die "the package has no $path"
done
mkdir -p "$DIR"
install -m 0755 "${PATHS[@]/#/root/}" "$DIR/"
if [[ -n "$version_flag" ]]; then
  log "$("$DIR/$(basename "${PATHS[0]}")" "$version_flag" 2>&1 | head -n1) in $DIR"
else
  log "unpacked ${PATHS[*]} in $DIR"
fi
echo "$DIR"
