"""The sidecar on a real cluster: zero errors under load, stage timing, quiet period, maxHold,
fallback without RBAC, its Role and RoleBinding, and silence toward the API while idle.

Traffic is sent from this machine to the Service's ClusterIP and to pod IPs, so the pod
network must be reachable from here (it is on the local cluster).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch

from harness.demo import SidecarLog, start_guarded_demo, steady
from harness.install import Operator
from harness.kube import LOCAL_AUDIT_LOG, Kube, is_local, wait_until
from harness.loadgen import LoadGenerator, under_load
from harness.manifests import demo_app, guarded


@pytest.fixture
def guarded_demo(kube: Kube, operator: Operator, namespace: str) -> str:
    """The demo app, 3 replicas behind a Service, under a lameduck policy, steady."""
    start_guarded_demo(kube, namespace)
    return namespace


def pod_ip(kube: Kube, namespace: str, pod: str) -> str:
    return str(kube.get("pod", pod, namespace)["status"]["podIP"])


def first_pod(kube: Kube, namespace: str) -> str:
    return str(sorted(p["metadata"]["name"] for p in kube.items("pods", namespace, "app=demo"))[0])


def new_connections(url: str, seconds: float, per_second: int = 20) -> tuple[int, float]:
    """Opens a new connection per request for `seconds`; returns (answered, end time)."""
    answered = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                answered += response.status == 200
        except OSError:
            pass
        time.sleep(1 / per_second)  # pacing the traffic (not a poll for a condition)
    return answered, time.time()


def test_rollout_under_load_has_zero_errors(kube: Kube, guarded_demo: str, tmp_path: Path) -> None:
    namespace = guarded_demo
    ip = kube.get("service", "demo", namespace)["spec"]["clusterIP"]
    old = {p["metadata"]["name"] for p in kube.items("pods", namespace, "app=demo")}

    def restart_and_wait() -> None:
        kube.run("rollout", "restart", "deployment/demo", "-n", namespace)
        wait_until(
            lambda: not old & {p["metadata"]["name"] for p in kube.items("pods", namespace, "app=demo")},
            240,
            "every old pod is gone",
            0.5,
        )

    logs = [SidecarLog(kube, namespace, pod, tmp_path / f"{pod}.log") for pod in sorted(old)]
    generator = LoadGenerator(f"http://{ip}/", rate=200)
    result: dict[str, Any] = asyncio.run(under_load(generator, restart_and_wait, before=2, after=2)).as_dict()
    assert result["requests"] > 2000
    assert result["errors"] == {}, result
    holds = [log.hold() for log in logs]
    # A hold that waited for maxHold (30 s) would be a fixed sleep in disguise.
    assert [h["outcome"] for h in holds] == ["quiet"] * 3, holds
    assert all(2.0 <= h["seconds"] < 10.0 for h in holds), holds


def test_stage1_ends_only_after_the_slices_show_not_ready(kube: Kube, guarded_demo: str, tmp_path: Path) -> None:
    namespace = guarded_demo
    pod = first_pod(kube, namespace)
    uid = kube.get("pod", pod, namespace)["metadata"]["uid"]
    api = client.DiscoveryV1Api(config.new_client_from_config(config_file=kube.kubeconfig))
    not_ready_at: list[float] = []

    def observe() -> None:
        stream = watch.Watch()
        for event in stream.stream(api.list_namespaced_endpoint_slice, namespace, timeout_seconds=60):
            for endpoint in event["raw_object"].get("endpoints") or []:
                if (endpoint.get("targetRef") or {}).get("uid") == uid and endpoint["conditions"].get("ready") is False:
                    not_ready_at.append(time.time())
                    stream.stop()
                    return

    watcher = threading.Thread(target=observe, daemon=True)
    watcher.start()
    log = SidecarLog(kube, namespace, pod, tmp_path / "sidecar.log")
    deleted_at = time.time()
    kube.run("delete", "pod", pod, "-n", namespace, "--wait=false")
    hold = log.hold()
    watcher.join(timeout=30)
    assert not_ready_at, "the watch never saw the endpoint turn not ready"
    assert hold["outcome"] == "quiet"
    assert hold["stage1_at"] > deleted_at
    # The sidecar cannot have let go before the API server held ready=false (the test's own
    # watch sees that a little later than the sidecar's, hence the tolerance).
    assert hold["stage1_at"] >= not_ready_at[0] - 0.5
    assert hold["stage2"] >= 2.0, "then at least propagationDelay"


def test_stage2_waits_while_new_connections_arrive(kube: Kube, guarded_demo: str, tmp_path: Path) -> None:
    namespace = guarded_demo
    pod = first_pod(kube, namespace)
    url = f"http://{pod_ip(kube, namespace, pod)}:8080/"
    log = SidecarLog(kube, namespace, pod, tmp_path / "sidecar.log")
    kube.run("delete", "pod", pod, "-n", namespace, "--wait=false")
    answered, traffic_ended = new_connections(url, seconds=6)
    hold = log.hold()
    assert answered > 50, "the app kept serving during the hold"
    assert hold["outcome"] == "quiet"
    assert hold["connections_after_stage1"] > 0
    released_at = hold["started_at"] + hold["seconds"]
    assert released_at >= traffic_ended + 1.0 - 0.3, "released only after a quiet period following the traffic"


def test_a_container_restart_is_answered_at_once_and_the_deletion_after_it_gets_a_full_hold(
    kube: Kube, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """kubelet runs preStop hooks when a failed liveness probe restarts a container too."""
    deployment, service = demo_app(replicas=1)
    app = deployment["spec"]["template"]["spec"]["containers"][0]
    app["livenessProbe"] = {
        "exec": {"command": ["sh", "-c", "test ! -e /tmp/restart-me"]},
        "periodSeconds": 1,
        "failureThreshold": 1,
    }
    kube.apply(deployment, service, namespace=namespace)
    kube.apply(guarded(namespace))
    wait_until(lambda: steady(kube, namespace, replicas=1), 180, "the demo runs with its sidecar", interval=0.5)
    pod = first_pod(kube, namespace)
    log = SidecarLog(kube, namespace, pod, tmp_path / "sidecar.log")
    touched = time.monotonic()
    kube.run("exec", pod, "-n", namespace, "-c", "app", "--", "touch", "/tmp/restart-me")
    restart = log.hold(0, last=False)
    assert restart["outcome"] == "not_deleting"
    wait_until(
        lambda: kube.get("pod", pod, namespace)["status"]["containerStatuses"][0]["restartCount"] >= 1,
        60,
        "the app container restarts",
    )
    # With a hold, the restart would have waited for maxHold (30 s).
    assert time.monotonic() - touched < 15
    wait_until(lambda: steady(kube, namespace, replicas=1), 60, "the restarted app is ready", interval=0.5)
    kube.run("delete", "pod", pod, "-n", namespace, "--wait=false")
    hold = log.hold(1)
    assert hold["outcome"] == "quiet"
    assert hold["stage1"] is not None, "its own full hold: first the slices"
    assert hold["stage2"] >= 2.0, "then propagationDelay"


def test_a_service_that_publishes_not_ready_addresses_does_not_hold_to_max_hold(
    kube: Kube, guarded_demo: str, tmp_path: Path
) -> None:
    """Its slices keep a terminating pod ready: terminating is what shows the deletion."""
    namespace = guarded_demo
    _, service = demo_app()
    service["metadata"]["name"] = "demo-peers"
    service["spec"] |= {"clusterIP": "None", "publishNotReadyAddresses": True}
    kube.apply(service, namespace=namespace)
    pod = first_pod(kube, namespace)
    wait_until(
        lambda: any(
            (e.get("targetRef") or {}).get("name") == pod
            for s in kube.items("endpointslices", namespace, "kubernetes.io/service-name=demo-peers")
            for e in s.get("endpoints") or []
        ),
        30,
        "the peers Service lists the pod",
    )
    log = SidecarLog(kube, namespace, pod, tmp_path / "sidecar.log")
    kube.run("delete", "pod", pod, "-n", namespace, "--wait=false")
    hold = log.hold()
    assert hold["outcome"] == "quiet"
    assert hold["seconds"] < 10, "not maxHold (30 s)"


def test_probes_alone_never_keep_the_pod_from_quiet(
    kube: Kube, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """A readiness probe every second against a quiet period of 3 s: every window has probes."""
    start_guarded_demo(kube, namespace, hold={"quietPeriod": "3s"})
    pod = first_pod(kube, namespace)
    log = SidecarLog(kube, namespace, pod, tmp_path / "sidecar.log")
    kube.run("delete", "pod", pod, "-n", namespace, "--wait=false")
    hold = log.hold()
    assert hold["outcome"] == "quiet"
    assert hold["seconds"] < 10, "not maxHold (30 s)"
    assert hold["connections_after_stage1"] == 0, "the probes' connections were not counted"


def test_requests_on_an_open_keep_alive_connection_keep_the_pod_from_quiet(
    kube: Kube, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """A pool that picks up a connection it opened before the deletion: after a pause longer
    than quietPeriod (1 s), a run of requests over it, and no new connection, is new work
    until it stops (within propagationDelay, 6 s here, of its start: see docs/policy.md)."""
    # No kubelet probe on the app: its connections are another test's subject (above), and one
    # landing here made connections_after_stage1 1 in CI at fbe69b5.
    start_guarded_demo(kube, namespace, hold={"propagationDelay": "6s"}, readiness_probe=False)
    pod = first_pod(kube, namespace)
    connection = http.client.HTTPConnection(pod_ip(kube, namespace, pod), 8080, timeout=2)
    connection.request("GET", "/")  # opened before the deletion: no new connection from here on
    connection.getresponse().read()
    opened = connection.sock  # http.client opens another one by itself if this one was closed
    log = SidecarLog(kube, namespace, pod, tmp_path / "sidecar.log")
    kube.run("delete", "pod", pod, "-n", namespace, "--wait=false")
    time.sleep(1.5)  # the connection idles while stage 1 ends (pacing, not a poll)
    answered = 0
    end = time.monotonic() + 5
    while True:
        traffic_ended = time.time()  # the last request's start: the quiet period counts from it
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        answered += response.status == 200
        assert connection.sock is opened, "the client opened a new connection: the app closed the first"
        if time.monotonic() >= end:
            break
        time.sleep(0.3)  # pacing the requests (not a poll for a condition)
    connection.close()
    hold = log.hold()
    assert answered >= 10, "the app kept serving the connection during the hold"
    assert hold["outcome"] == "quiet"
    assert hold["reused_after_stage1"] > 0
    assert hold["connections_after_stage1"] == 0
    released_at = hold["started_at"] + hold["seconds"]
    assert released_at >= traffic_ended + 1.0 - 0.4, "released only after a quiet period following the last request"


def test_max_hold_is_honoured(kube: Kube, operator: Operator, namespace: str, tmp_path: Path) -> None:
    start_guarded_demo(kube, namespace, hold={"maxHold": "4s", "propagationDelay": "1s", "quietPeriod": "1s"})
    pod = first_pod(kube, namespace)
    url = f"http://{pod_ip(kube, namespace, pod)}:8080/"
    log = SidecarLog(kube, namespace, pod, tmp_path / "sidecar.log")
    kube.run("delete", "pod", pod, "-n", namespace, "--wait=false")
    new_connections(url, seconds=7)
    hold = log.hold()
    assert hold["outcome"] == "timeout"
    assert 4.0 <= hold["seconds"] < 5.0


def test_a_shorter_deletion_grace_period_leaves_the_app_its_drain_time(
    kube: Kube, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    # maxHold 30 s, drainTimeout 3 s; the pod is deleted with a grace period of 8 s while new
    # connections keep arriving, so only the grace period can end the hold: after 8 - 3 s.
    start_guarded_demo(kube, namespace, drainTimeout="3s")
    pod = first_pod(kube, namespace)
    url = f"http://{pod_ip(kube, namespace, pod)}:8080/"
    log = SidecarLog(kube, namespace, pod, tmp_path / "sidecar.log")
    kube.run("delete", "pod", pod, "-n", namespace, "--grace-period=8", "--wait=false")
    new_connections(url, seconds=7)
    hold = log.hold()
    assert hold["grace_period"] == 8
    assert hold["outcome"] == "timeout"
    assert 5.0 <= hold["seconds"] < 6.0


def test_without_rbac_the_sidecar_falls_back_and_the_pod_still_ends(
    kube: Kube, guarded_demo: str, tmp_path: Path
) -> None:
    namespace = guarded_demo
    kube.run("delete", "rolebinding", "lameduck-sidecar", "-n", namespace)
    pod = first_pod(kube, namespace)
    grace = kube.get("pod", pod, namespace)["spec"]["terminationGracePeriodSeconds"]
    log = SidecarLog(kube, namespace, pod, tmp_path / "sidecar.log")
    deleted = time.monotonic()
    kube.run("delete", "pod", pod, "-n", namespace, "--wait=false")
    hold = log.hold()
    wait_until(
        lambda: pod not in {p["metadata"]["name"] for p in kube.items("pods", namespace, "app=demo")},
        grace + 10,
        "the pod is gone",
    )
    assert hold["outcome"] == "fallback"
    assert time.monotonic() - deleted < grace


def test_operator_creates_and_removes_the_sidecars_access(kube: Kube, guarded_demo: str) -> None:
    namespace = guarded_demo
    role = kube.get("role", "lameduck-sidecar", namespace)
    assert role["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["lameduck-learned"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    binding = kube.get("rolebinding", "lameduck-sidecar", namespace)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}]
    kube.run("delete", "gracefulpolicy", "guard", "-n", namespace, "--timeout=60s")
    wait_until(
        lambda: (
            not kube.items("rolebindings", namespace, "app.kubernetes.io/managed-by=lameduck")
            and not kube.items("roles", namespace, "app.kubernetes.io/managed-by=lameduck")
        ),
        60,
        "the sidecar's Role and RoleBinding are removed",
    )


def test_idle_sidecars_make_no_api_requests(kube: Kube, guarded_demo: str) -> None:
    namespace = guarded_demo
    for pod in kube.items("pods", namespace, "app=demo"):
        ip = pod["status"]["podIP"]
        text = urllib.request.urlopen(f"http://{ip}:9901/metrics", timeout=5).read().decode()
        requests = next(line for line in text.splitlines() if line.startswith("lameduck_sidecar_api_requests_total "))
        assert float(requests.split()[1]) == 0.0


def test_idle_sidecars_make_no_api_requests_by_the_audit_log(kube: Kube, guarded_demo: str, tmp_path: Path) -> None:
    """The API server's own count: no request from the pods' service account while idle,
    and the requests of one hold once a pod is deleted (so the count can see them), the
    learned ConfigMap's get and its hold report (one Event, posted once the app exited)
    included."""
    log = audit_log(kube)
    if log is None:
        pytest.skip("no API audit log to read (set LAMEDUCK_AUDIT_LOG to the API server's audit log file)")
    namespace = guarded_demo
    user = f"system:serviceaccount:{namespace}:default"
    assert audited_requests(log, user) == [], "idle sidecars asked the API nothing since the namespace was created"
    pod = first_pod(kube, namespace)
    sidecar = SidecarLog(kube, namespace, pod, tmp_path / "sidecar.log")
    kube.run("delete", "pod", pod, "-n", namespace, "--wait=false")
    sidecar.hold()
    wait_until(
        lambda: set(audited_requests(log, user)) >= {"list endpointslices", "get pods", "create events"},
        30,
        "the hold's requests appear in the audit log",
    )
    requests = audited_requests(log, user)
    assert set(requests) <= {
        "list endpointslices",
        "watch endpointslices",
        "get pods",
        "get configmaps",
        "create events",
    }
    assert requests.count("create events") == 1, "one hold report per termination"


def audit_log(kube: Kube) -> Path | None:
    configured = os.environ.get("LAMEDUCK_AUDIT_LOG")
    if configured:
        return Path(configured)
    if is_local(kube.kubeconfig) and LOCAL_AUDIT_LOG.exists():
        return LOCAL_AUDIT_LOG
    return None


def audited_requests(log: Path, user: str) -> list[str]:
    """'verb resource' of every request this user made, one per request."""
    requests = {}
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event.get("user", {}).get("username") == user:
            requests[event["auditID"]] = f"{event['verb']} {event.get('objectRef', {}).get('resource')}"
    return list(requests.values())


def test_in_lame_duck_mode_the_app_closes_each_connection_and_the_hold_counts_the_new_ones(
    kube: Kube, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """spec.hold.lameDuck: when the hold starts the sidecar asks the demo app for its lame-duck
    mode, so a keep-alive connection opened before the deletion is closed after its next
    response (while the pod is still held), and a client that keeps choosing the pod comes on
    new connections, which keep the hold until they stop."""
    start_guarded_demo(kube, namespace, hold={"lameDuck": {"port": 8080, "path": "/lameduck"}})
    pod = first_pod(kube, namespace)
    connection = http.client.HTTPConnection(pod_ip(kube, namespace, pod), 8080, timeout=2)
    connection.request("GET", "/")  # opened before the deletion, kept alive
    first = connection.getresponse()
    first.read()
    assert first.getheader("Connection") != "close", "before the hold the app keeps connections"
    log = SidecarLog(kube, namespace, pod, tmp_path / "sidecar.log")
    kube.run("delete", "pod", pod, "-n", namespace, "--wait=false")

    def closed_after_response() -> bool:
        connection.request("GET", "/")  # reopens by itself once the app closed the last one
        response = connection.getresponse()
        response.read()
        return response.getheader("Connection") == "close"

    wait_until(closed_after_response, 10, "the app closes each connection after its response", 0.2)
    end = time.monotonic() + 4
    while True:
        traffic_ended = time.time()  # the last request's start: the quiet period counts from it
        assert closed_after_response(), "every later response closes its connection"
        if time.monotonic() >= end:
            break
        time.sleep(0.3)  # pacing the requests (not a poll for a condition)
    connection.close()
    hold = log.hold()
    assert hold["lame_duck"] == "on"
    assert hold["outcome"] == "quiet"
    assert hold["connections_after_stage1"] >= 5, "each request after the first came on a new connection"
    released_at = hold["started_at"] + hold["seconds"]
    assert released_at >= traffic_ended + 1.0 - 0.4, "released only after a quiet period following the last request"
