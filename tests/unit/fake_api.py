"""An in-memory API server for Fleet tests: server-side apply by field manager, roughly.

Each Deployment keeps what other managers set (``base``) and what lameduck applied; the
stored object is their merge, with managedFields trees so ownership logic sees real input.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonpatch

from lameduck_operator.logic.decision import DeploymentEvent
from lameduck_operator.logic.event_batches import PolicyEvent
from lameduck_operator.logic.merge import merge
from lameduck_operator.logic.ownership import merge_trees, restrict
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.model import PolicyRef
from lameduck_operator.names import FINALIZER

KEYED = {"containers": "name", "initContainers": "name", "env": "name"}


def fields_tree(value: Any, key: str | None = None) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {f"f:{k}": fields_tree(v, k) for k, v in value.items()}
    if isinstance(value, list) and key in KEYED:
        return {
            f"k:{json.dumps({KEYED[key]: item[KEYED[key]]})}": {".": {}, **fields_tree(item)}
            for item in value
            if isinstance(item, Mapping)
        }
    return {}


def _take(base: Any, applied: Any, key: str | None = None) -> None:
    """A forced apply takes differing values from other managers: they stop owning them."""
    if not isinstance(base, dict) or not isinstance(applied, Mapping):
        return
    for name, value in applied.items():
        if name not in base:
            continue
        if isinstance(value, Mapping):
            _take(base[name], value, name)
        elif isinstance(value, list) and name in KEYED and isinstance(base[name], list):
            by_key = {item.get(KEYED[name]): item for item in base[name] if isinstance(item, dict)}
            for item in value:
                _take(by_key.get(item.get(KEYED[name])), item)
        elif base[name] != value:
            del base[name]


def stored_values(view: Mapping[str, Any]) -> dict[str, Any]:
    """A stored Deployment's values: without managedFields, generation, resourceVersion and status."""
    out = copy.deepcopy(dict(view))
    for key in ("managedFields", "generation", "resourceVersion"):
        out["metadata"].pop(key, None)
    out.pop("status", None)
    return out


def _owned(intent: Mapping[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(dict(intent))
    body.pop("apiVersion", None)
    body.pop("kind", None)
    meta = body.get("metadata", {})
    meta.pop("name", None)
    meta.pop("namespace", None)
    return body


@dataclass
class StoredDeployment:
    base: dict[str, Any]
    applied: dict[str, Any] = field(default_factory=dict)
    generation: int = 1
    base_time: str = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = field(default_factory=dict)
    writes: int = 0

    def view(self) -> dict[str, Any]:
        obj = merge(self.base, self.applied) if self.applied else copy.deepcopy(self.base)
        entries = [
            {"manager": "kubectl", "operation": "Update", "time": self.base_time, "fieldsV1": fields_tree(self.base)}
        ]
        if self.applied:
            entries.append(
                {
                    "manager": "lameduck",
                    "operation": "Apply",
                    "time": "2026-01-01T00:00:01Z",
                    "fieldsV1": fields_tree(self.applied),
                }
            )
        obj["metadata"]["managedFields"] = entries
        obj["metadata"]["generation"] = self.generation
        obj["status"] = copy.deepcopy(self.status)
        # Changes with whatever changed in it (the API server's does at every stored change; the
        # tests change the fake's fields directly too).
        digest = hashlib.sha256(json.dumps([obj, self.writes], sort_keys=True).encode()).hexdigest()[:12]
        obj["metadata"]["resourceVersion"] = digest
        return obj


class FakeApi:
    def __init__(self) -> None:
        self.deployments: dict[tuple[str, str], StoredDeployment] = {}
        self.statuses: dict[PolicyRef, dict[str, Any]] = {}
        self.finalizers: dict[PolicyRef, bool] = {}
        self.events: list[tuple[str, DeploymentEvent]] = []
        self.policy_events: list[tuple[PolicyEvent, str | None]] = []
        self.calls: list[str] = []
        self.sidecar_access: dict[str, list[str]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.fail_next: dict[str, Exception] = {}
        # Per namespace, the lameduck-learned ConfigMap's data (only lameduck writes it here, so
        # an apply leaves exactly the keys applied, as server-side apply does for a sole owner).
        self.learned: dict[str, dict[str, str]] = {}

    def add(self, body: dict[str, Any], replicas: int = 1) -> dict[str, Any]:
        body = copy.deepcopy(body)
        body["spec"]["replicas"] = replicas
        stored = StoredDeployment(base=body)
        stored.status = {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas,
        }
        self.deployments[(body["metadata"]["namespace"], body["metadata"]["name"])] = stored
        return stored.view()

    def view(self, namespace: str, name: str) -> dict[str, Any]:
        return self.deployments[(namespace, name)].view()

    def edit_base(self, namespace: str, name: str, edit: Any, when: str = "2026-02-01T00:00:00Z") -> dict[str, Any]:
        stored = self.deployments[(namespace, name)]
        edit(stored.base)
        stored.base_time = when
        return self._bump(stored)

    def complete_rollout(self, namespace: str, name: str) -> dict[str, Any]:
        stored = self.deployments[(namespace, name)]
        replicas = stored.base["spec"]["replicas"]
        stored.status = {
            "observedGeneration": stored.generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas,
        }
        return stored.view()

    def start_pod(self, namespace: str, deployment: str, name: str) -> dict[str, Any]:
        """A running pod of the Deployment's template as it is stored now (as its ReplicaSet would start it)."""
        template = self.view(namespace, deployment)["spec"]["template"]
        pod = {
            "metadata": {"name": name, "namespace": namespace, "labels": copy.deepcopy(template["metadata"]["labels"])},
            "spec": copy.deepcopy(template["spec"]),
            "status": {"phase": "Running"},
        }
        self.pods[(namespace, name)] = pod
        return pod

    def _bump(self, stored: StoredDeployment) -> dict[str, Any]:
        stored.generation += 1
        stored.status = {**stored.status, "updatedReplicas": 0}
        return stored.view()

    def _maybe_fail(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail_next:
            raise self.fail_next.pop(name)

    async def apply_deployment(self, intent: Mapping[str, Any], force: bool) -> dict[str, Any]:
        meta = intent["metadata"]
        self._maybe_fail(f"apply {meta['namespace']}/{meta['name']}")
        stored = self.deployments[(meta["namespace"], meta["name"])]
        before = stored.view()["spec"]["template"]
        stored.applied = _owned(intent) if len(intent["metadata"]) > 2 or "spec" in intent else {}
        if force:
            _take(stored.base, stored.applied)
        stored.writes += 1
        after = stored.view()
        if after["spec"]["template"] != before:
            return self._bump(stored)
        return after

    async def patch_deployment(self, ref: DeploymentRef, patch: list[dict[str, Any]]) -> dict[str, Any]:
        """As the API server does: the test ops guard, the result becomes the stored object (whose
        fields the fake attributes to the other manager, as admission-injected fields are). A patch
        of managedFields alone that leaves lameduck an apply entry moves values between the two as
        the entries now say."""
        self._maybe_fail(f"patch {ref}")
        stored = self.deployments[(ref.namespace, ref.name)]
        before = stored.view()
        patched = jsonpatch.apply_patch(before, patch)
        entries = patched["metadata"].get("managedFields") or []
        after = stored_values(patched)
        ours = [e["fieldsV1"] for e in entries if (e["manager"], e["operation"]) == ("lameduck", "Apply")]
        if ours and after == stored_values(before):
            theirs = merge_trees([e["fieldsV1"] for e in entries if e["manager"] != "lameduck"])
            stored.base, stored.applied = restrict(after, theirs), _owned(restrict(after, merge_trees(ours)))
        else:
            stored.base, stored.applied = after, {}
        stored.writes += 1
        if after["spec"]["template"] != before["spec"]["template"]:
            return self._bump(stored)
        return stored.view()

    async def take_over(
        self, ref: DeploymentRef, patch: list[dict[str, Any]], intent: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The patch's tests guard; the preStop hooks it replaces leave the other manager (the API
        server gives them to lameduck-takeover, whose entry goes once the apply owns them); then
        the apply."""
        self._maybe_fail(f"take over {ref}")
        stored = self.deployments[(ref.namespace, ref.name)]
        after = jsonpatch.apply_patch(stored.view(), patch)
        containers = after["spec"]["template"]["spec"]["containers"]
        hooks = {c["name"]: c.get("lifecycle", {}).get("preStop") for c in containers}
        for c in stored.base["spec"]["template"]["spec"]["containers"]:
            if c.get("lifecycle", {}).get("preStop") not in (None, hooks.get(c["name"])):
                del c["lifecycle"]["preStop"]
        return await self.apply_deployment(intent, True)

    async def apply_policy_status(self, ref: PolicyRef, status: Mapping[str, Any]) -> None:
        self._maybe_fail(f"status {ref}")
        self.statuses[ref] = dict(status)

    async def set_policy_finalizer(self, ref: PolicyRef, present: bool) -> None:
        self._maybe_fail(f"finalizer {ref}")
        self.finalizers[ref] = present

    async def post_event(self, deployment: Mapping[str, Any], event: DeploymentEvent) -> None:
        self.events.append((deployment["metadata"]["name"], event))

    async def post_policy_event(self, event: PolicyEvent, uid: str | None) -> None:
        self._maybe_fail(f"event {event.policy}")
        self.policy_events.append((event, uid))

    async def apply_sidecar_rbac(self, namespace: str, service_accounts: list[str]) -> None:
        self._maybe_fail(f"rbac {namespace}")
        self.sidecar_access[namespace] = service_accounts

    async def delete_sidecar_rbac(self, namespace: str) -> None:
        self._maybe_fail(f"rbac delete {namespace}")
        del self.sidecar_access[namespace]

    async def list_pods(self, namespace: str) -> list[dict[str, Any]]:
        self._maybe_fail(f"pods {namespace}")
        return [copy.deepcopy(pod) for (ns, _), pod in self.pods.items() if ns == namespace]

    async def read_learned(self, namespace: str) -> dict[str, str] | None:
        self._maybe_fail(f"learned read {namespace}")
        data = self.learned.get(namespace)
        return None if data is None else dict(data)

    async def apply_learned(self, namespace: str, data: Mapping[str, str]) -> None:
        self._maybe_fail(f"learned {namespace}")
        self.learned[namespace] = dict(data)


def policy_body(
    name: str, namespace: str | None = "shop", spec: dict[str, Any] | None = None, **meta: Any
) -> dict[str, Any]:
    kind = "GracefulPolicy" if namespace else "ClusterGracefulPolicy"
    metadata: dict[str, Any] = {"name": name, "generation": 1, **meta}
    if namespace:
        metadata["namespace"] = namespace
    if "finalizers" not in metadata:
        metadata["finalizers"] = [FINALIZER]
    return {"apiVersion": "lameduck.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec or {}}
