"""Leader failover: how long after the leading operator replica is killed another one leads.

python -m bench.failover --kubeconfig PATH [--runs 5] [--out bench/results/failover.json]

Installs lameduck with its chart (two replicas), then, once per run, force-deletes the pod
holding the Lease (grace period 0: kubelet kills it at once, and it never releases the
Lease) and times until a different running pod holds it. Prints each run and the spread.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time
from pathlib import Path

from bench.provenance import write_result
from harness import REPO
from harness.install import OPERATOR_NAMESPACE, Operator, install_lameduck
from harness.kube import Kube, wait_until

RESULTS = REPO / "bench" / "results"


def one_failover(kube: Kube, operator: Operator) -> dict[str, float | str]:
    wait_until(lambda: len([p for p in operator.pods() if p["status"].get("phase") == "Running"]) == 2, 120, "2 pods")
    leader = wait_until(operator.leader, 60, "a replica leads")
    killed = time.monotonic()
    kube.run("delete", "pod", leader, "-n", OPERATOR_NAMESPACE, "--grace-period=0", "--force", "--wait=false")

    def successor() -> str | None:
        holder = operator.leader()
        return holder if holder != leader else None

    new = wait_until(successor, 60, "another replica leads", 0.1)
    return {"killed": leader, "successor": new, "seconds": round(time.monotonic() - killed, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "failover.json"))
    args = parser.parse_args()
    kube = Kube(args.kubeconfig)
    operator = install_lameduck(kube)
    runs = []
    try:
        for number in range(args.runs):
            run = one_failover(kube, operator)
            runs.append(run)
            print(f"run {number + 1}: {run['killed']} killed, {run['successor']} leads after {run['seconds']}s")
    finally:
        operator.uninstall()
    seconds = [float(r["seconds"]) for r in runs]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    result = {
        "command": f"python -m bench.failover --runs {args.runs}",
        "commit": commit,
        "machine": platform.platform(),
        "runs": runs,
        "median_seconds": statistics.median(seconds),
        "min_seconds": min(seconds),
        "max_seconds": max(seconds),
    }
    print(f"failover: median {result['median_seconds']}s, min {min(seconds)}s, max {max(seconds)}s (target <= 15s)")
    write_result(Path(args.out), result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
