"""The Kubernetes objects the tests and benchmarks apply: one builder for Deployments, their
containers and Services, and the workloads and policies made with it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from harness.images import DEMO_IMAGE, PAUSE_IMAGE
from lameduck_operator.names import LEARNED_CONFIGMAP, LEARNED_VERSION, LearnedField


def container(name: str, image: str, *ports: int, **fields: Any) -> dict[str, Any]:
    """A container of image; ports as containerPorts; fields: any more of its fields."""
    body: dict[str, Any] = {"name": name, "image": image}
    if ports:
        body["ports"] = [{"containerPort": port} for port in ports]
    body.update(fields)
    return body


def deployment(
    name: str,
    containers: list[dict[str, Any]],
    *,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    replicas: int | None = None,
    pod_labels: Mapping[str, str] | None = None,
    pod_annotations: Mapping[str, str] | None = None,
    **pod_spec: Any,
) -> dict[str, Any]:
    """A Deployment whose pods are labelled app=name and selected by it; pod_labels and
    pod_annotations: more on the pod template; pod_spec: more fields of the pod's spec.
    replicas and namespace left out unless given (the API server's default of 1; kubectl -n)."""
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = dict(labels or {})
    if annotations:
        meta["annotations"] = dict(annotations)
    selector = {"app": name}
    template_meta: dict[str, Any] = {"labels": {**selector, **(pod_labels or {})}}
    if pod_annotations:
        template_meta["annotations"] = dict(pod_annotations)
    spec: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    spec["selector"] = {"matchLabels": selector}
    spec["template"] = {"metadata": template_meta, "spec": {"containers": containers, **pod_spec}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def service(name: str, ports: list[dict[str, Any]], *, namespace: str | None = None) -> dict[str, Any]:
    """A ClusterIP Service in front of the pods labelled app=name (those of deployment(name))."""
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"selector": {"app": name}, "ports": ports},
    }


def pause_deployment(
    name: str,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    replicas: int = 1,
    **pod: Any,
) -> dict[str, Any]:
    """A Deployment of the pause image: it runs anywhere the harness runs, pulls nothing."""
    app = container("app", PAUSE_IMAGE, 8080, imagePullPolicy="Never")
    return deployment(name, [app], labels=labels, annotations=annotations, replicas=replicas, **pod)


def demo_app(name: str = "demo", replicas: int = 3, *, readiness_probe: bool = True) -> list[dict[str, Any]]:
    """The demo app behind a ClusterIP Service; labelled `lameduck: yes` for policies to select.
    readiness_probe=False: no probe at all, so kubelet never connects to the app's port."""
    probe = {"readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1}}
    app = container(
        "app",
        DEMO_IMAGE,
        imagePullPolicy="IfNotPresent",
        ports=[{"name": "http", "containerPort": 8080}],
        **(probe if readiness_probe else {}),
    )
    return [
        deployment(name, [app], labels={"lameduck": "yes"}, replicas=replicas),
        service(name, [{"port": 80, "targetPort": "http"}]),
    ]


def service_account_with_role(namespace: str, name: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A ServiceAccount, a Role with `rules` and the RoleBinding granting it to the account, all
    named `name` in `namespace`, in apply order: a pod's rights in its own namespace only."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


def guarded(
    namespace: str, *, name: str = "guard", labels: Mapping[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A GracefulPolicy `name` (the defaults, `apply: Immediate`) over Deployments carrying
    labels (`lameduck: yes` unless given); spec: more of its fields (hold, drainTimeout, ...)."""
    match_labels = {"lameduck": "yes"} if labels is None else dict(labels)
    return {
        "apiVersion": "lameduck.dev/v1alpha1",
        "kind": "GracefulPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"apply": "Immediate", "selector": {"matchLabels": match_labels}, **spec},
    }


def learned_config_map(delays: Mapping[str, float]) -> dict[str, Any]:
    """The namespace's lameduck-learned ConfigMap as the operator keeps it: per Deployment, the
    pooled delay its earlier holds showed."""
    values = {
        name: json.dumps(
            {LearnedField.VERSION: LEARNED_VERSION, LearnedField.POOLED_DELAY_SECONDS: delay, LearnedField.REPORTS: 1}
        )
        for name, delay in delays.items()
    }
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": LEARNED_CONFIGMAP}, "data": values}
