"""Small builders for policies and Deployments used across the unit tests."""

from __future__ import annotations

from typing import Any

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


def container(name: str, *ports: int, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "image": f"example.com/{name}:1"}
    if ports:
        body["ports"] = [{"containerPort": p} for p in ports]
    body.update(extra)
    return body


def deployment(
    name: str = "web",
    namespace: str = "shop",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    **pod_spec: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels or {}}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": containers or [container("app", 8080)], **pod_spec},
            },
        },
    }
