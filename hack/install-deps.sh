#!/usr/bin/env bash
# Install the Debian packages the local cluster harness needs (only the missing ones).
# Usage: hack/install-deps.sh [--check]   (--check: only report, exit 1 if something is missing)
set -euo pipefail

PKGS=(
  etcd-server                   # etcd 3.4 for the API server
  containerd runc               # container runtime (CRI v1)
  containernetworking-plugins   # bridge, host-local, portmap, loopback CNI plugins (/usr/lib/cni)
  iptables conntrack ipset      # kube-proxy iptables mode; ipset: kube-router (hack/netpol.sh)
  ethtool socat kmod            # kubelet / port-forward helpers
  iproute2 openssl curl ca-certificates util-linux mount
  buildah skopeo debootstrap    # offline image builds (hack/build-images.sh)
  gcc libc6-dev                 # static pause binary for the sandbox image
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "[install-deps] all ${#PKGS[@]} packages present"
  exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
  echo "[install-deps] missing: ${missing[*]}"
  exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "[install-deps] need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "[install-deps] installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends keeps podman/docker-ish extras out; policy-rc.d-free systems may
# start containerd.service; the harness never uses the system containerd socket anyway.
apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian's containerd package enables its own service where systemd runs. The harness runs
# its own containerd with separate root/state/socket, so the system one is left alone.
echo "[install-deps] done"
