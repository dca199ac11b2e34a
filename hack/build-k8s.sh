#!/usr/bin/env bash
# Build the Kubernetes control-plane/node binaries (plus kwok, helm 4 and helm 3, and the release
# tools crane and syft) from their upstream Go modules into version-keyed caches:
#   ${LAMEDUCK_CACHE:-~/.cache/lameduck}/k8s/v$K8S_VERSION/bin    k8s binaries, kwok
#   ${LAMEDUCK_CACHE:-~/.cache/lameduck}/helm/v$HELM_VERSION/bin/helm    (target helm)
#   ${LAMEDUCK_CACHE:-~/.cache/lameduck}/helm/v$HELM3_VERSION/bin/helm   (target helm3)
#   ${LAMEDUCK_CACHE:-~/.cache/lameduck}/crane/v$CRANE_VERSION/bin/crane  (target crane)
#   ${LAMEDUCK_CACHE:-~/.cache/lameduck}/syft/v$SYFT_VERSION/bin/syft     (target syft)
# A second run with the same versions builds nothing.
#
# Usage: hack/build-k8s.sh [k8s] [helm] [helm3] [kwok] [crane] [syft] [kubeadm]
#        (default: k8s helm helm3 kwok; crane and syft are for `make images` and hack/release.sh,
#        kubeadm for kind's node image, hack/kind.sh)
# Env:   K8S_VERSION HELM_VERSION HELM3_VERSION KWOK_VERSION CRANE_VERSION SYFT_VERSION
#        (defaults in hack/versions.env)
#        GOTOOLCHAIN     default local: build with the machine's Go, never download another
#        LAMEDUCK_CACHE  cache root (default ~/.cache/lameduck)
#        BUILD_JOBS      go build -p (default 2)   BUILD_NICE  nice level (default 10)
#        FORCE=1         rebuild even if the stamp says it is done
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HACK/common.sh"

BIN="$K8S_BIN"
LOGS="$K8S_DIR/logs"
mkdir -p "$BIN" "$LOGS"

K8S_MINOR="${K8S_VERSION#*.}"; K8S_MINOR="${K8S_MINOR%%.*}"
K8S_MAJOR="${K8S_VERSION%%.*}"
STAGING_VERSION="v0.${K8S_VERSION#*.}"       # 1.34.10 -> v0.34.10

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -p=${BUILD_JOBS:-2} -buildvcs=false"
# local: every pinned module declares a go line the machine's Go (1.26.8) meets, and `auto` would
# quietly fetch whatever toolchain a newer go line names. Set GOTOOLCHAIN to override.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
NICE=(nice -n "${BUILD_NICE:-10}")

K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

log() { printf '[build-k8s %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null || die "go not found in PATH"

# run a (long) command niced, output to a log file; on failure show the tail
run_logged() {
  local logfile="$1"; shift
  log "  \$ $* (log: $logfile)"
  if ! "${NICE[@]}" "$@" >>"$logfile" 2>&1; then
    log "FAILED; last lines of $logfile:"
    tail -n 30 "$logfile" >&2
    exit 1
  fi
}

stamp_ok() { [[ -z "${FORCE:-}" && -f "$BIN/.stamp-$1" ]]; }
stamp_set() { date -u +%FT%TZ >"$BIN/.stamp-$1"; }

# the version ldflags every k8s binary gets (`kubectl version` says v$K8S_VERSION)
k8s_ldflags() {
  local commit="$1" ldf="-s -w" p bdate
  bdate="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=$K8S_MAJOR -X $p.gitMinor=$K8S_MINOR"
    ldf+=" -X $p.gitTreeState=clean -X $p.buildDate=$bdate"
    [[ -n "$commit" ]] && ldf+=" -X $p.gitCommit=$commit"
  done
  echo "$ldf"
}

# kubeadm, for kind's node image only (hack/kind.sh; the harness runs without it): built from
# build_k8s's generated module (-mod=mod adds what kubeadm needs beyond the six binaries).
build_kubeadm() {
  local stamp="kubeadm-$K8S_VERSION"
  if stamp_ok "$stamp" && [[ -x "$BIN/kubeadm" ]]; then log "kubeadm v$K8S_VERSION: cached"; return; fi
  build_k8s
  local src="$K8S_DIR/src" logf="$LOGS/kubeadm-build.log" t0=$SECONDS commit
  : >"$logf"
  commit="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^[[:space:]]*"Hash": "\(.*\)",*$/\1/p' | head -n1)"
  log "kubeadm v$K8S_VERSION: go build (log: $logf)"
  (cd "$src" && run_logged "$logf" go build -mod=mod -trimpath -tags selinux,notest \
    -ldflags "$(k8s_ldflags "$commit")" -o "$BIN/kubeadm" k8s.io/kubernetes/cmd/kubeadm)
  "$BIN/kubeadm" version -o short | grep -qx "v$K8S_VERSION" || die "kubeadm reports the wrong version"
  stamp_set "$stamp"
  log "kubeadm v$K8S_VERSION: built in $((SECONDS - t0)) s"
}

build_k8s() {
  local stamp="k8s-$K8S_VERSION" c missing=0
  for c in "${K8S_CMDS[@]}"; do [[ -x "$BIN/$c" ]] || missing=1; done
  if stamp_ok "$stamp" && [[ $missing == 0 ]]; then
    log "kubernetes v$K8S_VERSION: cached in $BIN"
    return
  fi
  local src="$K8S_DIR/src" logf="$LOGS/k8s-build.log" t0=$SECONDS
  mkdir -p "$src"
  : >"$logf"
  log "kubernetes v$K8S_VERSION: preparing build module in $src"
  local dl gomod
  dl="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION")" || die "go mod download k8s.io/kubernetes@v$K8S_VERSION failed: $dl"
  gomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p' <<<"$dl")"
  [[ -f "$gomod" ]] || die "no go.mod for k8s.io/kubernetes@v$K8S_VERSION: $dl"
  local commit
  commit="$(sed -n 's/^[[:space:]]*"Hash": "\(.*\)",*$/\1/p' <<<"$dl" | head -n1)"
  {
    echo "// generated by hack/build-k8s.sh - builds k8s.io/kubernetes v$K8S_VERSION binaries"
    echo "module lameduck.local/k8sbuild"
    echo
    grep -E '^go [0-9]' "$gomod"
    grep -E '^godebug' "$gomod" || true
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    echo "replace ("
    # every staging replace (k8s.io/X => ./staging/src/k8s.io/X) becomes k8s.io/X v0.M.P
    sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\t\1 => \1 '"$STAGING_VERSION"'#p' "$gomod"
    echo ")"
  } >"$src/go.mod"
  {
    echo "//go:build tools"
    echo
    echo "package tools"
    echo
    echo "import ("
    for c in "${K8S_CMDS[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done
    echo ")"
  } >"$src/tools.go"
  log "  $(grep -c ' => ' "$src/go.mod") staging replaces -> $STAGING_VERSION"
  log "kubernetes v$K8S_VERSION: go mod tidy (downloads dependencies)"
  (cd "$src" && run_logged "$logf" go mod tidy)

  local ldf pkgs=()
  ldf="$(k8s_ldflags "$commit")"
  for c in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  log "kubernetes v$K8S_VERSION: go build ${K8S_CMDS[*]} (cold: about 5 min on 2 cores)"
  (cd "$src" && run_logged "$logf" go build -trimpath -tags selinux,notest -ldflags "$ldf" -o "$BIN/" "${pkgs[@]}")
  "$BIN/kube-apiserver" --version | tee -a "$logf"
  "$BIN/kube-apiserver" --version | grep -q "v$K8S_VERSION" || die "kube-apiserver reports the wrong version"
  stamp_set "$stamp"
  log "kubernetes v$K8S_VERSION: built in $((SECONDS - t0)) s"
}

# helm VERSION BINDIR: helm.sh/helm/v<major of VERSION>'s cmd/helm into BINDIR/helm, from a
# generated module next to it (BINDIR/../src) that requires only that release, with helm's own
# go.sum as its starting go.sum (every hash checked against the release's) and its replaces.
build_helm() {
  local version="$1" bin="$2" major="${1%%.*}"
  local module="helm.sh/helm/v$major" stamp="helm-$1" dir="${2%/bin}"
  if [[ -z "${FORCE:-}" && -f "$bin/.stamp-$stamp" && -x "$bin/helm" ]]; then
    log "helm v$version: cached in $bin"
    return
  fi
  [[ "$major" == 3 || "$major" == 4 ]] || die "helm v$version: only helm 3 and 4 are built here"
  local src="$dir/src" logf="$dir/build.log" t0=$SECONDS
  mkdir -p "$bin" "$src"
  : >"$logf"
  local goversion
  goversion="$(go version)"
  log "helm v$version: $goversion, GOTOOLCHAIN=$GOTOOLCHAIN"
  echo "$goversion GOTOOLCHAIN=$GOTOOLCHAIN GOFLAGS=$GOFLAGS" >>"$logf"
  local dl gomod modsum commit
  dl="$(go mod download -json "$module@v$version")" || die "go mod download $module@v$version failed: $dl"
  gomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p' <<<"$dl")"
  modsum="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p' <<<"$dl")/go.sum"
  commit="$(sed -n 's/^[[:space:]]*"Hash": "\(.*\)",*$/\1/p' <<<"$dl" | head -n1)"
  [[ -f "$gomod" && -f "$modsum" ]] || die "no go.mod/go.sum for $module@v$version: $dl"
  # helm's go.mod has had replace directives in some releases (e.g. for docker/distribution);
  # `go install pkg@version` refuses those, so build from a local module that copies them.
  {
    echo "// generated by hack/build-k8s.sh - builds $module v$version"
    echo "module lameduck.local/helmbuild"
    echo
    grep -E '^go [0-9]' "$gomod"
    grep -E '^godebug' "$gomod" || true
    echo
    echo "require $module v$version"
    sed -n '/^replace (/,/^)/p' "$gomod"
    grep -E '^replace [^(]' "$gomod" || true
  } >"$src/go.mod"
  cp "$modsum" "$src/go.sum"
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s/cmd/helm"\n' "$module" >"$src/tools.go"
  log "helm v$version: go mod tidy + go build $module/cmd/helm (cold: a few minutes on 2 cores; log: $logf)"
  (cd "$src" && run_logged "$logf" go mod tidy)
  local ldf="-s -w -X $module/internal/version.version=v$version -X $module/internal/version.gitTreeState=clean"
  [[ -n "$commit" ]] && ldf+=" -X $module/internal/version.gitCommit=$commit"
  if [[ "$major" == 3 ]]; then
    # helm 3 takes the Kubernetes version it lints and renders for (.Capabilities.KubeVersion
    # without a cluster) from ldflags: 1.<minor of client-go>, as helm's own Makefile sets it.
    # helm 4 reads it from the build info of k8s.io/client-go itself.
    local cgv
    cgv="$(cd "$src" && go list -m -f '{{.Version}}' k8s.io/client-go)"   # v0.M.P
    cgv="${cgv#v0.}"
    ldf+=" -X $module/pkg/lint/rules.k8sVersionMajor=1 -X $module/pkg/lint/rules.k8sVersionMinor=${cgv%%.*}"
    ldf+=" -X $module/pkg/chartutil.k8sVersionMajor=1 -X $module/pkg/chartutil.k8sVersionMinor=${cgv%%.*}"
  fi
  (cd "$src" && run_logged "$logf" go build -mod=mod -trimpath -ldflags "$ldf" -o "$bin/helm" "$module/cmd/helm")
  local says
  says="$("$bin/helm" version --template '{{.Version}} {{.GoVersion}}')"
  echo "$says" | tee -a "$logf"
  [[ "${says%% *}" == "v$version" ]] || die "$bin/helm says it is ${says%% *}, not v$version"
  printf 'built %s from %s@v%s with %s\n' "$(date -u +%FT%TZ)" "$module" "$version" "$goversion" >"$bin/.stamp-$stamp"
  log "helm v$version: built in $((SECONDS - t0)) s into $bin"
}

build_kwok() {
  local stamp="kwok-$KWOK_VERSION"
  if stamp_ok "$stamp" && [[ -x "$BIN/kwok" ]]; then log "kwok v$KWOK_VERSION: cached"; return; fi
  local logf="$LOGS/kwok-build.log" t0=$SECONDS
  : >"$logf"
  log "kwok v$KWOK_VERSION: go install (log: $logf)"
  run_logged "$logf" env GOBIN="$BIN" go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=v$KWOK_VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=v$K8S_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  "$BIN/kwok" --version 2>&1 | tee -a "$logf" || true
  stamp_set "$stamp"
  log "kwok v$KWOK_VERSION: built in $((SECONDS - t0)) s"
}

# go_tool NAME VERSION BINDIR PACKAGE LDFLAGS: `go install PACKAGE@vVERSION` into BINDIR (neither
# module has replace directives, so go install builds it exactly as its go.sum pins it).
go_tool() {
  local name="$1" version="$2" bin="$3" pkg="$4" ldf="$5"
  local stamp="$name-$version" logf="${3%/bin}/build.log" t0=$SECONDS
  if [[ -z "${FORCE:-}" && -f "$bin/.stamp-$stamp" && -x "$bin/$name" ]]; then
    log "$name v$version: cached in $bin"
    return
  fi
  mkdir -p "$bin"
  : >"$logf"
  log "$name v$version: go install $pkg@v$version (log: $logf)"
  run_logged "$logf" env GOBIN="$bin" go install -trimpath -ldflags "$ldf" "$pkg@v$version"
  printf 'built %s from %s@v%s with %s in %s s\n' "$(date -u +%FT%TZ)" "$pkg" "$version" "$(go version)" \
    "$((SECONDS - t0))" >"$bin/.stamp-$stamp"
  log "$name v$version: built in $((SECONDS - t0)) s into $bin"
}

build_crane() {
  local m=github.com/google/go-containerregistry
  go_tool crane "$CRANE_VERSION" "$CRANE_BIN" "$m/cmd/crane" "-s -w -X $m/cmd/crane/cmd.Version=v$CRANE_VERSION"
  "$CRANE_BIN/crane" version | grep -qx "v$CRANE_VERSION" || die "$CRANE_BIN/crane is not v$CRANE_VERSION"
}

build_syft() {
  go_tool syft "$SYFT_VERSION" "$SYFT_BIN" github.com/anchore/syft/cmd/syft "-s -w -X main.version=$SYFT_VERSION"
  "$SYFT_BIN/syft" version 2>/dev/null | grep -q "$SYFT_VERSION" || die "$SYFT_BIN/syft is not v$SYFT_VERSION"
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(k8s helm helm3 kwok)
T0=$SECONDS
for t in "${targets[@]}"; do
  case "$t" in
    k8s) build_k8s ;;
    helm) build_helm "$HELM_VERSION" "$HELM_BIN" ;;
    helm3) build_helm "$HELM3_VERSION" "$HELM3_BIN" ;;
    kwok) build_kwok ;;
    crane) build_crane ;;
    syft) build_syft ;;
    kubeadm) build_kubeadm ;;
    *) die "unknown target $t (want k8s, helm, helm3, kwok, crane, syft, kubeadm)" ;;
  esac
done
log "done in $((SECONDS - T0)) s; binaries in $BIN (helm: $HELM_BIN, $HELM3_BIN)"
echo "$BIN"
