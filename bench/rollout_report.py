"""The rollout benchmark's record of where it ran, and its summaries: a table per condition
and way of stopping (median and min-max, never a mean alone) and a chart of errors over time."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from bench.rollout_objects import CONDITIONS, STOPS, VARIANTS, policy
from bench.rollout_phases import lost_after_release, medians
from harness import REPO
from harness.kube import Kube

KUBE_PROXY_METRICS = "http://127.0.0.1:10249"


def _read(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()


def environment(kube: Kube, args: Any) -> dict[str, Any]:
    """The commit, cluster, data plane, machine and settings a result file came from."""
    version = json.loads(kube.run("version", "-o", "json").stdout or "{}").get("serverVersion", {})
    configz = _read(f"{KUBE_PROXY_METRICS}/configz")
    proxy: dict[str, Any] = {"mode": (_read(f"{KUBE_PROXY_METRICS}/proxyMode") or "").strip() or None}
    if configz:
        settings = json.loads(configz).get("kubeproxy.config.k8s.io", {})
        proxy["iptables"] = settings.get("IPTables")
        proxy["note"] = "minSyncPeriod as read at the start; each condition sets its own (conditions below)"
    meminfo = Path("/proc/meminfo").read_text().splitlines()[0] if Path("/proc/meminfo").exists() else ""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "command": getattr(args, "command", None),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kubernetes": version.get("gitVersion"),
        "kube_proxy": proxy,
        "conditions": {name: vars(CONDITIONS[name]) for name in args.conditions},
        "stops": {name: vars(STOPS[name]) for name in args.stops},
        "variants": {name: vars(VARIANTS[name]) for name in args.variants},
        "policies": [policy(VARIANTS[n])["spec"] for n in args.variants if VARIANTS[n].lameduck],
        "rate_per_second": args.rate,
        "runs_per_variant": args.runs,
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": model,
            "memory": meminfo.split(":", 1)[-1].strip(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "load_average_at_start": list(os.getloadavg()),
        },
    }


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


def spread(values: Iterable[float | None]) -> dict[str, float] | None:
    """Median, min and max, or None for no values."""
    found = [v for v in values if v is not None]
    if not found:
        return None
    return {"median": round(statistics.median(found), 2), "min": round(min(found), 2), "max": round(max(found), 2)}


def errors_from_disruption(run: dict[str, Any]) -> int:
    """Errors of requests sent from the second of the disruption on: before it no pod was
    stopping, so those cannot be the disruption's."""
    start = int(run["disrupted_at"])
    return sum(n for second, n in run["errors_by_second"].items() if int(second) >= start)


def _at(points: list[tuple[float, set[str]]], t: float) -> set[str]:
    """The addresses of the last point at or before t (none before the first)."""
    found: set[str] = set()
    for when, addresses in points:
        if when > t:
            break
        found = addresses
    return found


def live_endpoints_during(run: dict[str, Any]) -> tuple[int | None, float]:
    """Endpoints the data plane had programmed that were also ready by the EndpointSlices (a
    rule to a pod that is gone or not ready counts for nothing), from the disruption until
    the end of the run: the fewest, and for how many seconds there were fewer than the target."""
    endpoints = run.get("endpoints") or {}
    if "programmed" not in endpoints or "slices_ready" not in endpoints:
        return None, 0.0

    def series(name: str) -> list[tuple[float, set[str]]]:
        data = endpoints[name]
        return [
            (t, set(a)) for (t, count), a in zip(data["points"], data["addresses"], strict=True) if count is not None
        ]

    programmed, ready = series("programmed"), series("slices_ready")
    if not programmed or not ready:
        return None, 0.0
    start, end = run["disrupted_at"], max(programmed[-1][0], ready[-1][0])
    times = sorted({start, *(t for t, _ in programmed + ready if start < t <= end)})
    values = [len(_at(programmed, t) & _at(ready, t)) for t in times]
    below = sum(
        t_next - t
        for (t, v), t_next in zip(zip(times, values, strict=True), [*times[1:], end], strict=True)
        if v < run["endpoints_target"]
    )
    return min(values), round(below, 2)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    first = runs[0]
    kinds: Counter[str] = Counter()
    for run in runs:
        kinds.update(run["errors"])
    exits: Counter[str] = Counter()
    for run in runs:
        for pod in run["old_pods"].values():
            if pod.get("exit"):
                exits[f"{pod['exit']['reason']} ({pod['exit']['exit_code']})"] += 1
    programmed = [live_endpoints_during(run) for run in runs]
    phases: dict[str, list[float]] = {}
    for run in runs:
        for pod in run["new_pods"]:
            for key, value in pod.items():
                if key != "created_at" and value is not None:
                    phases.setdefault(key, []).append(value)
    summary = {
        "condition": first["condition"],
        "stop": first["stop"],
        "variant": first["variant"],
        "title": VARIANTS[first["variant"]].title,
        "runs": len(runs),
        "rounds": [run["round"] for run in runs],
        "requests": sum(run["requests"] for run in runs),
        "errors": dict(kinds),
        "errors_per_run": [sum(run["errors"].values()) for run in runs],
        "errors_from_disruption_per_run": [errors_from_disruption(run) for run in runs],
        "errors_from_disruption": sum(errors_from_disruption(run) for run in runs),
        "duration_seconds": spread(run["duration_seconds"] for run in runs),
        "termination_seconds": spread(t for run in runs for t in run["termination_seconds"]),
        "new_pod_phases_median": {k: round(statistics.median(v), 2) for k, v in sorted(phases.items())},
        "app_exits": dict(exits),
        "endpoints_target": first["endpoints_target"],
        "programmed_min_per_run": [m for m, _ in programmed],
        "seconds_below_target_per_run": [s for m, s in programmed if m is not None],
    }
    # What the sidecars counted lost after release, beside what the load generator saw
    losses = [lost_after_release(run.get("phases") or {}) for run in runs]
    counted = [each["total"] for each in losses if each["total"] is not None]
    summary.update(
        lost_after_release=sum(counted) if counted else None,
        lost_after_release_per_run=[each["total"] for each in losses],
        lost_after_release_pods_counted=sum(each["pods_counted"] for each in losses),
        stopped_pods=sum(each["pods"] for each in losses),
    )
    lb_runs = [run["external_lb"] for run in runs if "external_lb" in run]
    if lb_runs:
        summary["external_lb"] = external_lb_summary(lb_runs)
    return summary


def external_lb_summary(lb_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The simulated cloud LB's counters per run (bench/lb_targets.py LbCounters.as_dict)."""
    kinds: Counter[str] = Counter()
    for lb in lb_runs:
        for by_kind in lb["connect_failures"].values():
            kinds.update(by_kind)
    return {
        "connections_while_draining_per_run": [sum(lb["connections_while_draining"].values()) for lb in lb_runs],
        "connect_failures_per_run": [lb["connect_failures_total"] for lb in lb_runs],
        "connect_failure_kinds": dict(sorted(kinds.items())),
        "no_target_per_run": [lb["no_target"] for lb in lb_runs],
        "resets_per_run": [lb["resets"] for lb in lb_runs],
    }


def summarize_all(report: dict[str, Any]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in report["runs"]:
        groups.setdefault((run["condition"], run["stop"], run["variant"]), []).append(run)
    order = {name: i for i, name in enumerate([*CONDITIONS, *STOPS, *VARIANTS])}
    keys = sorted(groups, key=lambda k: (order[k[0]], order[k[1]], order[k[2]]))
    return [summarize(groups[key]) for key in keys]


def _spread_text(value: dict[str, float] | None) -> str:
    return "" if value is None else f"{value['median']:.1f} ({value['min']:.1f}-{value['max']:.1f})"


def print_table(rows: list[dict[str, Any]]) -> None:
    """Markdown tables, one per condition and way of stopping, as docs/benchmarks.md carries them."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["condition"], row["stop"]), []).append(row)
    for (condition, stop), members in groups.items():
        print(f"\n{CONDITIONS[condition].title}: {STOPS[stop].title}\n")
        print(
            "| variant | runs | requests | errors from the disruption on (per run) "
            "| lost after release, as the sidecars counted (per run) | kinds "
            "| duration s, median (min-max) | termination s, median (min-max) | new pod ready s (median) "
            "| programmed and ready endpoints, min per run (target) | s below target per run |"
        )
        print("| --- | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | --- | --- |")
        for row in members:
            print(_row(row))
        lb_rows = [row for row in members if "external_lb" in row]
        if lb_rows:
            print("\nThe external LB's counters, per run:\n")
            print(
                "| variant | new connections sent to draining pods | connect failures (kinds) "
                "| closed for want of a target | relayed connections reset |"
            )
            print("| --- | --- | --- | --- | --- |")
            for row in lb_rows:
                print(_lb_row(row))


def _row(row: dict[str, Any]) -> str:
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(row["errors"].items()))
    per_run = ", ".join(str(n) for n in row["errors_from_disruption_per_run"])
    ready = row["new_pod_phases_median"].get("ready")
    programmed = row["programmed_min_per_run"]
    known = [m for m in programmed if m is not None]
    programmed_text = f"{', '.join(str(m) for m in known)} ({row['endpoints_target']})" if known else ""
    below = ", ".join(f"{s:.1f}" for s in row["seconds_below_target_per_run"]) if known else ""
    return (
        f"| {row['title']} | {row['runs']} | {row['requests']} "
        f"| **{row['errors_from_disruption']}** ({per_run}) | {lost_after_release_text(row)} | {kinds} "
        f"| {_spread_text(row['duration_seconds'])} "
        f"| {_spread_text(row['termination_seconds'])} | {'' if ready is None else ready} "
        f"| {programmed_text} | {below} |"
    )


def lost_after_release_text(row: dict[str, Any]) -> str:
    """The sidecars' count of requests lost after release: "-" for a variant without lameduck (no
    hold reports), "n/a" where no report carried a count (a result file from before it was kept,
    or sidecars that could not count); else the sum and each run's ("?": none counted in that
    run), and how many of the stopped pods were counted when not all were (a lower bound then)."""
    if not VARIANTS[row["variant"]].lameduck:
        return "-"
    if row["lost_after_release"] is None:
        return "n/a"
    runs = ", ".join("?" if n is None else str(n) for n in row["lost_after_release_per_run"])
    text = f"**{row['lost_after_release']}** ({runs})"
    counted, pods = row["lost_after_release_pods_counted"], row["stopped_pods"]
    return text if counted == pods else f"{text}, {counted} of {pods} pods counted"


def _lb_row(row: dict[str, Any]) -> str:
    lb = row["external_lb"]

    def runs(key: str) -> str:
        return ", ".join(str(n) for n in lb[key])

    kinds = ", ".join(f"{k} {v}" for k, v in lb["connect_failure_kinds"].items())
    return (
        f"| {row['title']} | {runs('connections_while_draining_per_run')} "
        f"| {runs('connect_failures_per_run')}{f' ({kinds})' if kinds else ''} "
        f"| {runs('no_target_per_run')} | {runs('resets_per_run')} |"
    )


BREAKDOWN_COLUMNS = (
    # (key in rollout_phases.medians, heading)
    ("deletion_to_prestop", "deletion -> preStop call"),
    ("stage1", "stage 1 (slices let go)"),
    ("stage2", "stage 2 (delay + quiet)"),
    ("release_to_exit", "release -> app exit"),
    ("exit_to_gone", "app exit -> pod gone"),
    ("deletion_to_gone", "deletion -> gone"),
    ("lameduck_running", "new pod: sidecar running"),
    ("app_running", "new pod: app running"),
    ("ready", "new pod: ready"),
)


def breakdown_rows(report: dict[str, Any]) -> list[str]:
    """Where a rollout spends its time: per condition, way of stopping and variant, the median
    seconds per pod of each phase of an old pod's termination (bench/rollout_phases.py) and of
    a new pod's start (from its creation); blank where the variant has no such phase."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in report["runs"]:
        groups.setdefault((run["condition"], run["stop"], run["variant"]), []).append(run)
    order = {name: i for i, name in enumerate([*CONDITIONS, *STOPS, *VARIANTS])}
    headings = " | ".join(heading for _, heading in BREAKDOWN_COLUMNS)
    rows = [
        f"| condition | stop | variant | old pods (hold reports) | {headings} |",
        "| --- | --- | --- | ---: |" + " ---: |" * len(BREAKDOWN_COLUMNS),
    ]
    for key in sorted(groups, key=lambda k: (order[k[0]], order[k[1]], order[k[2]])):
        found = medians(groups[key])
        cells = " | ".join("" if found.get(name) is None else f"{found[name]:.2f}" for name, _ in BREAKDOWN_COLUMNS)
        condition, stop, variant = key
        rows.append(
            f"| {condition} | {stop} | {VARIANTS[variant].title} | {found['old_pods']} ({found['hold_reports']}) "
            f"| {cells} |"
        )
    return rows


def print_breakdown(report: dict[str, Any]) -> None:
    print("\nWhere a rollout spends its time (median seconds per pod):\n")
    print("\n".join(breakdown_rows(report)))


def chart(report: dict[str, Any], path: Path) -> None:
    """Errors per second around the disruption, one line per variant, one panel per
    condition and way of stopping."""
    panels = sorted(
        {(run["condition"], run["stop"]) for run in report["runs"]},
        key=lambda k: (list(CONDITIONS).index(k[0]), list(STOPS).index(k[1])),
    )
    if not panels:
        return
    columns = min(3, len(panels))
    rows = (len(panels) + columns - 1) // columns
    fig = Figure(figsize=(6 * columns, 4 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for index, (condition, stop) in enumerate(panels):
        ax = axes[index // columns][index % columns]
        for variant in VARIANTS:
            key = (condition, stop, variant)
            runs = [r for r in report["runs"] if (r["condition"], r["stop"], r["variant"]) == key]
            if not runs:
                continue
            seconds: Counter[int] = Counter()
            for run in runs:
                start = int(run["disrupted_at"])
                for second, count in run["errors_by_second"].items():
                    seconds[int(second) - start] += count
            span = max([int(max(r["duration_seconds"] for r in runs)) + 4, *seconds.keys(), 1])
            xs = list(range(-3, span + 1))
            ax.plot(xs, [seconds.get(x, 0) for x in xs], label=f"{VARIANTS[variant].title} ({len(runs)} runs)")
        ax.set_title(f"{CONDITIONS[condition].title}: {STOPS[stop].title}", fontsize=9)
        ax.set_xlabel("seconds since the disruption")
        ax.set_ylabel("failed requests (all runs)")
        ax.legend(fontsize=7)
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
