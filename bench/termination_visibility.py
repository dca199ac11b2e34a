"""How soon a managed pod's termination shows in the operator's metrics: for each of N pod
deletions, from the app container's exit (its finishedAt, whole seconds, as the API server
records it) until the leader's lameduck_terminations_total counted it, both polled every
0.2 s, the exit as a watch of the pods saw it (finishedAt is truncated to the second: a figure
may be up to 1 s too high). Each pod's hold report is checked to exist.

    python -m bench.termination_visibility --kubeconfig K [--deletions 10]

Installs lameduck with its Helm chart (unless --operator installed), runs the demo app with
one replica under a policy in the namespace lameduck-visibility, deletes its pod N times,
prints a table, writes bench/results/termination_visibility.json and removes what it made.
The target: within 10 s of the pod's exit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.provenance import write_result
from harness.demo import PodEnds, start_guarded_demo
from harness.install import Operator, install_lameduck
from harness.kube import Kube, wait_until

RESULTS = Path(__file__).parent / "results" / "termination_visibility.json"
NAMESPACE = "lameduck-visibility"


def reported(kube: Kube, pod: str) -> bool:
    events = kube.items("events", NAMESPACE, "lameduck.dev/report=hold")
    return any(e["involvedObject"]["name"] == pod for e in events)


def one_deletion(kube: Kube, operator: Operator, ends: PodEnds) -> dict[str, Any]:
    wait_until(lambda: _steady_pod(kube), 120, "one ready pod")
    pod = _steady_pod(kube)
    assert pod is not None
    selector = f'namespace="{NAMESPACE}"'
    before = operator.metric("lameduck_terminations_total", selector)
    kube.run("delete", "pod", pod, "-n", NAMESPACE, "--wait=false")
    counted = wait_until(
        lambda: time.time() if operator.metric("lameduck_terminations_total", selector) > before else None,
        120,
        f"the termination of {pod} is counted",
        0.2,
    )
    # The app container's exit, as the watch saw it before the pod was gone.
    finished = wait_until(lambda: ends.terminated.get(pod, {}).get("finishedAt"), 60, f"the exit of {pod}")
    exited = datetime.fromisoformat(finished.replace("Z", "+00:00")).timestamp()
    return {"pod": pod, "counted_after_exit": round(counted - exited, 2), "hold_reported": reported(kube, pod)}


def _steady_pod(kube: Kube) -> str | None:
    pods = [
        p
        for p in kube.items("pods", NAMESPACE, "app=demo")
        if not p["metadata"].get("deletionTimestamp")
        and all(c.get("ready") for c in (p.get("status") or {}).get("containerStatuses") or [{}])
    ]
    return pods[0]["metadata"]["name"] if len(pods) == 1 else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--deletions", type=int, default=10)
    parser.add_argument("--operator", choices=["helm", "installed"], default="helm")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    kube = Kube(args.kubeconfig)
    operator = install_lameduck(kube) if args.operator == "helm" else Operator(kube)
    kube.run("create", "namespace", NAMESPACE)
    try:
        start_guarded_demo(kube, NAMESPACE, replicas=1)
        ends = PodEnds(kube, NAMESPACE)
        try:
            runs = [one_deletion(kube, operator, ends) for _ in range(args.deletions)]
        finally:
            ends.stop()
    finally:
        kube.run("delete", "namespace", NAMESPACE, "--timeout=120s", check=False)
        if args.operator == "helm":
            operator.uninstall()
    lags = [r["counted_after_exit"] for r in runs]
    summary = {
        "deletions": len(runs),
        "counted_after_exit_median": statistics.median(lags),
        "counted_after_exit_min": min(lags),
        "counted_after_exit_max": max(lags),
    }
    print("| deletions | counted after the app's exit: median | min | max |")
    print("| --- | --- | --- | --- |")
    print(
        f"| {summary['deletions']} | {summary['counted_after_exit_median']:.2f} s | "
        f"{summary['counted_after_exit_min']:.2f} s | {summary['counted_after_exit_max']:.2f} s |"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.termination_visibility " + " ".join(sys.argv[1:] if argv is None else argv)
    write_result(args.out, {"command": command, "summary": summary, "runs": runs})


if __name__ == "__main__":
    main()
