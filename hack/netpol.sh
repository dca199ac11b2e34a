#!/usr/bin/env bash
# The NetworkPolicy enforcer of the e2e suite's clusters: kube-router's network-policy controller
# alone (--run-firewall; no router, no service proxy, no BGP, no load-balancer allocator), built
# from its Go module. Test infrastructure, never shipped (docs/cluster.md, "NetworkPolicy").
#
#   hack/netpol.sh build    kube-router v$KUBE_ROUTER_VERSION into
#                           ~/.cache/lameduck/kube-router/v<version>/bin (once); prints its path
#   hack/netpol.sh start    start it for one node, once its first sync has written its chains
#                           (prints "started", or "running" if it already runs)
#   hack/netpol.sh stop     stop it (by its pidfile) and remove its iptables chains and ipsets
#   hack/netpol.sh status   exit 0 if it runs
#
# start, stop and status act on the cluster their caller names in the environment; the scripts
# that own a cluster call them: `hack/cluster.sh netpol-start|netpol-stop` (the local harness) and
# `hack/kind.sh netpol-start|netpol-stop` (kind's node).
#   NETPOL_DIR           its pidfile, its log (kube-router.log) and the marker that it was started
#   NETPOL_KUBECONFIG    the credentials it lists and watches pods, namespaces and policies with
#   NETPOL_MASTER        the API server's URL, instead of the kubeconfig's (optional)
#   NETPOL_NODE          the node's name: it guards the pods of that node
#   NETPOL_SERVICE_CIDR  the cluster's service CIDR (kube-router lets traffic to it through)
#   NETPOL_NETNS_PID     run it, and clean up after it, in that process's network namespace (kind's
#                        node container); unset: this host's; `gone`: the namespace no longer exists
# Env: KUBE_ROUTER_VERSION (hack/versions.env), LAMEDUCK_CACHE, BUILD_JOBS (2), BUILD_NICE (10),
#      GOTOOLCHAIN (local), FORCE=1 (rebuild)
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HACK/common.sh"

MODULE=github.com/cloudnativelabs/kube-router/v2
BINARY="$KUBE_ROUTER_BIN/kube-router"
STAMP="$KUBE_ROUTER_BIN/.stamp-kube-router-$KUBE_ROUTER_VERSION"
# What its network-policy controller creates (the prefixes of its netpol package): chains in the
# filter table, and ipsets of pods and CIDRs (TMP-<base32>: the scratch sets of an ipset restore).
CHAIN_RE='^(KUBE-ROUTER-(INPUT|FORWARD|OUTPUT)|KUBE-POD-FW-.+|KUBE-NWPLCY-.+)$'
IPSET_RE='^(KUBE-SRC-.+|KUBE-DST-.+|TMP-[A-Z2-7]{16})$'
SYNC_TIMEOUT=60

log() { printf '[netpol %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need() {
  local v
  for v in "$@"; do
    [[ -n "${!v:-}" ]] || die "$v is not set: run this through hack/cluster.sh netpol-start|netpol-stop or hack/kind.sh netpol-start|netpol-stop"
  done
}

build() {
  if [[ -z "${FORCE:-}" && -f "$STAMP" && -x "$BINARY" ]]; then echo "$BINARY"; return; fi
  command -v go >/dev/null || die "go not found in PATH"
  mkdir -p "$KUBE_ROUTER_BIN"
  local logf="${KUBE_ROUTER_BIN%/bin}/build.log" t0=$SECONDS ldf says
  : >"$logf"
  ldf="-s -w -X $MODULE/pkg/version.Version=v$KUBE_ROUTER_VERSION -X $MODULE/pkg/version.BuildDate=$(date -u +%FT%TZ)"
  log "kube-router v$KUBE_ROUTER_VERSION: go install $MODULE/cmd/kube-router (cold: 3-5 min on 2 cores; log: $logf)"
  # its go.mod has no replace directives, so go install builds it as its go.sum pins it;
  # GOTOOLCHAIN local: its go line (1.21) is met by the machine's Go
  if ! env GOBIN="$KUBE_ROUTER_BIN" CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}" \
    GOFLAGS="${GOFLAGS:-} -p=${BUILD_JOBS:-2} -buildvcs=false" \
    nice -n "${BUILD_NICE:-10}" go install -trimpath -ldflags "$ldf" "$MODULE/cmd/kube-router@v$KUBE_ROUTER_VERSION" \
    >>"$logf" 2>&1; then
    tail -n 30 "$logf" >&2
    die "building kube-router v$KUBE_ROUTER_VERSION failed (log: $logf)"
  fi
  says="$("$BINARY" --version 2>&1)"  # it prints its version on stderr
  echo "$says" >>"$logf"
  [[ "$says" == *" version v$KUBE_ROUTER_VERSION, "* ]] || die "$BINARY says: $says"
  printf 'built %s from %s@v%s with %s in %s s\n' "$(date -u +%FT%TZ)" "$MODULE" "$KUBE_ROUTER_VERSION" \
    "$(go version)" "$((SECONDS - t0))" >"$STAMP"
  log "kube-router v$KUBE_ROUTER_VERSION: built in $((SECONDS - t0)) s into $KUBE_ROUTER_BIN"
  echo "$BINARY"
}

# a command in the enforced network namespace
in_netns() {
  if [[ -n "${NETPOL_NETNS_PID:-}" ]]; then nsenter --target "$NETPOL_NETNS_PID" --net -- "$@"; else "$@"; fi
}

# alive and not a zombie (a child of ours that exited stays one until this script ends)
pid_alive() {
  local st
  st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "$st" && "$st" != Z && "$st" != X ]]
}

# its pid, if the pidfile names a live process of the binary it was started from
running_pid() {
  local pid exe started
  pid="$(cat "$NETPOL_DIR/kube-router.pid" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  started="$(cat "$NETPOL_DIR/kube-router.exe" 2>/dev/null)" || return 1
  [[ "${exe% (deleted)}" == "$started" ]] || return 1
  echo "$pid"
}

# its first full sync is done: the explicit ACCEPT it appends to its FORWARD chain comes last
synced() {
  local rules
  rules="$(in_netns iptables -w -t filter -S KUBE-ROUTER-FORWARD 2>/dev/null)" || return 1
  [[ "$rules" == *"--mark 0x20000/0x20000 -j ACCEPT"* ]]
}

start() {
  need NETPOL_DIR NETPOL_KUBECONFIG NETPOL_NODE NETPOL_SERVICE_CIDR
  mkdir -p "$NETPOL_DIR"
  local pid
  if pid="$(running_pid)"; then log "kube-router runs (pid $pid)"; echo running; return; fi
  [[ "${NETPOL_NETNS_PID:-}" != gone ]] || die "the network namespace to enforce in is gone"
  # what an earlier start left (it died, or was killed): removed, or its chains would look synced
  [[ ! -f "$NETPOL_DIR/started" ]] || stop
  local tool
  for tool in iptables iptables-save iptables-restore ipset nsenter; do
    command -v "$tool" >/dev/null || die "$tool not found: hack/install-deps.sh installs Debian's iptables, ipset and util-linux"
  done
  build >/dev/null
  # Firewall only. No listener at all: v2.1.0 binds its health port on every address (no flag
  # takes an address), so it is off, as are metrics and pprof (their defaults, said here).
  local cmd=("$BINARY" --run-firewall=true --run-router=false --run-service-proxy=false --run-loadbalancer=false
    --kubeconfig="$NETPOL_KUBECONFIG" --hostname-override="$NETPOL_NODE"
    --service-cluster-ip-range="$NETPOL_SERVICE_CIDR"
    --health-port=0 --metrics-port=0 --enable-pprof=false --v=1)
  [[ -z "${NETPOL_MASTER:-}" ]] || cmd+=(--master="$NETPOL_MASTER")
  [[ -z "${NETPOL_NETNS_PID:-}" ]] || cmd=(nsenter --target "$NETPOL_NETNS_PID" --net -- "${cmd[@]}")
  local logf="$NETPOL_DIR/kube-router.log"
  [[ ! -f "$logf" ]] || mv -f "$logf" "$logf.prev"
  log "starting kube-router v$KUBE_ROUTER_VERSION, firewall only, for node $NETPOL_NODE (log: $logf)"
  # from here on `stop` removes what it creates, even if it never comes up
  touch "$NETPOL_DIR/started"
  readlink -f "$BINARY" >"$NETPOL_DIR/kube-router.exe"
  # own session: a Ctrl-C in the caller's terminal does not reach it (fd 9: hack/cluster.sh's lock)
  setsid "${cmd[@]}" </dev/null >>"$logf" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$NETPOL_DIR/kube-router.pid"
  local t0=$SECONDS
  until synced; do
    if ! pid_alive "$pid" || ((SECONDS - t0 >= SYNC_TIMEOUT)); then
      log "kube-router did not sync within ${SYNC_TIMEOUT}s or exited; last lines of $logf:"
      tail -n 20 "$logf" >&2
      # still starting (nsenter not yet replaced by it), or hung: not one `stop` would recognise
      if pid_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
      stop
      die "kube-router did not start"
    fi
    sleep 0.5
  done
  log "kube-router (pid $pid) enforces NetworkPolicy: first sync after $((SECONDS - t0)) s"
  echo started
}

# its chains (the jumps to them from INPUT, FORWARD and OUTPUT first) and its ipsets
remove_its_rules() {
  local builtin rule chains c sets s
  for builtin in INPUT FORWARD OUTPUT; do
    while IFS= read -r rule; do
      [[ -n "$rule" ]] || continue
      eval "in_netns iptables -w -t filter ${rule/-A/-D}" || log "could not delete: $rule"
    done < <(in_netns iptables -w -t filter -S "$builtin" 2>/dev/null | grep -E -- '-j KUBE-ROUTER-(INPUT|FORWARD|OUTPUT)( |$)' || true)
  done
  chains="$(in_netns iptables -w -t filter -S 2>/dev/null | awk '$1 == "-N" {print $2}' | grep -E "$CHAIN_RE" || true)"
  # flush them all before deleting any: they jump to one another
  for c in $chains; do in_netns iptables -w -t filter -F "$c" || log "could not flush chain $c"; done
  for c in $chains; do in_netns iptables -w -t filter -X "$c" || log "could not delete chain $c"; done
  sets="$(in_netns ipset list -n 2>/dev/null | grep -E "$IPSET_RE" || true)"
  for s in $sets; do in_netns ipset destroy "$s" || log "could not destroy ipset $s"; done
  log "removed its $(wc -w <<<"$chains") chains and $(wc -w <<<"$sets") ipsets"
}

stop() {
  need NETPOL_DIR
  local pid i
  if pid="$(running_pid)"; then
    log "stopping kube-router (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do pid_alive "$pid" || break; sleep 0.1; done
    if pid_alive "$pid"; then
      log "kube-router (pid $pid) did not exit after 10 s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$NETPOL_DIR/kube-router.pid" "$NETPOL_DIR/kube-router.exe"
  # only after a start of ours: a host where it never ran keeps whatever another kube-router made
  [[ -f "$NETPOL_DIR/started" ]] || return 0
  if [[ "${NETPOL_NETNS_PID:-}" == gone ]]; then
    log "its network namespace is gone, and its rules with it"
  else
    remove_its_rules
  fi
  rm -f "$NETPOL_DIR/started"
}

status() {
  need NETPOL_DIR
  local pid
  if pid="$(running_pid)"; then
    echo "kube-router (NetworkPolicy)   running (pid $pid)"
  else
    echo "kube-router (NetworkPolicy)   not running"
    return 1
  fi
}

# A namespace named must be another than this script's: acting on this host's by mistake would
# take chains and ipsets that are not in the cluster it was told of.
if [[ -n "${NETPOL_NETNS_PID:-}" && "$NETPOL_NETNS_PID" != gone ]]; then
  netns="$(readlink "/proc/$NETPOL_NETNS_PID/ns/net" 2>/dev/null)" || die "no process $NETPOL_NETNS_PID (NETPOL_NETNS_PID)"
  [[ "$netns" != "$(readlink /proc/self/ns/net)" ]] || die "process $NETPOL_NETNS_PID (NETPOL_NETNS_PID) is in this host's network namespace"
fi

case "${1:-}" in
  build) build ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) sed -n '2,24p' "$0" >&2; exit 2 ;;
esac
