#!/usr/bin/env bash
# nginx for the rollout benchmark's configuration test (bench/tests/test_nginxproxy.py: `nginx -t`
# on the rendered configuration), from Debian's nginx package at NGINX_DEB_VERSION
# (hack/versions.env), the package bench/nginxproxy/Dockerfile installs. Only downloaded and
# unpacked, never installed (installing it would start a web server). Prints the binary's path:
#   ${LAMEDUCK_CACHE:-${XDG_CACHE_HOME:-~/.cache}/lameduck}/nginx/$NGINX_DEB_VERSION/nginx
# A second run with the same version downloads nothing.
#
# Usage: hack/nginx.sh        Env: NGINX_DEB_VERSION, LAMEDUCK_CACHE, FORCE=1
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$HACK/versions.env"
DIR="${LAMEDUCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lameduck}/nginx/$NGINX_DEB_VERSION"

log() { printf '[nginx %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -z "${FORCE:-}" && -x "$DIR/nginx" ]]; then
  echo "$DIR/nginx"
  exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found: point LAMEDUCK_NGINX at an nginx $NGINX_DEB_VERSION"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
log "downloading nginx=$NGINX_DEB_VERSION (apt-get download; not installed)"
if ! apt-get download -qq -o APT::Sandbox::User="$(id -un)" "nginx=$NGINX_DEB_VERSION" >&2; then
  log "not in the package lists: apt-get update, then again"
  apt-get update -qq >&2 || die "apt-get update failed"
  apt-get download -qq -o APT::Sandbox::User="$(id -un)" "nginx=$NGINX_DEB_VERSION" >&2 || die "apt-get download nginx=$NGINX_DEB_VERSION failed"
fi
deb=(nginx_*.deb)
[[ -f "${deb[0]}" ]] || die "apt-get download left no .deb in $tmp"
dpkg-deb -x "${deb[0]}" root
[[ -x root/usr/sbin/nginx ]] || die "the package has no usr/sbin/nginx"
mkdir -p "$DIR"
install -m 0755 root/usr/sbin/nginx "$DIR/nginx"
log "$("$DIR/nginx" -v 2>&1 | head -n1) in $DIR"
echo "$DIR/nginx"
