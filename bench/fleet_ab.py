"""Two operator builds, interleaved, on one fleet: the burst of applies at fleet scale.

`bench.fleet` runs each phase once, and runs on different days differ: a plain client's writes
per second varied 2.6 times between two of them on this machine. This benchmark compares two
operator builds on the same cluster and fleet in alternating rounds (A B B A ...). Each round:
the policy in Audit with a new maxHold (nobody running to see it), the build installed with
Helm, its status up to date (it has listed and judged every Deployment), then Enforce with
maxConcurrentRollouts 1000 and another maxHold: the applies per second until it has used every
slot, with its CPU per apply, peak RSS, longest loop stall and time in the garbage collector.
At once, while the operator takes in the watch events of those rollouts, 500 template updates
through the webhook from 16 threads (bench.fleet's webhook phase): the API server's admission
latency (p50, p99 and the share answered within 100 ms, from its histogram) and the client's;
and the same figures for a webhook that does nothing, called for the same writes
(bench.null_webhook): the floor any webhook meets on this cluster under that load.
Then the build is uninstalled and the rollouts it started are waited for.

With --plain, a third variant takes its turn in the same order (A B P P B A ...): no lameduck
installed, a plain client patches the template of as many Deployments as the policy matches,
from as many threads as the operator has reconcile workers (bench.fleet's ceiling phase): the
rate this cluster takes such writes at that moment, which the operator's applies/s is read
against (issue 23's target: 90 %). Without --before, only this checkout and the plain client.

    python -m bench.fleet_ab --before <commit> --deployments 5000 --rounds 2
    python -m bench.fleet_ab --plain --deployments 1000 --rounds 3 --webhook-updates 0
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import null_webhook
from bench.fleet import (
    POLICY,
    RolloutWatch,
    applied_by_the_policy,
    apply_burst,
    audited,
    create_fleet,
    expected,
    local_cluster_with_fake_nodes,
    plain_client_ceiling,
    policy,
    remove_fleet,
    running_pods,
    status_of,
    webhook_burst,
)
from bench.provenance import write_result
from harness import REPO
from harness.install import install_lameduck
from harness.kube import Kube, wait_until

RESULTS = REPO / "bench" / "results" / "fleet_ab.json"
BEFORE_TREE = Path("/tmp/lameduck-fleet-ab-before")
TAGS = {"before": "before", "after": "dev"}
PLAIN = "plain"
WEBHOOK_FIGURES = (
    "webhook_apiserver_p50_ms",
    "webhook_apiserver_p99_ms",
    "webhook_apiserver_within_100ms",
    "webhook_client_p50_ms",
    "webhook_client_p99_ms",
    "webhook_handler_p99_ms",
    "null_webhook_apiserver_p50_ms",
    "null_webhook_apiserver_p99_ms",
    "null_webhook_apiserver_within_100ms",
)


def build_before(commit: str) -> str:
    """The operator image of `commit`, from a worktree of it, tagged lameduck/operator:before."""
    subprocess.run(["git", "worktree", "remove", "--force", str(BEFORE_TREE)], cwd=REPO, check=False)
    subprocess.run(["git", "worktree", "add", "--detach", str(BEFORE_TREE), commit], cwd=REPO, check=True)
    script = REPO / "hack" / "build-images.sh"
    spec = f"lameduck/operator:{TAGS['before']}={BEFORE_TREE}"
    # Commits before the one Dockerfile of both images had one per image.
    per_image = (BEFORE_TREE / "operator" / "Dockerfile").exists()
    build = ["--dockerfile", "operator/Dockerfile"]
    if not per_image:
        build = ["--dockerfile", "Dockerfile", "--target", "operator"]
    subprocess.run(["bash", str(script), *build, spec], check=True, timeout=1800)
    return subprocess.run(
        ["git", "rev-parse", commit], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()


def one_round(
    kube: Kube,
    watcher: RolloutWatch,
    variant: str,
    n: int,
    *,
    workers: int,
    hold: int,
    namespaces: int,
    updates: int,
    null_ca: bytes | None,
) -> dict[str, Any]:
    want = expected(n)
    kube.apply(policy("Audit", "Immediate", limit=1000, max_hold=f"{hold}s"))
    started = time.monotonic()
    operator = install_lameduck(
        kube,
        "replicaCount=1",
        "resources.limits.memory=1Gi",
        f"reconcileWorkers={workers}",
        f"image.tag={TAGS[variant]}",
    )
    try:
        if null_ca is not None:
            null_webhook.follow_lameduck(kube, null_ca)
        wait_until(lambda: audited(status_of(kube), want), 900, f"{variant}: the Audit status is up to date", 0.5)
        audit_seconds = time.monotonic() - started
        burst = apply_burst(kube, operator, policy("Enforce", "Immediate", limit=1000, max_hold=f"{hold + 1}s"))
        floor = null_webhook.WEBHOOK_LABEL if null_ca is not None else None
        webhook = webhook_burst(kube, operator, n, namespaces, updates, floor=floor) if updates else None
    finally:
        operator.uninstall()
    wait_until(lambda: not watcher.rolling, 1800, "the round's rollouts have finished", 5)
    return {
        "variant": variant,
        "install_to_audited_seconds": round(audit_seconds, 1),
        **burst,
        "cpu_ms_per_apply": round(burst["cpu_seconds"] * 1000 / max(1, burst["applied"]), 1),
        **server_time(burst.get("api") or {}),
        **(webhook_figures(webhook) if webhook else {}),
    }


def server_time(api: dict[str, Any]) -> dict[str, float]:
    """The API server's median time on the operator's Deployment patches (its audit log), if seen."""
    served = api.get("patch_deployments_server_ms")
    return {"server_ms_per_write_p50": served["p50_ms"]} if served else {}


def plain_round(kube: Kube, watcher: RolloutWatch, n: int, namespaces: int, *, threads: int) -> dict[str, Any]:
    """The plain client's turn: a template update of each Deployment the policy's burst applies to."""
    targets = applied_by_the_policy(n)
    ceiling = plain_client_ceiling(kube, watcher, n, namespaces, updates=len(targets), threads=threads, targets=targets)
    return {
        "variant": PLAIN,
        "applied": ceiling["updates"],
        **ceiling,
        "client_ms_per_write_p50": ceiling["client"]["p50_ms"],
    }


def round_order(variants: list[str], rounds: int) -> list[str]:
    """Each round runs every variant, in turn forwards and backwards (A B B A, A B P P B A):
    drift in the cluster's speed over the run falls on each variant alike."""
    return [v for i in range(rounds) for v in (variants if i % 2 == 0 else variants[::-1])]


def webhook_figures(webhook: dict[str, Any]) -> dict[str, Any]:
    """The webhook burst's figures by name, with its whole record."""
    figures = {
        "webhook": webhook,
        **_apiserver_figures(webhook.get("apiserver"), "webhook_apiserver"),
        "webhook_client_p50_ms": webhook["client"]["p50_ms"],
        "webhook_client_p99_ms": webhook["client"]["p99_ms"],
        "webhook_handler_p99_ms": webhook["operator"]["p99_ms"],
    }
    if webhook.get("apiserver_floor"):
        figures.update(_apiserver_figures(webhook["apiserver_floor"], "null_webhook_apiserver"))
    return figures


def _apiserver_figures(summary: dict[str, Any] | None, prefix: str) -> dict[str, Any]:
    api = summary or {}
    calls = api.get("calls") or 0
    within = (api.get("buckets") or {}).get("0.1")
    return {
        f"{prefix}_p50_ms": api.get("p50_ms"),
        f"{prefix}_p99_ms": api.get("p99_ms"),
        f"{prefix}_within_100ms": round(within / calls, 3) if calls and within is not None else None,
    }


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    by_variant: dict[str, dict[str, Any]] = {}
    for variant in (*TAGS, PLAIN):
        mine = [r for r in rounds if r["variant"] == variant]
        if not mine:
            continue
        by_variant[variant] = {
            key: {"each": [r[key] for r in mine], "median": statistics.median(r[key] for r in mine)}
            for key in (
                "applies_per_second",
                "cpu_ms_per_apply",
                "peak_rss_mib",
                "loop_lag_max_seconds",
                "gc_seconds",
                "install_to_audited_seconds",
                "server_ms_per_write_p50",
                "client_ms_per_write_p50",
                *WEBHOOK_FIGURES,
            )
            if all(key in r for r in mine)
        }
    if PLAIN in by_variant and "after" in by_variant:
        share = [
            round(ours / plain, 3)
            for ours, plain in zip(
                by_variant["after"]["applies_per_second"]["each"],
                by_variant[PLAIN]["applies_per_second"]["each"],
                strict=True,
            )
        ]
        by_variant["after"]["share_of_plain_client"] = {"each": share, "median": statistics.median(share)}
    return by_variant


def print_table(result: dict[str, Any]) -> None:
    summary = result["summary"]
    names = {"before": f"before ({(result['before'] or '')[:7]})", "after": f"after ({result['after'][:7]})"}
    variants = [v for v in (*TAGS, PLAIN) if v in summary]
    print(f"\n| {result['deployments']:,} Deployments | " + " | ".join(names.get(v, v) for v in variants) + " |")
    print("| --- |" + " --- |" * len(variants))
    keys = list(dict.fromkeys(key for v in variants for key in summary[v]))
    for key in keys:
        cells = [
            f"{summary[v][key]['each']} (median {summary[v][key]['median']})" if key in summary[v] else ""
            for v in variants
        ]
        print(f"| {key} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="the commit whose operator is compared with the checkout's")
    parser.add_argument(
        "--plain", action="store_true", help="a plain client's template updates as a variant of each round"
    )
    parser.add_argument("--deployments", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per build, in the order A B B A ...")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--reconcile-workers", type=int, default=8)
    parser.add_argument("--webhook-updates", type=int, default=500, help="0: no webhook burst")
    parser.add_argument(
        "--no-null-webhook", action="store_true", help="no do-nothing webhook beside lameduck's in the webhook burst"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not args.before and not args.plain:
        parser.error("nothing to compare: give --before, --plain or both")
    kube = local_cluster_with_fake_nodes(args.nodes)
    before = build_before(args.before) if args.before else None
    after = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    n = args.deployments
    create_fleet(kube, n, args.namespaces)
    wait_until(lambda: running_pods(kube) >= n, 1800, f"{n} pods run on the fake nodes", 5)
    null_ca = null_webhook.deploy(kube) if args.webhook_updates and not args.no_null_webhook else None
    watcher = RolloutWatch(kube.kubeconfig)
    variants = [*(["before"] if before else []), "after", *([PLAIN] if args.plain else [])]
    rounds: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "command": "python -m bench.fleet_ab " + " ".join(sys.argv[1:] if argv is None else argv),
        "before": before,
        "after": after,
        "deployments": n,
        "reconcile_workers": args.reconcile_workers,
        "rounds": rounds,
    }
    try:
        hold = 40
        for variant in round_order(variants, args.rounds):
            print(f"== round {len(rounds) + 1}: {variant}", flush=True)
            if variant == PLAIN:
                rounds.append(plain_round(kube, watcher, n, args.namespaces, threads=args.reconcile_workers))
            else:
                rounds.append(
                    one_round(
                        kube,
                        watcher,
                        variant,
                        n,
                        workers=args.reconcile_workers,
                        hold=hold,
                        namespaces=args.namespaces,
                        updates=args.webhook_updates,
                        null_ca=null_ca,
                    )
                )
                hold += 2
            write_result(args.out, result)
        result["summary"] = summary(rounds)
        write_result(args.out, result)
        print_table(result)
    finally:
        watcher.stop()
        null_webhook.remove(kube)
        remove_fleet(kube, args.namespaces)
        kube.run("delete", "clustergracefulpolicy", POLICY, "--ignore-not-found", "--wait=false", check=False)
        kube.run(
            "patch",
            "clustergracefulpolicy",
            POLICY,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
        subprocess.run(["git", "worktree", "remove", "--force", str(BEFORE_TREE)], cwd=REPO, check=False)


if __name__ == "__main__":
    main()
