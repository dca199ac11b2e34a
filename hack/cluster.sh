#!/usr/bin/env bash
# A real single-node Kubernetes cluster made of child processes on this machine:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet,
# kube-proxy (iptables mode), bridge CNI. Needs root. Binaries come from
# hack/build-k8s.sh (built on first use, cached by version).
#
#   hack/cluster.sh up       start (or reuse a healthy) cluster; prints the kubeconfig path
#   hack/cluster.sh down     stop what `up` started (by pidfile) and undo its host changes
#   hack/cluster.sh down --purge   also delete the run dir (PKI, etcd data, images)
#   hack/cluster.sh status   what runs; exit 0 only if the cluster is healthy
#   hack/cluster.sh kubeconfig   print the admin kubeconfig path
#   hack/cluster.sh env      print `export KUBECONFIG=... PATH=...` lines
#   hack/cluster.sh proxy-sync 10s   restart kube-proxy with that iptables minSyncPeriod
#   hack/cluster.sh apiserver-outage 30   stop kube-apiserver for 30 s, then start it again
#   hack/cluster.sh registry-trust 127.0.0.1:PORT     let containerd pull from the plain-HTTP OCI
#                    registry there (the release e2e test's); registry-untrust 127.0.0.1:PORT undoes it
#   hack/cluster.sh netpol-start   enforce NetworkPolicy: kube-router's firewall (hack/netpol.sh),
#                    with the pod guard below repeated in mangle; netpol-stop stops it (down does too)
#
# Env (defaults): LAMEDUCK_RUN_DIR (/var/lib/lameduck-cluster), LAMEDUCK_CACHE
# (~/.cache/lameduck), LAMEDUCK_NODE_IP (10.213.0.1, put on the port-less bridge lameduck0),
# LAMEDUCK_API_PORT (6443), LAMEDUCK_UP_TIMEOUT (180 s), K8S_VERSION (hack/versions.env).
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HACK/common.sh"

BIN="$K8S_BIN"
PKI="$RUN/pki"; LOGS="$RUN/logs"; PIDS="$RUN/pids"; CONF="$RUN/conf"
KUBECONFIG_ADMIN="$RUN/admin.kubeconfig"

NODE_NAME="lameduck-node"
IFACE="lameduck0"
NODE_IP="${LAMEDUCK_NODE_IP:-10.213.0.1}"
API_PORT="${LAMEDUCK_API_PORT:-6443}"
POD_CIDR="10.214.0.0/16"
NODE_POD_CIDR="10.214.0.0/24"
SERVICE_CIDR="10.215.0.0/16"
KWOK_POD_CIDR="10.216.0.0/16"   # fake pod IPs of hack/kwok.sh: routed into the drop device too
API_SERVICE_IP="10.215.0.1"
BRIDGE="lameduck-br0"
CNI_NET="lameduck"
ETCD_PORT=23790; ETCD_PEER_PORT=23800
CTRD_DIR="$RUN/containerd"
CTRD_STATE="/run/lameduck-containerd"
CTRD_SOCK="$CTRD_DIR/containerd.sock"
PAUSE_IMAGE="registry.k8s.io/pause:3.10.1"
FWD_CHAIN="LAMEDUCK-FWD"
CGROUP_ROOT="lameduck"   # kubelet cgroupRoot: pods live under /sys/fs/cgroup/*/lameduck/kubepods
HOST_MARK="$RUN/host-state"   # exists while host changes of ours may be in place
UP_TIMEOUT="${LAMEDUCK_UP_TIMEOUT:-180}"
# kube-proxy's iptables minSyncPeriod: 1s is its default; raise it (proxy-sync) to make the
# data plane lag like a large cluster's.
PROXY_MIN_SYNC="${LAMEDUCK_PROXY_MIN_SYNC:-1s}"
# host paths kubelet/containerd/libcni create whatever their config says; the ones that did
# not exist before `up` are recorded in $RUN/created-dirs and removed by `down`
HOST_DIRS=(/var/lib/kubelet /var/log/containers /var/log/pods /run/containerd /var/lib/cni)

# start order; `down` stops in reverse
COMPONENTS=(etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
# sysctls that we or kubelet/kube-proxy change; saved before the first change, restored by down
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
  net.ipv4.conf.all.route_localnet vm.overcommit_memory vm.panic_on_oom kernel.panic
  kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }
kc() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" --request-timeout=5s "$@"; }
ctr_() { ctr --address "$CTRD_SOCK" -n k8s.io "$@"; }

# ---------------------------------------------------------------- processes
binary_of() {  # component -> executable path
  case "$1" in
    kwok) echo "$BIN/kwok" ;;
    etcd) command -v etcd ;;
    containerd) command -v containerd ;;
    *) echo "$BIN/$1" ;;
  esac
}

# pid of a component if its pidfile names a live process running that component's binary
comp_pid() {
  local f="$PIDS/$1.pid" pid exe started
  [[ -f "$f" ]] || return 1
  pid="$(<"$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  # the binary it was started from (start_comp records it): a cluster brought up at another
  # K8S_VERSION is still recognised, and so stopped, by a `down` run with this one
  started="$(cat "$PIDS/$1.exe" 2>/dev/null || binary_of "$1")"
  [[ "${exe% (deleted)}" == "$started" ]] || return 1
  echo "$pid"
}

start_comp() {
  local name="$1"; shift
  log "starting $name (log: $LOGS/$name.log)"
  # setsid: own session, so a Ctrl-C in the calling terminal/test runner does not kill it
  # (fd 9 is our lock: the daemon must not inherit it)
  setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 9>&- &
  echo $! >"$PIDS/$name.pid"
  readlink -f "$(command -v "$1")" >"$PIDS/$name.exe"
}

# alive and not a zombie (an exited child of ours may wait a moment for init to reap it)
pid_alive() {
  local st
  st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "$st" && "$st" != Z && "$st" != X ]]
}

wait_until() {  # desc timeout cmd...
  local desc="$1" t="$2" start=$SECONDS; shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - start >= t)); then log "timed out after ${t}s waiting for $desc"; return 1; fi
    sleep 0.5
  done
  log "$desc: ok after $((SECONDS - start))s"
}

# ---------------------------------------------------------------- host setup / teardown
save_sysctls() {
  [[ -f "$RUN/sysctl.orig" ]] && return 0
  local k v
  for k in "${SYSCTLS[@]}"; do
    v="$(sysctl -n "$k" 2>/dev/null)" && echo "$k=$v"
  done >"$RUN/sysctl.orig.tmp"
  mv "$RUN/sysctl.orig.tmp" "$RUN/sysctl.orig"
}

restore_sysctls() {
  [[ -f "$RUN/sysctl.orig" ]] || return 0
  local line
  while IFS= read -r line; do
    [[ -n "$line" ]] && sysctl -q -w "$line" >/dev/null 2>&1 || true
  done <"$RUN/sysctl.orig"
  rm -f "$RUN/sysctl.orig"
}

fwd_rules() {  # print the rules of our FORWARD guard chain
  # pods may talk to pods (directly or through a ClusterIP DNAT) and to this node;
  # anything a pod sends elsewhere is dropped, so no pod traffic leaves the machine
  echo "-s $POD_CIDR -d $POD_CIDR -j RETURN"
  echo "-s $POD_CIDR -j DROP"
}

# our guard chain in a table (filter, or mangle too while kube-router runs), jumped to from its
# FORWARD first
add_guard() {  # table
  local table="$1" r
  iptables -t "$table" -N "$FWD_CHAIN" 2>/dev/null || iptables -t "$table" -F "$FWD_CHAIN"
  while IFS= read -r r; do
    # shellcheck disable=SC2086
    iptables -t "$table" -A "$FWD_CHAIN" $r
  done < <(fwd_rules)
  iptables -t "$table" -C FORWARD -j "$FWD_CHAIN" 2>/dev/null || iptables -t "$table" -I FORWARD 1 -j "$FWD_CHAIN"
}

remove_guard() {  # table
  local table="$1"
  iptables -t "$table" -S "$FWD_CHAIN" >/dev/null 2>&1 || return 0
  while iptables -t "$table" -D FORWARD -j "$FWD_CHAIN" 2>/dev/null; do :; done
  iptables -t "$table" -F "$FWD_CHAIN"; iptables -t "$table" -X "$FWD_CHAIN"
}

setup_host_network() {
  touch "$HOST_MARK"
  save_sysctls
  sysctl -q -w net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 >/dev/null
  if ! ip link show "$IFACE" >/dev/null 2>&1; then
    # this kernel has no dummy driver; a bridge without ports serves the same purpose:
    # it holds the node address and silently drops whatever is routed into it
    ip link add "$IFACE" type bridge
  fi
  ip addr replace "$NODE_IP/32" dev "$IFACE"
  ip link set "$IFACE" up
  # Service IPs route into that port-less bridge (which drops): a ClusterIP packet that
  # kube-proxy has not DNAT'ed (yet) never leaves the machine.
  ip route replace "$SERVICE_CIDR" dev "$IFACE"
  ip route replace "$KWOK_POD_CIDR" dev "$IFACE"
  # the rest of the pod CIDR (other nodes' ranges, e.g. kwok's fake nodes) too; this
  # node's /24 is more specific and stays on the CNI bridge
  ip route replace "$POD_CIDR" dev "$IFACE"
  add_guard filter
}

# remove chains matching a prefix from a table (flush all first, then delete), per family
delete_chains() {  # cmd table chain-name-regex
  local cmd="$1" table="$2" re="$3" chains c rule
  chains="$("$cmd" -t "$table" -S 2>/dev/null | awk '$1=="-N"{print $2}' | grep -E "$re" || true)"
  [[ -n "$chains" ]] || return 0
  for c in $chains; do
    # drop the jumps to this chain from any other chain (e.g. INPUT -j KUBE-FIREWALL)
    while IFS= read -r rule; do
      [[ -n "$rule" ]] || continue
      eval "$cmd -t $table ${rule/-A/-D}" 2>/dev/null || true
    done < <("$cmd" -t "$table" -S 2>/dev/null | grep -E -- "^-A .* -j $c( |\$)" || true)
  done
  for c in $chains; do "$cmd" -t "$table" -F "$c" 2>/dev/null || true; done
  for c in $chains; do "$cmd" -t "$table" -X "$c" 2>/dev/null || true; done
}

teardown_host_network() {
  # kube-proxy's own cleanup of every rule it (or an older kube-proxy) made
  if [[ -x "$BIN/kube-proxy" ]]; then
    "$BIN/kube-proxy" --cleanup >>"$LOGS/kube-proxy-cleanup.log" 2>&1 || true
  fi
  local cmd t
  for cmd in iptables ip6tables; do
    for t in filter nat mangle; do
      # chains kubelet/kube-proxy create (kube-proxy --cleanup leaves kubelet's)
      delete_chains "$cmd" "$t" '^KUBE-'
    done
  done
  # portmap (hostPort) chains: per-pod CNI-DN-* chains, then the shared ones if empty
  delete_chains iptables nat '^CNI-DN-'
  for t in CNI-HOSTPORT-DNAT CNI-HOSTPORT-SETMARK CNI-HOSTPORT-MASQ; do
    if iptables -t nat -S "$t" >/dev/null 2>&1 && [[ $(iptables -t nat -S "$t" | wc -l) -le 1 ]]; then
      delete_chains iptables nat "^$t\$"
    fi
  done
  remove_guard filter
  remove_guard mangle
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE" || true
  ip route del "$SERVICE_CIDR" dev "$IFACE" 2>/dev/null || true
  ip route del "$KWOK_POD_CIDR" dev "$IFACE" 2>/dev/null || true
  ip route del "$POD_CIDR" dev "$IFACE" 2>/dev/null || true
  ip link show "$IFACE" >/dev/null 2>&1 && ip link del "$IFACE" || true
  restore_sysctls
}

# kill every process left in our cgroup tree (containers of a killed run), then rmdir it
cleanup_cgroups() {
  local d pid
  for d in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
    [[ -d "$d" ]] || continue
    while IFS= read -r pid; do
      [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
    done < <(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
  done
  sleep 0.2
  for d in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
    [[ -d "$d" ]] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

# kubelet wants its cgroupRoot to exist in every v1 hierarchy
make_cgroup_root() {
  local h
  for h in /sys/fs/cgroup/*/; do
    h="${h%/}"
    [[ "$h" == */unified ]] && continue
    [[ -f "$h/cgroup.procs" ]] || continue
    mkdir -p "$h/$CGROUP_ROOT"
    if [[ "$h" == */cpuset ]]; then
      cat "$h/cpuset.cpus" >"$h/$CGROUP_ROOT/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h/$CGROUP_ROOT/cpuset.mems"
    fi
  done
}

# containerd shims we started outlive containerd; find them by our socket path
kill_our_shims() {
  local p cmd
  for p in /proc/[0-9]*; do
    cmd="$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" || continue
    if [[ "$cmd" == *containerd-shim* && "$cmd" == *"$CTRD_SOCK"* ]]; then
      log "killing leftover shim ${p#/proc/}"
      kill -KILL "${p#/proc/}" 2>/dev/null || true
    fi
  done
}

unmount_under() {  # unmount everything mounted below the given dirs, deepest first
  local m
  while IFS= read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done < <(for d in "$@"; do findmnt -rn -o TARGET | awk -v p="$d/" 'index($0, p) == 1'; done | sort -r | uniq)
}

# stop containers through containerd while it still runs (keeps its image store intact)
remove_all_containers() {
  [[ -S "$CTRD_SOCK" ]] || return 0
  comp_pid containerd >/dev/null || return 0
  local ids id
  ids="$(ctr_ tasks ls -q 2>/dev/null || true)"
  for id in $ids; do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  [[ -n "$ids" ]] && sleep 0.5
  for id in $ids; do ctr_ tasks rm -f "$id" >/dev/null 2>&1 || true; done
  ids="$(ctr_ containers ls -q 2>/dev/null || true)"
  for id in $ids; do ctr_ containers rm "$id" >/dev/null 2>&1 || true; done
  [[ -z "$ids" ]] || log "removed $(wc -w <<<"$ids") containers"
}

stop_comps() {  # SIGTERM a set of components at once, wait for all, SIGKILL stragglers
  local c pid pids=() names=() i
  for c in "$@"; do
    if pid="$(comp_pid "$c")"; then
      log "stopping $c (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid"); names+=("$c")
    fi
    rm -f "$PIDS/$c.pid" "$PIDS/$c.exe"
  done
  for ((i = 0; i < 200; i++)); do
    local alive=0
    for pid in "${pids[@]}"; do pid_alive "$pid" && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if pid_alive "${pids[$i]}"; then
      log "${names[$i]} (pid ${pids[$i]}) did not exit after 20s, sending SIGKILL"
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
  done
  sleep 0.2
}

do_down() {
  local purge="${1:-}"
  mkdir -p "$PIDS" "$LOGS"
  netpol stop || log "stopping kube-router (NetworkPolicy) failed; see $RUN/netpol/kube-router.log"
  # kubelet first, so that it restarts nothing; containers next, through containerd
  stop_comps kwok kube-proxy kubelet
  remove_all_containers
  stop_comps kube-controller-manager kube-scheduler kube-apiserver containerd etcd
  kill_our_shims
  [[ -f "$HOST_MARK" ]] && cleanup_cgroups
  unmount_under "$RUN" "$CTRD_STATE"
  rm -rf "$CTRD_STATE" "$RUN/cni/ipam" "$RUN/kubelet" "$RUN/etcd"
  # libcni's result cache for our network
  rm -f /var/lib/cni/results/"$CNI_NET"-* /var/lib/cni/results/cni-loopback-* 2>/dev/null || true
  if [[ -f "$RUN/created-dirs" ]]; then
    local d
    while IFS= read -r d; do
      [[ -n "$d" && -d "$d" ]] || continue
      unmount_under "$d"
      rm -rf "$d"
    done <"$RUN/created-dirs"
    rm -f "$RUN/created-dirs"
  fi
  # kubelet's /var/log/containers symlinks into our pod log dir
  if [[ -d /var/log/containers ]]; then
    find /var/log/containers -maxdepth 1 -type l -lname "$RUN/*" -delete 2>/dev/null || true
  fi
  # host-wide cleanup (KUBE-* chains, our cgroup tree, sysctls) only if this run dir made
  # host changes: a `down` on a machine where we never ran touches nothing of anyone else
  if [[ -f "$HOST_MARK" ]]; then
    teardown_host_network
    rm -f "$HOST_MARK"
  fi
  if [[ "$purge" == "--purge" ]]; then
    log "purging $RUN"
    rm -rf "$RUN"
  fi
}

# after our own cleanup nothing may listen on the ports we need
check_ports() {
  local p busy=()
  for p in "$API_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" 10248 10249 10250 10256 10257 10259; do
    if ss -Htln "sport = :$p" 2>/dev/null | grep -q .; then busy+=("$p"); fi
  done
  [[ ${#busy[@]} -eq 0 ]] || die "ports already in use by something else: ${busy[*]} (see: ss -tlnp)"
}

# ---------------------------------------------------------------- PKI and configs
sign_cert() {  # name CN O kind(client|server|both) [SANs]
  local name="$1" cn="$2" o="$3" kind="$4" san="${5:-}" eku subj
  case "$kind" in client) eku=clientAuth ;; server) eku=serverAuth ;; *) eku=serverAuth,clientAuth ;; esac
  subj="/CN=$cn"; [[ -n "$o" ]] && subj="/O=$o$subj"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -n "$san" ]] && echo "subjectAltName=$san"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
  chmod 600 "$PKI/$name.key"
}

gen_pki() {
  local stamp="v2 $NODE_IP"
  if [[ -f "$PKI/.done" && "$(<"$PKI/.done")" == "$stamp" ]]; then return 0; fi
  log "generating PKI in $PKI"
  rm -rf "$PKI"; mkdir -p "$PKI"; chmod 700 "$PKI"
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 3650 -subj "/CN=lameduck-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  chmod 600 "$PKI/ca.key"
  sign_cert apiserver kube-apiserver "" server \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP,IP:$API_SERVICE_IP"
  sign_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters client
  sign_cert admin kubernetes-admin system:masters client
  sign_cert controller-manager system:kube-controller-manager "" client
  sign_cert scheduler system:kube-scheduler "" client
  sign_cert kube-proxy system:kube-proxy "" client
  sign_cert kubelet "system:node:$NODE_NAME" system:nodes client
  sign_cert kubelet-serving "$NODE_NAME" "" server "DNS:$NODE_NAME,DNS:localhost,IP:$NODE_IP,IP:127.0.0.1"
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI/sa.key"
  # front-proxy CA + client: lets aggregated API servers (e.g. metrics-server) authenticate
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
    -keyout "$PKI/front-proxy-ca.key" -out "$PKI/front-proxy-ca.crt" -days 3650 -subj "/CN=lameduck-front-proxy-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  chmod 600 "$PKI/front-proxy-ca.key"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$PKI/front-proxy-client.key" -out "$PKI/front-proxy-client.csr" -subj "/CN=front-proxy-client" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$PKI/fp.ext"
  openssl x509 -req -in "$PKI/front-proxy-client.csr" -CA "$PKI/front-proxy-ca.crt" -CAkey "$PKI/front-proxy-ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$PKI/fp.ext" -out "$PKI/front-proxy-client.crt" 2>/dev/null
  rm -f "$PKI/front-proxy-client.csr" "$PKI/fp.ext"
  chmod 600 "$PKI/front-proxy-client.key"
  echo "$stamp" >"$PKI/.done"
}

write_kubeconfig() {  # file certname
  local f="$1" n="$2"
  umask 077
  cat >"$f" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lameduck
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $n
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$n.crt")
    client-key-data: $(base64 -w0 "$PKI/$n.key")
contexts:
- name: lameduck
  context:
    cluster: lameduck
    user: $n
current-context: lameduck
EOF
  umask 022
}

write_configs() {
  mkdir -p "$CONF" "$RUN/cni/net.d" "$CTRD_DIR/certs.d" "$RUN/pod-logs"
  write_kubeconfig "$KUBECONFIG_ADMIN" admin
  write_kubeconfig "$CONF/controller-manager.kubeconfig" controller-manager
  write_kubeconfig "$CONF/scheduler.kubeconfig" scheduler
  write_kubeconfig "$CONF/kube-proxy.kubeconfig" kube-proxy
  write_kubeconfig "$CONF/kubelet.kubeconfig" kubelet

  cat >"$CTRD_DIR/config.toml" <<EOF
# generated by hack/cluster.sh: a containerd of its own (socket/root/state) for the harness
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_STATE"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = ""
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  enable_selinux = false
  # our root has no CAP_SYS_RESOURCE (VM sandbox), so runc cannot set the negative
  # oom_score_adj kubelet asks for the pause container ("nsexec: failed to update
  # /proc/self/oom_score_adj: Permission denied"): clamp to containerd's own value
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$CTRD_STATE/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$CTRD_DIR/certs.d"
EOF
  # No registry here: pulls of the usual registries go to a closed loopback port and fail
  # fast instead of reaching out. Use imagePullPolicy: Never with images from build-images.sh.
  local r
  for r in docker.io registry.k8s.io ghcr.io quay.io gcr.io; do
    mkdir -p "$CTRD_DIR/certs.d/$r"
    printf 'server = "http://127.0.0.1:9"\n[host."http://127.0.0.1:9"]\n  capabilities = ["pull", "resolve"]\n' \
      >"$CTRD_DIR/certs.d/$r/hosts.toml"
  done

  cat >"$RUN/cni/net.d/10-$CNI_NET.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NET",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$RUN/cni/ipam",
        "ranges": [[{"subnet": "$NODE_POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  printf 'nameserver 127.0.0.1\noptions ndots:1\n' >"$CONF/resolv.conf"

  cat >"$CONF/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
# this host runs cgroup v1, which kubelet refuses from 1.35 on unless told (KEP-5573)
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CTRD_SOCK
resolvConf: $CONF/resolv.conf
clusterDomain: cluster.local
podLogsDir: $RUN/pod-logs
podCIDR: $NODE_POD_CIDR
maxPods: 110
serializeImagePulls: false
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  imagefs.available: 2%
  nodefs.inodesFree: 2%
nodeStatusReportFrequency: 10s
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 10s
staticPodPath: ""
shutdownGracePeriod: 0s
oomScoreAdj: 0
EOF

  cat >"$CONF/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $CONF/kube-proxy.kubeconfig
mode: iptables
oomScoreAdj: 0
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  minSyncPeriod: $PROXY_MIN_SYNC
  syncPeriod: 30s
EOF

  # Who asked the API for what, as the API server saw it: the e2e suite counts the
  # sidecars' requests here. Only service accounts' requests are kept, without bodies.
  cat >"$CONF/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
EOF
}

# pause image: pause.c from the k8s.io/kubernetes module, static, as a docker-archive
pause_archive() {
  local out="$CACHE_ROOT/images/pause-$K8S_VERSION.tar"
  if [[ -f "$out" ]]; then echo "$out"; return; fi
  log "building pause image from k8s.io/kubernetes@v$K8S_VERSION build/pause/linux/pause.c"
  local src tmp
  src="$(cd /tmp && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
  [[ -f "$src/build/pause/linux/pause.c" ]] || die "pause.c not found in $src"
  tmp="$(mktemp -d)"
  mkdir -p "$tmp/rootfs" "$CACHE_ROOT/images"
  gcc -Os -static -Wall -DVERSION="v3.10.1-lameduck" -o "$tmp/rootfs/pause" "$src/build/pause/linux/pause.c"
  strip "$tmp/rootfs/pause"
  tar -C "$tmp/rootfs" --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$tmp/layer.tar" pause
  local diffid cfg cfgid
  diffid="$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)"
  cfg="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Entrypoint\":[\"/pause\"],\"User\":\"65535:65535\",\"WorkingDir\":\"/\"},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$diffid\"]},\"history\":[{\"created_by\":\"hack/cluster.sh pause_archive\"}]}"
  printf '%s' "$cfg" >"$tmp/config.json"
  cfgid="$(sha256sum "$tmp/config.json" | cut -d' ' -f1)"
  mv "$tmp/config.json" "$tmp/$cfgid.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$cfgid" "$PAUSE_IMAGE" >"$tmp/manifest.json"
  tar -C "$tmp" --owner=0 --group=0 --mtime=@0 -cf "$out.tmp" manifest.json "$cfgid.json" layer.tar
  mv "$out.tmp" "$out"
  rm -rf "$tmp"
  echo "$out"
}

# ---------------------------------------------------------------- health
all_running() {
  local c
  for c in "${COMPONENTS[@]}"; do comp_pid "$c" >/dev/null || return 1; done
}
api_ready() { kc get --raw /readyz >/dev/null 2>&1; }
node_ready() {
  [[ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}
default_sa() { kc -n default get serviceaccount default >/dev/null 2>&1; }
healthy() { all_running && api_ready && node_ready; }

# ---------------------------------------------------------------- commands
cmd_up() {
  need_root
  local t0=$SECONDS
  mkdir -p "$RUN" "$LOGS" "$PIDS"
  exec 9>"$RUN/.lock"; flock -w 1800 9 || die "another hack/cluster.sh holds $RUN/.lock"
  if [[ -x "$BIN/kubectl" && -f "$KUBECONFIG_ADMIN" ]] && healthy; then
    log "cluster already up and healthy; reusing it"
    echo "$KUBECONFIG_ADMIN"
    return 0
  fi
  bash "$HACK/install-deps.sh" >&2
  bash "$HACK/build-k8s.sh" k8s >&2
  local tb=$SECONDS
  log "cleaning up any previous run"
  do_down
  mkdir -p "$RUN" "$LOGS" "$PIDS"
  for c in "${COMPONENTS[@]}"; do
    [[ -f "$LOGS/$c.log" ]] && mv -f "$LOGS/$c.log" "$LOGS/$c.log.prev"
  done
  local d
  for d in "${HOST_DIRS[@]}"; do
    [[ -e "$d" ]] || echo "$d" >>"$RUN/created-dirs"
  done
  check_ports
  setup_host_network
  make_cgroup_root
  gen_pki
  write_configs
  local pause; pause="$(pause_archive)"
  # MutatingAdmissionPolicy (docs/mutating-admission-policy.md): beta and off by default before
  # 1.36, GA (on, v1) from 1.36, where naming its gate or the beta version is not needed
  local minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
  local MAP_FLAGS=()
  if ((minor < 36)); then
    MAP_FLAGS=(--feature-gates=MutatingAdmissionPolicy=true --runtime-config=admissionregistration.k8s.io/v1beta1=true)
  fi

  start_comp etcd etcd --name lameduck --data-dir "$RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "lameduck=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
    --unsafe-no-fsync --snapshot-count 10000 --log-level warn
  start_comp containerd containerd --config "$CTRD_DIR/config.toml"
  wait_until etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

  start_comp kube-apiserver "$BIN/kube-apiserver" \
    --advertise-address="$NODE_IP" --bind-address="$NODE_IP" --secure-port="$API_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --audit-policy-file="$CONF/audit-policy.yaml" --audit-log-path="$LOGS/audit.log" \
    --audit-log-maxsize=100 --audit-log-maxbackup=1 \
    "${MAP_FLAGS[@]}" --profiling=false --v=1

  wait_until "containerd socket" 30 ctr --address "$CTRD_SOCK" version
  ctr_ images import "$pause" >>"$LOGS/containerd-import.log" 2>&1 ||
    die "importing the pause image failed: $(tail -3 "$LOGS/containerd-import.log")"

  wait_until kube-apiserver 60 api_ready || die "kube-apiserver not ready; see $LOGS/kube-apiserver.log"

  # Client rate limits raised above the defaults (20 and 50 requests/s), as kwok's own clusters
  # do: a fleet of thousands of Deployments on fake nodes (bench/fleet.py) otherwise waits
  # minutes on the controllers, not on what is measured. A node is NotReady only after 5 minutes
  # without a heartbeat: fake nodes' heartbeats lag when 2 CPUs run thousands of pods' updates,
  # and a NotReady node makes every pod on it unavailable.
  start_comp kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$CONF/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$CONF/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$CONF/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false \
    --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --use-service-account-credentials=true \
    --allocate-node-cidrs=true --cluster-cidr="$POD_CIDR" --node-cidr-mask-size=24 \
    --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false --v=1 \
    --kube-api-qps=500 --kube-api-burst=1000 --concurrent-deployment-syncs=10 --concurrent-replicaset-syncs=10 \
    --node-monitor-grace-period=5m
  start_comp kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$CONF/scheduler.kubeconfig" \
    --authentication-kubeconfig="$CONF/scheduler.kubeconfig" \
    --authorization-kubeconfig="$CONF/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1 \
    --kube-api-qps=500 --kube-api-burst=1000
  start_comp kubelet "$BIN/kubelet" \
    --config="$CONF/kubelet.yaml" --kubeconfig="$CONF/kubelet.kubeconfig" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --root-dir="$RUN/kubelet" --cert-dir="$RUN/kubelet/pki" --v=1
  start_comp kube-proxy "$BIN/kube-proxy" --config="$CONF/kube-proxy.yaml" --v=1

  local left=$((UP_TIMEOUT - (SECONDS - tb)))
  ((left > 10)) || left=10
  if ! wait_until "node $NODE_NAME Ready" "$left" node_ready; then
    kc get nodes -o wide >&2 || true
    tail -n 20 "$LOGS/kubelet.log" >&2 || true
    die "node did not become Ready; logs in $LOGS"
  fi
  wait_until "default ServiceAccount" 30 default_sa || die "no default ServiceAccount; see $LOGS/kube-controller-manager.log"
  all_running || die "a component exited during start-up: $(cmd_status 2>&1 | grep -v running || true)"
  log "cluster up: $((SECONDS - tb))s from cached binaries ($((SECONDS - t0))s in all)"
  log "export KUBECONFIG=$KUBECONFIG_ADMIN"
  echo "$KUBECONFIG_ADMIN"
}

cmd_down() {
  need_root
  if [[ ! -d "$RUN" ]]; then log "nothing to stop ($RUN does not exist)"; return 0; fi
  exec 9>"$RUN/.lock"; flock -w 1800 9 || die "another hack/cluster.sh holds $RUN/.lock"
  do_down "${1:-}"
  log "down: done"
}

cmd_proxy_sync() {  # period: restart kube-proxy with this iptables minSyncPeriod
  need_root
  local period="${1:-}"
  [[ "$period" =~ ^[0-9]+(ms|s|m)$ ]] || die "usage: $0 proxy-sync PERIOD (e.g. 1s, 10s)"
  exec 9>"$RUN/.lock"; flock -w 300 9 || die "another hack/cluster.sh holds $RUN/.lock"
  comp_pid kube-proxy >/dev/null || die "kube-proxy is not running; run $0 up first"
  sed -i "s/^  minSyncPeriod: .*/  minSyncPeriod: $period/" "$CONF/kube-proxy.yaml"
  stop_comps kube-proxy
  start_comp kube-proxy "$BIN/kube-proxy" --config="$CONF/kube-proxy.yaml" --v=1
  wait_until "kube-proxy healthy" 60 curl -sf http://127.0.0.1:10256/healthz || die "kube-proxy did not come back"
  log "kube-proxy now syncs iptables at most every $period"
}

cmd_apiserver_outage() {  # seconds: stop kube-apiserver, wait, start it again with the same flags
  need_root
  local seconds="${1:-}" pid
  [[ "$seconds" =~ ^[0-9]+$ ]] || die "usage: $0 apiserver-outage SECONDS (e.g. 30)"
  exec 9>"$RUN/.lock"; flock -w 300 9 || die "another hack/cluster.sh holds $RUN/.lock"
  pid="$(comp_pid kube-apiserver)" || die "kube-apiserver is not running; run $0 up first"
  local argv=()
  mapfile -d '' argv <"/proc/$pid/cmdline"
  stop_comps kube-apiserver
  log "kube-apiserver stopped; starting it again in ${seconds}s"
  sleep "$seconds"
  start_comp kube-apiserver "${argv[@]}"
  wait_until kube-apiserver 60 api_ready || die "kube-apiserver not ready; see $LOGS/kube-apiserver.log"
}

# hack/netpol.sh for this cluster: kube-router's firewall on this host, which is the node
netpol() {  # build|start|stop|status
  NETPOL_DIR="$RUN/netpol" NETPOL_KUBECONFIG="$KUBECONFIG_ADMIN" NETPOL_NODE="$NODE_NAME" \
    NETPOL_SERVICE_CIDR="$SERVICE_CIDR" bash "$HACK/netpol.sh" "$@"
}

# On demand, not at `up`: kube-router v2.1.0 rewrites the whole filter table at each sync (from a
# save taken just before, so a kube-proxy write in between is undone until kube-proxy's next sync)
# and syncs at every pod change (CPU the fleet benchmarks would share). Its FORWARD chain, which it
# keeps first, ACCEPTs what it lets through, so the pod guard also runs in mangle, ahead of it.
cmd_netpol() {  # start|stop
  need_root
  if [[ ! -d "$RUN" ]]; then
    [[ "$1" == stop ]] || die "no cluster here ($RUN does not exist): run $0 up first"
    log "nothing to stop ($RUN does not exist)"; return 0
  fi
  exec 9>"$RUN/.lock"; flock -w 300 9 || die "another hack/cluster.sh holds $RUN/.lock"
  if [[ "$1" == start ]]; then
    healthy || die "the cluster is not up and healthy: run $0 up first"
    add_guard mangle
    netpol start
  else
    netpol stop
    [[ ! -f "$HOST_MARK" ]] || remove_guard mangle
  fi
}

cmd_status() {
  local c pid rc=0
  for c in "${COMPONENTS[@]}"; do
    if pid="$(comp_pid "$c")"; then
      printf '%-24s running (pid %s)\n' "$c" "$pid"
    else
      printf '%-24s not running\n' "$c"; rc=1
    fi
  done
  if [[ -f "$KUBECONFIG_ADMIN" && -x "$BIN/kubectl" ]] && api_ready; then
    echo "apiserver: ready at https://$NODE_IP:$API_PORT"
    kc get nodes -o wide 2>&1 || true
    node_ready || rc=1
  else
    echo "apiserver: not reachable"; rc=1
  fi
  netpol status || true
  echo "kubeconfig: $KUBECONFIG_ADMIN"
  echo "logs: $LOGS"
  return $rc
}

# A plain-HTTP registry on this host's loopback, for containerd: one hosts.toml in its config_path
# (certs.d/HOST:PORT/), which containerd reads at every pull, so no restart. Loopback only: the node
# is this host, and nothing else should be trusted without TLS.
cmd_registry() {  # trust|untrust HOST:PORT
  local addr="${2:-}"
  [[ "$addr" =~ ^(127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|localhost):[0-9]{1,5}$ ]] ||
    die "registry-$1 takes a loopback HOST:PORT (127.x.x.x:PORT or localhost:PORT), not '$addr'"
  local dir="$CTRD_DIR/certs.d/$addr"
  if [[ "$1" == trust ]]; then
    mkdir -p "$dir"
    printf 'server = "http://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$addr" "$addr" \
      >"$dir/hosts.toml"
    log "containerd pulls from http://$addr ($dir/hosts.toml)"
  else
    rm -rf "$dir"
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  registry-trust) cmd_registry trust "${2:-}" ;;
  registry-untrust) cmd_registry untrust "${2:-}" ;;
  netpol-start) cmd_netpol start ;;
  netpol-stop) cmd_netpol stop ;;
  down) cmd_down "${2:-}" ;;
  status) cmd_status ;;
  kubeconfig) echo "$KUBECONFIG_ADMIN" ;;
  proxy-sync) cmd_proxy_sync "${2:-}" ;;
  apiserver-outage) cmd_apiserver_outage "${2:-}" ;;
  # the pause image's docker-archive (built once), for kind's node image (hack/kind.sh)
  pause-archive) pause_archive ;;
  # helm 4 first: an older checkout built helm 3 into $BIN
  env) echo "export KUBECONFIG=$KUBECONFIG_ADMIN"; echo "export PATH=$HELM_BIN:$BIN:\$PATH" ;;
  *) echo "usage: $0 up|down [--purge]|status|kubeconfig|env|proxy-sync PERIOD|apiserver-outage SECONDS|registry-trust ADDR|registry-untrust ADDR|netpol-start|netpol-stop" >&2; exit 2 ;;
esac
