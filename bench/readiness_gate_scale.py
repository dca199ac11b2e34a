"""Does the readiness gate keep up with a rollout of hundreds of pods? No cluster needed.

Drives the operator's own ReadinessGate (index, batches, bounded writes, one event loop) with a
synthetic rollout: N old pods, True and listed, and N new gated pods created over --ramp s,
each getting its IP after --ip-delay; each old pod turns terminating --term-after its new pod
is created and is deleted --grace later. Pod i is selected by 1 + i % 3 of 3 Services. A
stand-in EndpointSlice controller syncs a Service --lag after a pod of it changes (100
endpoints a slice, changed slices sent whole); every event reaches the gate as parsed JSON.
The fake API applies a condition after --latency-ms (uid and resourceVersion preconditions
as the API server checks them), and the watch brings the pod back.

    python -m bench.readiness_gate_scale [--pods 100 500 1000] [--namespaces 10 1] [--latency-ms 5 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import time
import tracemalloc
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench.provenance import write_result
from lameduck_operator.logic.readiness import SERVICE_NAME_LABEL, PodView
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.names import READINESS_CONDITION
from lameduck_operator.ports import WriteResult
from lameduck_operator.readiness_gate import CONCURRENT_WRITES, ReadinessGate

REPO = Path(__file__).resolve().parent.parent
SLICE_SIZE = 100
SERVICES = (("web", {"app": "web"}), ("web-a", {"a": "yes"}), ("web-b", {"b": "yes"}))
LISTED = ("True", "EndpointsListed")
# What the index holds: its own allocations, and the strings it keeps of the parsed events.
INDEX_FILES = (
    "*/lameduck_operator/gate_index.py",
    "*/lameduck_operator/readiness_gate.py",
    "*/lameduck_operator/logic/readiness.py",
    "*/json/decoder.py",
)
Handler = Callable[[Mapping[str, Any], bool], None]


@dataclass(eq=False)
class Pod:
    ns: str
    name: str
    uid: str
    services: tuple[str, ...]
    new: bool
    rv: int = 1
    ip: str | None = None
    containers_ready: bool = False
    terminating: bool = False
    cond: tuple[str, str] | None = None
    listed_by: set[str] = field(default_factory=set)
    listed_at: float | None = None

    @property
    def address(self) -> str:
        j = int(self.name.rpartition("-")[2])
        return f"10.{j >> 16}.{(j >> 8) & 255}.{j & 255}"

    @property
    def ready(self) -> bool:
        return self.containers_ready and self.cond == LISTED and not self.terminating

    def body(self) -> dict[str, Any]:
        labels = {"app": "web", "pod-template-hash": "new" if self.new else "old"}
        labels.update({k: v for s, sel in SERVICES[1:] if s in self.services for k, v in sel.items()})
        meta: dict[str, Any] = {"name": self.name, "namespace": self.ns, "uid": self.uid, "labels": labels}
        meta |= {"resourceVersion": str(self.rv)}
        if self.terminating:
            meta["deletionTimestamp"] = "2026-01-01T12:00:00Z"
        conditions = [{"type": "ContainersReady", "status": str(self.containers_ready)}]
        conditions.append({"type": "Ready", "status": str(self.ready)})
        if self.cond:
            conditions.append({"type": READINESS_CONDITION, "status": self.cond[0], "reason": self.cond[1]})
        status: dict[str, Any] = {"phase": "Running" if self.ip else "Pending", "conditions": conditions}
        if self.ip:
            status.update(podIP=self.ip, podIPs=[{"ip": self.ip}])
        gates = [{"conditionType": READINESS_CONDITION}]
        spec = {"nodeName": "node-1", "readinessGates": gates, "containers": [{"name": "app", "image": "app:2"}]}
        return {"metadata": meta, "spec": spec, "status": status}


class TimedGate(ReadinessGate):
    judging, slowest, batches = 0.0, 0.0, 0
    on_batch: Callable[[], None] | None = None

    def flush(self) -> int:
        start = time.process_time()
        try:
            return super().flush()
        finally:
            spent = time.process_time() - start
            self.judging, self.slowest, self.batches = self.judging + spent, max(self.slowest, spent), self.batches + 1
            if self.on_batch:
                self.on_batch()


class Cluster:
    """The API server, kubelet and EndpointSlice controller, as far as the gate sees them."""

    def __init__(self, args: argparse.Namespace, n: int, namespaces: int, latency: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.args, self.n, self.latency, self.rng = args, n, latency, random.Random(args.seed)
        self.gate = TimedGate(self, OperatorMetrics())
        self.pods: dict[str, Pod] = {}
        self.by_ns: dict[str, dict[str, Pod]] = {f"ns-{k}": {} for k in range(namespaces)}
        self.slices: dict[tuple[str, str], list[list[str]]] = {}
        self.sent: dict[tuple[str, str, int], tuple[tuple[str, bool, bool], ...]] = {}
        self.queued: set[tuple[str, str]] = set()
        self.writes: list[tuple[Pod | None, str, WriteResult, float, float]] = []
        self.handlers = 0.0
        self.events = self.rv = self.in_flight = self.most_in_flight = self.false_on_terminating = 0
        self.peak_bytes = self.peak_pods = 0
        names, uid = list(self.by_ns), lambda: str(uuid.UUID(int=self.rng.getrandbits(128)))
        self.all = [  # old pods 0..n-1, then new pods; pod i and its replacement share namespace and Services
            Pod(names[j % n % namespaces], f"web-{j}", uid(), tuple(s for s, _ in SERVICES[: 1 + j % n % 3]), j >= n)
            for j in range(2 * n)
        ]

    def deliver(self, handler: Handler, text: str, deleted: bool = False) -> None:
        body = json.loads(text)  # a fresh body, as a watch brings it
        start = time.process_time()
        handler(body, deleted)
        self.handlers += time.process_time() - start
        self.events += 1

    def change(self, pod: Pod, **fields: Any) -> None:
        if pod.uid not in self.pods:
            return
        for key, value in fields.items():
            setattr(pod, key, value)
        self.rv += 1
        pod.rv = self.rv
        self.loop.call_later(self.args.watch_delay, self.deliver, self.gate.pod_seen, json.dumps(pod.body()))
        self.touch(pod)

    def touch(self, pod: Pod) -> None:
        for svc in pod.services if pod.ip else ():
            if (pod.ns, svc) not in self.queued:
                self.queued.add((pod.ns, svc))
                self.loop.call_later(self.rng.uniform(*self.args.lag), self.sync, pod.ns, svc)

    def sync(self, ns: str, svc: str) -> None:
        """The EndpointSlice controller: every pod of the Service with an IP, 100 to a slice."""
        self.queued.discard((ns, svc))
        want = {p.uid: p for p in self.by_ns[ns].values() if svc in p.services and p.ip}
        slices = self.slices.setdefault((ns, svc), [])
        for members in slices:
            members[:] = [u for u in members if u in want]
        placed = {u for members in slices for u in members}
        for uid in want.keys() - placed:
            room = next((m for m in slices if len(m) < SLICE_SIZE), None)
            if room is None:
                slices.append(room := [])
            room.append(uid)
        for k, members in enumerate(slices):
            key, seen = (ns, svc, k), tuple((u, want[u].ready, want[u].terminating) for u in members)
            if self.sent.get(key, ()) == seen:
                continue
            meta = {"name": f"{svc}-{k}", "namespace": ns, "labels": {SERVICE_NAME_LABEL: svc}}
            endpoints = [
                {
                    "addresses": [p.ip],
                    "conditions": {"ready": p.ready, "serving": p.ready, "terminating": p.terminating},
                    "targetRef": {"kind": "Pod", "namespace": ns, "name": p.name, "uid": p.uid},
                }
                for p in (want[u] for u in members)
            ]
            text = json.dumps({"metadata": meta, "addressType": "IPv4", "endpoints": endpoints})
            self.sent[key] = seen
            self.deliver(self.gate.slice_seen, text, not members)
        now = self.loop.time()
        for pod in want.values():
            pod.listed_by.add(svc)
            if pod.new and pod.listed_at is None and pod.listed_by.issuperset(pod.services):
                pod.listed_at = now

    def create(self, pod: Pod) -> None:
        self.pods[pod.uid] = self.by_ns[pod.ns][pod.uid] = pod
        self.change(pod)
        up = self.rng.uniform(*self.args.ip_delay)
        self.loop.call_later(0.01, self.change, pod)  # bound to a node
        self.loop.call_later(up, lambda: self.change(pod, ip=pod.address))
        self.loop.call_later(up + self.args.app_ready, lambda: self.change(pod, containers_ready=True))

    def delete(self, pod: Pod) -> None:
        del self.pods[pod.uid], self.by_ns[pod.ns][pod.uid]
        self.loop.call_later(self.args.watch_delay, self.deliver, self.gate.pod_seen, json.dumps(pod.body()), True)
        self.touch(pod)

    async def patch_pod_condition(self, view: PodView, condition: Mapping[str, Any], guard: bool) -> WriteResult:
        issued = self.loop.time()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(self.latency)
        self.in_flight -= 1
        pod, status = self.pods.get(view.uid), str(condition["status"])
        result = WriteResult.GONE if pod is None else WriteResult.WRITTEN
        if pod is not None and guard and str(pod.rv) != view.resource_version:
            result = WriteResult.CONFLICT
        self.false_on_terminating += pod is not None and pod.terminating and status == "False"
        self.writes.append((pod, status, result, issued, self.loop.time()))
        if pod is not None and result is WriteResult.WRITTEN:
            self.change(pod, cond=(status, str(condition["reason"])))
            self.loop.call_later(0.01, self.change, pod)  # the kubelet turns the pod Ready
        return result

    def measure(self) -> None:
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, f) for f in INDEX_FILES])
        size = sum(stat.size for stat in snapshot.statistics("filename"))
        if size > self.peak_bytes:
            self.peak_bytes, self.peak_pods = size, sum(len(p) for p in self.gate.pods.values())

    async def rollout(self) -> dict[str, Any]:
        old, new = self.all[: self.n], self.all[self.n :]
        for ns in self.by_ns:
            for svc, selector in SERVICES:
                spec = {"selector": selector, "type": "ClusterIP", "ports": [{"port": 80}]}
                self.deliver(
                    self.gate.service_seen, json.dumps({"metadata": {"name": svc, "namespace": ns}, "spec": spec})
                )
        for pod in old:
            self.create(pod)
            self.change(pod, ip=pod.address, containers_ready=True, cond=LISTED, listed_by=set(pod.services))
        for key in list(self.queued):
            self.sync(*key)
        await asyncio.sleep(2 * self.args.watch_delay)
        self.handlers = self.events = 0
        cpu, start = time.process_time(), self.loop.time()
        runner = asyncio.create_task(self.gate.run())
        for i, (was, pod) in enumerate(zip(old, new, strict=True)):
            at = start + i * self.args.ramp / self.n
            self.loop.call_at(at, self.create, pod)
            self.loop.call_at(at + self.args.term_after, partial(self.change, was, terminating=True))
            self.loop.call_at(at + self.args.term_after + self.args.grace, self.delete, was)
        while any(p.cond != LISTED for p in new) or len(self.pods) > self.n or self.gate._tasks:
            if self.loop.time() - start > self.args.timeout:
                break
            await asyncio.sleep(0.01)
        end = self.loop.time()
        await asyncio.sleep(0.5)  # any write after the end would still be counted
        cpu = time.process_time() - cpu
        runner.cancel()
        trues = [w for w in self.writes if w[1] == "True" and w[2] is WriteResult.WRITTEN]
        after = [(w[3] - w[0].listed_at, w[4] - w[0].listed_at) for w in trues if w[0] and w[0].listed_at]
        outcomes: dict[str, int] = {}
        for w in self.writes:
            kind = f"{w[1]} {w[2].value}" + ("" if w[0] is None or w[0].new else " (old pod)")
            outcomes[kind] = outcomes.get(kind, 0) + 1
        return {
            "ok": all(p.cond == LISTED for p in new) and not self.false_on_terminating,
            "listed_to_issued_ms": stats([a for a, _ in after]),
            "listed_to_written_ms": stats([b for _, b in after]),
            "seconds_to_all_true": round(max(w[4] for w in trues) - start, 3),
            "last_listed_to_all_true_s": round(max(w[4] for w in trues) - max(p.listed_at or 0 for p in new), 3),
            "seconds_until_settled": round(end - start, 3),
            "writes": len(self.writes),
            "extra_true_writes": sum(w[1] == "True" for w in self.writes) - self.n,
            "outcomes": dict(sorted(outcomes.items())),
            "false_on_terminating": self.false_on_terminating,
            "most_in_flight": self.most_in_flight,
            "events": self.events,
            "batches": self.gate.batches,
            "cpu_s": {
                k: round(v, 3)
                for k, v in (("process", cpu), ("handlers", self.handlers), ("batches", self.gate.judging))
            },
            "slowest_batch_ms": round(self.gate.slowest * 1000, 1),
        }


def stats(seconds: list[float]) -> dict[str, float]:
    values = sorted(s * 1000 for s in seconds)
    at = lambda q: values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]  # noqa: E731
    return {"p50": round(at(0.5), 1), "p99": round(at(0.99), 1), "max": round(values[-1], 1)} if values else {}


async def one(args: argparse.Namespace, n: int, namespaces: int, latency_ms: float, traced: bool) -> dict[str, Any]:
    if traced:
        tracemalloc.start()
    cluster = Cluster(args, n, namespaces, latency_ms / 1000)
    if traced:
        cluster.gate.on_batch = cluster.measure
    try:
        found = await cluster.rollout()
    finally:
        tracemalloc.stop()
    if not traced:
        return found
    return {"index_peak_kib": round(cluster.peak_bytes / 1024), "index_pods_at_peak": cluster.peak_pods,
            "index_bytes_per_pod": round(cluster.peak_bytes / max(1, cluster.peak_pods))}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--namespaces", type=int, nargs="+", default=[10, 1])
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[5.0, 20.0])
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds over which the new pods are created")
    parser.add_argument("--ip-delay", type=float, nargs=2, default=[0.3, 0.8])
    parser.add_argument("--app-ready", type=float, default=0.5)
    parser.add_argument("--lag", type=float, nargs=2, default=[0.02, 0.1], help="EndpointSlice controller's lag")
    parser.add_argument("--watch-delay", type=float, default=0.005)
    parser.add_argument("--term-after", type=float, default=1.0)
    parser.add_argument("--grace", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "readiness_gate_scale.json"))
    args = parser.parse_args()
    runs = []
    head = "pods  ns  write ms | listed->written p50/p99/max ms | all True s | writes (extra True) | CPU s gate/process | KiB/pod"  # noqa: E501
    print(head)
    for n in args.pods:
        for namespaces in args.namespaces:
            for latency in args.latency_ms:
                run = {"pods": n, "namespaces": namespaces, "latency_ms": latency}
                run |= asyncio.run(one(args, n, namespaces, latency, traced=False))
                run |= asyncio.run(one(args, n, namespaces, latency, traced=True))
                runs.append(run)
                w, cpu = run["listed_to_written_ms"], run["cpu_s"]
                print(f"{n:4} {namespaces:3} {latency:8.0f} | {w['p50']:8.1f} {w['p99']:8.1f} {w['max']:8.1f}"
                      f"      | {run['seconds_to_all_true']:10.2f} | {run['writes']:6} ({run['extra_true_writes']})"
                      f"      | {cpu['handlers'] + cpu['batches']:.2f}/{cpu['process']:.2f}"
                      f" | {run['index_bytes_per_pod'] / 1024:.1f}{'' if run['ok'] else '  FAILED'}")  # fmt: skip
    parameters = {k: v for k, v in vars(args).items() if k not in ("out", "pods", "namespaces", "latency_ms")}
    result = {"parameters": parameters | {"concurrent_writes": CONCURRENT_WRITES, "slice_size": SLICE_SIZE},
              "cpus": os.cpu_count(), "loadavg": os.getloadavg(), "runs": runs}  # fmt: skip
    write_result(Path(args.out), result)
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
