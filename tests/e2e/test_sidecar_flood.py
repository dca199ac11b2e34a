"""A flood of calls to a sidecar's port from another pod of its namespace, on a real cluster:
what it may cost (reads of the pod, spaced and shared; memory) and what it may not do (delete
or restart the pod, shorten or use up the hold of its later deletion). docs/sidecar.md, "Who can
call the port, and what a call costs", has the rules; tests/unit/test_sidecar_calls.py checks
them against a fake API server.

The flood runs in pods of the demo image; the sidecar's metrics are read through the API
server's pod proxy and its memory by `kubectl exec` into its container, so nothing here needs
the pod network reachable from this machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.demo import SidecarLog, start_guarded_demo
from harness.images import DEMO_IMAGE, DEMO_PYTHON
from harness.install import Operator
from harness.kube import Kube, wait_until
from lameduck_operator.names import SIDECAR_NAME
from lameduck_sidecar.calls import MAX_CONTAINERS
from tests.e2e import sidecar_flood
from tests.e2e.test_faults_serving import logged_lines
from tests.e2e.test_sidecar import audit_log, audited_requests

FLOOD_SCRIPT = (Path(__file__).parent / "sidecar_flood.py").read_text()
# How the sidecar answers each kind of call of the flood (sidecar_flood.CALLS): a call to the
# hold with a name a container can have waits for a shared read of the pod, which finds it not
# being deleted; the other names are refused before the API is asked.
FLOOD_ANSWER = {
    "hold_app": "200 not_deleting",
    "hold_strangers": "200 not_deleting",
    "hold_invalid": "400",
    "hold_post": "405",
    "metrics": "200",
    "healthz": "200",
}
EXPECTED_FLOOD = {kind: {FLOOD_ANSWER[kind]: count} for kind, _, _, count in sidecar_flood.CALLS}
# The sidecar's RSS may grow this much during the first flood (buffers and objects for 50
# connections at once, kept by the allocator) and this much during the second: a cost per call
# would show in both. Rehearsed on this machine (the sidecar beside a fake API server): 0.8 MiB,
# then 0.1 MiB, from 24.6 MiB.
FIRST_FLOOD_GROWTH_KIB = 8 * 1024
SECOND_FLOOD_GROWTH_KIB = 2 * 1024
# The chart's memory request for the sidecar (values.yaml sidecar.resources.requests.memory).
SIDECAR_MEMORY_REQUEST_KIB = 48 * 1024
# The sidecar image's interpreter (the Dockerfile's venv).
SIDECAR_PYTHON = "/opt/lameduck/bin/python"
# Run in the sidecar's container: the VmRSS (KiB) of the sidecar's process, found by its command
# (its console script, whose interpreter is the image's venv python).
RSS_SCRIPT = """
import pathlib
for proc in pathlib.Path("/proc").glob("[0-9]*"):
    try:
        arguments = (proc / "cmdline").read_bytes().split(b"\\0")
        if any(a.endswith(b"/lameduck-sidecar") for a in arguments):
            status = (proc / "status").read_text().splitlines()
            print(next(line.split()[1] for line in status if line.startswith("VmRSS:")))
    except OSError:
        pass
"""

T = TypeVar("T")


def sidecar_port(pod: dict[str, Any]) -> int:
    """The port kubelet calls the hold on: the app container's preStop hook's."""
    return int(pod["spec"]["containers"][0]["lifecycle"]["preStop"]["httpGet"]["port"])


def sidecar_get(kube: Kube, namespace: str, pod: str, port: int, path: str) -> str:
    """A GET to the sidecar's port through the API server's pod proxy."""
    return kube.run("get", "--raw", f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy{path}").stdout


def sample(text: str, name: str, labels: str = "") -> float:
    """The sum of a metric's samples whose labels contain `labels`, in a /metrics text."""
    total = 0.0
    for line in text.splitlines():
        series = line.split(" ", 1)[0]
        if series.split("{", 1)[0] == name and labels in series:
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass(frozen=True)
class SidecarCounts:
    api_requests: float
    not_deleting: float  # calls to the hold answered at once: the pod is not being deleted
    invalid: float  # calls refused for their container name
    reads_not_deleting: float  # reads of the pod that found it not being deleted, one record each

    @classmethod
    def read(cls, kube: Kube, namespace: str, pod: str, port: int) -> SidecarCounts:
        text = sidecar_get(kube, namespace, pod, port, "/metrics")
        return cls(
            sample(text, "lameduck_sidecar_api_requests_total"),
            sample(text, "lameduck_sidecar_hold_calls_total", 'answer="not_deleting"'),
            sample(text, "lameduck_sidecar_hold_calls_total", 'answer="invalid_container"'),
            sample(text, "lameduck_sidecar_holds_total", 'outcome="not_deleting"'),
        )


def sidecar_rss_kib(kube: Kube, namespace: str, pod: str) -> int:
    done = kube.run("exec", pod, "-n", namespace, "-c", SIDECAR_NAME, "--", SIDECAR_PYTHON, "-c", RSS_SCRIPT)
    found = done.stdout.split()
    assert len(found) == 1, f"one sidecar process in {pod}'s sidecar container: {done.stdout!r}"
    return int(found[0])


def flood_pod(name: str, ip: str, port: int) -> dict[str, Any]:
    """A pod that runs sidecar_flood.py against ip:port once; no API token, no lameduck."""
    flood = {
        "name": "flood",
        "image": DEMO_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": [DEMO_PYTHON, "-c", FLOOD_SCRIPT, ip, str(port)],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "containers": [flood],
        },
    }


def flood(kube: Kube, namespace: str, name: str, ip: str, port: int) -> dict[str, Any]:
    """Run one flood from a pod of its own; its summary line (sidecar_flood.py)."""
    kube.apply(flood_pod(name, ip, port), namespace=namespace)

    def finished() -> bool:
        phase = (kube.get("pod", name, namespace).get("status") or {}).get("phase")
        assert phase != "Failed", kube.run("logs", name, "-n", namespace, check=False).stdout[-2000:]
        return phase == "Succeeded"

    wait_until(finished, 180, f"{name} has made its calls", 1)
    (summary,) = logged_lines(kube, name, namespace, "flood")
    return summary


def at_least(found: list[T], count: float) -> list[T] | None:
    """found once it has count items or more (for wait_until)."""
    return found if len(found) >= count else None


def restarts(pod: dict[str, Any]) -> dict[str, int]:
    statuses = (pod["status"].get("initContainerStatuses") or []) + (pod["status"].get("containerStatuses") or [])
    return {s["name"]: s["restartCount"] for s in statuses}


def test_a_flood_of_calls_from_another_pod_costs_a_read_a_second_and_no_memory_and_the_real_hold_is_full(
    kube: Kube, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """Twice, a pod in the namespace sends 500 calls to the demo pod's sidecar, 50 at a time, each
    on a new connection: 350 to the hold (250 for `app`, 100 for other names a container could
    have), 50 with names none can have, 25 POSTs, 75 scrapes and probes (sidecar_flood.py).
    Every call is answered as the sidecar's rules say (the pod is not being deleted); the
    sidecar's reads of its Pod, its only API requests, are at most one a second of the flood and
    one more (docs/sidecar.md: reads start at least 1 s apart, calls share them); each read is
    logged once, naming at most 16 callers; its RSS grows at most FIRST_FLOOD_GROWTH_KIB in the
    first flood and SECOND_FLOOD_GROWTH_KIB in the second, and stays within the chart's memory
    request; the pod is neither deleted nor restarted. Then the pod is deleted, and its hold is
    full: both stages, at least propagationDelay (2 s) in the second, ended `quiet`, and named
    only kubelet's caller.

    The count is the sidecar's own (lameduck_sidecar_api_requests_total); the API server's count
    of the same is the audit-log test below."""
    start_guarded_demo(kube, namespace, replicas=1)
    (pod,) = kube.items("pods", namespace, "app=demo")
    name, uid, ip, port = pod["metadata"]["name"], pod["metadata"]["uid"], pod["status"]["podIP"], sidecar_port(pod)
    log = SidecarLog(kube, namespace, name, tmp_path / "sidecar.log")
    # A call first, so that the hold's machinery is loaded before the memory is measured (any call
    # loads it: docs/sidecar.md#memory): through the API server, not from the namespace.
    warm = json.loads(sidecar_get(kube, namespace, name, port, "/hold/app"))
    assert warm["outcome"] == "not_deleting"
    counts = [SidecarCounts.read(kube, namespace, name, port)]
    rss = [sidecar_rss_kib(kube, namespace, name)]
    floods = []
    for round_ in (1, 2):
        floods.append(flood(kube, namespace, f"flood-{round_}", ip, port))
        counts.append(SidecarCounts.read(kube, namespace, name, port))
        rss.append(sidecar_rss_kib(kube, namespace, name))
    print(json.dumps({"floods": floods, "rss_kib": rss, "api_requests": [c.api_requests for c in counts]}))

    hold_calls = sum(n for kind, _, _, n in sidecar_flood.CALLS if FLOOD_ANSWER[kind] == "200 not_deleting")
    invalid_calls = sum(n for kind, _, _, n in sidecar_flood.CALLS if FLOOD_ANSWER[kind] == "400")
    for summary, before, after in zip(floods, counts[:-1], counts[1:], strict=True):
        assert summary["answers"] == EXPECTED_FLOOD, summary
        assert after.not_deleting - before.not_deleting == hold_calls, "every call to the hold was counted"
        assert after.invalid - before.invalid == invalid_calls, "every name no container has was refused"
        reads = after.api_requests - before.api_requests
        assert 1 <= reads <= summary["seconds"] + 1, f"{reads} API requests in a flood of {summary['seconds']}s"
    assert counts[-1].reads_not_deleting == counts[-1].api_requests, "each API request was a read of the pod"
    assert rss[1] - rss[0] <= FIRST_FLOOD_GROWTH_KIB, f"RSS (KiB) {rss}"
    assert rss[2] - rss[1] <= SECOND_FLOOD_GROWTH_KIB, f"RSS (KiB) {rss}"
    assert max(rss) <= SIDECAR_MEMORY_REQUEST_KIB, f"RSS (KiB) {rss}"
    now = kube.get("pod", name, namespace)
    assert now["metadata"]["uid"] == uid, "the pod is the one flooded"
    assert not now["metadata"].get("deletionTimestamp"), "the pod is not being deleted"
    assert restarts(now) == restarts(pod), "no container restarted"

    reads = int(counts[-1].api_requests)
    records = wait_until(lambda: at_least(log.holds(), reads), 30, f"the sidecar logs a record per read, {reads}")
    assert len(records) == reads, "one record per read"
    assert {r["outcome"] for r in records} == {"not_deleting"}
    assert max(len(r["containers"]) for r in records) <= MAX_CONTAINERS, "a record names at most 16 callers"
    kube.run("delete", "pod", name, "-n", namespace, "--wait=false")
    hold = log.hold(reads)
    assert hold["outcome"] == "quiet", hold
    assert hold["containers"] == ["app"], "the hold names kubelet's caller only"
    assert hold["stage1"] is not None, "a full hold: first the slices"
    assert hold["stage2"] >= 2.0, "then propagationDelay"


def test_a_flood_of_calls_costs_the_api_server_what_the_sidecar_counts_by_the_audit_log(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    """The API server's own count of the requests a flood (sidecar_flood.py, from a pod of the
    namespace) cost: only gets of the pod by the demo pods' service account, as many as the
    sidecar counted itself, at most one a second of the flood and one more. Needs the API
    server's audit log (the local harness's, or LAMEDUCK_AUDIT_LOG); without it this test skips
    and the flood's requests are counted only by the sidecar (the test above)."""
    log = audit_log(kube)
    if log is None:
        pytest.skip(
            "no API audit log to read (set LAMEDUCK_AUDIT_LOG to the API server's audit log file): "
            "the API server's count of a flood's requests is not checked"
        )
    start_guarded_demo(kube, namespace, replicas=1)
    user = f"system:serviceaccount:{namespace}:default"
    assert audited_requests(log, user) == [], "the idle sidecar asked the API nothing"
    (pod,) = kube.items("pods", namespace, "app=demo")
    name, port = pod["metadata"]["name"], sidecar_port(pod)
    summary = flood(kube, namespace, "flood", pod["status"]["podIP"], port)
    assert summary["answers"] == EXPECTED_FLOOD, summary
    counted = SidecarCounts.read(kube, namespace, name, port).api_requests
    requests = wait_until(
        lambda: at_least(audited_requests(log, user), counted),
        30,
        f"the audit log has the sidecar's {counted:g} requests",
    )
    print(json.dumps({"flood_seconds": summary["seconds"], "audited": len(requests), "counted": counted}))
    assert set(requests) == {"get pods"}, requests
    assert len(requests) == counted, "the sidecar counts every request it sends"
    assert len(requests) <= summary["seconds"] + 1, f"{len(requests)} requests in a flood of {summary['seconds']}s"
