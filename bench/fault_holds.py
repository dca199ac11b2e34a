"""bench/faults.py's holds-outage phase: kube-apiserver stopped while the sidecars hold.

The demo app runs on the real node (not kwok) with its sidecar, under a GracefulPolicy of its
own (method Sidecar, propagationDelay 10 s) in a namespace of its own, behind a Service (so
that stage 1 has slices to watch). Every pod is deleted at once; as soon as each shows its
deletionTimestamp (or --outage-after seconds later: the holds then in stage 2, the apps
running), the API server is stopped (`hack/cluster.sh apiserver-outage`, which returns once it
answers again).
Then, pod by pod: whether it ended within its grace period (the containers' finishedAt from
the pod if the phase saw it terminated, else containerd's task exit, read on this node by
`ctr events`, which goes on through the outage), its hold report (an Event, if the sidecar
could post it) and whether its outcome is one the outage allows (fallback when stage 1 was
still on as the API server went down). The reports not posted must be counted by the operator
in lameduck_hold_reports_missing_total (read from every replica, this namespace's samples,
before the deletion and once `missing_window` seconds have passed since the API server came
back and every deleted pod was gone): posted + counted missing == pods deleted. And the
ReplicaSet's new pods come up with their sidecar. The operator's restarts are checked by
bench/faults.py as for its API server outage phase.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from bench.fault_checks import (
    CounterReading,
    TaskExit,
    container_ends,
    container_ids,
    counter_increase,
    epoch,
    expected_outcome,
    grace_verdict,
    metric_sum,
    outcome_problem,
    ready_with_sidecar,
    report_accounting,
    report_of,
    task_exits,
)
from harness import REPO, manifests
from harness.images import DEMO_IMAGE
from harness.install import Operator, carries_lameduck, every_replica_injects
from harness.kube import Kube, wait_until
from lameduck_operator.names import REPORT_SELECTOR

NAMESPACE = "faults-holds"
APP = "holds"
LABEL = {"faults-holds": "yes"}
POLICY = "holds"
MISSING_METRIC = "lameduck_hold_reports_missing_total"
KILLED_METRIC = "lameduck_pods_killed_total"
POLL_SECONDS = 5.0  # of the reports and the counter while the operator's window runs
# Long enough that an outage begun a few seconds after the deletions (--outage-after) finds the
# holds in stage 2 and the apps running: their reports then wait for the API server.
PROPAGATION_DELAY = "10s"


def deployment(replicas: int) -> dict[str, Any]:
    app = manifests.container(
        "app",
        DEMO_IMAGE,
        imagePullPolicy="Never",
        ports=[{"name": "http", "containerPort": 8080}],
        readinessProbe={"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
    )
    return manifests.deployment(APP, [app], labels=LABEL, replicas=replicas)


def policy() -> dict[str, Any]:
    return manifests.guarded(
        NAMESPACE, name=POLICY, labels=LABEL, hold={"method": "Sidecar", "propagationDelay": PROPAGATION_DELAY}
    )


@dataclass
class HoldsOutage:
    name: str
    fault: str = "holds-outage"
    replicas: int = 0
    outage_seconds: int = 0
    # Seconds from every pod showing its deletion to the stop: 0 catches the sidecars reading
    # their Pod (a fallback that posts no report), a few seconds lets them read it and start
    # stage 1 first (a fallback whose report must wait for the API server).
    outage_after_seconds: float = 0.0
    missing_window_seconds: float = 0.0
    commands: list[str] = field(default_factory=list)
    # epoch seconds: the deletion, every pod deleting, the stop begun, the API server surely
    # down, back, every deleted pod gone, the new pods ready with their sidecars, the window's end
    timeline: dict[str, float | None] = field(default_factory=dict)
    outage_log: list[list[Any]] = field(default_factory=list)  # [epoch seconds, hack/cluster.sh's line]
    pods: list[dict[str, Any]] = field(default_factory=list)
    ended_within_grace: int = 0
    sigkilled: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    accounting: dict[str, Any] = field(default_factory=dict)
    # per replica, before and after: {"value", "restarts", "error"}
    missing_readings: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the counter's increase over every namespace, for the record (the fleet's kwok pods post none)
    missing_counted_in_all_namespaces: float | None = None
    # [seconds after the window's start, reports posted, counted missing]
    window_series: list[list[Any]] = field(default_factory=list)
    killed_by_operator: float | None = None  # lameduck_pods_killed_total's increase here
    pods_killed_events: list[str] = field(default_factory=list)
    seconds_until_leader: float | None = None  # after the API server was back
    seconds_until_new_pods_with_sidecar: float | None = None
    containerd: dict[str, Any] = field(default_factory=dict)
    watch_problems: list[str] = field(default_factory=list)
    operator_restarts: int = 0
    restarted_replicas: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class PodBodies:
    """The latest body of every pod of the app, by uid: from a watch of its own (listed again
    whenever it breaks, as it does when the API server stops) and from the phase's listings. A
    pod's last body before it was gone is what the API server last told of its containers."""

    def __init__(self, kubeconfig: str) -> None:
        self.api = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
        self.latest: dict[str, dict[str, Any]] = {}
        self.gone: dict[str, float] = {}
        self.problems: list[str] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def see(self, body: dict[str, Any], deleted: bool = False) -> None:
        uid = body["metadata"]["uid"]
        with self.lock:
            known = self.latest.get(uid)
            if known is None or _version(body) >= _version(known):
                self.latest[uid] = body
            if deleted:
                self.gone.setdefault(uid, time.time())

    def listed(self, items: list[dict[str, Any]]) -> None:
        for body in items:
            self.see(body)
        present = {body["metadata"]["uid"] for body in items}
        with self.lock:
            for uid in set(self.latest) - present:
                self.gone.setdefault(uid, time.time())

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                listed = self.api.list_namespaced_pod(NAMESPACE, label_selector=f"app={APP}", _preload_content=False)
                body = _json(listed)
                self.listed(body["items"])
                stream = watch.Watch()
                for event in stream.stream(
                    self.api.list_namespaced_pod,
                    NAMESPACE,
                    label_selector=f"app={APP}",
                    resource_version=body["metadata"]["resourceVersion"],
                    timeout_seconds=60,
                ):
                    if event["type"] == "ERROR":  # e.g. the version expired: list again
                        break
                    self.see(event["raw_object"], deleted=event["type"] == "DELETED")
                    if self.stopped.is_set():
                        return
            except Exception as error:  # the outage breaks the watch: list and watch again
                if len(self.problems) < 20:
                    self.problems.append(f"{type(error).__name__}: {error}"[:200])
                self.stopped.wait(0.5)  # back off before listing again (not a poll)

    def stop(self) -> None:
        self.stopped.set()


def _version(body: dict[str, Any]) -> int:
    try:
        return int(body["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


def _json(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.data)
    return body


class TaskExitLog:
    """containerd's events on this node, from `ctr events` in a process of its own: task exits go
    on being published while the API server is down, and stay readable after the pod is gone."""

    def __init__(self, run_dir: Path) -> None:
        self.lines: list[str] = []
        self.problem = ""
        self.process: subprocess.Popen[str] | None = None
        socket = run_dir / "containerd" / "containerd.sock"
        try:
            present = socket.is_socket()
        except OSError as error:
            present, self.problem = False, f"{socket}: {error}"
        ctr = shutil.which("ctr")
        if not ctr or not present:
            self.problem = self.problem or f"no ctr on PATH or no containerd socket at {socket}"
            return
        self.command = [ctr, "--address", str(socket), "events"]
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> dict[str, Any]:
        """End `ctr events` (the reader thread alone reads its output) and say what it gave."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.thread.join(timeout=10)
            err = self.process.stderr.read() if self.process.stderr is not None else ""
            if self.process.returncode not in (0, -signal.SIGTERM) and not self.problem:
                self.problem = f"ctr events exited {self.process.returncode}: {err.strip()[:300]}"
        return {"available": self.process is not None, "lines": len(self.lines), "problem": self.problem}


def api_server_outage(seconds: int) -> tuple[str, dict[str, float], list[list[Any]]]:
    """hack/cluster.sh apiserver-outage, its log lines stamped as they come: when the stop began,
    when kube-apiserver was down (its "stopped" line; else the latest it can have been), and when
    it answered again (the command returns then)."""
    command = ["bash", str(REPO / "hack" / "cluster.sh"), "apiserver-outage", str(seconds)]
    began = time.time()
    lines: list[list[Any]] = []
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        lines.append([round(time.time(), 3), line.rstrip("\n")])
    if process.wait() != 0:
        raise subprocess.CalledProcessError(
            process.returncode, command, stderr="\n".join(str(line[1]) for line in lines)
        )
    back = time.time()
    stopped = next((at for at, line in lines if "kube-apiserver stopped" in line), None)
    times = {"stop_began": began, "surely_down": stopped if stopped is not None else back - seconds, "back": back}
    return " ".join(command[1:]), times, lines


def counter_readings(operator: Operator, metric: str, namespace: str | None = NAMESPACE) -> dict[str, CounterReading]:
    """Each operator replica's counter (one namespace's samples; None: all), with its restarts then."""
    readings = {}
    for pod in operator.pods():
        name = pod["metadata"]["name"]
        restarts = sum(s.get("restartCount", 0) for s in pod["status"].get("containerStatuses") or [])
        try:
            readings[name] = CounterReading(metric_sum(operator.metrics_text(name), metric, namespace), restarts)
        except (subprocess.SubprocessError, ValueError) as error:
            readings[name] = CounterReading(None, restarts, f"{type(error).__name__}: {error}"[:200])
    return readings


def report_events(kube: Kube) -> dict[str, dict[str, Any]]:
    """The hold report Events in the namespace, by the uid of the pod each is on (the first)."""
    found: dict[str, dict[str, Any]] = {}
    for event in kube.items("events", NAMESPACE, REPORT_SELECTOR):
        uid = (event.get("involvedObject") or {}).get("uid")
        if isinstance(uid, str):
            found.setdefault(uid, event)
    return found


def remove_pods(kube: Kube) -> None:
    """The Deployment, its pods gone before the namespace goes: a pod deleted with its namespace
    cannot post its report there (403, the namespace is terminating). The operator expects none
    of such a pod now (logic/report_ledger.py); one built before that counted it missing minutes
    later, in the next run's window, as an earlier version of this phase found."""
    kube.run("delete", "deployment", APP, "-n", NAMESPACE, "--ignore-not-found", "--timeout=120s", check=False)
    kube.run("wait", "--for=delete", "pods", "-l", f"app={APP}", "-n", NAMESPACE, "--timeout=120s", check=False)


def run_holds_outage(
    kube: Kube, operator: Operator, *, replicas: int, outage: int, missing_window: float, outage_after: float = 0.0
) -> HoldsOutage:
    """The phase, recorded even when a wait runs out (its problems say where it stopped)."""
    phase = HoldsOutage(
        f"API server down {outage} s during holds",
        replicas=replicas,
        outage_seconds=outage,
        outage_after_seconds=outage_after,
        missing_window_seconds=missing_window,
    )
    remove_pods(kube)  # an earlier run's, left by an interrupted run
    kube.run("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=300s")
    kube.run("create", "namespace", NAMESPACE)
    try:
        HoldsRun(kube, operator, phase).run()
    except (AssertionError, subprocess.SubprocessError) as error:
        phase.problems.append(f"stopped early: {error}"[:1000])
    finally:
        remove_pods(kube)
        # The policy carries lameduck's finalizer: deleted while the operator runs.
        kube.run("delete", "gracefulpolicies", "--all", "-n", NAMESPACE, "--timeout=120s", check=False)
        kube.run("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    return phase


class HoldsRun:
    def __init__(self, kube: Kube, operator: Operator, phase: HoldsOutage) -> None:
        self.kube = kube
        self.operator = operator
        self.phase = phase
        self.ids: dict[str, dict[str, str]] = {}  # uid -> container name -> ID, of the pods deleted
        self.deleting: list[dict[str, Any]] = []  # their bodies once every one showed its deletion
        self.bodies: PodBodies | None = None
        self.missing_before: dict[str, CounterReading] = {}
        self.missing_after: dict[str, CounterReading] = {}
        self.killed_before: dict[str, CounterReading] = {}
        self.killed_after: dict[str, CounterReading] = {}
        # the same counter over every namespace: recorded, not checked (the fleet's pods count there)
        self.all_missing_before: dict[str, CounterReading] = {}
        self.all_missing_after: dict[str, CounterReading] = {}

    def pods(self) -> list[dict[str, Any]]:
        """Every pod of the app, each also given to the watch's record (a listing is a body too)."""
        listed = self.kube.items("pods", NAMESPACE, f"app={APP}")
        if self.bodies is not None:
            self.bodies.listed(listed)
        return listed

    def run(self) -> None:
        kube, phase = self.kube, self.phase
        kube.apply(policy())
        kube.apply(manifests.service(APP, [{"name": "http", "port": 80, "targetPort": "http"}]), namespace=NAMESPACE)
        # Created injected (every replica's webhook has seen the policy): no rollout of pods without it.
        every_replica_injects(kube, NAMESPACE, deployment(phase.replicas), timeout=60)
        kube.apply(deployment(phase.replicas), namespace=NAMESPACE)

        def steady() -> list[dict[str, Any]] | None:
            pods = self.pods()
            up = carries_lameduck(kube.get("deployment", APP, NAMESPACE))
            return pods if up and len(pods) == phase.replicas and all(ready_with_sidecar(p) for p in pods) else None

        pods = wait_until(steady, 300, f"{phase.replicas} pods of {APP} ready with their sidecars", 1)
        self.ids = {p["metadata"]["uid"]: container_ids(p) for p in pods}
        self.bodies = PodBodies(kube.kubeconfig)
        # The local cluster's containerd: hack/cluster.sh's $LAMEDUCK_RUN_DIR/containerd/containerd.sock
        exits = TaskExitLog(Path(os.environ.get("LAMEDUCK_RUN_DIR", "/var/lib/lameduck-cluster")))
        try:
            self.outage_during_holds()
        finally:
            self.bodies.stop()
            phase.containerd = exits.stop()
            phase.watch_problems = self.bodies.problems
        self.judge(task_exits(exits.lines))

    def outage_during_holds(self) -> None:
        kube, phase, operator = self.kube, self.phase, self.operator
        self.missing_before = counter_readings(operator, MISSING_METRIC)
        self.killed_before = counter_readings(operator, KILLED_METRIC)
        self.all_missing_before = counter_readings(operator, MISSING_METRIC, None)
        delete = ["delete", "pods", "-n", NAMESPACE, "-l", f"app={APP}", "--wait=false"]
        phase.commands.append("kubectl " + " ".join(delete))
        phase.timeline["deleted"] = time.time()
        kube.run(*delete)

        def every_one_deleting() -> list[dict[str, Any]] | None:
            listed = [p for p in self.pods() if p["metadata"]["uid"] in self.ids]
            deleting = len(listed) == len(self.ids) and all(p["metadata"].get("deletionTimestamp") for p in listed)
            return listed if deleting else None

        self.deleting = wait_until(every_one_deleting, 30, "every pod shows its deletionTimestamp", 0.05)
        phase.timeline["every_pod_deleting"] = time.time()
        if phase.outage_after_seconds:
            time.sleep(phase.outage_after_seconds)  # the fault's schedule, not a wait for a state
        command, times, phase.outage_log = api_server_outage(phase.outage_seconds)
        phase.commands.append(command)
        phase.timeline.update(times)
        back = times["back"]
        longest = max(p["metadata"].get("deletionGracePeriodSeconds") or 30 for p in self.deleting)
        wait_until(
            lambda: not set(self.ids) & {p["metadata"]["uid"] for p in self.pods()},
            longest + 180,
            "every deleted pod is gone",
            0.5,
        )
        assert self.bodies is not None
        phase.timeline["all_gone"] = max(self.bodies.gone.get(uid, time.time()) for uid in self.ids)
        wait_until(operator.leader, 300, "a replica leads after the outage", 1)
        phase.seconds_until_leader = round(time.time() - back, 1)

        def new_pods_up() -> bool:
            pods = [p for p in self.pods() if p["metadata"]["uid"] not in self.ids]
            return len(pods) == phase.replicas and all(ready_with_sidecar(p) for p in pods)

        wait_until(new_pods_up, 300, f"{phase.replicas} new pods of {APP} are ready with their sidecars", 1)
        phase.timeline["new_pods_ready"] = time.time()
        phase.seconds_until_new_pods_with_sidecar = round(time.time() - back, 1)
        wait_until(
            lambda: len(operator.serving()) == len(operator.pods()), 600, "every operator replica back and serving", 2
        )
        self.missing_after = self.poll_window(max(back, phase.timeline["all_gone"] or back))
        self.killed_after = counter_readings(operator, KILLED_METRIC)
        self.all_missing_after = counter_readings(operator, MISSING_METRIC, None)

    def poll_window(self, start: float) -> dict[str, CounterReading]:
        """The reports posted and the reports counted missing, every POLL_SECONDS until the
        operator's window has passed since `start`; the counter's last reading."""
        end = start + self.phase.missing_window_seconds
        while True:
            posted = len(set(self.ids) & set(report_events(self.kube)))
            readings = counter_readings(self.operator, MISSING_METRIC)
            counted = counter_increase(self.missing_before, readings, every_replica=True)
            self.phase.window_series.append([round(time.time() - start, 1), posted, counted])
            if time.time() >= end:
                self.phase.timeline["window_end"] = time.time()
                return readings
            time.sleep(min(POLL_SECONDS, max(0.0, end - time.time())))  # the poll's interval, to the window's end

    def judge(self, exits: dict[str, TaskExit]) -> None:
        """Each deleted pod: its end against its grace period, its hold report and outcome; then
        the reports posted and counted missing against the pods deleted."""
        phase = self.phase
        assert self.bodies is not None
        reports = report_events(self.kube)
        outcomes: Counter[str] = Counter()
        stop_began = phase.timeline.get("stop_began") or 0.0
        surely_down = phase.timeline.get("surely_down") or stop_began
        for pod in self.deleting:
            meta = pod["metadata"]
            uid, name = meta["uid"], meta["name"]
            deadline = epoch(meta["deletionTimestamp"]) or 0.0
            requested_at = deadline - (meta.get("deletionGracePeriodSeconds") or 0)
            ends = container_ends(self.bodies.latest.get(uid), self.ids[uid], exits)
            verdict = grace_verdict(name, requested_at, deadline, ends)
            report = report_of(reports[uid]) if uid in reports else None
            stage1 = report.get("stage1Seconds") if report else None
            stage1_end = requested_at + stage1 if isinstance(stage1, int | float) else None
            expected = expected_outcome(stage1_end, stop_began, surely_down)
            outcome = report.get("outcome") if report else None
            outcomes[str(outcome) if outcome else "no report"] += 1
            phase.problems.extend(verdict.problems)
            if problem := outcome_problem(name, outcome, expected):
                phase.problems.append(problem)
            phase.ended_within_grace += int(verdict.within_grace is True)
            phase.sigkilled += int(bool(verdict.sigkilled))
            phase.pods.append(
                {
                    "name": name,
                    "uid": uid,
                    "deletionTimestamp": meta["deletionTimestamp"],
                    "deletionGracePeriodSeconds": meta.get("deletionGracePeriodSeconds"),
                    "terminationGracePeriodSeconds": pod["spec"].get("terminationGracePeriodSeconds"),
                    "containers": self.ids[uid],
                    "ends": {c: vars(end) for c, end in ends.items()},
                    "seconds_to_end": verdict.seconds,
                    "within_grace": verdict.within_grace,
                    "report": report,
                    "expected_outcome": expected,
                }
            )
        phase.outcomes = dict(outcomes)
        phase.missing_readings = {
            "before": {pod: vars(r) for pod, r in self.missing_before.items()},
            "after": {pod: vars(r) for pod, r in self.missing_after.items()},
        }
        missing = counter_increase(self.missing_before, self.missing_after, every_replica=True)
        phase.missing_counted_in_all_namespaces = counter_increase(
            self.all_missing_before, self.all_missing_after, every_replica=True
        )
        phase.accounting, problems = report_accounting(set(self.ids), set(reports), missing)
        phase.problems.extend(problems)
        phase.killed_by_operator = counter_increase(self.killed_before, self.killed_after)
        if phase.killed_by_operator:
            phase.problems.append(f"the operator counted {phase.killed_by_operator:g} pods SIGKILLed here")
        phase.pods_killed_events = [
            str(e.get("message")) for e in self.kube.items("events", NAMESPACE) if e.get("reason") == "PodsKilled"
        ]
        phase.problems.extend(f"PodsKilled: {message}" for message in phase.pods_killed_events)


def table(phase: HoldsOutage) -> str:
    accounting = phase.accounting
    missing = accounting.get("missing_counted")
    return "\n".join(
        [
            "| fault | pods deleted | ended within grace | SIGKILLed | hold outcomes | reports posted "
            "| counted missing | posted + missing = deleted | new pods with sidecar after | operator restarts "
            "| problems |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| {phase.name} | {len(phase.pods)} | {phase.ended_within_grace} | {phase.sigkilled} | {phase.outcomes} "
            f"| {accounting.get('posted')} | {'absent' if missing is None else f'{missing:g}'} "
            f"| {accounting.get('balanced')} | {phase.seconds_until_new_pods_with_sidecar} s "
            f"| {phase.operator_restarts} | {len(phase.problems)}: {'; '.join(phase.problems[:3])} |",
        ]
    )
