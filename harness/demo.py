"""The demo app under a policy, as the e2e tests and benchmarks run it: started and steady,
under load while something disrupts it, how its pods ended, and its sidecars' hold records."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from harness.kube import Kube, wait_until
from harness.loadgen import LoadGenerator, LoadResult, under_load
from harness.manifests import demo_app, guarded, learned_config_map
from lameduck_operator.logic.decision import rollout_in_progress

# Requests a second that load_during sends to the demo's ClusterIP.
LOAD_RATE = 200


def load_during(
    kube: Kube, namespace: str, disruption: Callable[[], None], clients: str = "mixed"
) -> tuple[LoadResult, dict[str, float]]:
    """~LOAD_RATE requests a second to the demo's ClusterIP for 2 s, while `disruption` runs (in a
    thread), and 2 s after it; the result, and when (seconds since the load began) the
    disruption started and ended."""
    ip = kube.get("service", "demo", namespace)["spec"]["clusterIP"]
    generator = LoadGenerator(f"http://{ip}/", rate=LOAD_RATE, clients=clients)
    marks: dict[str, float] = {}

    def timed() -> None:
        marks["disruption_from"] = time.monotonic() - generator.started
        disruption()
        marks["disruption_until"] = time.monotonic() - generator.started

    result = asyncio.run(under_load(generator, timed, before=2, after=2))
    marks["load_seconds"] = time.monotonic() - generator.started
    return result, marks


class PodEnds:
    """Watches the demo's pods (list, then watch from the list's version, in a thread; a watch
    that breaks is listed and watched again) and keeps, per pod, the deletionTimestamp and
    grace period of its deletion, and how its app container terminated, as the last event
    before the pod was gone showed it."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.api = client.CoreV1Api(config.new_client_from_config(config_file=kube.kubeconfig))
        self.namespace = namespace
        self.deletion: dict[str, dict[str, Any]] = {}
        self.terminated: dict[str, dict[str, Any]] = {}
        self.seen: set[str] = set()
        self.gone: set[str] = set()
        self.broken_watches: list[str] = []
        self.stopped = threading.Event()
        self.stream = watch.Watch()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _see(self, pod: dict[str, Any], deleted: bool = False) -> None:
        name = pod["metadata"]["name"]
        self.seen.add(name)
        if pod["metadata"].get("deletionTimestamp") and name not in self.deletion:
            # the first: kubelet deletes the pod again, at once, once its containers are gone
            self.deletion[name] = {
                "at": pod["metadata"]["deletionTimestamp"],
                "grace": pod["metadata"].get("deletionGracePeriodSeconds"),
            }
        for status in pod.get("status", {}).get("containerStatuses") or []:
            if status["name"] == "app" and "terminated" in (status.get("state") or {}):
                self.terminated[name] = status["state"]["terminated"]
        if deleted:
            self.gone.add(name)

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                listed = self.api.list_namespaced_pod(self.namespace, label_selector="app=demo")
                body: dict[str, Any] = self.api.api_client.sanitize_for_serialization(listed)
                for pod in body["items"]:
                    self._see(pod)
                self.gone |= self.seen - {p["metadata"]["name"] for p in body["items"]}
                for event in self.stream.stream(
                    self.api.list_namespaced_pod,
                    self.namespace,
                    label_selector="app=demo",
                    resource_version=body["metadata"]["resourceVersion"],
                    timeout_seconds=60,
                ):
                    if event["type"] == "ERROR":  # e.g. the version expired: list again
                        break
                    self._see(event["raw_object"], deleted=event["type"] == "DELETED")
            except Exception as err:  # a broken watch: list and watch again
                self.broken_watches.append(repr(err)[:200])
                self.stopped.wait(0.5)  # back off before listing again (not a poll)

    def stop(self) -> None:
        self.stopped.set()
        self.stream.stop()


def steady(kube: Kube, namespace: str, name: str = "demo", replicas: int = 3) -> bool:
    """No rollout in progress, and exactly `replicas` pods, all ready and none being deleted."""
    pods = kube.items("pods", namespace, f"app={name}")
    ready = [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and p.get("status", {}).get("containerStatuses")
        and all(c.get("ready") for c in p["status"]["containerStatuses"])
    ]
    return (
        not rollout_in_progress(kube.get("deployment", name, namespace))
        and len(pods) == replicas
        and len(ready) == replicas
    )


def start_guarded_demo(
    kube: Kube,
    namespace: str,
    *,
    replicas: int = 3,
    app_env: Mapping[str, str] | None = None,
    grace_period: int | None = None,
    learned: float | None = 0.0,
    readiness_probe: bool = True,
    **spec: Any,
) -> None:
    """The demo app (`replicas`, its container's env plus app_env, the template's
    terminationGracePeriodSeconds if given: lameduck never lowers the API server's default of
    30 s; readiness_probe=False: none, see demo_app) behind a ClusterIP Service, under
    guarded(namespace, **spec); returns once compliant and steady with its sidecars.

    `learned`: the demo's history, as if earlier rollouts had taught it (0: its late traffic
    was only pinned clients, so a busy keep-alive connection is waited for propagationDelay, as
    the tests that assert `quiet` holds under pinned load expect); None: no history, so every
    hold learns and waits for busy connections until they go quiet, up to maxHold."""
    if learned is not None:
        kube.apply(learned_config_map({"demo": learned}), namespace=namespace)
    deployment, service = demo_app(replicas=replicas, readiness_probe=readiness_probe)
    if app_env:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        container["env"] = [{"name": k, "value": v} for k, v in app_env.items()]
    if grace_period is not None:
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = grace_period
    kube.apply(deployment, service, namespace=namespace)
    kube.apply(guarded(namespace, **spec))
    wait_until(
        lambda: kube.get("gracefulpolicy", "guard", namespace).get("status", {}).get("compliant") == 1,
        60,
        "the demo is compliant",
    )
    wait_until(lambda: steady(kube, namespace, replicas=replicas), 180, "the demo runs with its sidecars", 0.5)


class SidecarLog:
    """Follows one pod's sidecar log (`kubectl logs -f`, until the pod is gone) into a file;
    reads its hold records (one JSON line each, written when the hold ends)."""

    def __init__(self, kube: Kube, namespace: str, pod: str, path: Path) -> None:
        self.pod = pod
        self.path = path
        self.process = subprocess.Popen(
            [kube.binary, "--kubeconfig", kube.kubeconfig, "logs", "-f", pod, "-c", "lameduck", "-n", namespace],
            stdout=path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: b'"event": "start"' in path.read_bytes(), 30, f"the sidecar log of {pod} is followed")

    def holds(self) -> list[dict[str, Any]]:
        """The hold records logged so far (answers at once included)."""
        lines = self.path.read_text().splitlines()
        return [json.loads(line) for line in lines if '"event": "hold"' in line]

    def hold(self, index: int = 0, *, last: bool = True, timeout: float = 120) -> dict[str, Any]:
        """The index-th hold record, waiting for it; last: stop following."""
        try:
            record: dict[str, Any] = wait_until(
                lambda: self.holds()[index] if len(self.holds()) > index else None,
                timeout,
                f"the sidecar of {self.pod} logs hold record {index}",
            )
            return record
        finally:
            if last:
                self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
