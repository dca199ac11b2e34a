#!/usr/bin/env bash
# Fake nodes and pods at fleet scale on the local cluster, with kwok (built by build-k8s.sh).
# For operator-scale tests only: kwok's fast pod-delete stage ignores grace periods and
# preStop hooks, so termination behaviour must be tested on the real node.
#
#   hack/kwok.sh up            start kwok (needs `hack/cluster.sh up`); manages nodes labelled type=kwok
#   hack/kwok.sh nodes N [P]   make sure fake nodes kwok-node-0..N-1 exist (tainted kwok.x-k8s.io/node=fake:NoSchedule),
#                              each taking P pods (default 110, at most 250: one /24 of addresses)
#   hack/kwok.sh down          delete the fake nodes, stop kwok (hack/cluster.sh down stops it too)
#   hack/kwok.sh status
#
# Pods for fake nodes need a toleration for that taint (and e.g. nodeSelector type: kwok).
# Fake node i gets podCIDR 10.214.(i+1).0/24 (the real node has 10.214.0.0/24 on the CNI
# bridge); hack/cluster.sh routes the rest of 10.214.0.0/16 (and kwok's fallback range
# 10.216.0.0/16) into its drop device, so a Service that selects fake pods never sends a
# packet off this machine.
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HACK/common.sh"
BIN="$K8S_BIN"
KCFG="$RUN/admin.kubeconfig"
PIDF="$RUN/pids/kwok.pid"
LOGF="$RUN/logs/kwok.log"
KWOK_POD_CIDR="10.216.0.1/16"

log() { printf '[kwok %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
kc() { "$BIN/kubectl" --kubeconfig "$KCFG" --request-timeout=10s "$@"; }

kwok_pid() {
  local pid exe
  [[ -f "$PIDF" ]] || return 1
  pid="$(<"$PIDF")"
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  [[ "${exe% (deleted)}" == "$BIN/kwok" ]] || return 1
  echo "$pid"
}

stage_config() {
  local dir
  dir="$(cd /tmp && go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
  [[ -d "$dir/kustomize/stage" ]] || die "kwok module source not found (go mod download sigs.k8s.io/kwok@v$KWOK_VERSION)"
  local f first=1
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    [[ $first == 1 ]] || echo "---"
    first=0
    cat "$dir/kustomize/stage/$f"
  done
}

cmd_up() {
  [[ -x "$BIN/kwok" ]] || bash "$HACK/build-k8s.sh" kwok >&2
  bash "$HACK/cluster.sh" status >/dev/null || die "cluster not healthy: run hack/cluster.sh up"
  if pid="$(kwok_pid)"; then log "kwok already running (pid $pid)"; return 0; fi
  mkdir -p "$RUN/conf" "$RUN/pids" "$RUN/logs"
  stage_config >"$RUN/conf/kwok-stages.yaml"
  log "starting kwok (log: $LOGF)"
  # client-go's streaming lists need the API server's RequestWatchProgress; without them kwok's
  # lease informer falls behind, its lease renewals conflict and the fake nodes go NotReady.
  KUBE_FEATURE_WatchListClient=false setsid "$BIN/kwok" --kubeconfig "$KCFG" --config "$RUN/conf/kwok-stages.yaml" \
    --manage-nodes-with-label-selector type=kwok --cidr "$KWOK_POD_CIDR" \
    --node-lease-duration-seconds 40 </dev/null >>"$LOGF" 2>&1 9>&- &
  echo $! >"$PIDF"
  sleep 2
  kwok_pid >/dev/null || { tail -n 20 "$LOGF" >&2; die "kwok exited"; }
  log "kwok running (pid $(<"$PIDF"))"
}

cmd_nodes() {
  local n="${1:?usage: kwok.sh nodes N [PODS]}" pods="${2:-110}" i name have
  ((n <= 255)) || die "at most 255 fake nodes (one /24 of the pod CIDR 10.214.0.0/16 each)"
  if ! [[ "$pods" =~ ^[0-9]+$ ]] || ((pods < 1 || pods > 250)); then
    die "1 to 250 pods a fake node (one /24 of addresses each)"
  fi
  kwok_pid >/dev/null || die "kwok not running: hack/kwok.sh up"
  for ((i = 0; i < n; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64}
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
spec:
  podCIDR: 10.214.$((i + 1)).0/24
  taints:
  - {key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "$pods"}
  capacity: {cpu: "32", memory: 256Gi, pods: "$pods"}
EOF
  done | kc apply -f - >/dev/null
  # apply leaves an existing node's status as it was: nodes made with another capacity get this one.
  kc get nodes -l type=kwok -o jsonpath='{range .items[*]}{.metadata.name} {.status.capacity.pods}{"\n"}{end}' |
    while read -r name have; do
      [[ "$have" == "$pods" ]] && continue
      kc patch node "$name" --subresource=status --type=merge \
        -p "{\"status\":{\"capacity\":{\"pods\":\"$pods\"},\"allocatable\":{\"pods\":\"$pods\"}}}" >/dev/null
    done
  kc wait --for=condition=Ready node -l type=kwok --timeout=300s >/dev/null
  log "$(kc get nodes -l type=kwok --no-headers | grep -c ' Ready') fake nodes Ready"
}

cmd_down() {
  if [[ -f "$KCFG" ]] && kc get --raw /readyz >/dev/null 2>&1; then
    kc delete nodes -l type=kwok --wait=false >/dev/null 2>&1 || true
  fi
  local pid
  if pid="$(kwok_pid)"; then
    log "stopping kwok (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDF"
}

case "${1:-}" in
  up) cmd_up ;;
  nodes) cmd_nodes "${2:-}" ;;
  down) cmd_down ;;
  status) if pid="$(kwok_pid)"; then echo "kwok running (pid $pid)"; else echo "kwok not running"; exit 1; fi ;;
  *) echo "usage: $0 up|nodes N|down|status" >&2; exit 2 ;;
esac
