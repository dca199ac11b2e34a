"""Fleet scale: the operator over thousands of Deployments whose pods run on kwok's fake nodes.

    python -m bench.fleet [--deployments 1000,5000] [--nodes 100] [--namespaces 50]
        [--reconcile-workers 8] [--rollout-sample 200]

On the local cluster (hack/cluster.sh, with hack/kwok.sh's fake nodes). For each N:
N Deployments of 1 replica over the namespaces, in varied shapes (1 to 4 containers, every
third with a readiness probe, every seventh with its own preStop, every tenth opted out),
their pods on the fake nodes. Then, with a ClusterGracefulPolicy over all of them:

1. audit: the policy in Audit mode exists before lameduck is installed; from the leader's
   container start until the status is up to date (observedGeneration and every selected
   Deployment counted);
2. on-next-rollout: the policy changed to Enforce + OnNextRollout; until the status is up to
   date (every matched Deployment pending or in conflict);
3. immediate-20: Immediate with maxConcurrentRollouts 20, until --rollout-sample (200)
   Deployments are compliant: the time per 1,000 Deployments, and the most rollouts in
   progress at once as a watch of the Deployments saw them (the limit: 20). On kwok a rollout
   takes as long as its fake node takes to start the new pod, so this is the nodes' pace;
4. immediate-max: maxHold changed with maxConcurrentRollouts 1000 (the most a policy allows):
   Deployments applied per second, until the operator has used every slot (see apply_burst);
5. webhook: 500 Deployment template updates from 16 threads; the webhook's p50/p99 from the
   operator's histogram and the API server's, and the API server's for a webhook that does
   nothing, called for the same writes (bench.null_webhook: the floor on this cluster).

For every phase: the leader's peak RSS (sampled every second) and CPU seconds, its longest
event loop stall, and its API requests by verb and resource with any 429, from the API
server's audit log (requests of the operator's service account). Prints a table and writes
bench/results/fleet.json; removes the namespaces and lameduck after each N.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from bench import null_webhook
from bench.webhook_latency import (
    WEBHOOK_NAME,
    Buckets,
    apiserver_buckets,
    apiserver_buckets_of,
    apps_api,
    bucket_delta,
    client_summary,
    histogram_summary,
    operator_buckets,
    pods_delta,
    summed,
    timed_patch,
)
from harness import REPO, manifests
from harness.images import PAUSE_IMAGE, build_images
from harness.install import OPERATOR_NAMESPACE, Operator, install_lameduck
from harness.kube import LOCAL_AUDIT_LOG, LOCAL_KUBECONFIG, Kube, wait_until

RESULTS = REPO / "bench" / "results" / "fleet.json"
FLEET_NS = "namespace/fleet-"
POLICY = "fleet"
LABEL = {"lameduck-fleet": "yes"}
SELECTOR = ",".join(f"{k}={v}" for k, v in LABEL.items())
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:lameduck-operator"
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
APPLY_CHUNK = 250


def namespace_of(i: int, namespaces: int) -> str:
    return f"fleet-{i % namespaces:02d}"


def fleet_deployment(i: int) -> dict[str, Any]:
    """Deployment i: 1 to 4 containers; every third with a readiness probe, every seventh with
    its own preStop (a conflict lameduck reports), every tenth opted out."""
    name = f"app-{i:05d}"
    containers = []
    for c in range(1 + i % 4):
        container = manifests.container(f"c{c}", PAUSE_IMAGE, 8080 + c, imagePullPolicy="Never")
        if i % 3 == 0:
            container["readinessProbe"] = {"tcpSocket": {"port": 8080 + c}, "periodSeconds": 10}
        containers.append(container)
    if i % 7 == 0:
        containers[0]["lifecycle"] = {"preStop": {"exec": {"command": ["/pause"]}}}
    return manifests.deployment(
        name,
        containers,
        labels=LABEL,
        annotations={"lameduck.dev/skip": "true"} if i % 10 == 0 else None,
        replicas=1,
        nodeSelector={"type": "kwok"},
        tolerations=[KWOK_TOLERATION],
    )


def expected(n: int) -> dict[str, int]:
    """What the policy's status must count: opted-out ones are skipped, own preStops conflict."""
    skipped = sum(1 for i in range(n) if i % 10 == 0)
    conflicting = sum(1 for i in range(n) if i % 10 != 0 and i % 7 == 0)
    return {"matched": n - skipped, "skipped": skipped, "conflicting": conflicting}


def audited(status: dict[str, Any], want: dict[str, int]) -> bool:
    """The Audit policy's status is up to date: its generation observed, every Deployment counted."""
    return bool(
        status.get("observedGeneration") == status.get("generation")
        and status.get("matched") == want["matched"]
        and status.get("skipped") == want["skipped"]
    )


def policy(mode: str, apply: str, limit: int = 5, max_hold: str = "30s") -> dict[str, Any]:
    return {
        "apiVersion": "lameduck.dev/v1alpha1",
        "kind": "ClusterGracefulPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "mode": mode,
            "apply": apply,
            "maxConcurrentRollouts": limit,
            "selector": {"matchLabels": dict(LABEL)},
            "hold": {"maxHold": max_hold},
        },
    }


class Sampler:
    """Reads the leader's metrics every second: peak RSS, CPU seconds, the longest loop stall."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self.peak_rss = 0.0
        self.rollouts_in_flight_max = 0.0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(1.0):
            try:
                text = self.operator.metrics_text()
            except (AssertionError, subprocess.CalledProcessError):
                continue
            self.peak_rss = max(self.peak_rss, sample(text, "process_resident_memory_bytes"))
            self.rollouts_in_flight_max = max(self.rollouts_in_flight_max, sample(text, "lameduck_rollouts_in_flight"))

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


def sample(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        head = line.split(" ", 1)[0]
        if head == name or head.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class RolloutWatch:
    """Deployments of the fleet with a rollout in progress, as a watch of them sees it; the most
    at once since reset(), by two rules: kubectl's (`rollout status`: also a Deployment whose
    pods became unavailable after the controller completed its rollout, as kwok's fake nodes
    cause) and lameduck's, which does not count those (docs: what counts as a rollout)."""

    def __init__(self, kubeconfig: str) -> None:
        self.apps = client.AppsV1Api(config.new_client_from_config(config_file=kubeconfig))
        self.rolling: set[str] = set()
        # Of those, the ones only kubectl's rule counts: completed, pods unavailable since.
        self.unavailable_since: set[str] = set()
        self.most = 0
        self.most_as_lameduck_counts = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.stream = watch.Watch()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.most = len(self.rolling)
            self.most_as_lameduck_counts = len(self.rolling - self.unavailable_since)

    def _see(self, deployment: Any, deleted: bool) -> None:
        key = f"{deployment.metadata.namespace}/{deployment.metadata.name}"
        status, spec = deployment.status, deployment.spec
        progressing = [c for c in status.conditions or [] if c.type == "Progressing"]
        rolling_out = not deleted and (
            (status.observed_generation or 0) < (deployment.metadata.generation or 0)
            or (status.updated_replicas or 0) < (spec.replicas or 0)
            or (status.replicas or 0) > (spec.replicas or 0)
        )
        unavailable = not deleted and (status.available_replicas or 0) < (spec.replicas or 0)
        completed = bool(progressing) and progressing[0].reason == "NewReplicaSetAvailable"
        with self.lock:
            for members, member in (
                (self.rolling, rolling_out or unavailable),
                (self.unavailable_since, unavailable and completed and not rolling_out),
            ):
                if member:
                    members.add(key)
                else:
                    members.discard(key)
            self.most = max(self.most, len(self.rolling))
            self.most_as_lameduck_counts = max(self.most_as_lameduck_counts, len(self.rolling - self.unavailable_since))

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                for event in self.stream.stream(
                    self.apps.list_deployment_for_all_namespaces, label_selector=SELECTOR, timeout_seconds=60
                ):
                    self._see(event["object"], event["type"] == "DELETED")
                    if self.stopped.is_set():
                        return
            except Exception:  # a broken watch: list and watch again
                time.sleep(1)

    def stop(self) -> None:
        self.stopped.set()
        self.stream.stop()


def audit_position() -> int:
    return LOCAL_AUDIT_LOG.stat().st_size if LOCAL_AUDIT_LOG.exists() else 0


def api_requests(since: int) -> dict[str, Any]:
    """The operator's requests in the audit log from byte `since` on, by verb and resource."""
    by: Counter[str] = Counter()
    throttled = 0
    if not LOCAL_AUDIT_LOG.exists():
        return {"by_verb_resource": {}, "total": 0, "429": 0, "note": "no audit log"}
    with LOCAL_AUDIT_LOG.open("rb") as log:
        log.seek(since)
        for line in log:
            if OPERATOR_USER.encode() not in line:
                continue
            entry = json.loads(line)
            if entry.get("user", {}).get("username") != OPERATOR_USER:
                continue
            ref = entry.get("objectRef") or {}
            resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            by[f"{entry.get('verb')} {resource}"] += 1
            if (entry.get("responseStatus") or {}).get("code") == 429:
                throttled += 1
    return {"by_verb_resource": dict(by.most_common()), "total": sum(by.values()), "429": throttled}


def status_of(kube: Kube) -> dict[str, Any]:
    got = kube.run("get", "clustergracefulpolicy", POLICY, "-o", "json", check=False)
    if got.returncode != 0:
        return {}
    body = json.loads(got.stdout)
    status: dict[str, Any] = body.get("status") or {}
    status["generation"] = body["metadata"].get("generation")
    return status


def phase(
    name: str, kube: Kube, operator: Operator, done: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """Waits until done(status); the time, and what the leader spent meanwhile."""
    since = audit_position()
    cpu_before = sample(operator.metrics_text(), "process_cpu_seconds_total")
    sampler = Sampler(operator)
    started = time.monotonic()
    try:
        wait_until(lambda: done(status_of(kube)), timeout, f"{name}: the policy's status is up to date", 0.5)
    finally:
        sampler.stop()
    return {"seconds": round(time.monotonic() - started, 1), **spent(operator, sampler, cpu_before, since)}


def spent(operator: Operator, sampler: Sampler, cpu_before: float, since: int) -> dict[str, Any]:
    """What the leader spent in a phase: peak RSS, CPU, its longest loop stall, its requests."""
    text = operator.metrics_text()
    return {
        "peak_rss_mib": round(max(sampler.peak_rss, sample(text, "process_resident_memory_bytes")) / 2**20, 1),
        "cpu_seconds": round(sample(text, "process_cpu_seconds_total") - cpu_before, 1),
        "loop_lag_max_seconds": round(sample(text, "lameduck_event_loop_lag_max_seconds"), 3),
        # Since the operator started, like the longest stall.
        "loop_stalls_by_cause": stalls_by_cause(text),
        "gc_seconds": round(sample(text, "lameduck_gc_seconds_total"), 2),
        "gc_pause_max_seconds": round(sample(text, "lameduck_gc_pause_max_seconds"), 3),
        "operator_rollouts_in_flight_max": sampler.rollouts_in_flight_max,
        "api": api_requests(since),
    }


STALLS = "lameduck_event_loop_stalls_total{cause="


def stalls_by_cause(text: str) -> dict[str, int]:
    """The operator's stalls of 1 s or more by cause, from lines like
    `lameduck_event_loop_stalls_total{cause="gc"} 2.0`."""
    return {
        line[len(STALLS) :].split('"')[1]: int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith(STALLS)
    }


def remove_policy(kube: Kube) -> None:
    """The fleet's policy deleted, also with no operator running: its finalizer (the revert's) is
    taken off by hand once the operator had its chance. Only for Audit policies, which have
    nothing to revert."""
    kube.run("delete", "clustergracefulpolicy", POLICY, "--ignore-not-found", "--wait=false", check=False)
    kube.run(
        "patch", "clustergracefulpolicy", POLICY, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False
    )
    wait_until(lambda: not status_of(kube), 60, "the policy is gone")


APPLIED = 'lameduck_reconciles_total{result="applied"}'
# The burst has ended when the operator applied nothing for this long.
BURST_QUIET_SECONDS = 10.0


def applied_count(text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(APPLIED + " "))


def apply_burst(kube: Kube, operator: Operator, body: dict[str, Any]) -> dict[str, Any]:
    """A policy change that lets up to 1,000 Deployments roll at once: the operator's applies
    per second, from the change until it applies nothing more for BURST_QUIET_SECONDS (it has
    used every slot; the rollouts themselves go at the fake nodes' pace, not measured here)."""
    since = audit_position()
    text = operator.metrics_text()
    before, cpu_before = applied_count(text), sample(text, "process_cpu_seconds_total")
    sampler = Sampler(operator)
    started = time.monotonic()
    kube.apply(body)
    count, last_growth = before, None
    try:
        while time.monotonic() - started < 600:
            now = applied_count(operator.metrics_text())
            if now > count:
                count, last_growth = now, time.monotonic()
            elif last_growth is not None and time.monotonic() - last_growth > BURST_QUIET_SECONDS:
                break
            time.sleep(0.25)  # the metrics poll interval
    finally:
        sampler.stop()
    if last_growth is None:
        raise AssertionError("the policy change applied nothing")
    seconds = last_growth - started
    return {
        "applied": int(count - before),
        "seconds": round(seconds, 1),
        "applies_per_second": round((count - before) / seconds, 1),
        **spent(operator, sampler, cpu_before, since),
    }


def remove_fleet(kube: Kube, namespaces: int) -> None:
    """The fleet's namespaces deleted all at once (one after another, each waiting for its
    pods, took minutes), and waited for."""
    for ns in sorted({namespace_of(i, namespaces) for i in range(namespaces)}):
        kube.run("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)
    wait_until(
        lambda: not [x for x in kube.run("get", "ns", "-o", "name").stdout.split() if x.startswith(FLEET_NS)],
        1800,
        "the fleet's namespaces are gone",
        5,
    )


def create_fleet(kube: Kube, n: int, namespaces: int) -> None:
    for ns in sorted({namespace_of(i, namespaces) for i in range(min(n, namespaces))}):
        kube.run("create", "namespace", ns, check=False)
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for i in range(n):
        by_namespace.setdefault(namespace_of(i, namespaces), []).append(fleet_deployment(i))
    for ns, items in sorted(by_namespace.items()):
        for start in range(0, len(items), APPLY_CHUNK):
            chunk = {"apiVersion": "v1", "kind": "List", "items": items[start : start + APPLY_CHUNK]}
            kube.run("apply", "--server-side", "-n", ns, "-f", "-", input=json.dumps(chunk))


def new_pod_ready_seconds(kube: Kube) -> dict[str, float]:
    """From creation to Ready, for the fleet's pods that run lameduck's sidecar (those the
    rollouts started) and are Ready: the fake nodes' pace, which a rollout waits for."""
    pods = json.loads(kube.run("get", "pods", "-A", "-l", "app", "-o", "json").stdout)["items"]
    waits = []
    for pod in pods:
        if not any(c.get("name") == "lameduck" for c in pod["spec"].get("initContainers") or []):
            continue
        ready = [c for c in pod["status"].get("conditions") or [] if c["type"] == "Ready" and c["status"] == "True"]
        if ready:
            waits.append(seconds_between(pod["metadata"]["creationTimestamp"], ready[0]["lastTransitionTime"]))
    waits.sort()
    if not waits:
        return {"pods": 0}
    return {"pods": len(waits), "min": waits[0], "p50": waits[len(waits) // 2], "max": waits[-1]}


def epoch_seconds(stamp: str) -> float:
    """An API timestamp (RFC 3339, UTC, whole seconds) as seconds since the epoch."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def seconds_between(earlier: str, later: str) -> float:
    return epoch_seconds(later) - epoch_seconds(earlier)


def running_pods(kube: Kube) -> int:
    out = kube.run(
        "get", "pods", "-A", "-l", "app", "--field-selector=status.phase=Running", "-o", "name", check=False
    ).stdout
    return sum(1 for line in out.splitlines() if "/app-" in line)


def leader_started_at(kube: Kube, operator: Operator) -> float:
    leader = wait_until(operator.leader, 120, "a replica leads")
    pod = kube.get("pod", leader, OPERATOR_NAMESPACE)
    (status,) = [s for s in pod["status"]["containerStatuses"] if s["name"] == "operator"]
    return epoch_seconds(status["state"]["running"]["startedAt"])


def plain_client_ceiling(
    kube: Kube, watcher: RolloutWatch, n: int, namespaces: int, *, updates: int, threads: int
) -> dict[str, Any]:
    """The burst's kind of write without lameduck installed: `updates` pod-template changes,
    each starting a rollout, from a plain client `threads` at a time (as many as the operator's
    reconcile workers). The writes per second this cluster takes, which no operator's burst on
    it can beat; then the rollouts are waited for, so that the next phase starts from a quiet
    fleet."""
    apps = apps_api(kube.kubeconfig)
    targets = list(range(n))[:updates]
    stamp = str(time.time())

    def update(i: int) -> float:
        body = {"spec": {"template": {"metadata": {"annotations": {"bench/ceiling": stamp}}}}}
        elapsed, _ = timed_patch(apps, namespace_of(i, namespaces), f"app-{i:05d}", body)
        return elapsed

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        client_ms = [seconds * 1000 for seconds in pool.map(update, targets)]
    seconds = time.monotonic() - started
    wait_until(lambda: not watcher.rolling, 1800, "the plain client's rollouts have finished", 5)
    return {
        "updates": len(targets),
        "threads": threads,
        "seconds": round(seconds, 1),
        "applies_per_second": round(len(targets) / seconds, 1),
        "client": client_summary(client_ms),
        "rollouts_done_seconds": round(time.monotonic() - started),
    }


def webhook_burst(
    kube: Kube, operator: Operator, n: int, namespaces: int, updates: int, *, floor: str | None = None
) -> dict[str, Any]:
    """Template updates of `updates` Deployments that go through the webhook, from 16 threads.
    floor: the name label of a webhook called for the same writes (bench.null_webhook's), whose
    latency the API server saw too."""
    apps = apps_api(kube.kubeconfig)
    targets = [i for i in range(n) if i % 10 != 0][:updates]
    before_operator = operator_buckets(operator)
    before_api, before_floor = admission_buckets(kube, floor)
    stamp = str(time.time())

    def update(i: int) -> float:
        body = {"spec": {"template": {"metadata": {"annotations": {"bench/burst": stamp}}}}}
        elapsed, _ = timed_patch(apps, namespace_of(i, namespaces), f"app-{i:05d}", body)
        return elapsed

    with ThreadPoolExecutor(16) as pool:
        client_ms = [seconds * 1000 for seconds in pool.map(update, targets)]
    after_api, after_floor = admission_buckets(kube, floor)
    return {
        "updates": len(targets),
        "operator": histogram_summary(summed(pods_delta(before_operator, operator_buckets(operator)))),
        # The API server exports the histogram only once the webhook has been called: none before is zero.
        "apiserver": histogram_summary(bucket_delta(before_api or {}, after_api)) if after_api else None,
        "apiserver_floor": histogram_summary(bucket_delta(before_floor or {}, after_floor)) if after_floor else None,
        "client": client_summary(client_ms),
    }


def admission_buckets(kube: Kube, floor: str | None) -> tuple[Buckets | None, Buckets | None]:
    """The API server's admission histograms of lameduck's webhook and of the floor webhook (if
    any), from one read of its metrics."""
    if floor is None:
        return apiserver_buckets(kube), None
    ours, floors = apiserver_buckets_of(kube, (WEBHOOK_NAME, floor))
    return ours, floors


def run_fleet(
    kube: Kube,
    n: int,
    namespaces: int,
    updates: int,
    save: Callable[[dict[str, Any]], None],
    *,
    reconcile_workers: int,
    rollout_sample: int,
    ceiling_updates: int,
) -> dict[str, Any]:
    """The phases for N Deployments; `save` gets the result so far after each phase, so that a
    run that fails or is stopped leaves what it measured."""
    want = expected(n)
    print(f"== {n} Deployments: creating them and their pods on the fake nodes", flush=True)
    created = time.monotonic()
    create_fleet(kube, n, namespaces)
    wait_until(lambda: running_pods(kube) >= n, 1800, f"{n} pods run on the fake nodes", 5)
    result: dict[str, Any] = {
        "deployments": n,
        "reconcile_workers": reconcile_workers,
        "expected": want,
        "setup_seconds": round(time.monotonic() - created),
    }
    watcher = RolloutWatch(kube.kubeconfig)
    operator: Operator | None = None
    try:
        if ceiling_updates:
            print(f"== plain client: {ceiling_updates} template updates, no lameduck installed", flush=True)
            result["plain_client"] = plain_client_ceiling(
                kube, watcher, n, namespaces, updates=ceiling_updates, threads=reconcile_workers
            )
            save(result)
        remove_policy(kube)  # one an earlier run left would have its status up to date already
        kube.apply(policy("Audit", "OnNextRollout"))
        print("== audit: installing lameduck (helm) with the Audit policy in place", flush=True)
        since = audit_position()
        operator = install_lameduck(
            kube, "replicaCount=1", "resources.limits.memory=1Gi", f"reconcileWorkers={reconcile_workers}"
        )
        started_at = leader_started_at(kube, operator)

        audit = phase("audit", kube, operator, lambda status: audited(status, want), 1800)
        audit["seconds_from_operator_start"] = round(time.time() - started_at, 1)
        audit["api"] = api_requests(since)
        result["audit"] = audit
        save(result)

        def up_to_date(status: dict[str, Any]) -> bool:
            return (
                status.get("observedGeneration") == status.get("generation")
                and status.get("matched") == want["matched"]
                and status.get("pending", 0) + status.get("compliant", 0) + status.get("conflicting", 0)
                == want["matched"]
                and status.get("conflicting") == want["conflicting"]
            )

        print("== on-next-rollout: Enforce + OnNextRollout", flush=True)
        kube.apply(policy("Enforce", "OnNextRollout"))
        result["on_next_rollout"] = phase("on-next-rollout", kube, operator, up_to_date, 1800)
        save(result)

        print(f"== immediate-20: Immediate, maxConcurrentRollouts 20, until {rollout_sample} have rolled", flush=True)
        watcher.reset()
        kube.apply(policy("Enforce", "Immediate", limit=20))
        immediate = phase(
            "immediate-20", kube, operator, lambda status: (status.get("compliant") or 0) >= rollout_sample, 3600
        )
        immediate["observed_rollouts_at_once_max"] = watcher.most
        immediate["observed_rollouts_at_once_max_as_lameduck_counts"] = watcher.most_as_lameduck_counts
        immediate["new_pod_ready_seconds"] = new_pod_ready_seconds(kube)
        immediate["rolled"] = status_of(kube).get("compliant")
        immediate["seconds_per_1000"] = round(immediate["seconds"] * 1000 / immediate["rolled"], 1)
        result["immediate_20"] = immediate
        save(result)

        print("== immediate-max: maxHold changed, maxConcurrentRollouts 1000", flush=True)
        result["immediate_max"] = apply_burst(
            kube, operator, policy("Enforce", "Immediate", limit=1000, max_hold="31s")
        )
        save(result)

        print(f"== webhook: {updates} template updates from 16 threads", flush=True)
        null_webhook.follow_lameduck(kube, null_webhook.deploy(kube))
        result["webhook"] = webhook_burst(kube, operator, n, namespaces, updates, floor=null_webhook.WEBHOOK_LABEL)
        result["loop_lag_max_seconds"] = sample(operator.metrics_text(), "lameduck_event_loop_lag_max_seconds")
    finally:
        watcher.stop()
        print("== cleaning up", flush=True)
        # The namespaces first: with them goes every Deployment the policy's deletion would revert.
        null_webhook.remove(kube)
        remove_fleet(kube, namespaces)
        kube.run("delete", "clustergracefulpolicy", POLICY, "--ignore-not-found", "--timeout=600s", check=False)
        if operator is not None:
            operator.uninstall()
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    print(
        "| Deployments | audit from start | OnNextRollout | Immediate/20 per 1,000 (most at once) | "
        "Immediate/1000 applies/s | peak RSS | loop stall max | 429s | webhook p50/p99 (operator) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        phases = [r["audit"], r["on_next_rollout"], r["immediate_20"], r["immediate_max"]]
        hook = r["webhook"]["operator"]
        print(
            f"| {r['deployments']:,} | {r['audit']['seconds_from_operator_start']} s | "
            f"{r['on_next_rollout']['seconds']} s | {r['immediate_20']['seconds_per_1000']} s "
            f"({r['immediate_20']['observed_rollouts_at_once_max']}) | {r['immediate_max']['applies_per_second']} | "
            f"{max(p['peak_rss_mib'] for p in phases)} MiB | {r['loop_lag_max_seconds']:.2f} s | "
            f"{sum(p['api']['429'] for p in phases)} | {hook['p50_ms']}/{hook['p99_ms']} ms |"
        )


def local_cluster_with_fake_nodes(nodes: int) -> Kube:
    """The local cluster up, with kwok's fake nodes, the images built and lameduck's CRDs."""
    subprocess.run(["bash", str(REPO / "hack" / "cluster.sh"), "up"], check=True)
    subprocess.run(["bash", str(REPO / "hack" / "kwok.sh"), "up"], check=True)
    subprocess.run(["bash", str(REPO / "hack" / "kwok.sh"), "nodes", str(nodes)], check=True)
    build_images()
    kube = Kube(LOCAL_KUBECONFIG)
    kube.run("apply", "--server-side", "-f", str(REPO / "crds"))
    return kube


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", default="1000,5000")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--webhook-updates", type=int, default=500)
    parser.add_argument("--reconcile-workers", type=int, default=8, help="the chart's reconcileWorkers")
    parser.add_argument(
        "--rollout-sample", type=int, default=200, help="Immediate/20 runs until this many Deployments have rolled"
    )
    parser.add_argument(
        "--plain-client-updates",
        type=int,
        default=1000,
        help="template updates from a plain client before lameduck is installed (0: none)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    kube = local_cluster_with_fake_nodes(args.nodes)
    results: list[dict[str, Any]] = []

    def save(partial: dict[str, Any]) -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "command": "python -m bench.fleet " + " ".join(sys.argv[1:] if argv is None else argv),
                    "commit": subprocess.run(
                        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, cwd=REPO
                    ).stdout.strip(),
                    "machine": {
                        "cpus": len(__import__("os").sched_getaffinity(0)),
                        "python": platform.python_version(),
                    },
                    "nodes": args.nodes,
                    "namespaces": args.namespaces,
                    "results": [*results, partial] if partial not in results else results,
                },
                indent=2,
            )
            + "\n"
        )

    for n in (int(x) for x in args.deployments.split(",")):
        results.append(
            run_fleet(
                kube,
                n,
                args.namespaces,
                args.webhook_updates,
                save,
                reconcile_workers=args.reconcile_workers,
                rollout_sample=args.rollout_sample,
                ceiling_updates=args.plain_client_updates,
            )
        )
        save(results[-1])
    print_table(results)


if __name__ == "__main__":
    main()
