"""Deployments far wider than any real one: many containers, each with env and ports, and the
managedFields the API server would record for them. For the tests and the benchmark of how the
webhook and the reconciler scale with a Deployment's size."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonpatch

from harness import manifests

NAMESPACE = "scale"
WRITER = "kubectl-create"


def container(index: int) -> dict[str, Any]:
    name = f"c{index}"
    return {
        "name": name,
        "image": f"example.com/{name}:1",
        "env": [{"name": f"VAR_{k}", "value": f"{name}-{k}"} for k in range(3)],
        "ports": [
            {"containerPort": 20000 + 2 * index + k, "protocol": "TCP"} for k in range(2)
        ],  # clear of 9901, the sidecar's
    }


def deployment(containers: int) -> dict[str, Any]:
    """Deployment `scale` (labels app=scale) in namespace `scale`, with that many containers, no replicas."""
    return manifests.deployment(
        "scale", [container(i) for i in range(containers)], namespace=NAMESPACE, labels={"app": "scale"}, replicas=0
    )


def fields_v1(value: Any) -> dict[str, Any]:
    """The FieldsV1 tree a manager that set all of value owns: keyed lists as the API server keys them."""
    if isinstance(value, Mapping):
        tree: dict[str, Any] = {}
        for key, sub in value.items():
            if isinstance(sub, list) and sub and all(isinstance(i, Mapping) for i in sub):
                tree[f"f:{key}"] = {_selector(key, i): {".": {}, **fields_v1(i)} for i in sub}
            else:
                tree[f"f:{key}"] = fields_v1(sub)
        return tree
    return {}


def _selector(key: str, item: Mapping[str, Any]) -> str:
    if key == "ports":
        return "k:" + json.dumps({"containerPort": item["containerPort"], "protocol": item.get("protocol", "TCP")})
    return "k:" + json.dumps({"name": item.get("name")})


def stored(obj: Mapping[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """obj as the API server keeps it after the webhook's patch: lameduck's fields attributed to the writer."""
    after: dict[str, Any] = jsonpatch.apply_patch(obj, patch)
    owned = {k: v for k, v in obj.items() if k in ("metadata", "spec")}
    entry = {
        "manager": WRITER,
        "operation": "Update",
        "apiVersion": "apps/v1",
        "time": "2025-01-01T00:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(owned),
    }
    after["metadata"] = {**after["metadata"], "managedFields": [entry], "uid": "u", "resourceVersion": "1"}
    return after
