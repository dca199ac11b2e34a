"""How fast the operator brings a fleet under a policy, and what it costs.

Creates N Deployments (replicas 0 by default: the operator's work, not the node's), applies
one Immediate policy, and measures the time until the policy's status reports all N
compliant, the operator's peak RSS, and its API requests. Prints a table and writes JSON.

    python -m bench.operator_converge [--deployments 100] [--replicas 0] [--max-concurrent 100]

Uses $KUBECONFIG, else the local cluster (hack/cluster.sh).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from bench.provenance import write_result
from harness import REPO
from harness.install import Operator, install_lameduck
from harness.kube import Kube, wait_until
from harness.manifests import pause_deployment


def kubeconfig() -> str:
    given = os.environ.get("KUBECONFIG")
    if given:
        return given
    subprocess.run(["bash", str(REPO / "hack" / "cluster.sh"), "up"], check=True)
    return subprocess.run(
        ["bash", str(REPO / "hack" / "cluster.sh"), "kubeconfig"], check=True, capture_output=True, text=True
    ).stdout.strip()


def rss_mib(operator: Operator) -> float:
    """Resident memory of the leading replica, MiB, as it reports it (process_resident_memory_bytes)."""
    return operator.metric("process_resident_memory_bytes") / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=0)
    parser.add_argument("--max-concurrent", type=int, default=100)
    parser.add_argument("--method", choices=("Sidecar", "Sleep"), default="Sidecar")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "operator_converge.json"))
    args = parser.parse_args()

    kube = Kube(kubeconfig())
    kube.run("apply", "--server-side", "-f", str(REPO / "crds"))
    namespace = f"bench-converge-{int(time.time())}"
    kube.run("create", "namespace", namespace)
    operator = install_lameduck(kube)
    try:
        kube.apply(
            *(
                pause_deployment(f"app-{i:04d}", {"bench": "converge"}, replicas=args.replicas)
                for i in range(args.deployments)
            ),
            namespace=namespace,
        )
        wait_until(lambda: len(kube.items("deployments", namespace)) == args.deployments, 120, "Deployments exist")
        peak_idle = rss_mib(operator)
        started = time.monotonic()
        kube.apply(
            {
                "apiVersion": "lameduck.dev/v1alpha1",
                "kind": "GracefulPolicy",
                "metadata": {"name": "bench", "namespace": namespace},
                "spec": {
                    "apply": "Immediate",
                    "maxConcurrentRollouts": args.max_concurrent,
                    "selector": {"matchLabels": {"bench": "converge"}},
                    "hold": {"method": args.method},
                },
            }
        )
        peak = [peak_idle]

        def all_compliant() -> bool:
            peak.append(rss_mib(operator))
            out = kube.run(
                "get", "gracefulpolicy", "bench", "-n", namespace, "-o", "jsonpath={.status.compliant}"
            ).stdout
            return out == str(args.deployments)

        wait_until(all_compliant, 600, f"{args.deployments} Deployments are compliant", interval=0.5)
        elapsed = time.monotonic() - started
        current = peak_rss = rss_mib(operator)
        result = {
            "deployments": args.deployments,
            "replicas": args.replicas,
            "maxConcurrentRollouts": args.max_concurrent,
            "method": args.method,
            "seconds_to_all_compliant": round(elapsed, 2),
            "operator_rss_mib_before": round(peak_idle, 1),
            "operator_rss_mib_after": round(current, 1),
            "operator_peak_rss_mib": round(max(peak_rss, *peak), 1),
            "reconciles": operator.metric("lameduck_reconciles_total"),
            "applied": operator.metric("lameduck_reconciles_total", 'result="applied"'),
        }
    finally:
        # The policy's finalizer needs the operator: the namespace goes first, lameduck after.
        kube.run("delete", "namespace", namespace, "--timeout=300s", check=False)
        operator.uninstall()
    print(
        f"{'Deployments':>12} {'replicas':>8} {'limit':>6} {'to compliant':>13} {'RSS before':>11} "
        f"{'peak RSS':>9} {'reconciles':>10} {'applies':>8}"
    )
    print(
        f"{result['deployments']:>12} {result['replicas']:>8} {result['maxConcurrentRollouts']:>6} "
        f"{result['seconds_to_all_compliant']:>12}s {result['operator_rss_mib_before']:>9}Mi "
        f"{result['operator_peak_rss_mib']:>7}Mi {result['reconciles']:>10.0f} {result['applied']:>8.0f}"
    )
    write_result(Path(args.out), result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
