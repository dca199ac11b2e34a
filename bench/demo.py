"""`make demo`: lameduck against fixed sleeps and no policy, side by side, on a real cluster.

Brings up the local cluster (or uses $KUBECONFIG), builds and loads the images, installs
lameduck with its Helm chart, deploys the demo app once per variant, and restarts each under
load twice: with the normal data plane, then where fixed sleeps lose requests (on the local
cluster, kube-proxy syncing only every 10 s; elsewhere, the load through an HAProxy in the
cluster that learns endpoints every 5 s). Prints both tables, writes a chart, draws the main
panels of the chart's Grafana dashboard from its own queries against a Prometheus on this
machine that scraped the operator meanwhile (bench/results/dashboard.png), and removes
everything it installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.provenance import write_result
from harness import REPO
from harness.dashboard_image import collect, draw
from harness.images import build_images
from harness.install import Operator, install_lameduck
from harness.kube import LOCAL_KUBECONFIG, Kube, is_local
from harness.prometheus import running_prometheus

RESULTS = REPO / "bench" / "results"


def main() -> int:
    started = time.monotonic()
    own_cluster = not os.environ.get("KUBECONFIG")
    if own_cluster:
        print("== bringing up the local cluster (hack/cluster.sh up)", flush=True)
        subprocess.run(["bash", str(REPO / "hack" / "cluster.sh"), "up"], check=True)
    kube = Kube(os.environ.get("KUBECONFIG") or LOCAL_KUBECONFIG)
    operator: Operator | None = None
    try:
        local = is_local(kube.kubeconfig)
        if local:
            print("== building and loading the images", flush=True)
            build_images()
        print("== installing lameduck with its Helm chart (charts/lameduck)", flush=True)
        kube.run("apply", "--server-side", "-f", str(REPO / "crds"))
        operator = install_lameduck(kube)
        command = [sys.executable, "-m", "bench.rollout", "--kubeconfig", kube.kubeconfig, "--runs", "1"]
        command += ["--stops", "restart", "--operator", "installed"]
        command += ["--out", str(RESULTS / "demo.json"), "--chart", str(RESULTS / "demo-errors.png")]
        if local:
            # The local cluster's kube-proxy can be made to lag, as a large cluster's does.
            print(
                "== rolling out the demo app under 200 requests/s: no policy, preStop sleep 5s and 20s, lameduck;\n"
                "   with kube-proxy syncing every second, then every 10 seconds",
                flush=True,
            )
            command += ["--conditions", "normal,slow"]
        else:
            print(
                "== rolling out the demo app under 200 requests/s: no policy, preStop sleep 5s and 20s, lameduck\n"
                "   (defaults, and propagationDelay 6s); to its ClusterIP, then through an HAProxy in the cluster",
                flush=True,
            )
            command += ["--conditions", "normal,l7", "--no-slow", "--variants", "none,sleep5,sleep20,lameduck,tuned"]
        # A Prometheus on this machine scrapes the operator throughout, for the dashboard's picture.
        with running_prometheus(
            kube, operator, Path(tempfile.mkdtemp(prefix="lameduck-demo-")), scrape_seconds=5
        ) as prom:
            rollouts_from = time.time()
            code = subprocess.run(command, check=False).returncode
            time.sleep(15)  # two more scrapes: the last terminations' counts are in
            panels = collect(prom, rollouts_from, time.time())
        write_result(RESULTS / "dashboard.json", {"command": "make demo (python -m bench.demo)", **panels}, indent=1)
        draw(panels, RESULTS / "dashboard.png")
        print(f"\n== chart of errors over time: {RESULTS / 'demo-errors.png'}")
        print(f"== the dashboard's main panels, from its own queries: {RESULTS / 'dashboard.png'}")
        return code
    finally:
        print("== cleaning up", flush=True)
        # The operator goes last: it removes its finalizer from the demo's policy while the
        # demo namespace is deleted.
        kube.run("delete", "namespace", "lameduck-bench", "--ignore-not-found", "--timeout=180s", check=False)
        if operator is not None:
            operator.uninstall()
            # helm uninstall leaves the namespace `helm install --create-namespace` made.
            kube.run("delete", "namespace", "lameduck-system", "--ignore-not-found", "--timeout=120s", check=False)
        kube.run("delete", "-f", str(REPO / "crds"), "--ignore-not-found", check=False)
        left = [
            what
            for what in ("namespace/lameduck-bench", "namespace/lameduck-system", "crd/gracefulpolicies.lameduck.dev")
            if kube.run("get", what, "--ignore-not-found", "-o", "name", check=False).stdout.strip()
        ]
        print(
            "== left behind: " + ", ".join(left) if left else "== cleaned up: nothing of the demo is left", flush=True
        )
        if own_cluster:
            subprocess.run(["bash", str(REPO / "hack" / "cluster.sh"), "down"], check=False)
        print(f"== demo finished in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    raise SystemExit(main())
