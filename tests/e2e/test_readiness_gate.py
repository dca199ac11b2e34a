"""The readiness gate lameduck.dev/endpoints-ready on a real cluster: set True once the pod's Services
list it, True at once for a pod no Service selects, and never False on a pod being deleted."""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client, config, watch

from harness.install import Operator, every_replica_injects
from harness.kube import Kube, wait_until
from harness.manifests import demo_app, pause_deployment
from lameduck_operator.logic.decision import rollout_in_progress

GATE = "lameduck.dev/endpoints-ready"


def policy(namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lameduck.dev/v1alpha1",
        "kind": "GracefulPolicy",
        "metadata": {"name": "gated", "namespace": namespace},
        "spec": {"readinessGate": {"enabled": True}, **spec},
    }


def gate_condition(pod: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next((c for c in pod.get("status", {}).get("conditions") or [] if c["type"] == GATE), {})
    return found


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or [])


def live_pods(kube: Kube, namespace: str, selector: str) -> list[dict[str, Any]]:
    return [p for p in kube.items("pods", namespace, selector) if not p["metadata"].get("deletionTimestamp")]


def all_gated_and_ready(kube: Kube, namespace: str, selector: str, replicas: int, reason: str) -> bool:
    pods = live_pods(kube, namespace, selector)
    return len(pods) == replicas and all(
        {"conditionType": GATE} in (p["spec"].get("readinessGates") or [])
        and gate_condition(p).get("status") == "True"
        and gate_condition(p).get("reason") == reason
        and is_ready(p)
        for p in pods
    )


class ConditionRecorder:
    """Every version of every pod in a namespace, as the watch delivers it: (uid, name, terminating,
    the gate's status or None)."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.core = client.CoreV1Api(config.new_client_from_config(config_file=kube.kubeconfig))
        self.namespace = namespace
        self.seen: list[tuple[str, str, bool, str | None]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._observe, daemon=True)
        self.failure: BaseException | None = None

    def _observe(self) -> None:
        """Watches on from the last version seen, so no version of a pod is missed between two
        watches. The API server's watch cache may still be behind that version (504 "Too large
        resource version"): asked again. Any other failure is kept and raised by __exit__, so a
        recorder that stopped seeing makes the test fail rather than pass on what it missed."""
        version: str | None = None
        try:
            while not self.stop.is_set():
                stream = watch.Watch()
                kwargs: dict[str, Any] = {"timeout_seconds": 5}
                if version is not None:
                    kwargs["resource_version"] = version
                try:
                    for event in stream.stream(self.core.list_namespaced_pod, self.namespace, **kwargs):
                        pod = event["raw_object"]
                        meta = pod["metadata"]
                        version = meta.get("resourceVersion") or version
                        entry = (
                            meta["uid"],
                            meta["name"],
                            bool(meta.get("deletionTimestamp")),
                            gate_condition(pod).get("status"),
                        )
                        with self.lock:
                            self.seen.append(entry)
                        if self.stop.is_set():
                            stream.stop()
                except client.ApiException as err:
                    if err.status != 504:
                        raise
                    self.stop.wait(0.2)  # the watch cache catches up within moments
        except BaseException as err:
            self.failure = err

    def __enter__(self) -> ConditionRecorder:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        if self.failure is not None:
            raise AssertionError(f"the pod watch stopped: {self.failure!r}") from self.failure

    def entries(self) -> list[tuple[str, str, bool, str | None]]:
        with self.lock:
            return list(self.seen)


def test_pods_behind_a_service_become_ready_once_listed_and_a_restart_completes(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    deployment, service = demo_app("demo", replicas=3)
    kube.apply(policy(namespace, selector={"matchLabels": {"lameduck": "yes"}}))
    every_replica_injects(kube, namespace, deployment)
    kube.apply(service, deployment, namespace=namespace)
    template = kube.get("deployment", "demo", namespace)["spec"]["template"]["spec"]
    assert template["readinessGates"] == [{"conditionType": GATE}]
    wait_until(
        lambda: all_gated_and_ready(kube, namespace, "app=demo", 3, "EndpointsListed"),
        180,
        "the 3 demo pods carry the gate, True with reason EndpointsListed, and are Ready",
        interval=1,
    )
    first = live_pods(kube, namespace, "app=demo")
    assert all(gate_condition(p)["message"] == "listed by the EndpointSlices of Service demo" for p in first)
    assert all(gate_condition(p).get("lastTransitionTime") for p in first)
    old_uids = {p["metadata"]["uid"] for p in first}
    writes_before = operator.metric("lameduck_readiness_condition_writes_total", 'status="True"')

    with ConditionRecorder(kube, namespace) as recorder:
        kube.run("rollout", "restart", "deployment/demo", "-n", namespace)
        done = kube.run("rollout", "status", "deployment/demo", "-n", namespace, "--timeout=110s", check=False)
        assert done.returncode == 0, f"the restart did not complete: {done.stdout} {done.stderr}"
        wait_until(
            lambda: (
                all_gated_and_ready(kube, namespace, "app=demo", 3, "EndpointsListed")
                and not {p["metadata"]["uid"] for p in kube.items("pods", namespace, "app=demo")} & old_uids
            ),
            120,
            "the old pods are gone and 3 new ones are gated, True and Ready",
            interval=1,
        )
    entries = recorder.entries()
    assert not rollout_in_progress(kube.get("deployment", "demo", namespace))
    terminating_false = [
        (name, status) for _, name, terminating, status in entries if terminating and status == "False"
    ]
    assert terminating_false == [], "a terminating pod's gate was set False"
    old_statuses = {status for uid, _, _, status in entries if uid in old_uids}
    assert old_statuses == {"True"}, f"the old pods' gate was {old_statuses} during the rollout"
    assert any(terminating for uid, _, terminating, _ in entries if uid in old_uids), "the old pods were seen deleted"
    new = {uid for uid, _, _, _ in entries} - old_uids
    assert len(new) >= 3
    for uid in new:
        statuses = [status for u, _, _, status in entries if u == uid and status is not None]
        # False (not listed yet) first, or straight True; once True, never False again.
        assert "True" in statuses, f"new pod {uid}: {statuses}"
        assert "False" not in statuses[statuses.index("True") :], f"new pod {uid}: {statuses}"
    assert operator.metric("lameduck_readiness_condition_writes_total", 'status="True"') >= writes_before + 3


def test_a_pod_no_service_selects_is_true_with_no_service(kube: Kube, operator: Operator, namespace: str) -> None:
    # A Service in the namespace that selects other pods does not hold these back.
    other = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "other"},
        "spec": {"selector": {"app": "other"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    kube.apply(other, pause_deployment("worker", labels={"lameduck": "yes"}, replicas=2), namespace=namespace)
    kube.apply(
        policy(
            namespace,
            apply="Immediate",
            selector={"matchLabels": {"lameduck": "yes"}},
            hold={"method": "Sleep", "maxHold": "1s", "propagationDelay": "0s", "quietPeriod": "0s"},
            drainTimeout="1s",
        )
    )
    wait_until(
        lambda: all_gated_and_ready(kube, namespace, "app=worker", 2, "NoService"),
        120,
        "both worker pods are True with reason NoService, and Ready",
        interval=1,
    )
    pod = live_pods(kube, namespace, "app=worker")[0]
    assert gate_condition(pod)["message"] == "no Service selects the pod"
