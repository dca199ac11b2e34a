"""Fleet scale: the operator over thousands of Deployments whose pods run on kwok's fake nodes.

    python -m bench.fleet [--deployments 1000,5000] [--nodes 100] [--pods-per-node 110]
        [--namespaces 50] [--reconcile-workers 8] [--rollout-sample 200]
        [--replicas 1] [--churn 0] [--gate-share 0]

On the local cluster (hack/cluster.sh, with hack/kwok.sh's fake nodes). For each N:
N Deployments of --replicas (1) over the namespaces, in varied shapes (1 to 4 containers, every
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

A fleet of realistic shape (issue 23: 10,000 Deployments of 3 pods, a tenth gated, 10 % of the
pods a minute churning):

    python -m bench.fleet --deployments 10000 --replicas 3 --gate-share 0.1 --churn 0.1 \
        --nodes 200 --pods-per-node 200 --rollout-sample 100 --out bench/results/fleet_10000x3.json

--gate-share: every k-th Deployment (k = 1/share, the last of each k, so never an opted-out
one) is labelled GATE_LABEL and carries lameduck's readiness gate in its pod template, as the
gate's policy would have left it, so its pods carry the gate from the first phase on. A second
policy, GATED_POLICY, selects those with `readinessGate.enabled`; the main one leaves them out.
Both move through the phases together, the rollout limits shared in proportion (18 + 2, 900 +
100), and each phase waits for both statuses. kwok's pod-ready stage sets every readiness
gate's condition True itself (with no reason), so no pod waits on the gate; the leader still
writes its own reason on each gated pod once (NoService: the fleet has no Services), as on a
real node: about 3,000 writes from the install on (every pod is new to it), and one for each
gated pod the churn replaces.

--churn: from lameduck's install until the last phase ends, a thread deletes that share of the
fleet's pods a minute at a steady rate (0.1 of 30,000: 50 a second), a random pod of a random
Deployment at a time, with the pod's own grace period (kwok removes a deleted pod at once
whatever it is); the ReplicaSets replace them. Each phase records the pods deleted during it
and the Deployments short of available pods at its end; the result, the churn's rate, count
and errors. The fake nodes must take the fleet at its busiest (fleet_shape.pods_at_most), or
the bench stops before it starts a cluster.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from bench import fleet_shape, null_webhook
from bench.provenance import write_result
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
from lameduck_operator.names import READINESS_CONDITION

RESULTS = REPO / "bench" / "results" / "fleet.json"
FLEET_NS = "namespace/fleet-"
POLICY = "fleet"
LABEL = {"lameduck-fleet": "yes"}
# With --gate-share, the gated Deployments carry this label and are governed by a policy of
# their own, which turns the readiness gate on; the main policy leaves them out.
GATED_POLICY = "fleet-gated"
GATE_LABEL = "lameduck-fleet-gate"
SELECTOR = ",".join(f"{k}={v}" for k, v in LABEL.items())
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:lameduck-operator"
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
APPLY_CHUNK = 250


def namespace_of(i: int, namespaces: int) -> str:
    return f"fleet-{i % namespaces:02d}"


def fleet_deployment(i: int, *, replicas: int = 1, gate_every: int = 0) -> dict[str, Any]:
    """Deployment i: 1 to 4 containers; every third with a readiness probe, every seventh with
    its own preStop (a conflict lameduck reports), every tenth opted out. A gated one (see
    fleet_shape.is_gated) carries GATE_LABEL and lameduck's readiness gate in its pod template,
    as the gated policy's apply leaves it, so that its pods carry the gate from the start."""
    name = f"app-{i:05d}"
    gated = fleet_shape.is_gated(i, gate_every)
    containers = []
    for c in range(1 + i % 4):
        container = manifests.container(f"c{c}", PAUSE_IMAGE, 8080 + c, imagePullPolicy="Never")
        if i % 3 == 0:
            container["readinessProbe"] = {"tcpSocket": {"port": 8080 + c}, "periodSeconds": 10}
        containers.append(container)
    if i % 7 == 0:
        containers[0]["lifecycle"] = {"preStop": {"exec": {"command": ["/pause"]}}}
    body = manifests.deployment(
        name,
        containers,
        labels={**LABEL, GATE_LABEL: "yes"} if gated else LABEL,
        annotations={"lameduck.dev/skip": "true"} if i % 10 == 0 else None,
        replicas=replicas,
        nodeSelector={"type": "kwok"},
        tolerations=[KWOK_TOLERATION],
    )
    if gated:
        body["spec"]["template"]["spec"]["readinessGates"] = [{"conditionType": READINESS_CONDITION}]
    return body


def expected(n: int, gate_every: int = 0, *, gated: bool = False) -> dict[str, int]:
    """What a policy's status must count, of the Deployments it selects (the gated policy the
    gated ones, the main policy the rest): opted-out ones are skipped, own preStops conflict."""
    selected = [i for i in range(n) if fleet_shape.is_gated(i, gate_every) == gated]
    skipped = sum(1 for i in selected if i % 10 == 0)
    conflicting = sum(1 for i in selected if i % 10 != 0 and i % 7 == 0)
    return {"matched": len(selected) - skipped, "skipped": skipped, "conflicting": conflicting}


def expected_by_policy(n: int, gate_every: int) -> dict[str, dict[str, int]]:
    """expected() for each of the fleet's policies, by name: the gated one only when there is one."""
    want = {POLICY: expected(n, gate_every)}
    if gate_every:
        want[GATED_POLICY] = expected(n, gate_every, gated=True)
    return want


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


def policies(
    mode: str, apply: str, limit: int = 5, max_hold: str = "30s", *, gate_every: int = 0
) -> list[dict[str, Any]]:
    """The fleet's policies: policy() alone; with gated Deployments, the main one leaving them
    out and a second selecting them with the readiness gate on, the limit shared between the
    two (fleet_shape.split_limit)."""
    if not gate_every:
        return [policy(mode, apply, limit, max_hold)]
    main_limit, gated_limit = fleet_shape.split_limit(limit, gate_every)
    main = policy(mode, apply, main_limit, max_hold)
    main["spec"]["selector"]["matchExpressions"] = [{"key": GATE_LABEL, "operator": "DoesNotExist"}]
    gated = policy(mode, apply, gated_limit, max_hold)
    gated["metadata"]["name"] = GATED_POLICY
    gated["spec"]["selector"]["matchLabels"][GATE_LABEL] = "yes"
    gated["spec"]["readinessGate"] = {"enabled": True}
    return [main, gated]


def every_policy_audited(statuses: dict[str, dict[str, Any]], want: dict[str, dict[str, int]]) -> bool:
    return all(audited(statuses.get(name, {}), counts) for name, counts in want.items())


def up_to_date(status: dict[str, Any], want: dict[str, int]) -> bool:
    """An Enforce policy's status is up to date: every matched Deployment pending, compliant
    or in conflict, and the conflicts the ones expected."""
    return (
        status.get("observedGeneration") == status.get("generation")
        and status.get("matched") == want["matched"]
        and status.get("pending", 0) + status.get("compliant", 0) + status.get("conflicting", 0) == want["matched"]
        and status.get("conflicting") == want["conflicting"]
    )


def compliant(statuses: dict[str, dict[str, Any]]) -> int:
    return sum(status.get("compliant") or 0 for status in statuses.values())


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


CHURN_TICK_SECONDS = 1.0
CHURN_THREADS = 8
ERROR_SAMPLES = 5
# (namespace, label selector) -> the pods' bodies; (namespace, name) -> None.
ListPods = Callable[[str, str], list[dict[str, Any]]]
DeletePod = Callable[[str, str], None]


def pod_calls(kubeconfig: str) -> tuple[ListPods, DeletePod]:
    """Listing and deleting pods, in raw JSON both ways: the client's models would cost this
    process CPU that the operator shares."""
    core = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))

    def list_pods(namespace: str, selector: str) -> list[dict[str, Any]]:
        listed: Any = core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(listed.data)["items"]
        return items

    def delete_pod(namespace: str, name: str) -> None:
        core.delete_namespaced_pod(name, namespace, _preload_content=False)

    return list_pods, delete_pod


class Churn:
    """Pods of the fleet deleted at a steady rate, fraction_per_minute of its `pods` a minute,
    from start() until stop(); their ReplicaSets replace them. Each deletion picks a Deployment
    at random (seeded), lists its pods and deletes one not already terminating, with its own
    grace period: kwok's fast pod-delete stage removes it at once whatever the grace period, and
    the operator sees what a real cluster shows it, the pod terminating, then gone. Counts the
    deletions picked (due), done, finding no pod to delete, and the errors."""

    def __init__(
        self,
        list_pods: ListPods,
        delete_pod: DeletePod,
        *,
        n: int,
        namespaces: int,
        pods: int,
        fraction_per_minute: float,
        seed: int = 0,
    ) -> None:
        self.list_pods, self.delete_pod = list_pods, delete_pod
        self.n, self.namespaces, self.pods, self.fraction = n, namespaces, pods, fraction_per_minute
        self.random = random.Random(seed)
        self.picked = self.deleted = self.no_pod = 0
        self.errors: Counter[str] = Counter()
        self.error_samples: list[str] = []
        self.lapped = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.began = time.monotonic()
        self.ended: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Churn:
        self.began = time.monotonic()
        self.thread.start()
        return self

    def _run(self) -> None:
        with ThreadPoolExecutor(CHURN_THREADS) as pool:
            while not self.stopped.wait(CHURN_TICK_SECONDS):
                self.tick(time.monotonic() - self.began, pool)

    def tick(self, elapsed_seconds: float, pool: Executor | None = None) -> int:
        """The deletions due after elapsed_seconds and not picked yet, on `pool` (here without),
        each tick's ended before the next counts what is due; how many it picked."""
        due = fleet_shape.pods_to_delete(self.pods, self.fraction, elapsed_seconds, self.picked)
        picks = [(self.random.randrange(self.n), self.random.random()) for _ in range(due)]
        self.picked += due
        list(pool.map(self.delete_one, picks) if pool else map(self.delete_one, picks))
        return due

    def delete_one(self, pick: tuple[int, float]) -> None:
        """Deployment i's pod at `choice` (0 to 1) of its running pods by name."""
        if self.stopped.is_set():
            return
        i, choice = pick
        namespace = namespace_of(i, self.namespaces)
        try:
            pods = self.list_pods(namespace, f"app=app-{i:05d}")
            alive = sorted(p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp"))
            if not alive:
                with self.lock:
                    self.no_pod += 1
                return
            self.delete_pod(namespace, alive[int(choice * len(alive))])
            with self.lock:
                self.deleted += 1
        except Exception as error:  # counted, never raised: the churn goes on
            kind = str(error.status) if isinstance(error, ApiException) else type(error).__name__
            with self.lock:
                self.errors[kind] += 1
                if len(self.error_samples) < ERROR_SAMPLES:
                    self.error_samples.append(f"{kind}: {str(error).splitlines()[0][:200]}")

    def lap(self) -> int:
        """Pods deleted since the last lap (or the start)."""
        with self.lock:
            deleted, self.lapped = self.deleted - self.lapped, self.deleted
        return deleted

    def stop(self) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join(timeout=60)
        self.ended = time.monotonic()

    def record(self) -> dict[str, Any]:
        seconds = (self.ended or time.monotonic()) - self.began
        with self.lock:
            return {
                "fraction_per_minute": self.fraction,
                "pods": self.pods,
                "pods_per_second": round(self.pods * self.fraction / 60, 2),
                "seconds": round(seconds, 1),
                "due": fleet_shape.pods_due(self.pods, self.fraction, seconds),
                "picked": self.picked,
                "deleted": self.deleted,
                "no_running_pod": self.no_pod,
                "errors": dict(self.errors),
                "error_samples": list(self.error_samples),
            }


def audit_position() -> int:
    return LOCAL_AUDIT_LOG.stat().st_size if LOCAL_AUDIT_LOG.exists() else 0


def api_requests(since: int, log_path: Path = LOCAL_AUDIT_LOG) -> dict[str, Any]:
    """The operator's requests in the audit log from byte `since` on, by verb and resource; and
    the API server's time on each of its Deployment patches (from receiving the request to the
    response, as the audit log stamps them): the server's share of an apply."""
    by: Counter[str] = Counter()
    throttled = 0
    patch_ms: list[float] = []
    if not log_path.exists():
        return {"by_verb_resource": {}, "total": 0, "429": 0, "note": "no audit log"}
    with log_path.open("rb") as log:
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
            if resource == "deployments" and entry.get("verb") == "patch" and entry.get("stageTimestamp"):
                received = datetime.fromisoformat(entry["requestReceivedTimestamp"])
                patch_ms.append((datetime.fromisoformat(entry["stageTimestamp"]) - received).total_seconds() * 1000)
    served = {"patch_deployments_server_ms": client_summary(patch_ms)} if len(patch_ms) > 1 else {}
    return {"by_verb_resource": dict(by.most_common()), "total": sum(by.values()), "429": throttled, **served}


def status_of(kube: Kube, name: str = POLICY) -> dict[str, Any]:
    got = kube.run("get", "clustergracefulpolicy", name, "-o", "json", check=False)
    if got.returncode != 0:
        return {}
    body = json.loads(got.stdout)
    status: dict[str, Any] = body.get("status") or {}
    status["generation"] = body["metadata"].get("generation")
    return status


def statuses(kube: Kube, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    return {name: status_of(kube, name) for name in names}


def phase(
    name: str,
    kube: Kube,
    operator: Operator,
    done: Callable[[dict[str, dict[str, Any]]], bool],
    timeout: float,
    *,
    policies: Iterable[str] = (POLICY,),
) -> dict[str, Any]:
    """Waits until done(the policies' statuses by name); the time, and what the leader spent meanwhile."""
    names = tuple(policies)
    since = audit_position()
    cpu_before = sample(operator.metrics_text(), "process_cpu_seconds_total")
    sampler = Sampler(operator)
    started = time.monotonic()
    try:
        wait_until(lambda: done(statuses(kube, names)), timeout, f"{name}: the policy's status is up to date", 0.5)
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


def remove_policy(kube: Kube, name: str = POLICY) -> None:
    """A fleet policy deleted, also with no operator running: its finalizer (the revert's) is
    taken off by hand once the operator had its chance. Only for Audit policies, which have
    nothing to revert."""
    kube.run("delete", "clustergracefulpolicy", name, "--ignore-not-found", "--wait=false", check=False)
    kube.run(
        "patch", "clustergracefulpolicy", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False
    )
    wait_until(lambda: not status_of(kube, name), 60, f"the policy {name} is gone")


APPLIED = 'lameduck_reconciles_total{result="applied"}'
# The burst has ended when the operator applied nothing for this long.
BURST_QUIET_SECONDS = 10.0


def applied_count(text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(APPLIED + " "))


def apply_burst(kube: Kube, operator: Operator, *bodies: dict[str, Any]) -> dict[str, Any]:
    """A policy change that lets up to 1,000 Deployments roll at once: the operator's applies
    per second, from the change until it applies nothing more for BURST_QUIET_SECONDS (it has
    used every slot; the rollouts themselves go at the fake nodes' pace, not measured here)."""
    since = audit_position()
    text = operator.metrics_text()
    before, cpu_before = applied_count(text), sample(text, "process_cpu_seconds_total")
    sampler = Sampler(operator)
    started = time.monotonic()
    kube.apply(*bodies)
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


def create_fleet(kube: Kube, n: int, namespaces: int, *, replicas: int = 1, gate_every: int = 0) -> None:
    for ns in sorted({namespace_of(i, namespaces) for i in range(min(n, namespaces))}):
        kube.run("create", "namespace", ns, check=False)
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for i in range(n):
        deployment = fleet_deployment(i, replicas=replicas, gate_every=gate_every)
        by_namespace.setdefault(namespace_of(i, namespaces), []).append(deployment)
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


def applied_by_the_policy(n: int) -> list[int]:
    """The Deployments a policy over the whole fleet (no gated share) applies to: neither opted
    out nor in conflict (expected()'s matched less conflicting)."""
    return [i for i in range(n) if i % 10 != 0 and i % 7 != 0]


def plain_client_ceiling(
    kube: Kube,
    watcher: RolloutWatch,
    n: int,
    namespaces: int,
    *,
    updates: int,
    threads: int,
    targets: list[int] | None = None,
) -> dict[str, Any]:
    """The burst's kind of write without lameduck installed: `updates` pod-template changes,
    each starting a rollout, from a plain client `threads` at a time (as many as the operator's
    reconcile workers). The writes per second this cluster takes, which no operator's burst on
    it can beat; then the rollouts are waited for, so that the next phase starts from a quiet
    fleet. targets: which Deployments (by index), else the first `updates`."""
    apps = apps_api(kube.kubeconfig)
    targets = list(range(n))[:updates] if targets is None else targets
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
    replicas: int = 1,
    gate_share: float = 0.0,
    churn_per_minute: float = 0.0,
) -> dict[str, Any]:
    """The phases for N Deployments; `save` gets the result so far after each phase, so that a
    run that fails or is stopped leaves what it measured."""
    gate_every = fleet_shape.gate_every(gate_share)
    want = expected_by_policy(n, gate_every)
    names = tuple(want)
    pods = n * replicas
    print(f"== {n} Deployments of {replicas}: creating them and their pods on the fake nodes", flush=True)
    created = time.monotonic()
    create_fleet(kube, n, namespaces, replicas=replicas, gate_every=gate_every)
    wait_until(
        lambda: running_pods(kube) >= pods,
        fleet_shape.setup_timeout_seconds(pods),
        f"{pods} pods run on the fake nodes",
        max(5, pods // 2000),  # each poll lists every pod
    )
    result: dict[str, Any] = {
        "deployments": n,
        "replicas": replicas,
        "gate_share": gate_share,
        "gated_deployments": sum(1 for i in range(n) if fleet_shape.is_gated(i, gate_every)),
        "churn_fraction_per_minute": churn_per_minute,
        "reconcile_workers": reconcile_workers,
        "expected": want[POLICY],
        **({"expected_gated": want[GATED_POLICY]} if gate_every else {}),
        "setup_seconds": round(time.monotonic() - created),
    }
    watcher = RolloutWatch(kube.kubeconfig)
    operator: Operator | None = None
    churn: Churn | None = None

    def lap(measured: dict[str, Any]) -> dict[str, Any]:
        """A phase's result, with the pods the churn deleted during it and the Deployments still
        short of available pods at its end (replacements the cluster has not started yet)."""
        if churn is not None:
            measured["pods_deleted"] = churn.lap()
            with watcher.lock:
                measured["deployments_unavailable_at_end"] = len(watcher.unavailable_since)
            result["churn"] = churn.record()
        return measured

    def fleet_policies(mode: str, apply: str, limit: int = 5, max_hold: str = "30s") -> list[dict[str, Any]]:
        return policies(mode, apply, limit, max_hold, gate_every=gate_every)

    try:
        if ceiling_updates:
            print(f"== plain client: {ceiling_updates} template updates, no lameduck installed", flush=True)
            result["plain_client"] = plain_client_ceiling(
                kube, watcher, n, namespaces, updates=ceiling_updates, threads=reconcile_workers
            )
            save(result)
        for name in names:
            remove_policy(kube, name)  # one an earlier run left would have its status up to date already
        kube.apply(*fleet_policies("Audit", "OnNextRollout"))
        if churn_per_minute:
            print(f"== churn: {churn_per_minute:.0%} of the {pods} pods a minute from now on", flush=True)
            churn = Churn(
                *pod_calls(kube.kubeconfig), n=n, namespaces=namespaces, pods=pods, fraction_per_minute=churn_per_minute
            ).start()
        print("== audit: installing lameduck (helm) with the Audit policy in place", flush=True)
        since = audit_position()
        operator = install_lameduck(
            kube, "replicaCount=1", "resources.limits.memory=1Gi", f"reconcileWorkers={reconcile_workers}"
        )
        started_at = leader_started_at(kube, operator)

        audit = phase("audit", kube, operator, lambda got: every_policy_audited(got, want), 1800, policies=names)
        audit["seconds_from_operator_start"] = round(time.time() - started_at, 1)
        audit["api"] = api_requests(since)
        result["audit"] = lap(audit)
        save(result)

        print("== on-next-rollout: Enforce + OnNextRollout", flush=True)
        kube.apply(*fleet_policies("Enforce", "OnNextRollout"))
        result["on_next_rollout"] = lap(
            phase(
                "on-next-rollout",
                kube,
                operator,
                lambda got: all(up_to_date(got[name], counts) for name, counts in want.items()),
                1800,
                policies=names,
            )
        )
        save(result)

        print(f"== immediate-20: Immediate, maxConcurrentRollouts 20, until {rollout_sample} have rolled", flush=True)
        watcher.reset()
        kube.apply(*fleet_policies("Enforce", "Immediate", limit=20))
        immediate = phase(
            "immediate-20", kube, operator, lambda got: compliant(got) >= rollout_sample, 3600, policies=names
        )
        immediate["observed_rollouts_at_once_max"] = watcher.most
        immediate["observed_rollouts_at_once_max_as_lameduck_counts"] = watcher.most_as_lameduck_counts
        immediate["new_pod_ready_seconds"] = new_pod_ready_seconds(kube)
        immediate["rolled"] = compliant(statuses(kube, names))
        immediate["seconds_per_1000"] = round(immediate["seconds"] * 1000 / immediate["rolled"], 1)
        result["immediate_20"] = lap(immediate)
        save(result)

        print("== immediate-max: maxHold changed, maxConcurrentRollouts 1000", flush=True)
        result["immediate_max"] = lap(
            apply_burst(
                kube, operator, *fleet_policies("Enforce", "Immediate", limit=fleet_shape.BURST_LIMIT, max_hold="31s")
            )
        )
        save(result)

        print(f"== webhook: {updates} template updates from 16 threads", flush=True)
        null_webhook.follow_lameduck(kube, null_webhook.deploy(kube))
        webhook = webhook_burst(kube, operator, n, namespaces, updates, floor=null_webhook.WEBHOOK_LABEL)
        result["webhook"] = lap(webhook)
        result["loop_lag_max_seconds"] = sample(operator.metrics_text(), "lameduck_event_loop_lag_max_seconds")
    finally:
        if churn is not None:
            churn.stop()
            result["churn"] = churn.record()
        watcher.stop()
        print("== cleaning up", flush=True)
        # The namespaces first: with them goes every Deployment the policy's deletion would revert.
        null_webhook.remove(kube)
        remove_fleet(kube, namespaces)
        for name in names:
            kube.run("delete", "clustergracefulpolicy", name, "--ignore-not-found", "--timeout=600s", check=False)
        if operator is not None:
            operator.uninstall()
    return result


def shape_cells(result: dict[str, Any]) -> str:
    """The table's shape columns: Deployments x replicas, the gated ones, the churn and the pods
    it deleted (results from before those were recorded: 1 replica, none gated, no churn)."""
    churn = result.get("churn_fraction_per_minute") or 0
    deleted = (result.get("churn") or {}).get("deleted", 0)
    return f"{result['deployments']:,} x {result.get('replicas', 1)} | {result.get('gated_deployments', 0):,} | " + (
        f"{churn:.0%}/min ({deleted:,} deleted)" if churn else "none"
    )


def print_table(results: list[dict[str, Any]]) -> None:
    print(
        "| Deployments x pods | gated | churn | audit from start | OnNextRollout | Immediate/20 per 1,000 "
        "(most at once: kubectl's rule / lameduck's) | Immediate/1000 applies/s | peak RSS | loop stall max | "
        "429s | webhook p50/p99 (operator) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        phases = [r["audit"], r["on_next_rollout"], r["immediate_20"], r["immediate_max"]]
        hook = r["webhook"]["operator"]
        print(
            f"| {shape_cells(r)} | {r['audit']['seconds_from_operator_start']} s | "
            f"{r['on_next_rollout']['seconds']} s | {r['immediate_20']['seconds_per_1000']} s "
            f"({r['immediate_20']['observed_rollouts_at_once_max']} / "
            f"{r['immediate_20']['observed_rollouts_at_once_max_as_lameduck_counts']}) | "
            f"{r['immediate_max']['applies_per_second']} | "
            f"{max(p['peak_rss_mib'] for p in phases)} MiB | {r['loop_lag_max_seconds']:.2f} s | "
            f"{sum(p['api']['429'] for p in phases)} | {hook['p50_ms']}/{hook['p99_ms']} ms |"
        )


def local_cluster_with_fake_nodes(nodes: int, pods_per_node: int = 110) -> Kube:
    """The local cluster up, with kwok's fake nodes, the images built and lameduck's CRDs."""
    subprocess.run(["bash", str(REPO / "hack" / "cluster.sh"), "up"], check=True)
    subprocess.run(["bash", str(REPO / "hack" / "kwok.sh"), "up"], check=True)
    subprocess.run(["bash", str(REPO / "hack" / "kwok.sh"), "nodes", str(nodes), str(pods_per_node)], check=True)
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
    parser.add_argument("--replicas", type=int, default=1, help="replicas of each fleet Deployment")
    parser.add_argument(
        "--churn",
        type=float,
        default=0.0,
        help="this share of the fleet's pods deleted a minute, from lameduck's install to the last phase (0: none)",
    )
    parser.add_argument(
        "--gate-share",
        type=float,
        default=0.0,
        help="this share of the Deployments (every k-th) carries the readiness gate, under a policy of its own",
    )
    parser.add_argument("--pods-per-node", type=int, default=110, help="each fake node's pod capacity (at most 250)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.deployments.split(",")]
    if args.replicas < 1 or not 0 <= args.churn <= 1 or not 0 <= args.gate_share <= 1:
        parser.error("--replicas is at least 1; --churn and --gate-share are from 0 to 1")
    busiest = fleet_shape.pods_at_most(
        max(counts), args.replicas, fleet_shape.rolling_at_once(args.plain_client_updates, args.webhook_updates)
    )
    if (no_room := fleet_shape.room_on_fake_nodes(busiest, args.nodes, args.pods_per_node)) is not None:
        parser.error(no_room)
    kube = local_cluster_with_fake_nodes(args.nodes, args.pods_per_node)
    results: list[dict[str, Any]] = []

    def save(partial: dict[str, Any]) -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_result(
            args.out,
            {
                "command": "python -m bench.fleet " + " ".join(sys.argv[1:] if argv is None else argv),
                "nodes": args.nodes,
                "pods_per_node": args.pods_per_node,
                "namespaces": args.namespaces,
                "results": [*results, partial] if partial not in results else results,
            },
        )

    for n in counts:
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
                replicas=args.replicas,
                gate_share=args.gate_share,
                churn_per_minute=args.churn,
            )
        )
        save(results[-1])
    print_table(results)


if __name__ == "__main__":
    main()
