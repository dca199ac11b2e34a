#!/usr/bin/env bash
# nginx for the rollout benchmark's configuration test (bench/tests/test_nginxproxy.py: `nginx -t`
# on the rendered configuration), from Debian's nginx package at NGINX_DEB_VERSION
# (hack/versions.env), the package bench/nginxproxy/Dockerfile installs. Only downloaded and
# unpacked, never installed (hack/debian-tool.sh). Prints the binary's path:
#   ${LAMEDUCK_CACHE:-${XDG_CACHE_HOME:-~/.cache}/lameduck}/nginx/$NGINX_DEB_VERSION/nginx
# A second run with the same version downloads nothing.
#
# Usage: hack/nginx.sh        Env: NGINX_DEB_VERSION, LAMEDUCK_CACHE, FORCE=1
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$HACK/versions.env"

dir="$(bash "$HACK/debian-tool.sh" --hint "point LAMEDUCK_NGINX at an nginx $NGINX_DEB_VERSION" \
  --version-flag -v nginx "$NGINX_DEB_VERSION" usr/sbin/nginx)"
echo "$dir/nginx"
