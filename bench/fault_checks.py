"""What bench/faults.py's holds-outage and webhook-outage phases compute from what they read:
percentiles of write latencies, a counter's increase across operator replicas that may have
restarted, each deleted pod's end against its grace period, the hold outcome an API server
outage allows, the reports posted plus those counted missing against the pods deleted, and
containerd's task exits as `ctr events` prints them. Pure: the phases pass in what they read.

Written here, not imported from the operator, whose own readings of the same things are what
the phases check.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# The API server's times are whole seconds: a grace period's end as it records it.
CLOCK_SLACK_SECONDS = 1.0
# A container's exit status when SIGKILL ended it.
SIGKILL_EXIT = 137
# How much later than deletionTimestamp - grace a hold may have started: that time is cut to the
# second, and kubelet calls the preStop hook once it has seen the deletion.
HOLD_START_SPREAD_SECONDS = 2.0
SIDECAR = "lameduck"


def epoch(text: object) -> float | None:
    """An RFC 3339 time (the API's, or containerd's with nanoseconds) as epoch seconds."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# -- write latencies --------------------------------------------------------------------------


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p90, p99 and max in milliseconds: statistics.quantiles(n=100,
    method="inclusive"), linear between the closest ranks, as bench/webhook_latency.py reads its
    client-side figures. One write is every percentile; none, all None."""
    ms = sorted(s * 1000 for s in seconds)
    if not ms:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    cuts = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else [ms[0]] * 99
    return {
        "count": len(ms),
        "p50": round(cuts[49], 1),
        "p90": round(cuts[89], 1),
        "p99": round(cuts[98], 1),
        "max": round(ms[-1], 1),
    }


# -- the operator's counters --------------------------------------------------------------------


def metric_sum(text: str, name: str, namespace: str | None) -> float | None:
    """The sum of a metric's samples in one namespace (None: in all), from a Prometheus text
    exposition; None when the exposition does not declare the metric at all (a counter with no
    sample yet is declared, and sums to 0). A sample without a namespace label is counted: it
    cannot be told apart."""
    declared = False
    total = 0.0
    for family in text_string_to_metric_families(text):
        # The parser names a counter's family without its _total suffix.
        if name not in (family.name, family.name + "_total"):
            continue
        declared = True
        for sample in family.samples:
            if sample.name == name and namespace in (None, sample.labels.get("namespace", namespace)):
                total += sample.value
    return total if declared else None


@dataclass(frozen=True)
class CounterReading:
    """One operator replica's counter, and its containers' restarts when it was read."""

    value: float | None  # None: the replica did not declare the metric, or could not be read
    restarts: int
    error: str = ""


def counter_increase(
    before: Mapping[str, CounterReading], after: Mapping[str, CounterReading], *, every_replica: bool = False
) -> float | None:
    """How much a counter grew across the operator's replicas (by pod name): the sum of their
    growths for a count only the leader keeps, the highest for one `every_replica` keeps whole
    (the missing reports). A replica that restarted in between (or is new, or read lower than
    before) counted from zero since; None when no replica declares the metric afterwards."""
    if all(reading.value is None for reading in after.values()):
        return None
    growths: list[float] = []
    for pod, now in after.items():
        if now.value is None:
            continue
        was = before.get(pod)
        base = 0.0
        if was is not None and was.value is not None and was.restarts == now.restarts and now.value >= was.value:
            base = was.value
        growths.append(now.value - base)
    return max(growths) if every_replica else sum(growths)


def report_accounting(deleted: set[str], reported: set[str], missing: float | None) -> tuple[dict[str, Any], list[str]]:
    """Every deleted pod's hold report is either posted (an Event on it) or counted missing by
    the operator: posted + missing == deleted. Pods by uid."""
    posted = len(deleted & reported)
    record: dict[str, Any] = {
        "deleted": len(deleted),
        "posted": posted,
        "missing_counted": missing,
        "balanced": None if missing is None else posted + missing == len(deleted),
    }
    if missing is None:
        return record, ["metric absent"]
    if posted + missing != len(deleted):
        return record, [f"{posted} reports posted + {missing:g} counted missing != {len(deleted)} pods deleted"]
    return record, []


# -- a deleted pod's end --------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskExit:
    """A container's main process exiting, as containerd published it."""

    at: float  # epoch seconds
    exit_status: int


def task_exits(lines: Iterable[str]) -> dict[str, TaskExit]:
    """The /tasks/exit events of `ctr events` output, by container ID (its main process only, not
    an exec in it). Each line is `<timestamp> <namespace> <topic> <event as JSON>`; the JSON drops
    a zero exit status, and gives exited_at as RFC 3339 (containerd 1.x) or seconds and nanos."""
    found: dict[str, TaskExit] = {}
    for line in lines:
        head, brace, rest = line.partition("{")
        words = head.split()
        if not brace or not words or words[-1] != "/tasks/exit":
            continue
        try:
            event = json.loads(brace + rest)
        except ValueError:
            continue
        container = event.get("container_id")
        if not isinstance(container, str) or event.get("id", container) != container:
            continue
        exited = event.get("exited_at")
        if isinstance(exited, dict):
            at: float | None = float(exited.get("seconds", 0)) + float(exited.get("nanos", 0)) / 1e9
        else:
            at = epoch(exited)
        status = event.get("exit_status", 0)
        if at is not None and isinstance(status, int):
            found[container] = TaskExit(at, status)
    return found


@dataclass(frozen=True)
class ContainerEnd:
    at: float | None  # epoch seconds; None: not observed
    exit_code: int | None
    source: str  # "api": the pod's status; "containerd": its task exit; "": not observed


def container_ids(pod: Mapping[str, Any]) -> dict[str, str]:
    """Every container of the pod (app and sidecar, init or not) by name: its runtime ID, without
    the runtime's scheme."""
    status = pod.get("status") or {}
    found = {}
    for each in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        if isinstance(each.get("containerID"), str) and "://" in each["containerID"]:
            found[each["name"]] = each["containerID"].split("://", 1)[1]
    return found


def container_ends(
    pod: Mapping[str, Any] | None, ids: Mapping[str, str], exits: Mapping[str, TaskExit]
) -> dict[str, ContainerEnd]:
    """How each container (by name, those of `ids`) ended: from the last pod body seen when it
    shows the container terminated, else from containerd's exit of its ID."""
    terminated = {}
    status = (pod or {}).get("status") or {}
    for each in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        state = (each.get("state") or {}).get("terminated")
        if state and each.get("containerID", "").endswith(ids.get(each["name"], "\0")):
            terminated[each["name"]] = state
    ends = {}
    for name, container in ids.items():
        state = terminated.get(name)
        if state is not None and epoch(state.get("finishedAt")) is not None:
            ends[name] = ContainerEnd(epoch(state.get("finishedAt")), state.get("exitCode"), "api")
        elif container in exits:
            ends[name] = ContainerEnd(exits[container].at, exits[container].exit_status, "containerd")
        else:
            ends[name] = ContainerEnd(None, None, "")
    return ends


@dataclass(frozen=True)
class GraceVerdict:
    seconds: float | None  # from the deletion to the last container's end; None: one not observed
    within_grace: bool | None  # None: not every end was observed
    sigkilled: tuple[str, ...]  # containers that exited 137
    problems: tuple[str, ...]


def grace_verdict(pod: str, requested_at: float, deadline: float, ends: Mapping[str, ContainerEnd]) -> GraceVerdict:
    """Whether the pod ended within its grace period (deadline: its deletionTimestamp, which is
    the deletion plus the grace period, to the API server's second), and what is wrong: a
    container whose end nobody saw, one SIGKILLed, the pod ending after its grace period."""
    grace = deadline - requested_at
    problems = [f"{pod}: the end of {name} was not observed" for name, end in sorted(ends.items()) if end.at is None]
    killed = tuple(name for name, end in sorted(ends.items()) if end.exit_code == SIGKILL_EXIT)
    for name in killed:
        at = ends[name].at
        after = "" if at is None else f" {at - requested_at:.1f} s after its deletion"
        problems.append(f"{pod}: {name} was SIGKILLed (exit 137){after} (grace period {grace:g} s)")
    seen = [end.at for end in ends.values() if end.at is not None]
    if not ends or len(seen) < len(ends):
        return GraceVerdict(None, None, killed, tuple(problems))
    last = max(seen)
    within = last <= deadline + CLOCK_SLACK_SECONDS
    if not within:
        problems.append(
            f"{pod}: ended {last - requested_at:.1f} s after its deletion, past its grace period of {grace:g} s"
        )
    return GraceVerdict(round(last - requested_at, 3), within, killed, tuple(problems))


# -- the hold's outcome --------------------------------------------------------------------------

FALLBACK = "fallback"
RELEASED = "released"  # stage 1 ended on the slices: quiet, not_in_any_slice or timeout
EITHER = "either"


def expected_outcome(stage1_end: float | None, stop_began: float, surely_down: float) -> str:
    """What a hold's outcome may be, given when its stage 1 ended (estimated as the deletion plus
    the report's stage1Seconds: at most HOLD_START_SPREAD_SECONDS early) and the outage: the stop
    began at stop_began, and the API server was down from surely_down. Still in stage 1 once it
    was down, the sidecar could not see the slices change: fallback. Done with stage 1 before
    the stop began, it had no API call left to fail: not fallback. Between: either."""
    if stage1_end is None:
        return EITHER
    if stage1_end >= surely_down:
        return FALLBACK
    if stage1_end + HOLD_START_SPREAD_SECONDS < stop_began:
        return RELEASED
    return EITHER


def outcome_problem(pod: str, outcome: str | None, expected: str) -> str | None:
    if outcome is None or expected == EITHER:
        return None
    if expected == FALLBACK and outcome != FALLBACK:
        return f"{pod}: hold {outcome}, though its stage 1 lasted into the outage (expected fallback)"
    if expected == RELEASED and outcome == FALLBACK:
        return f"{pod}: hold fell back, though its stage 1 had ended before the outage"
    return None


def report_of(event: Mapping[str, Any]) -> dict[str, Any]:
    """A hold report Event's reason and the fields the phase records (lameduck_sidecar.report)."""
    try:
        message = json.loads(event.get("message") or "")
    except ValueError:
        message = None
    if not isinstance(message, dict):
        message = {}
    fields = ("outcome", "holdSeconds", "stage1Seconds", "stage2Seconds", "appExitSeconds", "gracePeriodSeconds")
    return {
        "reason": event.get("reason"),
        "posted_at": (event.get("metadata") or {}).get("creationTimestamp"),
        **{key: message.get(key) for key in fields},
    }


# -- pods and Deployments ---------------------------------------------------------------------------


def ready_with_sidecar(pod: Mapping[str, Any]) -> bool:
    """Not being deleted, Ready, and its lameduck sidecar (init or not) started."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    sidecars = [
        s
        for s in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        if s.get("name") == SIDECAR
    ]
    return ready and any(s.get("started") or "running" in (s.get("state") or {}) for s in sidecars)


def lameduck_changes(stored: Mapping[str, Any]) -> list[str]:
    """What lameduck added to a Deployment the API server admitted (none when it was admitted
    unchanged): its sidecar, a preStop hook (the phase's Deployments have none), its annotations."""
    template = stored["spec"]["template"]
    spec = template["spec"]
    changes = []
    names = [c["name"] for c in [*(spec.get("initContainers") or []), *spec["containers"]]]
    if SIDECAR in names:
        changes.append("sidecar")
    if any("preStop" in (c.get("lifecycle") or {}) for c in spec["containers"]):
        changes.append("preStop")
    template_annotations = (template.get("metadata") or {}).get("annotations") or {}
    annotations = {**(stored["metadata"].get("annotations") or {}), **template_annotations}
    changes.extend(f"annotation {key}" for key in sorted(annotations) if key.startswith("lameduck.dev/"))
    return changes
