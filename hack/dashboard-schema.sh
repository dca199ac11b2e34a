#!/usr/bin/env bash
# TypeScript and Grafana's published dashboard types (@grafana/schema and the foundation SDK's
# Prometheus query; all Apache-2.0) for the dashboard's type check
# (tests/unit/test_dashboard_schema.py), installed by `npm ci` from
# tests/dashboard_schema/package-lock.json into a cache keyed by that lock file's hash:
#   ${LAMEDUCK_CACHE:-${XDG_CACHE_HOME:-~/.cache}/lameduck}/dashboard-schema/<sha256 of the lock, 16 hex>
# Prints that directory (it holds node_modules/). A second run with the same lock downloads nothing.
#
# Usage: hack/dashboard-schema.sh [dir]   (dir: only print the directory)   Env: LAMEDUCK_CACHE, FORCE=1
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$HACK/../tests/dashboard_schema"
sum="$(sha256sum "$SRC/package-lock.json")"
DIR="${LAMEDUCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lameduck}/dashboard-schema/${sum:0:16}"

log() { printf '[dashboard-schema %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ "${1:-}" == dir ]]; then
  echo "$DIR"
  exit 0
fi
# The stamp is written last: a directory without it is an install that did not finish.
if [[ -z "${FORCE:-}" && -f "$DIR/.installed" ]]; then
  echo "$DIR"
  exit 0
fi

command -v npm >/dev/null || die "npm not found: install Node.js 20 (Debian: apt-get install nodejs npm)"
# Installed beside its final place and moved there whole: an interrupted run leaves no half cache.
mkdir -p "${DIR%/*}"
tmp="$(mktemp -d "${DIR%/*}/.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
cp "$SRC/package.json" "$SRC/package-lock.json" "$tmp/"
log "npm ci in $tmp (lock ${sum:0:16})"
# --ignore-scripts: nothing of these packages runs at install time.
(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2) || die "npm ci failed"
[[ -f "$tmp/node_modules/typescript/bin/tsc" ]] || die "npm ci left no node_modules/typescript/bin/tsc"
touch "$tmp/.installed"
rm -rf "$DIR"
mv "$tmp" "$DIR"
trap - EXIT
log "$(node "$DIR/node_modules/typescript/bin/tsc" --version) and @grafana/schema in $DIR"
echo "$DIR"
