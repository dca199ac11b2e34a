"""What the admission webhook adds to a Deployment write, seen by the writer and by the webhook.

In a namespace of its own, N Deployments of 0 replicas, all labelled `bench: webhook` and
selected by one OnNextRollout GracefulPolicy: half go through the webhook at every template
write ("webhook": the intent is injected), half are annotated lameduck.dev/skip: "true",
which the chart's matchConditions keep from ever reaching it ("no webhook": the baseline).
Once every operator replica injects (server-side dry runs, 6 in a row), one template update
per Deployment (a strategic-merge patch of a pod-template annotation, with the kubernetes
Python client) goes out from 16 threads, both variants interleaved in a shuffled order.

Reports per variant the client-observed request latency (count, p50, p99, min, max: from
statistics.quantiles(n=100, method="inclusive"), linear between closest ranks), the
difference of the medians, and the webhook's own time from two histograms, as deltas over
the burst with p50/p99 interpolated linearly within buckets: the operator's
lameduck_webhook_duration_seconds summed over its pods, and the API server's
apiserver_admission_webhook_admission_duration_seconds (if it exposes /metrics). The target
is a webhook p99 of at most 50 ms. Prints a table and writes JSON.

    python -m bench.webhook_latency --kubeconfig PATH [--updates 200] [--out bench/results/webhook_latency.json]

Installs lameduck with its chart and uninstalls it after, unless --installed.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import urllib3
from kubernetes import client, config

from harness import REPO
from harness.install import Operator, carries_lameduck, every_replica_injects, install_lameduck
from harness.kube import Kube, wait_until
from harness.manifests import pause_deployment

WEBHOOK = "webhook"
BASELINE = "no webhook"
WORKERS = 16
TARGET_P99_SECONDS = 0.050
OPERATOR_HISTOGRAM = "lameduck_webhook_duration_seconds"
APISERVER_HISTOGRAM = "apiserver_admission_webhook_admission_duration_seconds"
WEBHOOK_NAME = 'name="deployments.lameduck.dev"'
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
LE = re.compile(r'(?:^|,)le="([^"]*)"')

Buckets = dict[float, float]  # upper bound (inf for +Inf) -> cumulative count


def histogram_buckets(text: str, name: str, match: str = "") -> Buckets:
    """The cumulative bucket counts of histogram `name` in Prometheus text, summed over every
    series whose labels contain `match`."""
    buckets: Buckets = {}
    prefix = name + "_bucket{"
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, _, value = line[len(prefix) :].rpartition("} ")
        found = LE.search(labels)
        if found and match in labels:
            bound = float(found.group(1))
            buckets[bound] = buckets.get(bound, 0.0) + float(value.split()[0])
    return buckets


def bucket_delta(before: Buckets, after: Buckets) -> Buckets:
    delta = {bound: count - before.get(bound, 0.0) for bound, count in after.items()}
    if any(count < 0 for count in delta.values()):
        raise AssertionError("a histogram went backwards during the burst (a process restarted?)")
    return delta


def bucket_quantile(buckets: Mapping[float, float], q: float) -> float | None:
    """The q-quantile of cumulative bucket counts, interpolated linearly within the bucket it
    falls in, as Prometheus's histogram_quantile: the first bucket starts at 0, a quantile
    in the +Inf bucket is the largest finite bound. None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound) or count == below:
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def pods_delta(before: Mapping[str, Buckets], after: Mapping[str, Buckets]) -> dict[str, Buckets]:
    """Each pod's increase of a histogram over a burst."""
    if set(before) != set(after):
        raise AssertionError(f"the operator's pods changed during the burst: {sorted(before)} -> {sorted(after)}")
    return {pod: bucket_delta(before[pod], after[pod]) for pod in after}


def summed(per_pod: Mapping[str, Buckets]) -> Buckets:
    total: Buckets = {}
    for delta in per_pod.values():
        for bound, count in delta.items():
            total[bound] = total.get(bound, 0.0) + count
    return total


def histogram_summary(delta: Buckets) -> dict[str, Any]:
    p50, p99 = bucket_quantile(delta, 0.5), bucket_quantile(delta, 0.99)
    calls = delta[max(delta)] if delta else 0.0
    finite = [bound for bound in delta if not math.isinf(bound)]
    # A p99 in the +Inf bucket reads as the largest finite bound but is above it: not met.
    beyond = bool(finite) and delta[max(finite)] < 0.99 * calls
    return {
        "calls": calls,
        "p50_ms": None if p50 is None else round(p50 * 1000, 2),
        "p99_ms": None if p99 is None else round(p99 * 1000, 2),
        "p99_beyond_the_buckets": beyond,
        "target_met": None if p99 is None else p99 <= TARGET_P99_SECONDS and not beyond,
        # Without a bucket bound at the target, the verdict is the interpolation's estimate.
        "target_is_a_bucket_bound": TARGET_P99_SECONDS in delta,
        "buckets": {("+Inf" if math.isinf(b) else f"{b:g}"): delta[b] for b in sorted(delta)},
    }


def client_summary(ms: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "count": len(ms),
        "p50_ms": round(cuts[49], 2),
        "p99_ms": round(cuts[98], 2),
        "min_ms": round(min(ms), 2),
        "max_ms": round(max(ms), 2),
    }


def operator_buckets(operator: Operator) -> dict[str, Buckets]:
    """Each serving operator pod's webhook histogram."""
    pods = sorted(operator.serving())
    assert pods, "no operator pod is running"
    return {pod: histogram_buckets(operator.metrics_text(pod=pod), OPERATOR_HISTOGRAM) for pod in pods}


def apiserver_buckets(kube: Kube) -> Buckets | None:
    """The API server's admission histogram for lameduck's webhook."""
    return apiserver_buckets_of(kube, (WEBHOOK_NAME,))[0]


def apiserver_buckets_of(kube: Kube, webhooks: tuple[str, ...]) -> list[Buckets | None]:
    """The API server's admission histogram for each webhook (by its name label), from one read
    of its metrics, so that all are taken at the same moment."""
    done = kube.run("get", "--raw", "/metrics", check=False)
    text = done.stdout if done.returncode == 0 else ""
    return [histogram_buckets(text, APISERVER_HISTOGRAM, webhook) or None for webhook in webhooks]


def apps_api(kubeconfig: str) -> client.AppsV1Api:
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    configuration.connection_pool_maxsize = WORKERS  # a kept-alive connection per worker
    return client.AppsV1Api(client.ApiClient(configuration))


def timed_patch(
    apps: client.AppsV1Api, namespace: str, name: str, body: dict[str, Any], dry_run: str | None = None
) -> tuple[float, dict[str, Any]]:
    """One strategic-merge patch: seconds from the call until the response body is read (the
    body is parsed after, not timed), and the Deployment as the API server returned it."""
    started = time.perf_counter()
    # Without preloading, the client returns the urllib3 response instead of a V1Deployment.
    response = cast(
        urllib3.HTTPResponse,
        apps.patch_namespaced_deployment(
            name, namespace, body, dry_run=dry_run, _content_type=STRATEGIC_MERGE, _preload_content=False
        ),
    )
    data = response.data
    elapsed = time.perf_counter() - started
    response.release_conn()
    returned: dict[str, Any] = json.loads(data)
    return elapsed, returned


def verify(results: list[dict[str, Any]], bodies: dict[str, dict[str, Any]], rev: str) -> None:
    """Each response shows the update, injected exactly where the webhook was called."""
    wrong = [
        f"{r['deployment']} ({r['variant']})"
        for r in results
        if carries_lameduck(bodies[r["deployment"]]) != (r["variant"] == WEBHOOK)
        or bodies[r["deployment"]]["spec"]["template"]["metadata"].get("annotations", {}).get("bench/rev") != rev
    ]
    if wrong:
        raise AssertionError(
            f"{len(wrong)} of {len(results)} updates were not admitted as their variant requires (injected through "
            f"the webhook, untouched when opted out), so the figures would compare nothing: {', '.join(wrong[:10])}"
        )


def environment(kube: Kube) -> dict[str, Any]:
    def out(*command: str) -> str:
        return subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO).stdout.strip()

    return {
        "command": sys.orig_argv,
        "commit": out("git", "rev-parse", "HEAD"),
        "git_commit": out("git", "rev-parse", "HEAD"),
        "git_dirty": bool(out("git", "status", "--porcelain", "--untracked-files=no")),
        "server_version": json.loads(kube.run("version", "-o", "json").stdout).get("serverVersion"),
        "machine": {"uname": out("uname", "-a"), "nproc": int(out("nproc"))},
    }


def run_bench(args: argparse.Namespace, kube: Kube, operator: Operator, namespace: str) -> dict[str, Any]:
    kube.create_namespace(namespace)
    names = [f"app-{i:04d}" for i in range(args.updates)]
    variant = {name: WEBHOOK if i % 2 == 0 else BASELINE for i, name in enumerate(names)}
    manifests = [
        pause_deployment(
            name,
            {"bench": "webhook"},
            annotations=None if variant[name] == WEBHOOK else {"lameduck.dev/skip": "true"},
            replicas=0,
        )
        for name in names
    ]
    for start in range(0, len(manifests), 50):
        kube.apply(*manifests[start : start + 50], namespace=namespace)
    wait_until(lambda: len(kube.items("deployments", namespace)) == len(names), 120, "every Deployment exists")
    kube.apply(
        {
            "apiVersion": "lameduck.dev/v1alpha1",
            "kind": "GracefulPolicy",
            "metadata": {"name": "bench", "namespace": namespace},
            "spec": {"apply": "OnNextRollout", "selector": {"matchLabels": {"bench": "webhook"}}},
        }
    )
    webhook_count = sum(1 for v in variant.values() if v == WEBHOOK)
    # The leader's first pass over the policy's Deployments is over before the burst.
    wait_until(
        lambda: (kube.get("gracefulpolicy", "bench", namespace).get("status") or {}).get("matched") == webhook_count,
        120,
        f"the policy reports {webhook_count} matched Deployments",
        0.5,
    )
    every_replica_injects(kube, namespace, pause_deployment("probe", {"bench": "webhook"}, replicas=0), timeout=60)

    apps = apps_api(kube.kubeconfig)
    with ThreadPoolExecutor(WORKERS) as pool:
        # Warm-up, through no webhook: the client's connections and its per-method validators,
        # with server-side dry runs of the opted-out Deployments' update.
        warm = {"spec": {"template": {"metadata": {"annotations": {"bench/rev": "warm-up"}}}}}
        baseline = [n for n in names if variant[n] == BASELINE]
        list(pool.map(lambda name: timed_patch(apps, namespace, name, warm, dry_run="All"), baseline))

        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
        order = list(names)
        random.Random(seed).shuffle(order)
        rev = str(time.time_ns())
        body = {"spec": {"template": {"metadata": {"annotations": {"bench/rev": rev}}}}}
        operator_before, apiserver_before = operator_buckets(operator), apiserver_buckets(kube)
        timed = list(pool.map(lambda name: timed_patch(apps, namespace, name, body), order))
    operator_after, apiserver_after = operator_buckets(operator), apiserver_buckets(kube)

    results: list[dict[str, Any]] = [
        {"deployment": name, "variant": variant[name], "ms": round(seconds * 1000, 3)}
        for name, (seconds, _) in zip(order, timed, strict=True)
    ]
    verify(results, {name: returned for name, (_, returned) in zip(order, timed, strict=True)}, rev)

    per_pod = pods_delta(operator_before, operator_after)
    operator_delta = summed(per_pod)
    apiserver: dict[str, Any] | None = None
    if apiserver_before is not None and apiserver_after is not None:
        apiserver = histogram_summary(bucket_delta(apiserver_before, apiserver_after))
        apiserver["metric"] = f"{APISERVER_HISTOGRAM}{{{WEBHOOK_NAME}}}"

    by_variant = {v: client_summary([r["ms"] for r in results if r["variant"] == v]) for v in (WEBHOOK, BASELINE)}
    return {
        "namespace": namespace,
        "updates": len(names),
        "workers": WORKERS,
        "seed": seed,
        "patch": STRATEGIC_MERGE,
        "client": {
            "percentiles": 'statistics.quantiles(n=100, method="inclusive") of client-observed milliseconds',
            **by_variant,
            "median_difference_ms": round(by_variant[WEBHOOK]["p50_ms"] - by_variant[BASELINE]["p50_ms"], 2),
        },
        "webhook_time": {
            "percentiles": "bucket-interpolated: linear within the bucket (Prometheus histogram_quantile)",
            "target_p99_ms": TARGET_P99_SECONDS * 1000,
            "operator": {
                **histogram_summary(operator_delta),
                "metric": OPERATOR_HISTOGRAM,
                "calls_per_pod": {pod: d[max(d)] if d else 0.0 for pod, d in per_pod.items()},
            },
            "apiserver": apiserver,
        },
        "requests": results,
    }


def print_report(report: dict[str, Any]) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    seen = report["client"]
    print(f"\nclient-observed request latency, ms ({seen['percentiles']}; seed {report['seed']})")
    print(f"{'variant':<11} {'count':>5} {'p50':>8} {'p99':>8} {'min':>8} {'max':>8}")
    for variant in (WEBHOOK, BASELINE):
        row = seen[variant]
        print(
            f"{variant:<11} {row['count']:>5} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
            f"{row['min_ms']:>8.2f} {row['max_ms']:>8.2f}"
        )
    print(f"median difference (webhook - no webhook): {seen['median_difference_ms']:+.2f} ms")

    own = report["webhook_time"]
    print(f"\nwebhook time, ms ({own['percentiles']}); target p99 <= {own['target_p99_ms']:g} ms")
    print(f"{'source':<42} {'calls':>5} {'p50':>8} {'p99':>8}  target")
    for title, key in (("operator, summed over its pods", "operator"), ("API server", "apiserver")):
        row = own[key]
        if row is None:
            print(f"{title:<42} {'':>5} {'':>8} {'':>8}  not exposed ({APISERVER_HISTOGRAM} absent from /metrics)")
            continue
        verdict = {True: "met", False: "NOT met", None: "no calls recorded"}[row["target_met"]]
        if row["p99_beyond_the_buckets"]:
            verdict += " (p99 above the largest finite bucket bound)"
        elif row["target_met"] is not None and not row["target_is_a_bucket_bound"]:
            verdict += " (estimate: no bucket bound at the target)"
        print(f"{title:<42} {row['calls']:>5.0f} {ms(row['p50_ms']):>8} {ms(row['p99_ms']):>8}  {verdict}")


def delete_namespace(kube: Kube, namespace: str) -> None:
    kube.run("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)
    wait_until(
        lambda: "NotFound" in kube.run("get", "namespace", namespace, check=False).stderr,
        300,
        f"namespace {namespace} is gone",
        2,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--updates", type=int, default=200, help="Deployments, one template update each")
    parser.add_argument("--seed", type=int, help="of the shuffled order (default: a random one, recorded)")
    parser.add_argument("--installed", action="store_true", help="use the lameduck installed; do not install it")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "webhook_latency.json"))
    args = parser.parse_args()
    if args.updates < 4:
        parser.error("--updates must be at least 4 (2 per variant for percentiles)")

    kube = Kube(args.kubeconfig)
    namespace = f"bench-webhook-{int(time.time())}"
    operator = Operator(kube)
    try:
        if not args.installed:
            kube.run("apply", "--server-side", "-f", str(REPO / "crds"))
            operator = install_lameduck(kube)
        report = {**environment(kube), **run_bench(args, kube, operator, namespace)}
    finally:
        # The policy's finalizer needs the operator: the namespace goes first, lameduck after.
        try:
            delete_namespace(kube, namespace)
        except AssertionError as err:
            print(f"cleanup: {err}; it is left terminating", file=sys.stderr)
        if not args.installed:
            operator.uninstall()
    print_report(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
