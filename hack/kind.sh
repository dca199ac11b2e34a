#!/usr/bin/env bash
# kind on this machine, with no registry (docs/cluster.md, "On kind"); `make e2e-kind`
# (bench/e2e_kind.py) runs these steps in order and the e2e suite between `up` and `down`:
#   hack/kind.sh dockerd       start our own dockerd (no iptables, own socket and data root) unless
#                              one answers on its socket; prints "started" or "running"
#   hack/kind.sh build         kind, crictl, etcd, kubeadm from their Go modules; the base image
#                              (debootstrap); a release tarball of the harness's own binaries; then
#                              `kind build node-image --type file` on that base (all cached)
#   hack/kind.sh test-images   the harness's image builds (buildah) as archives, never imported
#   hack/kind.sh up            create the cluster from tests/e2e/kind.yaml, load the test images,
#                              route the pod and service subnets to the node container
#   hack/kind.sh env           export lines: KUBECONFIG, LAMEDUCK_AUDIT_LOG, DOCKER_HOST, PATH
#   hack/kind.sh netpol-start  enforce NetworkPolicy in the node: kube-router's firewall
#                              (hack/netpol.sh), run from this host in the node's network namespace
#   hack/kind.sh netpol-stop   stop it and remove its rules (down does too)
#   hack/kind.sh registry-host this host's address on the node's network (a registry served there
#                              is one both reach: the release e2e test's)
#   hack/kind.sh registry-trust HOST:PORT   let the node's containerd pull from the plain-HTTP
#                              registry there (HOST: registry-host's); registry-untrust undoes it
#   hack/kind.sh down          delete the cluster and the routes
#   hack/kind.sh dockerd-stop  stop the dockerd of our pidfile
# Env: KIND_VERSION KIND_K8S_VERSION KIND_CRICTL_VERSION KIND_ETCD_VERSION KIND_ETCD_TAG (versions.env),
#      LAMEDUCK_CACHE, LAMEDUCK_KIND_CACHE ($LAMEDUCK_CACHE/kind), FORCE=1 (rebuild the images),
#      KIND_DOCKER_STORAGE (overlay2, else vfs).
# Docker is never allowed to touch iptables (the harness's pod network shares this host).
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) fails the script too

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HACK")"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HACK/common.sh"
# kind's node runs KIND_K8S_VERSION (versions.env), whatever the harness's K8S_VERSION is; the
# scripts this one calls (build-k8s.sh, cluster.sh pause-archive) get it too
export K8S_VERSION="$KIND_K8S_VERSION"
K8S_DIR="$CACHE_ROOT/k8s/v$K8S_VERSION"
K8S_BIN="$K8S_DIR/bin"

# everything built for kind (LAMEDUCK_KIND_CACHE: elsewhere, e.g. to time a first build);
# dockerd's data root stays in DOCKER_ROOT
KIND_DIR="${LAMEDUCK_KIND_CACHE:-$CACHE_ROOT/kind}"
DOCKER_ROOT="$CACHE_ROOT/kind/docker"
KIND="$KIND_DIR/v$KIND_VERSION/bin/kind"
TOOLS="$KIND_DIR/tools"
CRICTL="$TOOLS/crictl-v$KIND_CRICTL_VERSION/crictl"
ETCD="$TOOLS/etcd-v$KIND_ETCD_VERSION/etcd"
ROOTFS="$KIND_DIR/base/rootfs"
RELEASE_DIR="$KIND_DIR/release/v$K8S_VERSION"
LOGS="$KIND_DIR/logs"
CLUSTER="${KIND_CLUSTER:-lameduck}"
CONFIG="$REPO/tests/e2e/kind.yaml"
NODE_IMAGE="lameduck/kind-node:v$K8S_VERSION"
# the audit policy and log dir the node mounts (tests/e2e/kind.yaml, extraMounts)
AUDIT_DIR=/var/lib/lameduck-kind/audit
KUBECONFIG_OUT="$KIND_DIR/$CLUSTER.kubeconfig"
# pod and service CIDRs of tests/e2e/kind.yaml, routed from the host to the node container
POD_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16

DOCKER_SOCK=/run/lameduck-kind-docker.sock
DOCKER_PIDFILE=/run/lameduck-kind-docker.pid
export DOCKER_HOST="unix://$DOCKER_SOCK"
# The engine is Debian's docker.io 20.10; its own CLI (/usr/bin/docker) goes first, ahead of any
# newer CLI on the PATH, and kind finds it there.
PATHDIR="$KIND_DIR/path"
mkdir -p "$PATHDIR" "$LOGS" "$TOOLS"
ln -sf /usr/bin/docker "$PATHDIR/docker"
export PATH="$PATHDIR:$K8S_BIN:$PATH"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0
GOFLAGS="${GOFLAGS:-} -p=${BUILD_JOBS:-2} -buildvcs=false"
export GOFLAGS
NICE=(nice -n "${BUILD_NICE:-10}")

log() { printf '[kind %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root (dockerd, debootstrap, routes)"

run_logged() {
  local logfile="$1"; shift
  if ! "${NICE[@]}" "$@" >>"$logfile" 2>&1; then
    log "FAILED: $*; last lines of $logfile:"
    tail -n 30 "$logfile" >&2
    exit 1
  fi
}

moddir() { (cd /tmp && go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p'); }

# --- dockerd -------------------------------------------------------------------------------------
dockerd_up() { docker version >/dev/null 2>&1; }

# Debian's docker.io, whose own dockerd must never run: it would write iptables rules (FORWARD
# policy DROP) under the harness's pod network. A policy-rc.d that refuses every start covers the
# install; with systemd, its units are disabled afterwards (socket activation included).
install_docker() {
  local policy=/usr/sbin/policy-rc.d ours=0
  if [[ ! -e "$policy" ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; ours=1; fi
  log "installing Debian's docker.io (its service is not started)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io >>"$LOGS/apt.log" 2>&1 ||
    { [[ $ours == 0 ]] || rm -f "$policy"; die "apt-get install docker.io failed (log: $LOGS/apt.log)"; }
  [[ $ours == 0 ]] || rm -f "$policy"
  if [[ -d /run/systemd/system ]]; then systemctl disable --now docker.socket docker.service >>"$LOGS/apt.log" 2>&1 || true; fi
}

start_dockerd() {
  if dockerd_up; then log "dockerd: running ($DOCKER_SOCK)"; echo running; return; fi
  command -v dockerd >/dev/null || install_docker
  local driver="${KIND_DOCKER_STORAGE:-overlay2}"
  mkdir -p "$DOCKER_ROOT" /run/lameduck-kind-docker
  for driver in "$driver" vfs; do
    log "dockerd: starting (storage $driver, no iptables/ip6tables/ip-forward; log: $LOGS/dockerd.log)"
    # runc-bounded: a --privileged container gets only the capabilities root holds here
    setsid dockerd --iptables=false --ip6tables=false --ip-forward=false \
      --add-runtime "lameduck-runc=$HACK/kind-base/runc-bounded" --default-runtime lameduck-runc \
      --data-root "$DOCKER_ROOT" --exec-root /run/lameduck-kind-docker \
      --pidfile "$DOCKER_PIDFILE" -H "$DOCKER_HOST" --storage-driver "$driver" \
      >>"$LOGS/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 60); do
      dockerd_up && { log "dockerd: up, pid $(cat "$DOCKER_PIDFILE")"; echo started; return; }
      kill -0 $! 2>/dev/null || break
      sleep 0.5
    done
    log "dockerd with $driver did not come up; last log lines:"; tail -n 5 "$LOGS/dockerd.log" >&2
  done
  die "dockerd did not start"
}

stop_dockerd() {
  [[ -f "$DOCKER_PIDFILE" ]] || { log "dockerd: no pidfile, nothing to stop"; return; }
  local pid
  pid="$(cat "$DOCKER_PIDFILE")"
  # only the dockerd of our pidfile: its command line must name our socket
  if ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$DOCKER_SOCK"; then
    log "dockerd: pid $pid is not ours any more"; rm -f "$DOCKER_PIDFILE"; return
  fi
  # the bridges of its networks (docker0, br-<id> of kind's) stay on the host when dockerd stops:
  # remove them after it (it makes them again at its next start)
  local bridges
  bridges="$(docker network ls -q --filter driver=bridge 2>/dev/null | sed 's/^/br-/' | cut -c1-15)"
  log "dockerd: stopping pid $pid"
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "dockerd: pid $pid still running after 30 s, SIGKILL"; kill -9 "$pid" || true; sleep 1; fi
  local b
  for b in docker0 $bridges; do
    if ip link show "$b" >/dev/null 2>&1; then ip link del "$b" && log "removed bridge $b"; fi
  done
  log "dockerd: stopped"
}

# --- Go tools ------------------------------------------------------------------------------------
# go_tool MODULE VERSION PKG OUT [LDFLAGS]: PKG of MODULE@VERSION into OUT, from a generated module
# that requires only that release and keeps its replaces (those pointing at sibling directories of
# the same repository become the same release of that module).
go_tool() {
  local module="$1" version="$2" pkg="$3" out="$4" ldflags="${5:-}"
  [[ -x "$out" && -z "${FORCE_TOOLS:-}" ]] && return
  local dir src logf gomod t0=$SECONDS
  dir="$(dirname "$out")"; src="$dir/src"; logf="$dir/build.log"
  mkdir -p "$src"; : >"$logf"
  log "$module@$version: go build $pkg (log: $logf)"
  gomod="$(moddir "$module@$version")/go.mod"
  {
    echo "// generated by hack/kind.sh - builds $pkg from $module $version"
    echo "module lameduck.local/kindtools"
    echo
    grep -E '^go [0-9]' "$gomod"
    echo
    echo "require $module $version"
    # `a => ../b` (a sibling module of the same release) -> `a => a version`
    sed -n 's#^[[:space:]]*\(replace[[:space:]]\+\)\{0,1\}\([^[:space:]]*\) => \.\./.*#replace \2 => \2 '"$version"'#p' "$gomod"
  } >"$src/go.mod"
  cp "$(dirname "$gomod")/go.sum" "$src/go.sum"
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" >"$src/tools.go"
  (cd "$src" && run_logged "$logf" go mod tidy)
  (cd "$src" && run_logged "$logf" go build -mod=mod -trimpath -ldflags "-s -w $ldflags" -o "$out" "$pkg")
  log "$module@$version: built in $((SECONDS - t0)) s"
}

build_tools() {
  if [[ ! -x "$KIND" ]]; then
    log "kind v$KIND_VERSION: go install (log: $LOGS/kind-build.log)"
    run_logged "$LOGS/kind-build.log" env GOBIN="$(dirname "$KIND")" go install -trimpath -ldflags "-s -w" \
      "sigs.k8s.io/kind@v$KIND_VERSION"
  fi
  "$KIND" version | grep -q "v$KIND_VERSION" || die "$KIND is not v$KIND_VERSION"
  go_tool sigs.k8s.io/cri-tools "v$KIND_CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl "$CRICTL" \
    "-X sigs.k8s.io/cri-tools/pkg/version.Version=v$KIND_CRICTL_VERSION"
  go_tool go.etcd.io/etcd/server/v3 "v$KIND_ETCD_VERSION" go.etcd.io/etcd/server/v3 "$ETCD"
  bash "$HACK/build-k8s.sh" k8s kubeadm >&2
}

# --- images --------------------------------------------------------------------------------------
# image_archive REF DIR OUT: docker build of DIR as REF, saved as a docker-archive OUT
image_archive() {
  local ref="$1" ctx="$2" out="$3"
  run_logged "$LOGS/images.log" docker build -q -t "$ref" "$ctx"
  run_logged "$LOGS/images.log" docker save -o "$out" "$ref"
}

# a static binary alone in an image, on the PATH (kubeadm's static pods run it by name)
static_image() {
  local ref="$1" bin="$2" out="$3" ctx
  ctx="$(mktemp -d)"
  cp "$bin" "$ctx/"
  printf 'FROM scratch\nCOPY %s /usr/local/bin/%s\nENV PATH=/usr/local/bin:/usr/bin:/bin\n' \
    "$(basename "$bin")" "$(basename "$bin")" >"$ctx/Dockerfile"
  image_archive "$ref" "$ctx" "$out"
  rm -rf "$ctx"
}

# The node's base: Debian bookworm from debootstrap with systemd, Debian's containerd 1.6, runc and
# CNI plugins, crictl from cri-tools, and kind's entrypoint and systemd units from the kind module.
base_image() {
  local kindsrc stamp ref
  kindsrc="$(moddir "sigs.k8s.io/kind@v$KIND_VERSION")/images/base/files"
  [[ -d "$kindsrc" ]] || die "kind's base image files not found in the kind module"
  if [[ ! -f "$ROOTFS/.done" ]]; then
    command -v debootstrap >/dev/null || {
      log "installing Debian's debootstrap"
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >>"$LOGS/apt.log" 2>&1 ||
        die "apt-get install debootstrap failed (log: $LOGS/apt.log)"
    }
    log "debootstrap $BASE_SUITE with systemd, containerd, runc, CNI plugins (log: $LOGS/debootstrap.log)"
    rm -rf "$ROOTFS"; mkdir -p "$ROOTFS"
    run_logged "$LOGS/debootstrap.log" debootstrap --variant=minbase \
      --include=systemd,systemd-sysv,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,bash,ca-certificates,curl,jq,procps,e2fsprogs,containerd,runc,containernetworking-plugins \
      "$BASE_SUITE" "$ROOTFS" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    rm -rf "$ROOTFS/var/cache/apt/"*.bin "$ROOTFS/var/cache/apt/archives/"*.deb "$ROOTFS/var/lib/apt/lists/"* \
      "$ROOTFS/usr/share/doc/"* "$ROOTFS/usr/share/man/"* "$ROOTFS/usr/share/locale/"*
    date -u +%FT%TZ >"$ROOTFS/.done"
  fi
  stamp="$(cat "$ROOTFS/.done" "$HACK/kind.sh" "$HACK/kind-base/"* "$CRICTL" "$ETCD" | sha256sum | cut -c1-12)"
  ref="lameduck/kind-base:$stamp"
  if [[ -z "${FORCE:-}" ]] && docker image inspect "$ref" >/dev/null 2>&1; then echo "$ref"; return; fi
  log "assembling base image $ref"
  local stage="$KIND_DIR/base/stage"
  rm -rf "$stage"; cp -a "$ROOTFS" "$stage"; rm -f "$stage/.done"
  # kind's interface to the node: its entrypoint (cgroup and mount fix-ups), its scripts, the
  # kubelet unit and kubeadm drop-ins, sysctls and crictl config, used as kind ships them
  install -m 0755 "$kindsrc/usr/local/bin/entrypoint" "$stage/usr/local/bin/entrypoint"
  mkdir -p "$stage/kind/bin" "$stage/etc/systemd/system/kubelet.service.d" "$stage/etc/kubernetes/manifests" \
    "$stage/etc/cni/net.d"
  install -m 0755 "$kindsrc/kind/bin/"*.sh "$stage/kind/bin/"
  install -m 0644 "$kindsrc/etc/systemd/system/kubelet.service" "$kindsrc/etc/systemd/system/kubelet.slice" \
    "$kindsrc/etc/systemd/system/undo-mount-hacks.service" "$stage/etc/systemd/system/"
  install -m 0644 "$kindsrc/etc/systemd/system/kubelet.service.d/"* "$stage/etc/systemd/system/kubelet.service.d/"
  install -m 0644 "$kindsrc/etc/default/kubelet" "$stage/etc/default/kubelet"
  install -m 0644 "$kindsrc/etc/sysctl.d/"* "$stage/etc/sysctl.d/"
  install -m 0644 "$kindsrc/etc/crictl.yaml" "$stage/etc/crictl.yaml"
  # ours: containerd 1.6's config and unit, the ctr wrapper, the CNI config
  install -m 0644 "$HACK/kind-base/containerd.toml" "$stage/etc/containerd/config.toml"
  install -m 0644 "$HACK/kind-base/containerd.service" "$stage/etc/systemd/system/containerd.service"
  install -m 0644 "$HACK/kind-base/10-lameduck.conflist" "$stage/etc/cni/net.d/10-lameduck.conflist"
  install -m 0755 "$HACK/kind-base/ctr" "$stage/usr/local/bin/ctr"
  install -m 0755 "$CRICTL" "$stage/usr/local/bin/crictl"
  # containerd's default OCI spec plus kind's hook that mounts the node's product_uuid, without
  # rlimits (what kind's base does with `ctr oci spec`)
  chroot "$stage" /usr/bin/ctr oci spec | python3 -c '
import json, sys
spec = json.load(sys.stdin)
spec["process"].pop("rlimits", None)
spec.setdefault("hooks", {}).setdefault("createContainer", []).append({"path": "/kind/bin/mount-product-files.sh"})
json.dump(spec, sys.stdout, indent=2)' >"$stage/etc/containerd/cri-base.json"
  # images no registry can give: etcd (from its Go module) and the harness's pause, imported
  # by the ctr wrapper when `kind build node-image` asks for them
  mkdir -p "$stage/kind/preload"
  static_image "registry.k8s.io/etcd:$KIND_ETCD_TAG" "$ETCD" "$stage/kind/preload/etcd.tar"
  cp "$(bash "$HACK/cluster.sh" pause-archive)" "$stage/kind/preload/pause.tar"
  # systemd in a container: no units that need hardware, udev or the host's kernel log
  rm -f "$stage/lib/systemd/system/multi-user.target.wants/"* "$stage/etc/systemd/system/"*.wants/* \
    "$stage/lib/systemd/system/local-fs.target.wants/"* "$stage/lib/systemd/system/sockets.target.wants/"*udev* \
    "$stage/lib/systemd/system/sockets.target.wants/"*initctl* "$stage/lib/systemd/system/basic.target.wants/"*
  find "$stage/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
  echo "ReadKMsg=no" >>"$stage/etc/systemd/journald.conf"
  chroot "$stage" systemctl enable kubelet.service containerd.service undo-mount-hacks.service >>"$LOGS/images.log" 2>&1
  chroot "$stage" systemctl mask systemd-binfmt.service >>"$LOGS/images.log" 2>&1
  tar -C "$stage" --numeric-owner -c . | run_logged "$LOGS/images.log" docker import - "$ref.rootfs"
  rm -rf "$stage"
  # (docker 20.10's import takes no STOPSIGNAL: a one-step build on top sets the config)
  stage="$(mktemp -d)"
  printf '%s\n' "FROM $ref.rootfs" 'ENV container=docker PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'STOPSIGNAL SIGRTMIN+3' 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' >"$stage/Dockerfile"
  run_logged "$LOGS/images.log" docker build -q -t "$ref" "$stage"
  rm -rf "$stage"
  docker rmi "$ref.rootfs" >/dev/null
  echo "$ref"
}

# kind's `--type file` input: kubernetes/version, kubernetes/server/bin/{kubeadm,kubelet,kubectl}
# and the four control-plane images as docker-archives, as a release's server tarball has them
release_tarball() {
  local base="$1" out="$RELEASE_DIR/kubernetes-server-linux-amd64.tar.gz" stamp
  stamp="$(cat "$K8S_BIN/.stamp-k8s-$K8S_VERSION" "$K8S_BIN/.stamp-kubeadm-$K8S_VERSION" | sha256sum | cut -c1-12)-$base"
  if [[ -z "${FORCE:-}" && -f "$out" && "$(cat "$out.stamp" 2>/dev/null)" == "$stamp" ]]; then echo "$out"; return; fi
  log "release tarball of the harness's v$K8S_VERSION binaries: $out"
  local tmp c ctx
  tmp="$(mktemp -d)"; mkdir -p "$tmp/kubernetes/server/bin" "$RELEASE_DIR"
  echo "v$K8S_VERSION" >"$tmp/kubernetes/version"
  cp "$K8S_BIN/kubeadm" "$K8S_BIN/kubelet" "$K8S_BIN/kubectl" "$tmp/kubernetes/server/bin/"
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    static_image "registry.k8s.io/$c-amd64:v$K8S_VERSION" "$K8S_BIN/$c" "$tmp/kubernetes/server/bin/$c.tar"
  done
  # kube-proxy runs iptables: on the node's base (Debian's iptables, conntrack), not alone
  ctx="$(mktemp -d)"; cp "$K8S_BIN/kube-proxy" "$ctx/"
  printf 'FROM %s\nCOPY kube-proxy /usr/local/bin/kube-proxy\nENTRYPOINT []\nCMD ["/usr/local/bin/kube-proxy"]\n' "$base" >"$ctx/Dockerfile"
  image_archive "registry.k8s.io/kube-proxy-amd64:v$K8S_VERSION" "$ctx" "$tmp/kubernetes/server/bin/kube-proxy.tar"
  rm -rf "$ctx"
  tar -C "$tmp" -c kubernetes | pigz -1 >"$out.tmp" 2>/dev/null || tar -C "$tmp" -cz kubernetes >"$out.tmp"
  mv "$out.tmp" "$out"; echo "$stamp" >"$out.stamp"
  rm -rf "$tmp"
  echo "$out"
}

build() {
  local t0=$SECONDS base tarball stamp
  grep -q "imageTag: $KIND_ETCD_TAG " "$CONFIG" || die "tests/e2e/kind.yaml must name etcd's imageTag $KIND_ETCD_TAG (hack/versions.env)"
  build_tools
  base="$(base_image)"
  tarball="$(release_tarball "$base")"
  stamp="$(cat "$tarball.stamp")"
  if [[ -z "${FORCE:-}" ]] && [[ "$(docker image inspect -f '{{index .Config.Labels "lameduck.stamp"}}' "$NODE_IMAGE" 2>/dev/null)" == "$stamp" ]]; then
    log "node image $NODE_IMAGE: cached"
    return
  fi
  log "kind build node-image --type file (base $base; log: $LOGS/node-image.log)"
  run_logged "$LOGS/node-image.log" "$KIND" build node-image --type file --base-image "$base" \
    --image "$NODE_IMAGE.tmp" "$tarball"
  # kind's default StorageClass runs local-path-provisioner, an image no registry gives us here:
  # a StorageClass without a provisioner instead. The stamp as a label, so a changed base or
  # tarball builds the node again.
  local ctx; ctx="$(mktemp -d)"
  cp "$HACK/kind-base/default-storage.yaml" "$ctx/"
  printf 'FROM %s\nCOPY default-storage.yaml /kind/manifests/default-storage.yaml\nLABEL lameduck.stamp=%s\n' \
    "$NODE_IMAGE.tmp" "$stamp" >"$ctx/Dockerfile"
  run_logged "$LOGS/node-image.log" docker build -q -t "$NODE_IMAGE" "$ctx"
  rm -rf "$ctx"
  docker rmi "$NODE_IMAGE.tmp" >/dev/null
  # older bases, and the untagged images earlier builds left (a node image is 1.2 GB)
  docker images --format '{{.Repository}}:{{.Tag}}' lameduck/kind-base | grep -vxF "$base" |
    xargs -r docker rmi >/dev/null || true
  docker image prune -f >/dev/null
  log "node image $NODE_IMAGE built in $((SECONDS - t0)) s"
}

# --- cluster -------------------------------------------------------------------------------------
node_ip() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$CLUSTER-control-plane"; }

routes() {
  local verb="$1" ip cidr
  ip="$(node_ip 2>/dev/null)" || return 0
  [[ -n "$ip" ]] || return 0
  for cidr in "$POD_CIDR" "$SERVICE_CIDR"; do
    if [[ "$verb" == add ]]; then ip route replace "$cidr" via "$ip"; else ip route del "$cidr" via "$ip" 2>/dev/null || true; fi
  done
}

load_images() {
  local archive
  for archive in lameduck_operator_dev lameduck_sidecar_dev lameduck_demo-app_dev; do
    [[ -f "$CACHE_ROOT/images/$archive.oci.tar" ]] || die "$CACHE_ROOT/images/$archive.oci.tar missing: build the images first (hack/build-images.sh --no-import, see docs/cluster.md)"
    log "kind load image-archive $archive.oci.tar"
    "$KIND" load image-archive --name "$CLUSTER" "$CACHE_ROOT/images/$archive.oci.tar" >&2
  done
}

# the harness's image builds (buildah), as archives only: never imported into the local cluster
build_test_images() {
  bash "$HACK/build-images.sh" --no-import --target operator lameduck/operator:dev=Dockerfile >&2
  bash "$HACK/build-images.sh" --no-import --target sidecar lameduck/sidecar:dev=Dockerfile >&2
  bash "$HACK/build-images.sh" --no-import lameduck/demo-app:dev=examples/demo-app >&2
}

up() {
  if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "cluster $CLUSTER exists"
  else
    mkdir -p "$AUDIT_DIR"
    install -m 0644 "$REPO/tests/e2e/kind-audit-policy.yaml" "$AUDIT_DIR/policy.yaml"
    rm -f "$AUDIT_DIR/audit.log"
    log "kind create cluster --name $CLUSTER --config tests/e2e/kind.yaml --image $NODE_IMAGE"
    "$KIND" create cluster --name "$CLUSTER" --config "$CONFIG" --image "$NODE_IMAGE" --wait 180s >&2 ||
      die "kind create cluster failed (kind export logs --name $CLUSTER shows the node's logs)"
  fi
  "$KIND" get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_OUT"
  routes add
  load_images
  log "cluster up: export KUBECONFIG=$KUBECONFIG_OUT LAMEDUCK_AUDIT_LOG=$AUDIT_DIR/audit.log"
}

# --- NetworkPolicy -------------------------------------------------------------------------------
# hack/netpol.sh for the node: this host's kube-router binary, ipset and iptables (nft, as the
# node's kube-proxy writes) in the node container's network namespace (nsenter), so the image
# needs neither the binary nor ipset, and the process is this host's, stopped by its pid. The
# kind kubeconfig's server is this host's published port; in the node's namespace the API server
# is at the node's address.
netpol() {  # start|stop|status
  local node="$CLUSTER-control-plane" pid master=""
  pid="$(docker inspect -f '{{.State.Pid}}' "$node" 2>/dev/null)" || pid=""
  [[ "$pid" =~ ^[1-9][0-9]*$ ]] || pid=gone
  if [[ "$1" == start ]]; then
    [[ "$pid" != gone && -f "$KUBECONFIG_OUT" ]] || die "no kind cluster $CLUSTER running: hack/kind.sh up first"
    master="https://$(node_ip):6443"
    command -v ipset >/dev/null || {
      log "installing Debian's ipset (kube-router keeps its pod sets in it)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ipset >>"$LOGS/apt.log" 2>&1 ||
        die "apt-get install ipset failed (log: $LOGS/apt.log)"
    }
    # the bridge hands its frames to iptables in that namespace (the default there: said here)
    nsenter --target "$pid" --net sysctl -q -w net.bridge.bridge-nf-call-iptables=1
  fi
  NETPOL_DIR="$KIND_DIR/netpol" NETPOL_NETNS_PID="$pid" NETPOL_KUBECONFIG="$KUBECONFIG_OUT" \
    NETPOL_MASTER="$master" NETPOL_NODE="$node" NETPOL_SERVICE_CIDR="$SERVICE_CIDR" bash "$HACK/netpol.sh" "$1"
}

# The host as the node sees it: the gateway of the node container's network (kind's bridge).
registry_host() {
  local gw
  gw="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}' "$CLUSTER-control-plane" 2>/dev/null)" ||
    die "no kind cluster $CLUSTER running: hack/kind.sh up first"
  [[ "$gw" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "the node's network has no IPv4 gateway ('$gw')"
  echo "$gw"
}

# containerd in the node reads /etc/containerd/certs.d/HOST:PORT/hosts.toml at each pull
# (config_path in hack/kind-base/containerd.toml): no restart.
registry() {  # trust|untrust HOST:PORT
  local addr="${2:-}" host dir
  host="$(registry_host)"
  [[ "$addr" =~ ^${host//./\\.}:[0-9]{1,5}$ ]] || die "registry-$1 takes $host:PORT (hack/kind.sh registry-host), not '$addr'"
  dir="/etc/containerd/certs.d/$addr"
  if [[ "$1" == trust ]]; then
    docker exec -i "$CLUSTER-control-plane" sh -c "mkdir -p '$dir' && cat >'$dir/hosts.toml'" \
      < <(printf 'server = "http://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$addr" "$addr")
    log "the node's containerd pulls from http://$addr ($dir/hosts.toml)"
  else
    docker exec "$CLUSTER-control-plane" rm -rf "$dir" || true
  fi
}

down() {
  netpol stop || log "stopping kube-router (NetworkPolicy) failed; see $KIND_DIR/netpol/kube-router.log"
  routes del
  if [[ -x "$KIND" ]] && dockerd_up && "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "kind delete cluster --name $CLUSTER"
    "$KIND" delete cluster --name "$CLUSTER" >&2
  fi
  rm -f "$KUBECONFIG_OUT"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  dockerd) start_dockerd ;;
  dockerd-stop) stop_dockerd ;;
  tools) build_tools ;;
  build) dockerd_up || die "no dockerd on $DOCKER_SOCK: hack/kind.sh dockerd"; build ;;
  up) up ;;
  down) down ;;
  kubeconfig) echo "$KUBECONFIG_OUT" ;;
  env) echo "export DOCKER_HOST=$DOCKER_HOST KUBECONFIG=$KUBECONFIG_OUT LAMEDUCK_AUDIT_LOG=$AUDIT_DIR/audit.log PATH=$PATHDIR:$(dirname "$KIND"):$K8S_BIN:\$PATH" ;;
  test-images) build_test_images ;;
  netpol-start) netpol start ;;
  netpol-stop) netpol stop ;;
  registry-host) registry_host ;;
  registry-trust) registry trust "${1:-}" ;;
  registry-untrust) registry untrust "${1:-}" ;;
  *) sed -n '2,25p' "$0" >&2; exit 2 ;;
esac
