"""Side-by-side rollouts under load: no policy, fixed preStop sleeps, and lameduck.

Every variant (bench/rollout_objects.py) has its own Deployment and Service. Under each
condition (kube-proxy at its default sync period; kube-proxy lagging, syncing at most every
10 s as on a large cluster; an HAProxy in the cluster in front, learning endpoints by DNS;
nginx in front, its upstream rewritten and reloaded when the EndpointSlices change; a
simulated cloud load balancer on this machine, bench/external_lb.py, sending to pod IPs and
deregistering a pod only `--deregistration-delay` seconds after its endpoint turned not ready),
each round runs every selected way of stopping pods against every variant, in an order
shuffled anew each round (the seed is in the results), while a load generator on this
machine sends constant load. Each run records errors by kind, each old pod's termination,
the disruption's duration, the timings of the new pods' start-up phases, and how many
endpoints the data plane actually had programmed. Results are written after every run.

    python -m bench.rollout --kubeconfig K [--runs 3] [--conditions normal,slow,l7,nginx,external-lb]
        [--stops restart,scale-down,drain,keepalive,sigterm-ignored] [--variants none,sleep5,sleep20,lameduck,gate]
        [--deregistration-delay 45 --registration-delay 2]   # external-lb only

Needs the local cluster (hack/cluster.sh) with the images built; on another cluster pass
--no-slow (kube-proxy is left alone: no slow condition, no sampling of its rules) and make
sure ClusterIPs (and, for external-lb, pod IPs) are reachable from here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config

from bench import l7proxy, nginxproxy
from bench.dataplane import KubeProxySampler, NginxSampler, ProxySampler, Sampler, SliceSampler, View
from bench.external_lb import LbHost
from bench.lb_targets import LbSettings
from bench.rollout_objects import (
    CONDITIONS,
    DEFAULT_CONDITIONS,
    DEFAULT_VARIANTS,
    HAPROXY,
    NAMESPACE,
    NGINX,
    RESTART_AT_SECOND,
    STOPS,
    VARIANTS,
    Condition,
    Stop,
    Variant,
    app_label,
    demo_deployment,
    disruption_budget,
    endpoints_target,
    policy,
    routes,
    service,
)
from bench.rollout_phases import lost_after_release, run_phases
from bench.rollout_report import chart, environment, print_breakdown, print_table, sidecar_rss_mib, summarize_all
from bench.rollout_watch import PodWatch, hold_report_events, unanswered_syns
from harness import REPO
from harness.images import build_images, image_values
from harness.install import Operator, install_lameduck
from harness.kube import Kube, is_local, wait_until
from harness.loadgen import LoadGenerator, under_load
from lameduck_operator.logic.decision import rollout_in_progress

RESULTS = REPO / "bench" / "results"
SAMPLE_SECONDS = 0.25


@dataclass(frozen=True)
class Front:
    """An L7 proxy in front of an app Service: its objects (namespace, app label), its name
    (the Deployment, Service and pod label app=...), and a reader of what it has in rotation."""

    objects: Callable[[str, str], list[dict[str, Any]]]
    proxy_name: Callable[[str], str]
    view: Callable[[Kube, str, str], Callable[[], View]]


FRONTS = {
    HAPROXY: Front(l7proxy.objects, l7proxy.proxy_name, lambda kube, ns, name: ProxySampler(kube, ns, name).view),
    NGINX: Front(nginxproxy.objects, nginxproxy.proxy_name, lambda kube, ns, name: NginxSampler(kube, ns, name).view),
}


def steady(kube: Kube, app: str, replicas: int) -> bool:
    deployment = kube.get("deployment", app, NAMESPACE)
    pods = kube.items("pods", NAMESPACE, f"app={app}")
    return (
        not rollout_in_progress(deployment)
        and (deployment.get("status") or {}).get("readyReplicas") == replicas
        and len(pods) == replicas
        and not any(p["metadata"].get("deletionTimestamp") for p in pods)
    )


def set_proxy_sync(period: str) -> None:
    subprocess.run(["bash", str(REPO / "hack" / "cluster.sh"), "proxy-sync", period], check=True)


def data_plane_settled(url: str, seconds: float = 3.0, timeout: float = 90.0) -> None:
    """Wait until `seconds` of new connections all succeed: a slow data plane may still route
    to pods of an earlier run, which would be counted against the next."""
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
    raise AssertionError(f"{url} did not answer cleanly for {seconds}s within {timeout}s")


def series(sampler: Sampler, origin: float) -> dict[str, Any]:
    """The sampler's changes (and its last sample, which closes the series), in seconds
    since `origin`, with the addresses in each."""
    kept = sampler.changes()
    ok = [s for s in sampler.samples if s.count is not None]
    if ok and (not kept or kept[-1] is not ok[-1]):
        kept.append(ok[-1])
    return {
        "points": [[round(s.t - origin, 2), s.count] for s in kept],
        "addresses": [s.addresses for s in kept],
        "failed_samples": sum(1 for s in sampler.samples if s.count is None),
        "samples": len(sampler.samples),
    }


class Bench:
    def __init__(self, args: argparse.Namespace, kube: Kube) -> None:
        self.args = args
        self.kube = kube
        self.api = client.CoreV1Api(config.new_client_from_config(config_file=kube.kubeconfig))
        self.variants = [VARIANTS[name] for name in args.variants]
        self.stops = [STOPS[name] for name in args.stops]
        self.conditions = [CONDITIONS[name] for name in args.conditions]
        self.fronts = [FRONTS[proxy] for proxy in dict.fromkeys(c.proxy for c in self.conditions) if proxy]
        self.apps = sorted({stop.app for stop in self.stops})
        self.node = kube.run("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").stdout.strip()
        self.report: dict[str, Any] = {
            "environment": environment(kube, args),
            "rate": args.rate,
            "runs": [],
            "sidecar_rss_mib": {},
        }
        self.lbs: LbHost | None = None
        if any(c.external_lb for c in self.conditions):
            settings = LbSettings(args.registration_delay, args.deregistration_delay)
            self.lbs = LbHost(self.api.api_client, NAMESPACE, settings, args.lb_connect_timeout)
            self.report["environment"]["external_lb"] = self.lbs.record()

    # -- set-up -------------------------------------------------------------------------

    def set_up(self) -> None:
        kube = self.kube
        kube.create_namespace(NAMESPACE)
        for variant in self.variants:
            for app in self.apps:
                kube.apply(
                    demo_deployment(self.args.demo_image, app, variant),
                    service(app, variant),
                    disruption_budget(app, variant),
                    *routes(app, variant),
                    namespace=NAMESPACE,
                )
            if variant.lameduck:
                kube.apply(policy(variant))
            for front in self.fronts:
                kube.apply(*front.objects(NAMESPACE, app_label("demo", variant)), namespace=NAMESPACE)
        for variant in self.variants:
            if variant.lameduck:
                self.wait_compliant(policy(variant)["metadata"]["name"], len(self.apps))
            if variant.ingress:
                self.wait_starting_budget(variant)
            for app in self.apps:
                self.wait_steady(app_label(app, variant), 3)
        for front in self.fronts:
            for variant in self.variants:
                name = front.proxy_name(app_label("demo", variant))
                kube.run("rollout", "status", f"deployment/{name}", "-n", NAMESPACE, "--timeout=180s")
        for variant in self.variants:
            if variant.lameduck:
                self.report["sidecar_rss_mib"][variant.name] = sidecar_rss_mib()
        if self.lbs is not None:
            # one listener per Service, up for the whole benchmark, as a cloud LB outlives rollouts
            self.lbs.start()
            for variant in self.variants:
                for app in self.apps:
                    self.lbs.add(app_label(app, variant))

    def wait_compliant(self, name: str, wanted: int) -> None:
        def compliant() -> bool:
            return bool(self.kube.get("gracefulpolicy", name, NAMESPACE).get("status", {}).get("compliant") == wanted)

        wait_until(compliant, 180, f"{name}'s Deployments are compliant", 0.5)

    def wait_starting_budget(self, variant: Variant) -> None:
        """A variant behind an Ingress measures the starting budget only if the operator saw the
        hop: wait until its policy's status lists each of its Deployments at the starting budget
        (status.startingBudgets), and keep the entries in the result file."""
        name = policy(variant)["metadata"]["name"]
        wanted = {app_label(app, variant) for app in self.apps}
        listed: list[dict[str, Any]] = []

        def starting() -> bool:
            nonlocal listed
            status = self.kube.get("gracefulpolicy", name, NAMESPACE).get("status") or {}
            listed = [entry for entry in status.get("startingBudgets") or [] if entry.get("name") in wanted]
            return {entry.get("name") for entry in listed} == wanted

        wait_until(starting, 180, f"{name}'s Deployments are at the starting budget", 0.5)
        self.report["environment"].setdefault("starting_budgets", {})[variant.name] = listed

    def wait_steady(self, label: str, replicas: int) -> None:
        wait_until(lambda: steady(self.kube, label, replicas), 300, f"{label} is steady with {replicas} pods", 0.5)

    # -- one run --------------------------------------------------------------------------

    def url(self, condition: Condition, label: str) -> str:
        if condition.external_lb:
            assert self.lbs is not None
            return f"http://127.0.0.1:{self.lbs.lb(label).port}/"
        name = FRONTS[condition.proxy].proxy_name(label) if condition.proxy else label
        return f"http://{self.kube.get('service', name, NAMESPACE)['spec']['clusterIP']}/"

    def samplers(self, condition: Condition, label: str) -> list[Sampler]:
        """What the data plane has programmed for the Service, and the slices' view."""
        ip = self.kube.get("service", label, NAMESPACE)["spec"]["clusterIP"]
        slices = Sampler("slices_ready", SliceSampler(self.api, NAMESPACE, label).view, SAMPLE_SECONDS)
        found = [slices]
        if condition.proxy:
            front = FRONTS[condition.proxy]
            found.append(Sampler("programmed", front.view(self.kube, NAMESPACE, front.proxy_name(label))))
        elif condition.external_lb:
            assert self.lbs is not None
            found.append(Sampler("programmed", self.lbs.lb(label).view, SAMPLE_SECONDS))
        elif not self.args.no_slow:
            found.append(Sampler("programmed", KubeProxySampler(ip, 80, slices.latest_view).view, SAMPLE_SECONDS))
        return found

    def prepare_stop(self, stop: Stop, label: str) -> None:
        if stop.replicas_before != 3:
            self.kube.run("scale", f"deployment/{label}", f"--replicas={stop.replicas_before}", "-n", NAMESPACE)
        self.wait_steady(label, stop.replicas_before)

    def disrupt(self, stop: Stop, label: str, old: set[str], pods: PodWatch) -> None:
        """Stop the old pods as `stop` says and wait until every one of them is gone."""
        kube = self.kube
        if stop.name == "scale-down":
            kube.run("scale", f"deployment/{label}", f"--replicas={stop.replicas_after}", "-n", NAMESPACE)
        elif stop.name == "drain":
            self.drain(label, old, pods)
        else:
            kube.run("rollout", "restart", f"deployment/{label}", "-n", NAMESPACE)
        gone = (
            (lambda: pods.check_gone(kube, old))
            if stop.name != "scale-down"
            else (lambda: len(pods.gone_of(old)) >= len(old) - stop.replicas_after or pods.check_gone(kube, old))
        )
        wait_until(gone, 300, "the stopped pods are gone", 0.2)

    def drain(self, label: str, old: set[str], pods: PodWatch) -> None:
        """`kubectl drain` cordons the node and evicts the pods, retrying while the PDB says no.
        On a single-node cluster the replacements cannot schedule while it is cordoned, so
        the node is uncordoned once the first eviction is accepted; drain goes on evicting."""
        kubectl = [self.kube.binary, "--kubeconfig", self.kube.kubeconfig, "drain", self.node]
        kubectl += ["--pod-selector", f"app={label}"]
        kubectl += ["--ignore-daemonsets", "--delete-emptydir-data", "--timeout=300s"]
        draining = subprocess.Popen(kubectl, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: bool(set(pods.deleting) & old), 120, "the first eviction is accepted", 0.1)
            if self.single_node():
                self.kube.run("uncordon", self.node)
            _, err = draining.communicate(timeout=360)
            if draining.returncode != 0:
                raise AssertionError(f"kubectl drain failed: {err.strip()[-500:]}")
        finally:
            if draining.poll() is None:
                draining.kill()
            self.kube.run("uncordon", self.node, check=False)

    def single_node(self) -> bool:
        names = self.kube.run("get", "nodes", "-o", "name").stdout.split()
        return len(names) == 1

    async def measure(self, condition: Condition, stop: Stop, label: str) -> dict[str, Any]:
        kube = self.kube
        listed = kube.items("pods", NAMESPACE, f"app={label}")
        old = {p["metadata"]["name"] for p in listed}
        service_ip = kube.get("service", label, NAMESPACE)["spec"]["clusterIP"]
        unanswered_before = unanswered_syns(service_ip)
        pods = PodWatch(self.api, NAMESPACE, label)
        pods.start()
        samplers = self.samplers(condition, label)
        for each in samplers:
            each.start()
        generator = LoadGenerator(self.url(condition, label), self.args.rate, clients=stop.clients)
        if condition.external_lb:
            assert self.lbs is not None
            self.lbs.lb(label).take_counters()  # count this run's connections only
        load_started = time.time()
        disrupted = load_started + RESTART_AT_SECOND

        def disrupt() -> None:
            nonlocal disrupted
            disrupted = time.time()
            self.disrupt(stop, label, old, pods)

        try:
            result = await under_load(generator, disrupt, before=RESTART_AT_SECOND, after=3)
        finally:
            for each in samplers:
                each.stop()
            pods.stop()
        ended = max(pods.gone[name] for name in old if name in pods.gone)
        stopped = [n for n in old if n in pods.deleting]
        record = {
            **result.as_dict(),
            "started_at": round(load_started, 3),  # epoch seconds: what every *_at below counts from
            "disrupted_at": round(disrupted - load_started, 3),
            "duration_seconds": round(ended - disrupted, 2),
            "termination_seconds": [round(pods.gone[n] - pods.deleting[n], 2) for n in stopped if n in pods.gone],
            "old_pods": pods.report(old, load_started),
            "new_pods": pods.startup_phases(old, disrupted),
            "unanswered_syns": pods.attribute_syns(unanswered_before, unanswered_syns(service_ip), old),
            "endpoints": {each.name: series(each, load_started) for each in samplers},
            "endpoints_target": endpoints_target(stop),
        }
        if condition.external_lb and self.lbs is not None:
            record["external_lb"] = self.lbs.lb(label).take_counters().as_dict()
        return record

    def run_one(self, condition: Condition, stop: Stop, variant: Variant, round_number: int) -> dict[str, Any]:
        label = app_label(stop.app, variant)
        self.prepare_stop(stop, label)
        if condition.external_lb and self.lbs is not None:
            self.lbs.wait_settled(label)
        data_plane_settled(self.url(condition, label))
        run = asyncio.run(self.measure(condition, stop, label))
        deleted = {name for name, pod in run["old_pods"].items() if pod["deleted_at"] is not None}
        events = hold_report_events(self.kube, NAMESPACE, deleted) if variant.lameduck else []
        run["phases"] = run_phases({n: run["old_pods"][n] for n in deleted}, events, run["started_at"])
        if variant.lameduck:  # per pod in phases; the sum beside the load generator's errors
            run["lost_after_release"] = lost_after_release(run["phases"])
        if stop.replicas_after != 3:
            self.kube.run("scale", f"deployment/{label}", "--replicas=3", "-n", NAMESPACE)
        self.wait_steady(label, 3)
        return {"condition": condition.name, "stop": stop.name, "variant": variant.name, "round": round_number, **run}

    # -- the whole benchmark --------------------------------------------------------------

    def run(self, out: Path) -> None:
        rng = random.Random(self.args.seed)
        self.report["environment"]["seed"] = self.args.seed
        for condition in self.conditions:
            if not self.args.no_slow:
                set_proxy_sync(condition.proxy_min_sync)
            for round_number in range(1, self.args.runs + 1):
                plan = [(stop, variant) for stop in self.stops for variant in self.variants]
                rng.shuffle(plan)
                for stop, variant in plan:
                    if stop.name != "restart" and condition.name != "normal":
                        continue  # the other ways of stopping are measured under the normal condition only
                    started = time.monotonic()
                    run = self.run_one(condition, stop, variant, round_number)
                    self.report["runs"].append(run)
                    out.write_text(json.dumps(self.report, indent=2) + "\n")
                    lb = run.get("external_lb")
                    lb_text = (
                        f", LB: {sum(lb['connections_while_draining'].values())} connections to draining pods, "
                        f"{lb['connect_failures_total']} connect failures"
                        if lb
                        else ""
                    )
                    sidecars = run.get("lost_after_release")
                    sidecar_text = (
                        f", sidecars counted {sidecars['total']} lost after release "
                        f"({sidecars['pods_counted']} of {sidecars['pods']} pods counted)"
                        if sidecars and sidecars["total"] is not None
                        else ", no sidecar counted what it lost after release"
                        if sidecars
                        else ""
                    )
                    print(
                        f"{condition.name:<6} {stop.name:<15} {variant.title:<30} round {round_number}: "
                        f"{run['requests']} requests, {sum(run['errors'].values())} errors {run['errors'] or ''}, "
                        f"{run['duration_seconds']}s (run took {time.monotonic() - started:.0f}s)"
                        f"{sidecar_text}{lb_text}",
                        flush=True,
                    )

    def tear_down(self) -> None:
        if self.lbs is not None:
            self.lbs.stop()
        if not self.args.no_slow:
            set_proxy_sync(CONDITIONS["normal"].proxy_min_sync)
        self.kube.run("uncordon", self.node, check=False)
        # The policies carry lameduck's finalizer: delete them while the operator still runs,
        # or the namespace would wait for an operator that is gone.
        self.kube.run(
            "delete", "gracefulpolicies", "--all", "-n", NAMESPACE, "--ignore-not-found", "--timeout=120s", check=False
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--conditions", type=lambda s: s.split(","), default=list(DEFAULT_CONDITIONS))
    parser.add_argument("--stops", type=lambda s: s.split(","), default=list(STOPS))
    parser.add_argument("--variants", type=lambda s: s.split(","), default=list(DEFAULT_VARIANTS))
    parser.add_argument("--seed", type=int, default=None, help="of the run order (default: chosen and recorded)")
    defaults = LbSettings()
    parser.add_argument(
        "--deregistration-delay",
        type=float,
        default=defaults.deregistration_delay,
        help="external-lb: seconds the LB keeps sending new connections to a pod after its endpoint turns not ready",
    )
    parser.add_argument(
        "--registration-delay",
        type=float,
        default=defaults.registration_delay,
        help="external-lb: seconds from a pod's endpoint turning ready to the LB sending to it (its health checks)",
    )
    parser.add_argument("--lb-connect-timeout", type=float, default=2.0, help="external-lb: to a pod, then reset")
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
    parser.add_argument("--keep", action="store_true", help="leave the benchmark's namespace in place")
    parser.add_argument("--report", metavar="JSON", help="only print the table and chart of an earlier run's results")
    args = parser.parse_args()
    for name in args.variants:
        if name not in VARIANTS:
            parser.error(f"unknown variant {name!r}: one of {', '.join(VARIANTS)}")
    for name in args.stops:
        if name not in STOPS:
            parser.error(f"unknown stop {name!r}: one of {', '.join(STOPS)}")
    for name in args.conditions:
        if name not in CONDITIONS:
            parser.error(f"unknown condition {name!r}: one of {', '.join(CONDITIONS)}")
    if args.report:
        report = json.loads(Path(args.report).read_text())
        report["summary"] = summarize_all(report)
        print_table(report["summary"])
        print_breakdown(report)
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
        chart(report, Path(args.chart))
        return 0
    if not args.kubeconfig:
        parser.error("--kubeconfig is required")
    if args.no_slow:
        args.conditions = [c for c in args.conditions if c != "slow"] or ["normal"]
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 30)
    args.command = " ".join(["python -m bench.rollout", *sys.argv[1:]])
    kube = Kube(args.kubeconfig)
    if is_local(args.kubeconfig):
        # The images this checkout builds, not whatever an earlier build left in the cluster: a
        # result file names the commit it ran, so the images must be that commit's.
        build_images()
    kube.run("apply", "--server-side", "-f", str(REPO / "crds"))
    operator: Operator | None = None
    if args.operator == "helm":
        repository, tag = image_values(args.sidecar_image)
        operator = install_lameduck(kube, f"sidecar.image.repository={repository}", f"sidecar.image.tag={tag}")
    bench = Bench(args, kube)
    out = Path(args.out)
    try:
        bench.set_up()
        bench.run(out)
    finally:
        bench.report["environment"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        bench.report["summary"] = summarize_all(bench.report)
        out.write_text(json.dumps(bench.report, indent=2) + "\n")
        bench.tear_down()
        if operator is not None:
            operator.uninstall()
        if not args.keep:
            kube.run("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    print()
    print_table(bench.report["summary"])
    print_breakdown(bench.report)
    chart(bench.report, Path(args.chart))
    print(f"\nwrote {args.out} and {args.chart}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
