"""Every way a pod stops, under load, without a failed request: a scale-down, an eviction
through the Eviction API under a PodDisruptionBudget (`kubectl drain`), a rollout with a
client that keeps one keep-alive connection for the whole of it, and a rollout of an app
that ignores SIGTERM and is killed at the end of its grace period.

Each test runs the demo app behind a ClusterIP Service under a GracefulPolicy (the defaults,
`apply: Immediate`), sends ~200 requests a second from this machine to the ClusterIP (so the
pod network must be reachable from here, as it is on the local cluster), and asserts that no
request sent from the start of the disruption on failed, that the requests were answered,
and that the hold of every pod that stopped ended with outcome `quiet`: a hold that only
ever ends at maxHold would be a fixed sleep in disguise, and fails the test.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.demo import LOAD_RATE, PodEnds, SidecarLog, load_during, start_guarded_demo
from harness.install import Operator
from harness.kube import Kube, wait_until
from harness.loadgen import LoadResult


def pod_names(kube: Kube, namespace: str) -> set[str]:
    return {p["metadata"]["name"] for p in kube.items("pods", namespace, "app=demo")}


def follow(kube: Kube, namespace: str, pods: set[str], tmp_path: Path) -> dict[str, SidecarLog]:
    return {pod: SidecarLog(kube, namespace, pod, tmp_path / f"{pod}.log") for pod in sorted(pods)}


def assert_served_without_errors(
    result: LoadResult, marks: dict[str, float], least_rate: float = 0.8 * LOAD_RATE
) -> None:
    """No request sent from the second the disruption started on failed (that whole second
    counts), and the load ran at `least_rate` or more with every other request answered."""
    failed = sum(n for second, n in result.errors_by_second.items() if second >= int(marks["disruption_from"]))
    summary = result.as_dict() | {"failures": result.failures[:10]}
    assert failed == 0, f"{failed} requests failed from the disruption on: {summary}"
    assert result.requests >= least_rate * marks["load_seconds"], summary
    assert result.ok == result.requests - result.error_count, summary


def assert_quiet(holds: dict[str, dict[str, Any]]) -> None:
    assert holds, "no pod stopped"
    assert {pod: h["outcome"] for pod, h in holds.items()} == dict.fromkeys(holds, "quiet"), holds


def report(
    name: str, result: LoadResult, marks: dict[str, float], holds: dict[str, dict[str, Any]], **more: Any
) -> None:
    """The test's figures, one JSON line (shown with pytest -s)."""
    figures = {
        "test": name,
        "requests": result.requests,
        "ok": result.ok,
        "errors": dict(result.errors),
        "by_mode": {m: dict(c) for m, c in result.by_mode.items()},
        "reconnects": dict(result.reconnects),
        "loop_stalls": len(result.loop_stalls),
        "load_seconds": round(marks["load_seconds"], 1),
        "disruption_seconds": round(marks["disruption_until"] - marks["disruption_from"], 1),
        "holds": {
            pod: {"outcome": h["outcome"], "seconds": round(h["seconds"], 2), "grace_period": h.get("grace_period")}
            for pod, h in sorted(holds.items())
        },
        **more,
    }
    print(f"\nFIGURES {json.dumps(figures)}")


def test_scale_down_under_load_has_zero_errors(kube: Kube, operator: Operator, namespace: str, tmp_path: Path) -> None:
    """`kubectl scale` from 6 replicas to 2: the ReplicaSet deletes 4 pods at once."""
    start_guarded_demo(kube, namespace, replicas=6)
    before = pod_names(kube, namespace)
    logs = follow(kube, namespace, before, tmp_path)

    def scale_down() -> None:
        kube.run("scale", "deployment/demo", "--replicas=2", "-n", namespace)
        wait_until(lambda: len(pod_names(kube, namespace)) == 2, 120, "only 2 pods remain", 0.5)

    result, marks = load_during(kube, namespace, scale_down)
    remaining = pod_names(kube, namespace)
    assert remaining < before, "the 2 that remain are 2 of the 6"
    stopped = before - remaining
    holds = {pod: logs[pod].hold() for pod in sorted(stopped)}
    for pod in remaining:
        logs[pod].stop()
        assert logs[pod].holds() == [], f"{pod} remains and never held"
    report("scale_down_6_to_2", result, marks, holds)
    assert_served_without_errors(result, marks)
    assert len(stopped) == 4
    assert_quiet(holds)


def test_drain_evicting_through_a_pod_disruption_budget_has_zero_errors(
    kube: Kube, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """`kubectl drain <node> --pod-selector app=demo` with a PodDisruptionBudget of
    maxUnavailable 1: drain cordons the node and evicts the pods through the Eviction API,
    retrying every 5 s while the budget says no.

    The local cluster has a single node: while it is cordoned, no replacement can schedule,
    the budget never allows a second eviction, and drain would only time out. So once the
    first eviction has been accepted (the first old pod has a deletionTimestamp), the test
    uncordons the node and lets drain go on: each replacement schedules, becomes ready, and
    frees the budget for the next eviction. The node is uncordoned in a `finally` whatever
    happens (on a cluster of several nodes the uncordon is merely early)."""
    start_guarded_demo(kube, namespace, replicas=3)
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "demo"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "demo"}}},
    }
    kube.apply(budget, namespace=namespace)
    wait_until(
        lambda: kube.get("pdb", "demo", namespace).get("status", {}).get("disruptionsAllowed") == 1,
        60,
        "the budget allows one disruption",
    )
    pods = kube.items("pods", namespace, "app=demo")
    node = pods[0]["spec"]["nodeName"]
    old = {p["metadata"]["name"] for p in pods if p["spec"]["nodeName"] == node}
    logs = follow(kube, namespace, old, tmp_path)
    drained: dict[str, Any] = {}

    def first_eviction_accepted() -> bool:
        current = {p["metadata"]["name"]: p for p in kube.items("pods", namespace, "app=demo")}
        return any(name not in current or current[name]["metadata"].get("deletionTimestamp") for name in old)

    def drain() -> None:
        command = [kube.binary, "--kubeconfig", kube.kubeconfig, "drain", node, "--pod-selector", "app=demo"]
        command += ["--ignore-daemonsets", "--delete-emptydir-data", "--timeout=240s"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(first_eviction_accepted, 60, "the first eviction is accepted", 0.2)
            drained["uncordoned_after"] = time.monotonic()
            kube.run("uncordon", node)
            out, err = process.communicate(timeout=280)
            drained.update(returncode=process.returncode, stdout=out, stderr=err)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            kube.run("uncordon", node, check=False)
        wait_until(lambda: not old & pod_names(kube, namespace), 120, "every evicted pod is gone", 0.5)

    try:
        result, marks = load_during(kube, namespace, drain)
    finally:
        kube.run("uncordon", node, check=False)
    holds = {pod: log.hold() for pod, log in sorted(logs.items())}
    refusals = drained["stderr"].count("disruption budget")
    report("drain_with_pdb", result, marks, holds, budget_refusals=refusals, node=node)
    assert drained["returncode"] == 0, drained
    assert refusals >= 1, f"the budget never said no: {drained['stderr']}"
    assert_served_without_errors(result, marks)
    assert_quiet(holds)
    assert not kube.get("node", node)["spec"].get("unschedulable"), "the node is uncordoned"


def test_one_keep_alive_connection_through_a_rollout_has_zero_errors(
    kube: Kube, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """One client keeps a single keep-alive connection for the whole `kubectl rollout
    restart`, sending one request after another on it: its pod's hold sees those requests as
    new work only for propagationDelay, the app then answers `Connection: close`, and the
    client opens its next connection to a pod that stays. The demo answers after 1 ms here
    (5 ms by default) so that one connection can carry ~200 requests a second."""
    start_guarded_demo(kube, namespace, app_env={"LATENCY_MS": "1"})
    old = pod_names(kube, namespace)
    logs = follow(kube, namespace, old, tmp_path)

    def restart() -> None:
        kube.run("rollout", "restart", "deployment/demo", "-n", namespace)
        wait_until(lambda: not old & pod_names(kube, namespace), 240, "every old pod is gone", 0.5)

    result, marks = load_during(kube, namespace, restart, clients="one-keepalive")
    holds = {pod: log.hold() for pod, log in sorted(logs.items())}
    report("one_keepalive_rollout", result, marks, holds)
    assert_served_without_errors(result, marks, least_rate=0.5 * LOAD_RATE)
    assert result.reconnects, "the connection never had to move off a stopping pod"
    assert set(result.reconnects) <= {"connection_close", "closed_between_requests"}, result.reconnects
    assert_quiet(holds)


def seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def test_an_app_that_ignores_sigterm_is_killed_at_the_end_of_its_grace_period_with_zero_errors(
    kube: Kube, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """The app logs SIGTERM and keeps serving (IGNORE_SIGTERM=true) until kubelet SIGKILLs it
    when its grace period ends: 15 s, what the policy needs (maxHold 8 s + drainTimeout 2 s +
    5 s), set on the template because lameduck never lowers the default of 30 s. The hold still
    ends quiet; the rollout completes; every old app container exits 137 at its
    deletionTimestamp; the operator stays healthy; and no request fails. The load uses a new
    connection per request: an app that never closes its keep-alive connections loses
    whatever they carry when it is killed, and those requests are the app's to lose, not
    something a preStop hold can save."""
    start_guarded_demo(
        kube,
        namespace,
        app_env={"IGNORE_SIGTERM": "true"},
        grace_period=15,
        hold={"maxHold": "8s"},
        drainTimeout="2s",
    )
    pods = kube.items("pods", namespace, "app=demo")
    grace = pods[0]["spec"]["terminationGracePeriodSeconds"]
    assert grace == 15
    old = {p["metadata"]["name"] for p in pods}
    logs = follow(kube, namespace, old, tmp_path)
    ends = PodEnds(kube, namespace)
    try:

        def restart() -> None:
            kube.run("rollout", "restart", "deployment/demo", "-n", namespace)
            kube.run("rollout", "status", "deployment/demo", "-n", namespace, "--timeout=120s")
            wait_until(lambda: old <= ends.gone, 120, "every old pod is gone", 0.5)

        result, marks = load_during(kube, namespace, restart, clients="new-connections")
    finally:
        ends.stop()
    holds = {pod: log.hold() for pod, log in sorted(logs.items())}
    killed: dict[str, dict[str, Any]] = {}
    for pod in sorted(old):
        ended, deleted = ends.terminated.get(pod, {}), ends.deletion.get(pod)
        killed[pod] = {"exit_code": ended.get("exitCode"), "reason": ended.get("reason")}
        if ended.get("finishedAt") and deleted:
            # the deletionTimestamp is when the grace period ends; it began that long before
            killed[pod]["grace"] = deleted["grace"]
            killed[pod]["killed_after"] = deleted["grace"] + seconds_between(deleted["at"], ended["finishedAt"])
    report("ignores_sigterm_rollout", result, marks, holds, killed=killed, broken_watches=ends.broken_watches)
    assert_served_without_errors(result, marks)
    assert_quiet(holds)
    for pod, end in killed.items():
        assert end["exit_code"] == 137, f"{pod} was not SIGKILLed: {end}"
        assert end["reason"] != "OOMKilled", end
        assert end.get("grace") == grace, f"{pod} was deleted with its template's grace period: {end}"
        # kubelet's own clock starts when it sees the deletion, a moment after the API server's
        # (and the API's times are whole seconds); the hold ended some 12 s before
        assert grace - 2 <= end.get("killed_after", 0) <= grace + 4, f"{pod} was not killed when its grace ended: {end}"
    assert operator.leader(), "an operator replica leads"
    assert operator.serving() == {p["metadata"]["name"] for p in operator.pods()}, "every operator replica serves"
    assert all(c.get("restartCount", 0) == 0 for p in operator.pods() for c in p["status"]["containerStatuses"])
    wait_until(
        lambda: kube.get("gracefulpolicy", "guard", namespace).get("status", {}).get("compliant") == 1,
        30,
        "the policy reports the demo compliant",
    )
