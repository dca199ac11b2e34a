"""What observing shutdowns costs the operator, with no cluster: the real ShutdownObserver
and the operator's metrics registry, fed what the watches deliver for N managed pods that
terminate (each pod seen three times as it is deleted, its containers end and it is
removed, plus its sidecar's hold report), spread over D Deployments. Prints the process's
RSS growth and tracemalloc's count of what stays allocated, the CPU time per pod, and the
exported metrics' size; writes bench/results/shutdown_memory.json.

    python -m bench.shutdown_memory [--pods 1000] [--deployments 1000,100,10]

The target: RSS growth <= 20 MiB at 1,000 managed pods.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from bench.provenance import write_result
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.model import PolicyRef, parse_policy
from lameduck_operator.shutdown_observer import ShutdownObserver

RESULTS = Path(__file__).parent / "results" / "shutdown_memory.json"
# A cluster policy: the pods are spread over 50 namespaces, and a GracefulPolicy governs only its own.
POLICY = PolicyRef("ClusterGracefulPolicy", "web")
SPEC = parse_policy(
    {"apiVersion": "lameduck.dev/v1alpha1", "kind": "ClusterGracefulPolicy", "metadata": {"name": "web"}}
).spec


DELETED_AT = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC).timestamp()


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def pod_versions(i: int, deployment: str, namespace: str) -> list[dict[str, Any]]:
    """A managed pod as the watch delivers it: being deleted, its app ended, then removed."""
    template_hash = f"{i % 97:05x}"
    metadata = {
        "name": f"{deployment}-{template_hash}-{i:05d}",
        "namespace": namespace,
        "uid": f"pod-{i}",
        "labels": {"app": deployment, "pod-template-hash": template_hash},
        "ownerReferences": [{"kind": "ReplicaSet", "name": f"{deployment}-{template_hash}"}],
        "deletionTimestamp": "2026-11-21T10:00:30Z",
        "deletionGracePeriodSeconds": 30,
    }
    spec = {
        "initContainers": [
            {"name": "lameduck", "env": [{"name": "LAMEDUCK_POLICY", "value": POLICY.annotation_value}]}
        ],
        "containers": [{"name": "app"}],
    }
    running = {"containerStatuses": [{"name": "app", "state": {"running": {}}}]}
    ended = {
        "containerStatuses": [
            {
                "name": "app",
                "state": {"terminated": {"exitCode": 0, "finishedAt": f"2026-11-21T10:00:{10 + i % 20:02d}Z"}},
            }
        ]
    }
    return [
        {"metadata": metadata, "spec": spec, "status": running},
        {"metadata": metadata, "spec": spec, "status": ended},
        {"metadata": metadata, "spec": spec, "status": ended},
    ]


def report(i: int, deployment: str, namespace: str) -> dict[str, Any]:
    template_hash = f"{i % 97:05x}"
    message = {
        "version": 1,
        "outcome": "quiet",
        "holdSeconds": 3.0 + i % 7,
        "stage1Seconds": 0.5,
        "stage2Seconds": 2.5 + i % 7,
        "lateTrafficSeconds": 1.0 + (i % 13) / 10,
        "connectionsAfterStage1": i % 3,
        "reusedAfterStage1": 0,
        "pinnedAfterStage1": 0,
        "maxHoldSeconds": 30.0,
        "gracePeriodSeconds": 65,
        "policy": POLICY.annotation_value,
        "replicaSet": f"{deployment}-{template_hash}",
        "podTemplateHash": template_hash,
        "containers": ["app"],
    }
    return {
        "metadata": {
            "uid": f"event-{i}",
            "namespace": namespace,
            "labels": {"lameduck.dev/report": "hold"},
            "creationTimestamp": "2026-11-21T10:00:10Z",
        },
        "involvedObject": {
            "kind": "Pod",
            "name": f"{deployment}-{template_hash}-{i:05d}",
            "namespace": namespace,
            "uid": f"pod-{i}",
        },
        "message": json.dumps(message),
    }


def measure(pods: int, deployments: int) -> dict[str, Any]:
    metrics = OperatorMetrics()
    # Every Deployment known and governed; the clock a minute after the pods' deletion (10:00:00).
    observer = ShutdownObserver(
        metrics, lambda _ref: POLICY, lambda _ref: SPEC, known=lambda _ref: True, clock=lambda: DELETED_AT + 60
    )
    observer.lead()
    # Build the inputs first: they stand for what the watch hands over and does not keep.
    inputs = []
    for i in range(pods):
        namespace, deployment = f"ns-{i % 50}", f"app-{i % deployments}"
        inputs.append((pod_versions(i, deployment, namespace), report(i, deployment, namespace)))
    gc.collect()
    rss_before = rss_bytes()
    tracemalloc.start()
    started_cpu = time.process_time()
    for versions, event in inputs:
        observer.report_seen(event)
        for n, version in enumerate(versions):
            observer.pod_seen(version, deleted=n == len(versions) - 1)
    cpu = time.process_time() - started_cpu
    exported = generate_latest(metrics.registry)
    del inputs
    gc.collect()
    kept, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = rss_bytes()
    counted = sum(len(recent.ends) for recent in observer.deployments.values())
    assert counted == pods, "every termination was observed"
    assert sum(len(recent.reports) for recent in observer.deployments.values()) == min(pods, 20 * deployments), (
        "every report was believed"
    )
    return {
        "pods": pods,
        "deployments": deployments,
        "terminations_counted": counted,
        "deployment_series": exported.count(b"lameduck_deployment_max_hold_seconds{"),
        "rss_growth_mib": round((rss_after - rss_before) / 2**20, 2),
        "kept_allocated_mib": round(kept / 2**20, 2),
        "cpu_ms_per_pod": round(cpu * 1000 / pods, 3),
        "metrics_kib": round(len(exported) / 1024, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--deployments", default="1000,100,10")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", type=int, metavar="DEPLOYMENTS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:  # one measurement, in this fresh process
        print(json.dumps(measure(args.pods, args.one)))
        return
    rows = []
    for deployments in args.deployments.split(","):
        command = [sys.executable, "-m", "bench.shutdown_memory", "--pods", str(args.pods), "--one", deployments]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout))
    print("| pods | Deployments | RSS growth | kept allocated | CPU per pod | /metrics size |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['pods']:,} | {row['deployments']:,} | {row['rss_growth_mib']} MiB | "
            f"{row['kept_allocated_mib']} MiB | {row['cpu_ms_per_pod']} ms | {row['metrics_kib']} KiB |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result(
        args.out,
        {
            "command": "python -m bench.shutdown_memory " + " ".join(sys.argv[1:] if argv is None else argv),
            "note": "each row measured in a fresh process",
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
