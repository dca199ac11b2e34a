"""What the rollout benchmark watches during a run: pods coming and going (with the times
each new pod's containers started and it became ready), series sampled from the data plane,
and the SYNs nobody answered."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, watch

from harness.kube import Kube
from lameduck_operator.names import REPORT_SELECTOR


@dataclass
class PodLife:
    """When this machine saw each step of one pod's life (watch events, not the API's
    second-resolution stamps)."""

    seen: float
    ip: str = ""
    running: dict[str, float] = field(default_factory=dict)  # container -> first seen running
    ready: float | None = None
    deleting: float | None = None
    gone: float | None = None
    # the app container's end: exit code and reason, as kubelet reported it
    exit: dict[str, Any] | None = None
    exited: float | None = None  # when its terminated state was first seen


class PodWatch:
    """Every pod of one app label, from a watch in a thread of its own."""

    def __init__(self, api: client.CoreV1Api, namespace: str, app: str) -> None:
        self.api = api
        self.namespace = namespace
        self.app = app
        self.pods: dict[str, PodLife] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def deleting(self) -> dict[str, float]:
        return {n: p.deleting for n, p in self.pods.items() if p.deleting is not None}

    @property
    def gone(self) -> dict[str, float]:
        return {n: p.gone for n, p in self.pods.items() if p.gone is not None}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch()
            except Exception as err:  # a watch can expire or time out: start another
                print(f"  (pod watch restarted: {type(err).__name__} {getattr(err, 'status', '')})", flush=True)
                time.sleep(0.2)

    def _watch(self) -> None:
        stream = watch.Watch()
        for event in stream.stream(
            self.api.list_namespaced_pod, self.namespace, label_selector=f"app={self.app}", timeout_seconds=60
        ):
            self.observe(event["type"], event["raw_object"], time.time())
            if self._stop.is_set():
                stream.stop()

    def observe(self, kind: str, body: dict[str, Any], now: float) -> None:
        name = body["metadata"]["name"]
        life = self.pods.setdefault(name, PodLife(seen=now))
        status = body.get("status") or {}
        life.ip = status.get("podIP") or life.ip
        for each in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            if "running" in (each.get("state") or {}):
                life.running.setdefault(each["name"], now)
            if each["name"] == "app":
                ended = (each.get("state") or {}).get("terminated") or (each.get("lastState") or {}).get("terminated")
                if ended:
                    life.exit = {"exit_code": ended.get("exitCode"), "reason": ended.get("reason")}
                if (each.get("state") or {}).get("terminated") and life.exited is None:
                    life.exited = now
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        if ready and life.ready is None:
            life.ready = now
        if body["metadata"].get("deletionTimestamp") and life.deleting is None:
            life.deleting = now
        if kind == "DELETED" and life.gone is None:
            life.gone = now

    def check_gone(self, kube: Kube, names: set[str]) -> bool:
        """Also list, so a watch that restarted misses no deletion."""
        present = {p["metadata"]["name"] for p in kube.items("pods", self.namespace, f"app={self.app}")}
        now = time.time()
        for name in names - present:
            life = self.pods.setdefault(name, PodLife(seen=now))
            life.gone = life.gone or now
        return all(self.pods[name].gone is not None for name in names)

    def gone_of(self, names: set[str]) -> set[str]:
        return {n for n in names if n in self.pods and self.pods[n].gone is not None}

    def report(self, old: set[str], origin: float) -> dict[str, Any]:
        """Each old pod's deletion, disappearance and app exit, in seconds since `origin`."""

        def since(t: float | None) -> float | None:
            return None if t is None else round(t - origin, 2)

        return {
            n: {
                "deleted_at": since(self.pods[n].deleting),
                "gone_at": since(self.pods[n].gone),
                "exit": self.pods[n].exit,
                "exited_at": since(self.pods[n].exited),
            }
            for n in sorted(old)
            if n in self.pods
        }

    def startup_phases(self, old: set[str], origin: float) -> list[dict[str, float | None]]:
        """For each pod that appeared after `origin`: seconds from its creation until each of
        its containers ran and until it was ready."""
        found = []
        for name, life in sorted(self.pods.items(), key=lambda item: item[1].seen):
            if name in old or life.seen < origin:
                continue
            phases: dict[str, float | None] = {"created_at": round(life.seen - origin, 2)}
            for container, at in life.running.items():
                phases[f"{container}_running"] = round(at - life.seen, 2)
            phases["ready"] = None if life.ready is None else round(life.ready - life.seen, 2)
            found.append(phases)
        return found

    def attribute_syns(
        self, before: set[tuple[str, str]] | None, after: set[tuple[str, str]] | None, old: set[str]
    ) -> dict[str, int] | None:
        """Unanswered SYNs of the run, by the pod they went to."""
        if before is None or after is None:
            return None
        by_ip = {life.ip: name for name, life in self.pods.items() if life.ip}
        found: dict[str, int] = {}
        for _, ip in after - before:
            who = by_ip.get(ip, ip)
            label = f"{who} (old pod)" if who in old else f"{who} (new pod)" if who in self.pods else who
            found[label] = found.get(label, 0) + 1
        return found


def hold_report_events(kube: Kube, namespace: str, pods: set[str], timeout: float = 15.0) -> list[dict[str, Any]]:
    """The sidecars' hold report Events in the namespace, polled until each of `pods` has one
    or the deadline passes (a sidecar posts its report after the app's exit, at times just
    after the pod is gone)."""
    deadline = time.monotonic() + timeout
    while True:
        events = kube.items("events", namespace, REPORT_SELECTOR)
        reported = {(e.get("involvedObject") or {}).get("name") for e in events}
        if pods <= reported or time.monotonic() >= deadline:
            return events
        time.sleep(0.5)  # the poll interval, bounded by the deadline above


def unanswered_syns(service_ip: str) -> set[tuple[str, str]] | None:
    """(client port, pod IP) of every connection to the Service whose SYN the pod never
    answered, from this node's conntrack table (local cluster only; None without it)."""
    if not shutil.which("conntrack"):
        return None
    listed = subprocess.run(
        ["conntrack", "-L", "-p", "tcp", "--orig-dst", service_ip, "--state", "SYN_SENT"],
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:
        return None
    found = set()
    for line in listed.stdout.splitlines():
        # the first sport= is the client's port; the second src= the pod the SYN went to
        ports = [f.split("=", 1)[1] for f in line.split() if f.startswith("sport=")]
        sources = [f.split("=", 1)[1] for f in line.split() if f.startswith("src=")]
        if "[UNREPLIED]" in line and len(sources) == 2 and ports:
            found.add((ports[0], sources[1]))
    return found
