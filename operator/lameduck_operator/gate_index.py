"""The readiness gate's index: what judging lameduck.dev/endpoints-ready needs of the cluster,
fed by shared watches, and which pods the next batch must judge.

It keeps only what the decision needs (logic/readiness.py's views, never whole bodies, and pods
only when they carry the gate). Events mark what they can affect: a pod itself, or the pods a
Service selects (before and after a change of it or of one of its slices).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from lameduck_operator.logic.readiness import (
    GateCondition,
    Listed,
    PodView,
    ServiceView,
    SliceView,
    condition_for,
    listings,
    pod_view,
    service_view,
    slice_view,
)


class GateIndex:
    def __init__(self) -> None:
        # By namespace: gated pods by uid, Services with a selector by name, slices by name.
        self.pods: dict[str, dict[str, PodView]] = {}
        self.services: dict[str, dict[str, ServiceView]] = {}
        self.slices: dict[str, dict[str, SliceView]] = {}
        self._listed: dict[str, dict[tuple[str, str], Listed]] = {}
        # What the next batch judges: pods by uid, the pods of Services by name (as they are
        # now), and the pods of Services as they were before a change.
        self._dirty_pods: dict[str, set[str]] = defaultdict(set)
        self._dirty_services: dict[str, set[str]] = defaultdict(set)
        self._dropped: dict[str, list[ServiceView]] = defaultdict(list)
        # Set when something is marked: the batch loop waits on it.
        self.wake = asyncio.Event()
        # Pods whose write found them changed before their new version was seen.
        self._stale: set[str] = set()

    def pod_seen(self, body: Mapping[str, Any], deleted: bool = False) -> str | None:
        """Keep or drop the pod; the uid of a pod no longer kept (gone, ungated or finished)."""
        view = pod_view(body)
        in_namespace = self.pods.get(view.namespace)
        old = in_namespace.get(view.uid) if in_namespace else None
        if deleted or not view.gated or view.finished:
            if in_namespace is not None and old is not None:
                del in_namespace[view.uid]
                if not in_namespace:
                    del self.pods[view.namespace]
            self._stale.discard(view.uid)
            return view.uid
        self.pods.setdefault(view.namespace, {})[view.uid] = view
        if old is None or not old.same_for_the_gate(view) or view.uid in self._stale:
            self._stale.discard(view.uid)
            self.mark(view.namespace, view.uid)
        return None

    def service_seen(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        view = service_view(body)
        in_namespace = self.services.setdefault(view.namespace, {})
        old = in_namespace.get(view.name)
        new = None if deleted or not view.selector else view
        if new is None:
            in_namespace.pop(view.name, None)
            if not in_namespace:
                del self.services[view.namespace]
        else:
            in_namespace[view.name] = new
        if old == new or view.namespace not in self.pods:
            return
        if old is not None:
            self._dropped[view.namespace].append(old)
        if new is not None:
            self._dirty_services[view.namespace].add(view.name)
        self.wake.set()

    def slice_seen(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        view = slice_view(body)
        in_namespace = self.slices.setdefault(view.namespace, {})
        old = in_namespace.get(view.name)
        new = None if deleted or view.service is None else view
        if new is None:
            in_namespace.pop(view.name, None)
            if not in_namespace:
                del self.slices[view.namespace]
        else:
            in_namespace[view.name] = new
        if old == new:
            return  # e.g. only the endpoints' conditions changed: listed is listed
        self._listed.pop(view.namespace, None)
        if view.namespace not in self.pods:
            return
        for changed in (old, new):
            if changed is not None and changed.service is not None:
                self._dirty_services[view.namespace].add(changed.service)
        self.wake.set()

    def everything_dirty(self) -> None:
        """Judge every gated pod at the next batch (when this replica starts leading)."""
        for namespace, pods in self.pods.items():
            self._dirty_pods[namespace].update(pods)
        self.wake.set()

    def mark(self, namespace: str, uid: str) -> None:
        """Judge the pod at the next batch."""
        self._dirty_pods[namespace].add(uid)
        self.wake.set()

    def stale(self, uid: str) -> None:
        """A write found the pod changed before its new version was seen: judge that one when it arrives."""
        self._stale.add(uid)

    @property
    def marked(self) -> bool:
        return bool(self._dirty_pods or self._dirty_services or self._dropped)

    def due(self, now: datetime) -> list[tuple[PodView, GateCondition]]:
        """The writes the marked pods need at `now`; clears the marks."""
        pods_marked, self._dirty_pods = self._dirty_pods, defaultdict(set)
        services_marked, self._dirty_services = self._dirty_services, defaultdict(set)
        dropped, self._dropped = self._dropped, defaultdict(list)
        writes: list[tuple[PodView, GateCondition]] = []
        for namespace in sorted(set(pods_marked) | set(services_marked) | set(dropped)):
            pods = self.pods.get(namespace)
            if not pods:
                continue
            services = self.services.get(namespace, {})
            touched = [
                *dropped.get(namespace, ()),
                *(services[n] for n in services_marked.get(namespace, ()) if n in services),
            ]
            uids = set(pods_marked.get(namespace, ()))
            if touched:
                uids.update(uid for uid, pod in pods.items() if any(s.selects(pod) for s in touched))
            listed = self._listed_in(namespace)
            for uid in sorted(uids):
                pod = pods.get(uid)
                if pod is None:
                    continue
                condition = condition_for(pod, services.values(), listed, now)
                if condition is not None:
                    writes.append((pod, condition))
        return writes

    def _listed_in(self, namespace: str) -> dict[tuple[str, str], Listed]:
        found = self._listed.get(namespace)
        if found is None:
            found = listings(self.slices.get(namespace, {}).values())
            self._listed[namespace] = found
        return found
