#!/usr/bin/env bash
# promtool and prometheus for the alert rules' unit tests (tests/unit/test_alerts.py), from
# Debian's prometheus package at PROMETHEUS_DEB_VERSION (hack/versions.env). The package is only
# downloaded and unpacked, never installed: installing it would start a Prometheus service.
# Prints the directory that holds both binaries:
#   ${LAMEDUCK_CACHE:-${XDG_CACHE_HOME:-~/.cache}/lameduck}/prometheus/$PROMETHEUS_DEB_VERSION
# A second run with the same version downloads nothing.
#
# Usage: hack/prometheus.sh        Env: PROMETHEUS_DEB_VERSION, LAMEDUCK_CACHE, FORCE=1
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$HACK/versions.env"
DIR="${LAMEDUCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lameduck}/prometheus/$PROMETHEUS_DEB_VERSION"

log() { printf '[prometheus %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -z "${FORCE:-}" && -x "$DIR/promtool" && -x "$DIR/prometheus" ]]; then
  echo "$DIR"
  exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found: install promtool $PROMETHEUS_DEB_VERSION yourself and point LAMEDUCK_PROMTOOL at it"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
log "downloading prometheus=$PROMETHEUS_DEB_VERSION (apt-get download; not installed)"
if ! apt-get download -qq -o APT::Sandbox::User="$(id -un)" "prometheus=$PROMETHEUS_DEB_VERSION" >&2; then
  log "not in the package lists: apt-get update, then again"
  apt-get update -qq >&2 || die "apt-get update failed"
  apt-get download -qq -o APT::Sandbox::User="$(id -un)" "prometheus=$PROMETHEUS_DEB_VERSION" >&2 || die "apt-get download prometheus=$PROMETHEUS_DEB_VERSION failed"
fi
deb=(prometheus_*.deb)
[[ -f "${deb[0]}" ]] || die "apt-get download left no .deb in $tmp"
dpkg-deb -x "${deb[0]}" root
for bin in prometheus promtool; do
  [[ -x "root/usr/bin/$bin" ]] || die "the package has no usr/bin/$bin"
done
mkdir -p "$DIR"
install -m 0755 root/usr/bin/prometheus root/usr/bin/promtool "$DIR/"
log "$("$DIR/promtool" --version 2>&1 | head -n1) in $DIR"
echo "$DIR"
