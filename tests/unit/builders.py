"""Small builders used across the unit tests: parsed policies, and the harness's Deployment
builder with the unit tests' defaults (web in shop, one container app:8080)."""

from __future__ import annotations

from typing import Any

from harness import manifests
from lameduck_operator.model import Policy, parse_policy


def policy(
    name: str = "p",
    namespace: str | None = "shop",
    spec: dict[str, Any] | None = None,
) -> Policy:
    kind = "GracefulPolicy" if namespace else "ClusterGracefulPolicy"
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return parse_policy({"apiVersion": "lameduck.dev/v1alpha1", "kind": kind, "metadata": meta, "spec": spec or {}})


def container(name: str, *ports: int, **fields: Any) -> dict[str, Any]:
    """A container of example.com/<name>:1 unless fields name its image."""
    image = fields.pop("image", f"example.com/{name}:1")
    return manifests.container(name, image, *ports, **fields)


def deployment(
    name: str = "web",
    namespace: str = "shop",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    **pod_spec: Any,
) -> dict[str, Any]:
    """The harness's Deployment (no replicas: the API server's default), web in shop by default."""
    return manifests.deployment(
        name,
        containers or [container("app", 8080)],
        namespace=namespace,
        labels=labels,
        annotations=annotations,
        **pod_spec,
    )
