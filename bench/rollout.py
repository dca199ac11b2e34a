"""Side-by-side rollouts under load: no policy, fixed preStop sleeps, and lameduck.

For each condition (a normal data plane; a slow one with kube-proxy syncing at most every
10 s, as on a large cluster) and each variant, it runs `kubectl rollout restart` of a
3-replica demo Deployment while sending constant load to its Service's ClusterIP from this
machine (half keep-alive, half a new connection per request), and records errors by kind,
each old pod's termination time, the rollout's duration (restart until the last old pod is
gone) and the sidecar's memory. Prints a table; writes bench/results/rollout.json.

    python -m bench.rollout [--runs 3] [--conditions normal,slow] [--variants none,sleep5,sleep20,lameduck]

Needs the local cluster (hack/cluster.sh) with the images built, or $KUBECONFIG plus a
ClusterIP reachable from here and --no-slow.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from matplotlib.figure import Figure

from bench.loadgen import LoadGenerator, under_load
from lameduck_operator.logic.decision import rollout_in_progress
from tests.e2e.support import REPO, Kube, Operator, image_values, install_lameduck, wait_until

NAMESPACE = "lameduck-bench"
APP = "demo"
RESULTS = REPO / "bench" / "results"


@dataclass(frozen=True)
class Variant:
    name: str
    title: str
    prestop_sleep: int | None = None
    lameduck: bool = False


VARIANTS = {
    "none": Variant("none", "(a) no policy"),
    "sleep5": Variant("sleep5", "(b) preStop sleep 5s", prestop_sleep=5),
    "sleep20": Variant("sleep20", "(c) preStop sleep 20s", prestop_sleep=20),
    "lameduck": Variant("lameduck", "(d) lameduck defaults", lameduck=True),
}
CONDITIONS = {"normal": "1s", "slow": "10s"}  # kube-proxy iptables minSyncPeriod
RESTART_AT_SECOND = 3  # of steady load before `kubectl rollout restart`


def demo_deployment(image: str, variant: Variant) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": image,
        "imagePullPolicy": "Never",
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": [{"name": "LATENCY_MS", "value": "5"}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
    }
    if variant.prestop_sleep:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": variant.prestop_sleep}}}
    labels = {"app": APP}
    meta: dict[str, Any] = {"name": APP, "labels": {**labels, "variant": variant.name}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": APP},
        "spec": {"selector": {"app": APP}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }


def policy() -> dict[str, Any]:
    return {
        "apiVersion": "lameduck.dev/v1alpha1",
        "kind": "GracefulPolicy",
        "metadata": {"name": "bench", "namespace": NAMESPACE},
        "spec": {"apply": "Immediate", "selector": {"matchLabels": {"variant": "lameduck"}}},
    }


@dataclass
class PodWatch:
    """Deletion start and end of every pod, from a watch."""

    api: client.CoreV1Api
    deleting: dict[str, float] = field(default_factory=dict)
    gone: dict[str, float] = field(default_factory=dict)
    ips: dict[str, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._watch()
            except Exception as err:  # a watch can expire or time out: start another
                print(f"  (pod watch restarted: {type(err).__name__} {getattr(err, 'status', '')})", flush=True)
                time.sleep(0.2)

    def _watch(self) -> None:
        stream = watch.Watch()
        for event in stream.stream(
            self.api.list_namespaced_pod, NAMESPACE, label_selector=f"app={APP}", timeout_seconds=600
        ):
            body = event["raw_object"]
            name = body["metadata"]["name"]
            if body.get("status", {}).get("podIP"):
                self.ips[name] = body["status"]["podIP"]
            if body["metadata"].get("deletionTimestamp") and name not in self.deleting:
                self.deleting[name] = time.time()
            if event["type"] == "DELETED":
                self.gone.setdefault(name, time.time())
            if self.stop.is_set():
                stream.stop()

    def check_gone(self, kube: Kube, names: set[str]) -> bool:
        """Also poll, so a watch that restarted misses no deletion."""
        present = {p["metadata"]["name"] for p in kube.items("pods", NAMESPACE, f"app={APP}")}
        for name in names - present:
            self.gone.setdefault(name, time.time())
        return all(name in self.gone for name in names)


def steady(kube: Kube) -> bool:
    deployment = kube.get("deployment", APP, NAMESPACE)
    pods = kube.items("pods", NAMESPACE, f"app={APP}")
    return (
        not rollout_in_progress(deployment)
        and len(pods) == 3
        and not any(p["metadata"].get("deletionTimestamp") for p in pods)
    )


def sidecar_rss_mib() -> float | None:
    """Resident memory of the sidecars, read from this node's /proc (local cluster only)."""
    sizes = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"lameduck-sidecar" not in (proc / "cmdline").read_bytes():
                continue
            status = (proc / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]) / 1024)
    return round(statistics.mean(sizes), 1) if sizes else None


def unanswered_syns(service_ip: str) -> set[tuple[str, str]] | None:
    """(client port, pod IP) of every connection to the Service whose SYN the pod never
    answered, from this node's conntrack table (local cluster only; None without it)."""
    if not shutil.which("conntrack"):
        return None
    listed = subprocess.run(
        ["conntrack", "-L", "-p", "tcp", "--orig-dst", service_ip, "--state", "SYN_SENT"],
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:
        return None
    found = set()
    for line in listed.stdout.splitlines():
        # the first sport= is the client's port; the second src= the pod the SYN went to
        ports = [f.split("=", 1)[1] for f in line.split() if f.startswith("sport=")]
        sources = [f.split("=", 1)[1] for f in line.split() if f.startswith("src=")]
        if "[UNREPLIED]" in line and len(sources) == 2 and ports:
            found.add((ports[0], sources[1]))
    return found


def set_proxy_sync(period: str) -> None:
    subprocess.run(["bash", str(REPO / "hack" / "cluster.sh"), "proxy-sync", period], check=True)


async def one_rollout(kube: Kube, pods: PodWatch, url: str, rate: float, service_ip: str) -> dict[str, Any]:
    listed = kube.items("pods", NAMESPACE, f"app={APP}")
    before = {p["metadata"]["name"] for p in listed}
    for pod in listed:
        pods.ips.setdefault(pod["metadata"]["name"], pod.get("status", {}).get("podIP", ""))
    unanswered_before = unanswered_syns(service_ip)
    generator = LoadGenerator(url, rate)
    load_started = time.time()
    started = load_started + RESTART_AT_SECOND  # until the restart says when it really was

    def restart_and_wait() -> None:
        nonlocal started
        started = time.time()
        kube.run("rollout", "restart", f"deployment/{APP}", "-n", NAMESPACE)
        wait_until(lambda: pods.check_gone(kube, before), 300, "every old pod is gone", 0.2)

    async def progress() -> None:
        while True:
            await asyncio.sleep(1)
            done = sum(1 for name in before if name in pods.gone)
            print(
                f"\r  {time.time() - started:5.0f}s  requests {generator.result.requests:6d}  "
                f"errors {generator.result.error_count:4d}  old pods gone {done}/{len(before)}",
                end="",
                flush=True,
            )

    display = asyncio.create_task(progress())
    result = await under_load(generator, restart_and_wait, before=RESTART_AT_SECOND, after=3)
    display.cancel()
    print()
    ended = max(pods.gone[name] for name in before)
    terminations = [pods.gone[n] - pods.deleting[n] for n in before if n in pods.deleting]
    unanswered_after = unanswered_syns(service_ip)
    unanswered: dict[str, int] | None = None
    if unanswered_before is not None and unanswered_after is not None:
        by_ip = {ip: name for name, ip in pods.ips.items()}
        unanswered = {}
        for _, ip in unanswered_after - unanswered_before:
            who = by_ip.get(ip, ip)
            label = f"{who} (old pod)" if who in before else f"{who} (new pod)" if who in pods.ips else who
            unanswered[label] = unanswered.get(label, 0) + 1
    return {
        **result.as_dict(),
        "rollout_seconds": round(ended - started, 2),
        "termination_seconds": [round(t, 2) for t in terminations],
        "restart_at_second": RESTART_AT_SECOND,
        # where the SYNs went that nobody answered (connect timeouts), by pod
        "unanswered_syns": unanswered,
        # each old pod's deletion and disappearance, in seconds since the load started
        "old_pods": {
            n: {
                "deleted_at": round(pods.deleting[n] - load_started, 2) if n in pods.deleting else None,
                "gone_at": round(pods.gone[n] - load_started, 2),
            }
            for n in sorted(before)
        },
    }


def data_plane_settled(url: str, seconds: float = 3.0, timeout: float = 60.0) -> None:
    """Wait until `seconds` of new connections to the Service all succeed: a slow kube-proxy
    may still route to pods of the previous run, which would be counted against the next."""
    deadline = time.monotonic() + timeout
    clean_since = time.monotonic()
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                response.read()
        except OSError:
            clean_since = time.monotonic()
        if time.monotonic() - clean_since >= seconds:
            return
        time.sleep(0.02)
    raise AssertionError(f"the Service at {url} did not answer cleanly for {seconds}s within {timeout}s")


def prepare(kube: Kube, image: str, variant: Variant) -> None:
    kube.run("delete", "gracefulpolicy", "bench", "-n", NAMESPACE, "--ignore-not-found", "--wait=true")
    kube.run("delete", "deployment", APP, "-n", NAMESPACE, "--ignore-not-found", "--wait=true")
    wait_until(lambda: not kube.items("pods", NAMESPACE, f"app={APP}"), 120, "old demo pods are gone", 0.5)
    kube.apply(demo_deployment(image, variant), service(), namespace=NAMESPACE)
    if variant.lameduck:
        kube.apply(policy())
        wait_until(
            lambda: kube.get("gracefulpolicy", "bench", NAMESPACE).get("status", {}).get("compliant") == 1,
            120,
            "the demo Deployment is compliant",
            0.5,
        )
    wait_until(lambda: steady(kube), 180, "the demo Deployment is steady", 0.5)


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'condition':<9} {'variant':<24} {'runs':>4} {'requests':>8} {'errors':>6} {'from restart':>12} "
        f"{'error %':>8} {'kinds':<40} {'term s (mean)':>13} {'rollout s (mean)':>16} {'sidecar MiB':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(row["errors"].items())) or "-"
        rss = "-" if row["sidecar_rss_mib"] is None else f"{row['sidecar_rss_mib']}"
        print(
            f"{row['condition']:<9} {row['title']:<24} {row['runs']:>4} {row['requests']:>8} {row['error_count']:>6} "
            f"{row['errors_from_restart']:>12} "
            f"{100 * row['error_rate']:>7.3f}% {kinds:<40} {row['termination_mean']:>13.1f} "
            f"{row['rollout_mean']:>16.1f} {rss:>11}"
        )


def summarize(condition: str, variant: Variant, runs: list[dict[str, Any]], rss: float | None) -> dict[str, Any]:
    errors: dict[str, int] = {}
    for run in runs:
        for kind, count in run["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
    requests = sum(r["requests"] for r in runs)
    terms = [t for r in runs for t in r["termination_seconds"]]
    # Errors of requests sent before the restart cannot be the rollout's: the data plane's
    # background on this machine, or leftovers of an earlier run.
    before = [
        sum(n for second, n in r["errors_by_second"].items() if int(second) < r["restart_at_second"]) for r in runs
    ]
    return {
        "condition": condition,
        "variant": variant.name,
        "title": variant.title,
        "runs": len(runs),
        "requests": requests,
        "errors": errors,
        "error_count": sum(errors.values()),
        "error_rate": sum(errors.values()) / requests if requests else 0.0,
        "errors_per_run": [sum(r["errors"].values()) for r in runs],
        "errors_from_restart": sum(errors.values()) - sum(before),
        "errors_from_restart_per_run": [sum(r["errors"].values()) - b for r, b in zip(runs, before, strict=True)],
        "termination_mean": statistics.mean(terms) if terms else 0.0,
        "rollout_mean": statistics.mean(r["rollout_seconds"] for r in runs),
        "rollout_per_run": [r["rollout_seconds"] for r in runs],
        "sidecar_rss_mib": rss,
    }


def chart(report: dict[str, Any], path: Path) -> None:
    """Errors per second around the restart, one line per variant, one panel per condition."""
    conditions = list(report["runs"])
    fig = Figure(figsize=(6 * len(conditions), 4))
    axes = fig.subplots(1, len(conditions), squeeze=False)
    for ax, condition in zip(axes[0], conditions, strict=True):
        for variant, runs in report["runs"][condition].items():
            seconds: dict[int, int] = {}
            for run in runs:
                for second, count in run["errors_by_second"].items():
                    seconds[int(second)] = seconds.get(int(second), 0) + count
            span = max([int(max(r["rollout_seconds"] for r in runs)) + 6, *seconds.keys(), 1])
            xs = list(range(span + 1))
            ax.plot([x - 3 for x in xs], [seconds.get(x, 0) for x in xs], label=VARIANTS[variant].title)
        ax.set_title(f"{condition} data plane: errors per second (all runs)")
        ax.set_xlabel("seconds since kubectl rollout restart")
        ax.set_ylabel("failed requests")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run_bench(args: argparse.Namespace, kube: Kube) -> dict[str, Any]:
    kube.run("apply", "--server-side", "-f", str(REPO / "crds"))
    kube.create_namespace(NAMESPACE)
    operator: Operator | None = None
    if args.operator == "helm":
        repository, tag = image_values(args.sidecar_image)
        operator = install_lameduck(kube, f"sidecar.image.repository={repository}", f"sidecar.image.tag={tag}")
    api = client.CoreV1Api(config.new_client_from_config(config_file=kube.kubeconfig))
    report: dict[str, Any] = {"rate": args.rate, "runs": {}, "summary": []}
    try:
        for condition in args.conditions:
            if not args.no_slow:
                set_proxy_sync(CONDITIONS[condition])
            report["runs"][condition] = {}
            for name in args.variants:
                variant = VARIANTS[name]
                prepare(kube, args.demo_image, variant)
                ip = kube.get("service", APP, NAMESPACE)["spec"]["clusterIP"]
                rss = sidecar_rss_mib() if variant.lameduck else None
                runs = []
                for number in range(args.runs):
                    data_plane_settled(f"http://{ip}/")
                    pods = PodWatch(api)
                    watcher = threading.Thread(target=pods.run, daemon=True)
                    watcher.start()
                    run = asyncio.run(one_rollout(kube, pods, f"http://{ip}/", args.rate, ip))
                    pods.stop.set()
                    runs.append(run)
                    print(
                        f"{condition} {variant.title} run {number + 1}: {run['requests']} requests, "
                        f"{sum(run['errors'].values())} errors {run['errors']}, rollout {run['rollout_seconds']}s"
                        + (f", unanswered SYNs to {run['unanswered_syns']}" if run["unanswered_syns"] else ""),
                        flush=True,
                    )
                    wait_until(lambda: steady(kube), 180, "the demo Deployment is steady again", 0.5)
                report["runs"][condition][name] = runs
                report["summary"].append(summarize(condition, variant, runs, rss))
    finally:
        if not args.no_slow:
            set_proxy_sync(CONDITIONS["normal"])
        # The policy carries lameduck's finalizer: delete it while the operator still runs,
        # or the namespace would wait for an operator that is gone.
        kube.run(
            "delete", "gracefulpolicy", "bench", "-n", NAMESPACE, "--ignore-not-found", "--timeout=120s", check=False
        )
        if operator is not None:
            operator.uninstall()
        kube.run("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--conditions", type=lambda s: s.split(","), default=list(CONDITIONS))
    parser.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS))
    parser.add_argument(
        "--no-slow", action="store_true", help="do not touch kube-proxy (clusters other than the local one)"
    )
    parser.add_argument("--demo-image", default="docker.io/lameduck/demo-app:dev")
    parser.add_argument("--sidecar-image", default="docker.io/lameduck/sidecar:dev")
    parser.add_argument("--out", default=str(RESULTS / "rollout.json"))
    parser.add_argument("--chart", default=str(RESULTS / "rollout-errors.png"))
    parser.add_argument("--kubeconfig", help="required unless --report")
    parser.add_argument(
        "--operator",
        choices=("helm", "installed"),
        default="helm",
        help="install lameduck with its Helm chart (and uninstall it after), or use the one installed",
    )
    parser.add_argument("--report", metavar="JSON", help="only print the table and chart of an earlier run's results")
    args = parser.parse_args()
    if args.report:
        report = json.loads(Path(args.report).read_text())
        report["summary"] = [
            summarize(
                row["condition"],
                VARIANTS[row["variant"]],
                report["runs"][row["condition"]][row["variant"]],
                row["sidecar_rss_mib"],
            )
            for row in report["summary"]
        ]
        print_table(report["summary"])
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
        chart(report, Path(args.chart))
        return 0
    if not args.kubeconfig:
        parser.error("--kubeconfig is required")
    if args.no_slow:
        args.conditions = ["normal"]
    report = run_bench(args, Kube(args.kubeconfig))
    print()
    print_table(report["summary"])
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    chart(report, Path(args.chart))
    print(f"\nwrote {args.out} and {args.chart}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
