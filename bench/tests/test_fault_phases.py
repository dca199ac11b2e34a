"""bench/faults.py's holds-outage and webhook-outage phases: the objects they create and how a
round of timed writes is summed up (the cluster parts run on the local cluster only)."""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bench import fault_checks, fault_holds, fault_webhook, faults
from bench.fault_checks import task_exits
from bench.fault_holds import HoldsOutage, TaskExitLog
from bench.fault_webhook import DOWN, UP, WebhookOutage, Write, timed_creates, write_round
from harness.images import DEMO_IMAGE
from harness.kube import wait_until


def test_the_holds_phase_runs_the_demo_app_on_the_real_node_under_a_sidecar_policy() -> None:
    body = fault_holds.deployment(4)
    spec = body["spec"]["template"]["spec"]
    assert body["spec"]["replicas"] == 4
    assert [c["image"] for c in spec["containers"]] == [DEMO_IMAGE]
    assert "nodeSelector" not in spec
    assert "tolerations" not in spec  # kwok's fake nodes are tainted: the pods go to the real one
    policy = fault_holds.policy()
    assert policy["spec"]["hold"] == {"method": "Sidecar", "propagationDelay": "10s"}
    assert policy["spec"]["apply"] == "Immediate"
    assert policy["spec"]["selector"]["matchLabels"].items() <= body["metadata"]["labels"].items()


def test_webhook_rounds_use_the_fleets_deployment_under_another_name() -> None:
    fleet, written = faults.deployment(7), faults.deployment(7, "wh-down")
    assert fleet["metadata"]["name"] == "app-0007"
    assert written["metadata"]["name"] == "wh-down-0007"
    assert written["spec"]["template"]["spec"] == fleet["spec"]["template"]["spec"]
    assert written["metadata"]["labels"] == fleet["metadata"]["labels"]


def stored(injected: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app"}]}
    if injected:
        spec["initContainers"] = [{"name": "lameduck"}]
    return {"metadata": {"name": "d"}, "spec": {"template": {"metadata": {}, "spec": spec}}}


def test_a_round_counts_failed_writes_and_how_the_others_were_admitted() -> None:
    writes = [
        Write("wh-up-0000", 0.010, stored(True)),
        Write("wh-up-0001", 0.020, stored(False)),
        Write("wh-up-0002", 3.000, None, "ApiException: (500)"),
    ]
    done = write_round(UP, writes, 3.04)
    assert (done.writes, done.failed, done.injected_at_admission, done.unchanged_at_admission) == (3, 1, 1, 1)
    assert done.latency_ms["count"] == 3
    assert done.latency_ms["max"] == 3000.0  # a failed write's time is a write's latency too
    assert done.errors == ["wh-up-0002: ApiException: (500)"]


def test_the_tables_render_a_phase_that_stopped_early() -> None:
    webhook = WebhookOutage("webhook without endpoints", writes=2, operator_replicas=2)
    webhook.rounds = [write_round(UP, [Write("a", 0.01, stored(True))], 0.01), write_round(DOWN, [], 0.0)]
    webhook.problems = ["stopped early: timed out"]
    text = fault_webhook.table(webhook)
    assert "| operator up (2 replicas) | 1 | 0 | 10.0 ms" in text
    assert "| operator scaled to 0 | 0 | 0 | None ms" in text
    assert "1 problems: stopped early: timed out" in text
    holds = fault_holds.table(HoldsOutage("API server down 30 s during holds"))
    assert holds.splitlines()[2].startswith("| API server down 30 s during holds | 0 |")


class FakeApiServer(http.server.BaseHTTPRequestHandler):
    """Lists no Deployment; stores each created one as sent, but refuses those named *-refused."""

    def do_GET(self) -> None:
        self.answer(200, {"kind": "DeploymentList", "items": [], "metadata": {}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        refused = body["metadata"]["name"].endswith("-refused")
        self.answer(500 if refused else 201, {"kind": "Status", "code": 500} if refused else body)

    def answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


def test_timed_creates_create_every_deployment_a_few_at_a_time_and_keep_refusals(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeApiServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        kubeconfig = tmp_path / "kubeconfig"
        cluster = {"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [cluster],
                    "users": [{"name": "u", "user": {}}],
                    "contexts": [{"name": "c", "context": {"cluster": "fake", "user": "u"}}],
                    "current-context": "c",
                }
            )
        )
        bodies = [faults.deployment(i, "wh-up") for i in range(5)]
        bodies[3]["metadata"]["name"] = "wh-up-refused"
        writes = timed_creates(str(kubeconfig), "faults", bodies, 2)
    finally:
        server.shutdown()
    assert sorted(w.name for w in writes) == sorted(b["metadata"]["name"] for b in bodies)
    refused = next(w for w in writes if w.name == "wh-up-refused")
    assert refused.stored is None
    assert "500" in refused.error
    assert all(
        w.stored == next(b for b in bodies if b["metadata"]["name"] == w.name) for w in writes if w is not refused
    )
    assert all(w.seconds > 0 for w in writes)


def test_the_task_exit_log_reads_ctr_events_until_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    containerd = tmp_path / "containerd"
    containerd.mkdir()
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(containerd / "containerd.sock"))
    event = {"container_id": "abc", "id": "abc", "exit_status": 137, "exited_at": "2026-05-01T10:00:05Z"}
    line = f"2026-05-01 10:00:05 +0000 UTC k8s.io /tasks/exit {json.dumps(event)}"
    ctr = tmp_path / "bin" / "ctr"
    ctr.parent.mkdir()
    ctr.write_text(f"#!/bin/sh\necho '{line}'\nexec sleep 60\n")
    ctr.chmod(0o755)
    monkeypatch.setenv("PATH", f"{ctr.parent}:{os.environ['PATH']}")
    log = TaskExitLog(tmp_path)
    try:
        wait_until(lambda: log.lines, 10, "ctr's line is read")
    finally:
        record = log.stop()
        listening.close()
    assert record == {"available": True, "lines": 1, "problem": ""}
    assert task_exits(log.lines)["abc"].exit_status == 137


def test_without_containerd_the_task_exit_log_says_so(tmp_path: Path) -> None:
    record = TaskExitLog(tmp_path).stop()
    assert record["available"] is False
    assert "no containerd socket" in record["problem"]


def test_the_outage_is_stamped_from_hack_cluster_shs_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "hack" / "cluster.sh"
    script.parent.mkdir()
    script.write_text(
        'echo "[cluster 10:00:00] stopping kube-apiserver (pid 1)" >&2\n'
        'echo "[cluster 10:00:01] kube-apiserver stopped; starting it again in ${2}s" >&2\n'
        "sleep 0.3\n"
    )
    monkeypatch.setattr(fault_holds, "REPO", tmp_path)
    command, times, lines = fault_holds.api_server_outage(0)
    assert command.endswith("hack/cluster.sh apiserver-outage 0")
    assert [text for _, text in lines][1] == "[cluster 10:00:01] kube-apiserver stopped; starting it again in 0s"
    assert times["stop_began"] <= times["surely_down"] == lines[1][0] <= times["back"] - 0.3


class FakeKube:
    """What HoldsRun.judge reads: the namespace's Events (hold reports by their label)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def items(self, kind: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        assert (kind, namespace) == ("events", fault_holds.NAMESPACE)
        reports = [e for e in self.events if e["reason"].startswith("Hold")]
        return reports if selector == "lameduck.dev/report=hold" else self.events


APP_A, SIDE_A, APP_B, SIDE_B = "a1" * 32, "a2" * 32, "b1" * 32, "b2" * 32


def deleting_pod(name: str, uid: str) -> dict[str, Any]:
    # deleted at 10:00:00 with a 45 s grace period
    meta = {"name": name, "uid": uid, "deletionTimestamp": "2026-05-01T10:00:45Z", "deletionGracePeriodSeconds": 45}
    return {"metadata": meta, "spec": {"terminationGracePeriodSeconds": 45}}


def ended(pod: dict[str, Any], app: tuple[str, str, int], sidecar: tuple[str, str, int]) -> dict[str, Any]:
    def status(name: str, end: tuple[str, str, int]) -> dict[str, Any]:
        container, finished, code = end
        return {
            "name": name,
            "containerID": f"containerd://{container}",
            "state": {"terminated": {"finishedAt": finished, "exitCode": code}},
        }

    return {
        **pod,
        "status": {"initContainerStatuses": [status("lameduck", sidecar)], "containerStatuses": [status("app", app)]},
    }


def holds_run(events: list[dict[str, Any]], latest: dict[str, dict[str, Any]]) -> fault_holds.HoldsRun:
    at = fault_checks.epoch("2026-05-01T10:00:00Z") or 0.0
    phase = HoldsOutage("API server down 30 s during holds")
    phase.timeline = {"stop_began": at + 1, "surely_down": at + 2, "back": at + 35}
    run = fault_holds.HoldsRun(cast(Any, FakeKube(events)), cast(Any, None), phase)
    run.ids = {"ua": {"app": APP_A, "lameduck": SIDE_A}, "ub": {"app": APP_B, "lameduck": SIDE_B}}
    run.deleting = [deleting_pod("holds-a", "ua"), deleting_pod("holds-b", "ub")]
    run.bodies = cast(Any, SimpleNamespace(latest=latest))
    run.missing_before = {"op-a": fault_checks.CounterReading(0.0, 0)}
    run.missing_after = {"op-a": fault_checks.CounterReading(1.0, 0)}
    run.killed_before = run.killed_after = {"op-a": fault_checks.CounterReading(0.0, 0)}
    return run


def report(uid: str, outcome: str, stage1: float) -> dict[str, Any]:
    message = {"outcome": outcome, "stage1Seconds": stage1, "holdSeconds": 12.0}
    return {
        "reason": "HoldFellBack" if outcome == "fallback" else "HoldReleased",
        "involvedObject": {"kind": "Pod", "uid": uid},
        "metadata": {"creationTimestamp": "2026-05-01T10:00:40Z"},
        "message": json.dumps(message),
    }


def test_holds_judged_clean_one_report_posted_one_counted_missing_ends_from_the_pod_and_containerd() -> None:
    a = ended(deleting_pod("holds-a", "ua"), (APP_A, "2026-05-01T10:00:15Z", 0), (SIDE_A, "2026-05-01T10:00:16Z", 0))
    run = holds_run([report("ua", "fallback", 5.0)], {"ua": a})
    at = fault_checks.epoch("2026-05-01T10:00:00Z") or 0.0
    # holds-b was gone before the phase saw its end: containerd's exits tell it
    run.judge({APP_B: fault_checks.TaskExit(at + 20, 0), SIDE_B: fault_checks.TaskExit(at + 20.5, 0)})
    phase = run.phase
    assert phase.problems == []
    assert phase.outcomes == {"fallback": 1, "no report": 1}
    assert (phase.ended_within_grace, phase.sigkilled) == (2, 0)
    assert phase.accounting == {"deleted": 2, "posted": 1, "missing_counted": 1.0, "balanced": True}
    by_name = {p["name"]: p for p in phase.pods}
    assert by_name["holds-a"]["expected_outcome"] == fault_checks.FALLBACK
    assert by_name["holds-a"]["seconds_to_end"] == 16.0
    assert by_name["holds-b"]["ends"]["lameduck"]["source"] == "containerd"
    assert by_name["holds-b"]["seconds_to_end"] == 20.5


def test_holds_judged_with_a_sigkill_a_quiet_hold_past_the_stop_and_a_report_neither_posted_nor_counted() -> None:
    a = ended(deleting_pod("holds-a", "ua"), (APP_A, "2026-05-01T10:00:45Z", 137), (SIDE_A, "2026-05-01T10:00:45Z", 0))
    run = holds_run([report("ua", "quiet", 5.0)], {"ua": a})
    run.missing_after = {"op-a": fault_checks.CounterReading(0.0, 0)}
    run.judge({})
    problems = run.phase.problems
    assert "holds-a: app was SIGKILLed (exit 137) 45.0 s after its deletion (grace period 45 s)" in problems
    assert "holds-a: hold quiet, though its stage 1 lasted into the outage (expected fallback)" in problems
    assert "holds-b: the end of app was not observed" in problems
    assert "1 reports posted + 0 counted missing != 2 pods deleted" in problems
    assert (run.phase.sigkilled, run.phase.ended_within_grace) == (1, 1)
