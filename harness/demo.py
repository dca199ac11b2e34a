"""The demo app under load while something disrupts it, and how its pods ended: what the
stop-mode and observability e2e tests and bench.termination_visibility share."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, config, watch

from harness.cluster import Kube
from harness.loadgen import LoadGenerator, LoadResult, under_load

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
