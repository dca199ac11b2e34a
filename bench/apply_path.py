"""The operator's apply path, offline: its CPU and API calls per apply, with no cluster.

The operator's Fleet (the reconcile workers and the status loop, as the runtime starts them) is
driven over N Deployments of bench.fleet's shapes (1 to 4 containers, every seventh with its own
preStop, a conflict; every tenth opted out) by an in-memory API server: server-side apply by
lameduck's logic/merge with a managedFields entry for lameduck, every call recorded. Each
write is followed by its watch events, as the lean informer hands them over (parsed from JSON
in this process, so the parse counts as the operator's): the write itself (the same
resourceVersion as its answer), then the deployment controller's three status updates of the
rollout (observed, new pods, done), 0.2 s apart. One round: a ClusterGracefulPolicy in Audit until every
Deployment is judged, then Enforce/Immediate with maxConcurrentRollouts N and another maxHold
(as a bench.fleet_ab round): the burst, measured until every rollout is done and the operator
idle, then SETTLE_SECONDS more so that anything it posts per interval is posted.

Measured: the process's CPU (time.process_time, every thread) less the fake API's own (its
calls and the watch events' serialisation, timed inside it), per apply; the API calls by kind,
per apply; the watch events, reconciles, Deployments stored (serialised and compressed) and read
back (decompressed and parsed) per apply, and the status writes kept alone (by a build whose
store has put_status: the rest compared, the status kept, the whole not stored again). Offline
applies/s is the burst's applies over its wall time with an API that answers at once: what the
operator's CPU alone allows, not a cluster's figure (bench.fleet_ab measures that against a
plain client on the cluster). The threads' time runnable but not running during the burst
(run_queue_wait_seconds, from /proc/self/task/*/schedstat) tells a round the machine starved
(another job's CPU, `nice`) from one the operator paced; loop_thread_busy_share is the event
loop thread's time running or runnable over the burst (near 1: the loop is what paces it).
With --api-latency-ms, every call is answered after that long, the calling thread asleep as on
a socket: the rate a cluster answering in that time allows, the reconcile workers' waits
included.

The official client's own work on each call (its argument checks, the body's
sanitize_for_serialization and json.dumps) and the parse of each answer run in the operator's
threads before and after the fake's pool manager, and count as the operator's. Not modelled:
urllib3's HTTP, sockets and TLS, the watch's HTTP stream (read and split into lines by the
informer on a cluster), and the watches of anything but these Deployments (the pods of each
rollout, on a cluster).

    python -m bench.apply_path [--deployments 1000] [--rounds 3] [--before /tmp/tree-of-base] [--api-latency-ms 70]
    python -m bench.apply_path --one [--profile]    # one round of this checkout's operator, JSON out

With --before, rounds of the operator checked out there (PYTHONPATH=<tree>/operator) and of this
checkout's alternate (before, after, after, before, ...), each in a fresh process. Prints a table
and writes bench/results/apply_path.json.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from bench.fleet import LABEL, POLICY, fleet_deployment, namespace_of
from bench.provenance import operator_source, write_result
from harness import REPO

RESULTS = REPO / "bench" / "results" / "apply_path.json"
NAMESPACES = 50
STAMP = "2026-11-21T10:00:00Z"
# After the burst: longer than the status interval and any window the operator batches over.
SETTLE_SECONDS = 3.0
STATUS_INTERVAL_SECONDS = 1.0
# The deployment controller's status updates of one rollout, as the watch delivers them, and
# the time between them (kwok's pods start at once; a cluster's take seconds).
CONTROLLER_STEPS = 3
CONTROLLER_STEP_SECONDS = 0.2
APPLY = "application/apply-patch+yaml"
APPLIED = "patch deployments (apply)"
KEYS = {"containers": ("name",), "initContainers": ("name",), "env": ("name",), "ports": ("containerPort", "protocol")}


def fields(value: Any, key: str | None = None) -> dict[str, Any]:
    """The fieldsV1 tree of what a manager set: maps by field, keyed lists by their keys."""
    if isinstance(value, Mapping):
        return {f"f:{k}": fields(v, k) for k, v in value.items()}
    if isinstance(value, list) and key in KEYS:
        tree: dict[str, Any] = {}
        for item in value:
            if isinstance(item, Mapping):
                ident = {k: item.get(k, "TCP" if k == "protocol" else None) for k in KEYS[key]}
                tree[f"k:{json.dumps(ident, separators=(',', ':'))}"] = {".": {}, **fields(item)}
        return tree
    return {}


def entry(manager: str, operation: str, tree: dict[str, Any], subresource: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"manager": manager, "operation": operation, "apiVersion": "apps/v1", "time": STAMP}
    found |= {"fieldsType": "FieldsV1", "fieldsV1": tree}
    return found | ({"subresource": subresource} if subresource else {})


def status(generation: int, replicas: int, updated: int, available: int, done: bool) -> dict[str, Any]:
    reason = "NewReplicaSetAvailable" if done else "ReplicaSetUpdated"
    conditions = [
        {"type": kind, "status": "True", "lastUpdateTime": STAMP, "lastTransitionTime": STAMP, "reason": why}
        for kind, why in (("Available", "MinimumReplicasAvailable"), ("Progressing", reason))
    ]
    found = {"observedGeneration": generation, "replicas": replicas, "updatedReplicas": updated}
    return found | {"readyReplicas": available, "availableReplicas": available, "conditions": conditions}


def served(i: int) -> dict[str, Any]:
    """Deployment i as the API server returns it before lameduck wrote to it: defaults,
    metadata, the client's and the controller's managedFields, a completed rollout."""
    body = fleet_deployment(i)
    mine = fields({"metadata": {"labels": body["metadata"]["labels"]}, "spec": body["spec"]})
    meta = body["metadata"]
    meta |= {
        "namespace": namespace_of(i, NAMESPACES),
        "uid": f"0b1c2d3e-aaaa-bbbb-cccc-{i:012d}",
        "resourceVersion": str(100000 + i),
        "generation": 1,
        "creationTimestamp": STAMP,
        "annotations": {**(meta.get("annotations") or {}), "deployment.kubernetes.io/revision": "1"},
    }
    spec = body["spec"]
    spec |= {"progressDeadlineSeconds": 600, "revisionHistoryLimit": 10}
    spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    pod = spec["template"]["spec"]
    pod |= {"dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler"}
    pod |= {"securityContext": {}, "terminationGracePeriodSeconds": 30}
    for container in pod["containers"]:
        container |= {"terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")
    controller = fields({"status": dict.fromkeys(("availableReplicas", "observedGeneration", "replicas"), 0)})
    meta["managedFields"] = [
        entry("kubectl", "Apply", mine),
        entry("kube-controller-manager", "Update", controller, "status"),
    ]
    body["status"] = status(1, 1, 1, 1, done=True)
    return body


class FakeServer:
    """An API server in this process: the official client's HTTP layer (its pool manager) hands
    each request here, where it is counted and answered at once; the Deployments as stored, and
    their watch events handed to `seen` (on the event loop) as the informer would. `cpu` is the
    CPU time spent in here (per thread), left out of the operator's."""

    def __init__(self, seen: Callable[[Mapping[str, Any]], None], latency: float = 0.0) -> None:
        self.seen = seen
        self.latency = latency
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.cpu = 0.0
        self.version = 200000
        self.rolling: set[tuple[str, str]] = set()
        self.watch_events = 0
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None

    @contextmanager
    def timed(self) -> Iterator[None]:
        started = time.thread_time()
        try:
            yield
        finally:
            spent = time.thread_time() - started
            with self.lock:
                self.cpu += spent

    def load(self, body: dict[str, Any]) -> None:
        self.objects[(body["metadata"]["namespace"], body["metadata"]["name"])] = body
        self.hand_over(self.event(body))

    def event(self, body: Mapping[str, Any]) -> str:
        with self.timed():
            return json.dumps({"type": "MODIFIED", "object": body})

    def hand_over(self, line: str) -> None:
        """A watch event, parsed and handed over as the informer does (on the event loop)."""
        self.watch_events += 1
        self.seen(json.loads(line)["object"])

    # ---- the HTTP layer: urllib3's PoolManager.request, as the client calls it --------------

    def request(self, method: str, url: str, body: Any = None, headers: Any = None, **_: Any) -> Any:
        if self.latency:
            time.sleep(self.latency)  # the server's time: the thread waits, as on its socket
        with self.timed():
            path = urlsplit(url).path
            content_type = (headers or {}).get("Content-Type")
            answer = self.answer(method, path, content_type, json.loads(body) if body else None)
            data = json.dumps(answer).encode()
        status = 201 if method == "POST" else 200
        return SimpleNamespace(status=status, reason="OK", data=data, headers={"content-type": "application/json"})

    def answer(self, method: str, path: str, content_type: str | None, body: Any) -> Any:
        segments = path.strip("/").split("/")
        rest = segments[2:] if segments[0] == "api" else segments[3:]
        namespace = rest[1] if len(rest) >= 3 and rest[0] == "namespaces" else None
        rest = rest[2:] if namespace is not None else rest
        resource = "/".join(rest[:1] + rest[2:3])  # with its subresource: .../status
        if method == "PATCH" and resource == "deployments" and content_type == APPLY:
            assert namespace is not None
            return self.apply(namespace, rest[1], body)
        if method == "POST" and resource == "events":
            self.count(f"create events ({body['involvedObject']['kind']} {body['reason']})")
            return body
        self.count(f"{method.lower()} {resource}")
        if method == "GET":
            return {"metadata": {"resourceVersion": "1"}, "items": []}
        return body if isinstance(body, dict) else {"metadata": {}}

    def count(self, call: str) -> None:
        with self.lock:
            self.calls[call] += 1

    # ---- server-side apply of Deployments, and the deployment controller ---------------------

    def apply(self, namespace: str, name: str, intent: dict[str, Any]) -> dict[str, Any]:
        from lameduck_operator.logic.merge import merge  # noqa: PLC0415 (the operator under test's)

        self.count("patch deployments (apply)")
        key = (namespace, name)
        before = self.objects[key]
        applied = {k: v for k, v in intent.items() if k not in ("apiVersion", "kind")}
        applied["metadata"] = {k: v for k, v in intent["metadata"].items() if k not in ("name", "namespace")}
        body = merge(before, applied)
        others = [e for e in before["metadata"]["managedFields"] if e["manager"] != "lameduck"]
        body["metadata"]["managedFields"] = [*others, entry("lameduck", "Apply", fields(applied))]
        rollout = body["spec"]["template"] != before["spec"]["template"]
        if rollout:
            body["metadata"]["generation"] += 1
        self._store(key, body)
        line = json.dumps({"type": "MODIFIED", "object": body})
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.hand_over, line)
        if rollout:
            with self.lock:
                self.rolling.add(key)
            self.loop.call_soon_threadsafe(self.loop.call_later, CONTROLLER_STEP_SECONDS, self._rollout, key, 0)
        return body

    def _store(self, key: tuple[str, str], body: dict[str, Any]) -> None:
        with self.lock:
            self.version += 1
            body["metadata"]["resourceVersion"] = str(self.version)
            self.objects[key] = body

    def _rollout(self, key: tuple[str, str], step: int) -> None:
        """The deployment controller's next status update of the rollout of key (on the loop)."""
        with self.timed():
            body = json.loads(json.dumps(self.objects[key]))
            generation = body["metadata"]["generation"]
            body["status"] = [
                status(generation, 1, 0, 1, done=False),
                status(generation, 2, 1, 1, done=False),
                status(generation, 1, 1, 1, done=True),
            ][step]
            body["metadata"]["managedFields"][1]["time"] = f"2026-11-21T10:01:0{step}Z"
            self._store(key, body)
            line = json.dumps({"type": "MODIFIED", "object": body})
        self.hand_over(line)
        if step + 1 < CONTROLLER_STEPS:
            asyncio.get_running_loop().call_later(CONTROLLER_STEP_SECONDS, self._rollout, key, step + 1)
        else:
            with self.lock:
                self.rolling.discard(key)


def policy(mode: str, generation: int, max_hold: str, limit: int) -> dict[str, Any]:
    meta = {"name": POLICY, "uid": "policy-uid", "generation": generation, "resourceVersion": str(generation)}
    meta["finalizers"] = ["lameduck.dev/revert"]  # as the watch shows it once the operator has set it
    spec = {"mode": mode, "apply": "Immediate", "maxConcurrentRollouts": limit, "selector": {"matchLabels": LABEL}}
    spec["hold"] = {"maxHold": max_hold}
    return {"apiVersion": "lameduck.dev/v1alpha1", "kind": "ClusterGracefulPolicy", "metadata": meta, "spec": spec}


async def until(done: Callable[[], bool], what: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


def counting(calls: Counter[str], name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        return method(*args, **kwargs)

    return counted


def kept_counting(work: Counter[str], put_status: Callable[[Mapping[str, Any]], bool]) -> Callable[..., bool]:
    """put_status, counting the status writes it kept alone (when it says False, put follows)."""

    def counted(body: Mapping[str, Any]) -> bool:
        kept = put_status(body)
        work["status kept"] += kept
        return kept

    return counted


def scheduled() -> dict[str, tuple[int, int]]:
    """Per thread of this process, nanoseconds on a CPU and runnable waiting for one (empty
    where the kernel does not tell)."""
    found = {}
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ():
        try:
            running, waiting, _ = Path(f"/proc/self/task/{tid}/schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        found[tid] = (int(running), int(waiting))
    return found


def waits_between(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Seconds runnable but not running, all threads and the loop's (this one, the main
    thread), and the loop's seconds on a CPU, between two `scheduled()`."""
    main = str(os.getpid())

    def spent(tid: str, k: int) -> float:
        return (after[tid][k] - before.get(tid, (0, 0))[k]) / 1e9

    return {
        "all": sum(spent(tid, 1) for tid in after),
        "loop_waiting": spent(main, 1) if main in after else 0.0,
        "loop_running": spent(main, 0) if main in after else 0.0,
    }


async def one_round(
    n: int, workers: int, profile: cProfile.Profile | None, settle: float = SETTLE_SECONDS, latency: float = 0.0
) -> dict[str, Any]:
    """One round (see the module's docstring) of the operator imported here."""
    from kubernetes import client  # noqa: PLC0415

    from lameduck_operator.fleet import Fleet  # noqa: PLC0415 (the operator under test's)
    from lameduck_operator.k8s.api import KubeApi  # noqa: PLC0415
    from lameduck_operator.loop_health import collect_less_often  # noqa: PLC0415
    from lameduck_operator.metrics import OperatorMetrics  # noqa: PLC0415
    from lameduck_operator.settings import Settings  # noqa: PLC0415

    collect_less_often()
    loop = asyncio.get_running_loop()
    # As the runtime: a thread per reconcile worker and for the status and gate writes.
    loop.set_default_executor(ThreadPoolExecutor(workers + 12, thread_name_prefix="lameduck-api"))
    holder: list[Any] = []

    def seen(body: Mapping[str, Any]) -> None:
        holder[0].deployment_seen(body)

    server = FakeServer(seen, latency)
    server.loop = loop
    api_client = client.ApiClient(client.Configuration(host="https://api.bench"))
    api_client.rest_client.pool_manager = server  # type: ignore[assignment]
    fleet = Fleet(Settings(), KubeApi(api_client), OperatorMetrics(), workers=workers)
    holder.append(fleet)
    work: Counter[str] = Counter()
    fleet.queue.reconcile = counting(work, "reconciles", fleet.queue.reconcile)
    fleet.deployments.put = counting(work, "stored", fleet.deployments.put)  # type: ignore[method-assign]
    fleet.deployments.get = counting(work, "read back", fleet.deployments.get)  # type: ignore[method-assign]
    if hasattr(fleet.deployments, "put_status"):
        fleet.deployments.put_status = kept_counting(work, fleet.deployments.put_status)  # type: ignore[method-assign]
    fleet.policy_seen(policy("Audit", 1, "30s", n))
    for k in range(NAMESPACES):
        name = namespace_of(k, NAMESPACES)
        fleet.namespace_seen({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})
    for i in range(n):
        server.load(served(i))
    fleet.synced.set()
    tasks = [asyncio.create_task(fleet.run()), asyncio.create_task(fleet.publish_forever(STATUS_INTERVAL_SECONDS))]
    await until(lambda: len(fleet.decisions) == n and not fleet.queued, "the Audit policy judged every Deployment")
    await asyncio.sleep(STATUS_INTERVAL_SECONDS * 1.5)
    gc.collect()
    gc.freeze()
    server.calls.clear()
    work.clear()
    server.watch_events = 0
    fake_cpu, cpu, started = server.cpu, time.process_time(), time.perf_counter()
    sched = scheduled()
    loop_cpu = time.thread_time()
    if profile is not None:
        profile.enable()
    fleet.policy_seen(policy("Enforce", 2, "31s", n))
    applies = n - sum(1 for i in range(n) if i % 10 == 0) - sum(1 for i in range(n) if i % 10 and i % 7 == 0)
    await until(
        lambda: server.calls[APPLIED] >= applies and not server.rolling and not fleet.queued,
        "every apply made and its rollout done",
    )
    burst = time.perf_counter() - started
    waits = waits_between(sched, scheduled()) if sched else None
    await asyncio.sleep(settle)
    if profile is not None:
        profile.disable()
    operator_cpu = time.process_time() - cpu - (server.cpu - fake_cpu)
    loop_cpu = time.thread_time() - loop_cpu
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    applied = server.calls[APPLIED]
    total = sum(server.calls.values())
    return {
        "deployments": n,
        "workers": workers,
        "applies": applied,
        "burst_seconds": round(burst, 2),
        "applies_per_second_offline": round(applied / burst, 1),
        "cpu_ms_per_apply": round(operator_cpu / applied * 1000, 2),
        "fake_api_cpu_ms_per_apply": round((server.cpu - fake_cpu) / applied * 1000, 2),
        # The event loop's own thread, the fake API's part on it included (the watch events).
        "loop_thread_cpu_ms_per_apply": round(loop_cpu / applied * 1000, 2),
        "api_calls": dict(sorted(server.calls.items())),
        "api_calls_per_apply": round(total / applied, 3),
        "events": sum(v for k, v in server.calls.items() if k.startswith("create events")),
        "watch_events_per_apply": round(server.watch_events / applied, 2),
        "reconciles_per_apply": round(work["reconciles"] / applied, 2),
        "stored_per_apply": round(work["stored"] / applied, 2),
        "read_back_per_apply": round(work["read back"] / applied, 2),
        "status_kept_per_apply": round(work["status kept"] / applied, 2),
        "api_latency_ms": round(latency * 1000, 1),
        "run_queue_wait_seconds": round(waits["all"], 2) if waits else None,
        "loop_thread_busy_share": (
            round((waits["loop_running"] + waits["loop_waiting"]) / burst, 2) if waits else None
        ),
    }


def run_one(n: int, workers: int, profile: bool, latency: float = 0.0) -> dict[str, Any]:
    profiler = cProfile.Profile(time.thread_time) if profile else None
    result = asyncio.run(one_round(n, workers, profiler, latency=latency))
    result["operator"] = operator_source()
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
        print(out.getvalue(), file=sys.stderr)
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(45)
        print(out.getvalue(), file=sys.stderr)
    return result


def child(tree: Path | None, n: int, workers: int, latency_ms: float) -> dict[str, Any]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree / "operator"), str(REPO)])
    command = [sys.executable, "-m", "bench.apply_path", "--one", "--deployments", str(n), "--workers", str(workers)]
    command += ["--api-latency-ms", str(latency_ms)]
    done = subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def print_table(rounds: list[dict[str, Any]]) -> None:
    print(
        "| build | applies | CPU per apply | API calls per apply | Events "
        "| reconciles, stored, status kept, read back per apply |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for r in rounds:
        kept = r.get("status_kept_per_apply", 0)
        work = f"{r['reconciles_per_apply']}, {r['stored_per_apply']}, {kept}, {r['read_back_per_apply']}"
        row = [r["variant"], r["applies"], f"{r['cpu_ms_per_apply']} ms", r["api_calls_per_apply"], r["events"], work]
        print("| " + " | ".join(str(v) for v in row) + " |")


WORK = (
    "cpu_ms_per_apply",
    "api_calls_per_apply",
    "applies_per_second_offline",
    "reconciles_per_apply",
    "stored_per_apply",
    "status_kept_per_apply",
    "read_back_per_apply",
    "watch_events_per_apply",
    "run_queue_wait_seconds",
    "loop_thread_busy_share",
)


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for variant in sorted({r["variant"] for r in rounds}):
        mine = [r for r in rounds if r["variant"] == variant]
        found[variant] = {
            key: {"median": statistics.median(r[key] for r in mine), "min": min(r[key] for r in mine)}
            | {"max": max(r[key] for r in mine)}
            for key in WORK
            if all(r.get(key) is not None for r in mine)
        }
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8, help="reconcile workers, as the chart's default")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each build")
    parser.add_argument("--before", type=Path, help="a checkout of the build to compare with")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", action="store_true", help="one round in this process; JSON on stdout")
    parser.add_argument("--profile", action="store_true", help="with --one: cProfile of the burst on stderr")
    parser.add_argument(
        "--api-latency-ms", type=float, default=0.0, help="every API call answered after this long (0: at once)"
    )
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.deployments, args.workers, args.profile, args.api_latency_ms / 1000)))
        return
    order = ["before", "after", "after", "before"] if args.before else ["after"]
    plan = [order[k % len(order)] for k in range(args.rounds * (2 if args.before else 1))]
    rounds = []
    for variant in plan:
        result = child(
            args.before if variant == "before" else None, args.deployments, args.workers, args.api_latency_ms
        )
        rounds.append({"variant": variant, **result})
        print(
            f"{variant}: {result['applies_per_second_offline']} applies/s, {result['cpu_ms_per_apply']} ms/apply, "
            f"{result['api_calls_per_apply']} calls, {result['run_queue_wait_seconds']} s runnable waiting",
            flush=True,
        )
    print_table(rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    found = {"deployments": args.deployments, "api_latency_ms": args.api_latency_ms, "rounds": rounds}
    write_result(args.out, found | {"summary": summary(rounds)})


if __name__ == "__main__":
    main()
