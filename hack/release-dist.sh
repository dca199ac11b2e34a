# Sourced by hack/images.sh (which writes the release's artifacts) and hack/release.sh (which
# pushes them), after common.sh, so that both name the same release and look in the same place:
#   VERSION  the chart's appVersion (charts/lameduck/Chart.yaml); empty if it has none
#   DIST     $LAMEDUCK_DIST, else $CACHE_ROOT/dist/v$VERSION
# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are for the scripts that source this file
VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$HACK/../charts/lameduck/Chart.yaml")"
DIST="${LAMEDUCK_DIST:-$CACHE_ROOT/dist/v$VERSION}"
