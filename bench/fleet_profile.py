"""Where the operator's memory goes at fleet scale: the operator run in this process, out of
the cluster, over bench.fleet's Deployments, with tracemalloc.

    python -m bench.fleet_profile [--deployments 1000] [--no-tracemalloc] [--clean]

On the local cluster with kwok's fake nodes (as bench.fleet). Creates the fleet unless it is
there, applies bench.fleet's Audit ClusterGracefulPolicy, runs the operator (no webhook, no
leader election) until the policy's status is up to date and 10 s more, then prints its peak
and final RSS and the allocations alive at the end, by source line and by file (what
tracemalloc saw, which is Python's heap: RSS also holds the interpreter, libraries and freed
but unreturned memory). tracemalloc itself costs memory and time: --no-tracemalloc measures
RSS alone. Also: the API objects still kept whole, by kind, and the RSS after malloc_trim (what
glibc held but could give back). The operator profiled is the one imported: with
PYTHONPATH=<another checkout>/operator, that checkout's (the result names its commit).
Writes bench/results/fleet_profile.json; the fleet stays unless --clean.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import logging
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import kopf

from bench.fleet import (
    SELECTOR,
    audited,
    create_fleet,
    expected,
    policy,
    remove_fleet,
    remove_policy,
    running_pods,
    status_of,
)
from bench.provenance import operator_source, write_result
from harness import REPO
from harness.kube import LOCAL_KUBECONFIG, Kube, wait_until
from lameduck_operator.config import load_config
from lameduck_operator.handlers import build_registry
from lameduck_operator.runtime import Runtime

RESULTS = REPO / "bench" / "results" / "fleet_profile.json"
SETTLE_SECONDS = 10.0


def memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def fleet_size(kube: Kube) -> int:
    out = kube.run("get", "deployments", "-A", "-l", SELECTOR, "-o", "name", check=False).stdout
    return len(out.split())


def api_objects_alive() -> dict[str, int]:
    """Whole API objects (dicts with kind and metadata) still referenced, by kind: what is kept
    in full rather than as a view."""
    gc.collect()
    kinds = Counter(
        str(o.get("kind"))
        for o in gc.get_objects()
        if type(o) is dict and "metadata" in o and "kind" in o and "apiVersion" in o
    )
    return dict(kinds.most_common())


def top(snapshot: tracemalloc.Snapshot, key: str, limit: int) -> list[dict[str, Any]]:
    stats = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)]).statistics(key)
    return [
        {"where": str(stat.traceback[0]), "mib": round(stat.size / 2**20, 2), "blocks": stat.count}
        for stat in stats[:limit]
    ]


def profile(n: int, trace: bool) -> dict[str, Any]:
    kube = Kube(LOCAL_KUBECONFIG)
    want = expected(n)
    rss_before_operator = memory_kib("VmRSS")
    env = {
        **os.environ,
        "LAMEDUCK_HTTP_PORT": "18080",
        "LAMEDUCK_LEADER_ELECTION": "false",
        "LAMEDUCK_LOG_LEVEL": "WARNING",
    }
    env.pop("LAMEDUCK_WEBHOOK_CERT_DIR", None)
    os.environ["KUBECONFIG"] = LOCAL_KUBECONFIG  # the operator's API client reads it at start
    runtime = Runtime(load_config(env))
    registry = build_registry(runtime)
    result: dict[str, Any] = {}

    peak: dict[str, Any] = {"traced": 0}

    def complete() -> bool:
        if trace:
            current, _ = tracemalloc.get_traced_memory()
            if current > peak["traced"] * 1.1:  # a snapshot near the peak: what it is made of
                peak.update(traced=current, snapshot=tracemalloc.take_snapshot())
        return audited(status_of(kube), want)

    def watch() -> None:
        started = time.monotonic()
        try:
            wait_until(complete, 900, "the Audit policy's status is up to date", 0.5)
            result["audit_seconds"] = round(time.monotonic() - started, 1)
            time.sleep(SETTLE_SECONDS)  # steady state: kopf's idle per-object workers have exited
            result["rss_mib"] = round(memory_kib("VmRSS") / 1024, 1)
            result["peak_rss_mib"] = round(memory_kib("VmHWM") / 1024, 1)
            result["api_objects_alive"] = api_objects_alive()
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            result["rss_after_malloc_trim_mib"] = round(memory_kib("VmRSS") / 1024, 1)
            if trace:
                snapshot = tracemalloc.take_snapshot()
                current, traced_peak = tracemalloc.get_traced_memory()
                result["traced_mib"] = round(current / 2**20, 1)
                result["traced_peak_mib"] = round(traced_peak / 2**20, 1)
                result["by_line"] = top(snapshot, "lineno", 40)
                result["by_file"] = top(snapshot, "filename", 25)
                if "snapshot" in peak:
                    result["near_peak_traced_mib"] = round(peak["traced"] / 2**20, 1)
                    result["near_peak_by_line"] = top(peak["snapshot"], "lineno", 40)
                    result["near_peak_by_file"] = top(peak["snapshot"], "filename", 25)
        finally:
            runtime.stop_flag.set()

    if trace:
        tracemalloc.start(1)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    asyncio.run(kopf.operator(registry=registry, clusterwide=True, standalone=True, stop_flag=runtime.stop_flag))
    watcher.join(timeout=5)
    result["rss_before_operator_mib"] = round(rss_before_operator / 1024, 1)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--no-tracemalloc", dest="trace", action="store_false")
    parser.add_argument("--clean", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    subprocess.run(["bash", str(REPO / "hack" / "cluster.sh"), "up"], check=True)
    subprocess.run(["bash", str(REPO / "hack" / "kwok.sh"), "up"], check=True)
    subprocess.run(["bash", str(REPO / "hack" / "kwok.sh"), "nodes", str(args.nodes)], check=True)
    kube = Kube(LOCAL_KUBECONFIG)
    kube.run("apply", "--server-side", "-f", str(REPO / "crds"))
    if fleet_size(kube) != args.deployments:
        remove_policy(kube)
        if fleet_size(kube) > args.deployments:
            remove_fleet(kube, args.namespaces)
        print(f"== creating {args.deployments} Deployments (those missing)", flush=True)
        create_fleet(kube, args.deployments, args.namespaces)
        wait_until(lambda: running_pods(kube) >= args.deployments, 1800, "the fleet's pods run", 5)
    remove_policy(kube)  # a new one, which the operator has never seen
    kube.apply(policy("Audit", "OnNextRollout"))
    result = {
        "command": "python -m bench.fleet_profile " + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, cwd=REPO
        ).stdout.strip(),
        # The operator profiled is the one imported: PYTHONPATH=<a checkout>/operator profiles another.
        "operator": operator_source(),
        "deployments": args.deployments,
        "tracemalloc": args.trace,
        **profile(args.deployments, args.trace),
    }
    if args.clean:
        remove_policy(kube)
        remove_fleet(kube, args.namespaces)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result(args.out, result)
    print(f"audit {result.get('audit_seconds')} s; RSS {result.get('rss_mib')} MiB, peak {result.get('peak_rss_mib')}")
    print(f"API objects kept whole: {result.get('api_objects_alive')}")
    for row in result.get("by_file", [])[:15]:
        print(f"{row['mib']:8.2f} MiB {row['blocks']:8d}  {row['where']}")
    for title, key in (("alive at the end", "by_line"), ("near the peak", "near_peak_by_line")):
        print(f"-- {title}")
        for row in result.get(key, [])[:25]:
            print(f"{row['mib']:8.2f} MiB {row['blocks']:8d}  {row['where']}")


if __name__ == "__main__":
    main()
