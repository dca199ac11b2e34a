#!/usr/bin/env bash
# End-to-end check of the harness: build the test image, run a 2-replica Deployment,
# curl its ClusterIP from the host (through kube-proxy's iptables rules), roll it.
# Needs a running cluster (hack/cluster.sh up). Leaves nothing behind (namespace deleted).
set -euo pipefail
HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HACK/common.sh"
BIN="$K8S_BIN"
export KUBECONFIG="${KUBECONFIG:-$(bash "$HACK/cluster.sh" kubeconfig)}"
K=("$BIN/kubectl")
NS=lameduck-smoke
log() { printf '[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { log "FAIL: $*"; "${K[@]}" -n "$NS" get all,events -o wide >&2 || true; exit 1; }

bash "$HACK/cluster.sh" status >/dev/null || fail "cluster not healthy (hack/cluster.sh up)"
bash "$HACK/build-images.sh" lameduck-http-echo:dev="$HACK/testdata/http-echo"
t0=$SECONDS
"${K[@]}" apply -f "$HACK/testdata/http-echo/deploy.yaml"
"${K[@]}" -n "$NS" wait --for=condition=Available deploy/http-echo --timeout=120s || fail "Deployment not Available"
log "Deployment Available after $((SECONDS - t0))s"
ip="$("${K[@]}" -n "$NS" get svc http-echo -o jsonpath='{.spec.clusterIP}')"
ok=0
for _ in $(seq 1 30); do   # bounded: at most 30 tries
  if out="$(curl -fsS --max-time 2 "http://$ip/")"; then ok=1; break; fi
  sleep 1
done
[[ $ok == 1 ]] || fail "ClusterIP $ip did not answer"
log "ClusterIP $ip answered: $out"
seen=""
for _ in $(seq 1 20); do seen+="$(curl -fsS --max-time 2 "http://$ip/" | awk '{print $3}')"$'\n'; done
log "backends seen in 20 requests: $(sort -u <<<"$seen" | grep -c .)"
t1=$SECONDS
"${K[@]}" -n "$NS" rollout restart deploy/http-echo
# a bounded load loop during the rollout: count failed requests (informational; no
# lameduck here, so a few failures are the very problem the project solves)
fails=0; total=0
while ((SECONDS - t1 < 120)); do
  total=$((total + 1))
  curl -fsS --max-time 2 "http://$ip/" >/dev/null 2>&1 || fails=$((fails + 1))
  if ((total % 10 == 0)) && "${K[@]}" -n "$NS" rollout status deploy/http-echo --timeout=1s >/dev/null 2>&1; then break; fi
  sleep 0.1
done
"${K[@]}" -n "$NS" rollout status deploy/http-echo --timeout=60s || fail "rollout restart did not complete"
log "rollout restart completed in $((SECONDS - t1))s; requests during it: $total, failed: $fails"
curl -fsS --max-time 2 "http://$ip/" >/dev/null || fail "ClusterIP dead after rollout"
"${K[@]}" delete ns "$NS" --wait=true --timeout=90s >/dev/null
log "PASS"
