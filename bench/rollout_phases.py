"""Where a rollout spends its time, per pod: each old pod's termination split at the points
the sidecar's hold report measures, and the medians over runs. Pure: bench/rollout_watch.py
reads the Events, bench/rollout.py passes them in.

The hold report (lameduck_sidecar.report, read with the operator's parser) carries durations
from the sidecar's monotonic clock: holdSeconds (preStop call to release), stage1Seconds
(preStop call to every EndpointSlice letting go of the pod), stage2Seconds (stage 1's end to
release: propagationDelay and the quiet period, or until maxHold) and appExitSeconds (release
to the app's exit as the sidecar saw it). It carries no absolute time but the Event's own,
in whole seconds, stamped when the sidecar posted it after the app's exit. So the preStop
call's moment is placed from the app's exit backwards: from the exit the pod watch saw (this
machine's clock, as deleted_at is) when it saw one, else from the Event's time. Deletion to
preStop call is what is left over, and carries that anchor's error (up to about a second).

Each reported pod's phases also keep two figures of its report: the maxHold its hold was given
(maxHoldSeconds: the policy's, a learned one or the starting budget) and lostAfterRelease (the
connection attempts refused or reset on the app's ports after release, as the sidecar counted
them; None when it could not count, or from a sidecar older than the count). lost_after_release
sums the latter over a run's pods, beside the losses the load generator saw.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lameduck_operator.logic.shutdown import HoldReport, ReportMalformed, epoch_seconds, parse_hold_report

# A termination, in order; a pod without a hold report has only the total (and the exit, if seen).
HOLD_PHASES = ("deletion_to_prestop", "stage1", "stage2", "release_to_exit")
PHASES = (*HOLD_PHASES, "exit_to_gone", "deletion_to_gone")
# A new pod's start, as bench/rollout_watch.py's startup_phases records it (from its creation).
START_PHASES = ("lameduck_running", "app_running", "ready")
ANCHOR_EXIT_SEEN = "exit_seen"
ANCHOR_EVENT = "event"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def latest_reports(events: Iterable[Mapping[str, Any]], pods: Iterable[str]) -> dict[str, tuple[HoldReport, float]]:
    """Each named pod's latest well-formed hold report and the Event's time (epoch seconds):
    its firstTimestamp, which the sidecar sets when it posts, else when the API server stored it."""
    wanted = set(pods)
    found: dict[str, tuple[HoldReport, float]] = {}
    for event in events:
        try:
            report = parse_hold_report(event)
        except ReportMalformed:
            continue
        at = epoch_seconds(event.get("firstTimestamp")) or report.created_at
        if report.pod not in wanted or at is None:
            continue
        if report.pod not in found or at >= found[report.pod][1]:
            found[report.pod] = (report, at)
    return found


def termination_phases(
    pod: Mapping[str, Any], report: HoldReport | None = None, event_at: float | None = None, started: float = 0.0
) -> dict[str, Any]:
    """One old pod's termination in seconds. `pod` is bench/rollout_watch.py's record (deleted_at,
    gone_at, exited_at: seconds since the run's start); `started` the run's start (epoch seconds),
    which places the Event's time (epoch seconds) on the run's clock."""
    deleted, gone, exited = pod.get("deleted_at"), pod.get("gone_at"), pod.get("exited_at")
    phases: dict[str, Any] = {"deletion_to_gone": _round(_minus(gone, deleted))}
    if report is None:
        phases["deletion_to_exit"] = _round(_minus(exited, deleted))
        phases["exit_to_gone"] = _round(_minus(gone, exited))
        return phases
    phases.update(
        outcome=report.outcome.value,
        hold=_round(report.hold_seconds),
        stage1=_round(report.stage1_seconds),
        stage2=_round(report.stage2_seconds),
        release_to_exit=_round(report.app_exit_seconds),
        max_hold=_round(report.max_hold_seconds),
        lost_after_release=report.lost_after_release,
    )
    anchor: str | None = None
    exit_at: float | None = None
    if report.app_exit_seconds is not None:  # else the sidecar did not see the exit: nothing to anchor on
        if exited is not None:
            anchor, exit_at = ANCHOR_EXIT_SEEN, exited
        elif event_at is not None:
            anchor, exit_at = ANCHOR_EVENT, event_at - started
    prestop = None if exit_at is None else exit_at - (report.app_exit_seconds or 0.0) - report.hold_seconds
    phases.update(
        anchor=anchor,
        deletion_to_prestop=_round(_minus(prestop, deleted)),
        exit_to_gone=_round(_minus(gone, exit_at if exit_at is not None else exited)),
    )
    return phases


def run_phases(
    old_pods: Mapping[str, Mapping[str, Any]], events: Sequence[Mapping[str, Any]], started: float
) -> dict[str, dict[str, Any]]:
    """Every old pod's phases, from the run's hold report Events (none for a variant without
    lameduck: the total and the exit only)."""
    reports = latest_reports(events, old_pods)
    found = {}
    for name, pod in old_pods.items():
        report, event_at = reports.get(name) or (None, None)
        found[name] = termination_phases(pod, report, event_at, started)
    return found


def lost_after_release(phases: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What the sidecars counted lost after release over one run's stopped pods (run_phases's
    `phases`): the sum of the counts (`total`; None when no report carried one: a variant without
    lameduck, sidecars that could not count, a result file from before the count was kept), and
    how many pods had a count, a hold report, and were stopped. A pod without a count adds
    nothing, so the sum is a lower bound unless every stopped pod was counted."""
    reported = [pod for pod in phases.values() if "hold" in pod]
    counts = [pod["lost_after_release"] for pod in reported if isinstance(pod.get("lost_after_release"), int)]
    return {
        "total": sum(counts) if counts else None,
        "pods_counted": len(counts),
        "pods_reported": len(reported),
        "pods": len(phases),
    }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def medians(runs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-pod medians over runs: each termination phase (from `phases`, or for a result file
    without them the deletion to gone from the watch's times), each new pod's start phase, and
    how many old pods had a hold report."""
    seen: dict[str, list[float]] = {}
    pods = reported = 0
    for run in runs:
        for name, pod in run.get("old_pods", {}).items():
            phases = (run.get("phases") or {}).get(name) or termination_phases(pod)
            pods += 1
            reported += "hold" in phases
            for key in (*PHASES, "hold"):
                if isinstance(phases.get(key), int | float):
                    seen.setdefault(key, []).append(phases[key])
        for new in run.get("new_pods", []):
            for key in START_PHASES:
                if isinstance(new.get(key), int | float):
                    seen.setdefault(key, []).append(new[key])
    found: dict[str, Any] = {key: _median(values) for key, values in seen.items()}
    return {**found, "old_pods": pods, "hold_reports": reported}
