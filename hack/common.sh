# Sourced by hack/*.sh: pinned versions and the paths every script agrees on.
# Env: LAMEDUCK_CACHE (~/.cache/lameduck), LAMEDUCK_RUN_DIR (/var/lib/lameduck-cluster).
# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are for the scripts that source this file
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$HACK/versions.env"
CACHE_ROOT="${LAMEDUCK_CACHE:-$HOME/.cache/lameduck}"
RUN="${LAMEDUCK_RUN_DIR:-/var/lib/lameduck-cluster}"
# the Kubernetes binaries hack/build-k8s.sh builds for K8S_VERSION
K8S_DIR="$CACHE_ROOT/k8s/v$K8S_VERSION"
K8S_BIN="$K8S_DIR/bin"
# helm, one directory per version (hack/build-k8s.sh helm / helm3): HELM_BIN is HELM_VERSION's
# bin dir (the harness's `helm`), HELM3_BIN HELM3_VERSION's
HELM_BIN="$CACHE_ROOT/helm/v$HELM_VERSION/bin"
HELM3_BIN="$CACHE_ROOT/helm/v$HELM3_VERSION/bin"
# release tools (hack/build-k8s.sh crane / syft), one directory per version
CRANE_BIN="$CACHE_ROOT/crane/v$CRANE_VERSION/bin"
SYFT_BIN="$CACHE_ROOT/syft/v$SYFT_VERSION/bin"
# kube-router, the e2e suite's NetworkPolicy enforcer (hack/netpol.sh build)
KUBE_ROUTER_BIN="$CACHE_ROOT/kube-router/v$KUBE_ROUTER_VERSION/bin"
