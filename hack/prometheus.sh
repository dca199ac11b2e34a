#!/usr/bin/env bash
# promtool and prometheus for the alert rules' unit tests (tests/unit/test_alerts.py), from
# Debian's prometheus package at PROMETHEUS_DEB_VERSION (hack/versions.env). The package is only
# downloaded and unpacked, never installed (hack/debian-tool.sh).
# Prints the directory that holds both binaries:
#   ${LAMEDUCK_CACHE:-${XDG_CACHE_HOME:-~/.cache}/lameduck}/prometheus/$PROMETHEUS_DEB_VERSION
# A second run with the same version downloads nothing.
#
# Usage: hack/prometheus.sh        Env: PROMETHEUS_DEB_VERSION, LAMEDUCK_CACHE, FORCE=1
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$HACK/versions.env"

bash "$HACK/debian-tool.sh" \
  --hint "install promtool $PROMETHEUS_DEB_VERSION yourself and point LAMEDUCK_PROMTOOL at it" \
  --version-flag --version prometheus "$PROMETHEUS_DEB_VERSION" usr/bin/promtool usr/bin/prometheus
