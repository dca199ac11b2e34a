"""A webhook that does nothing, called for the same writes as lameduck's: the floor of what
the API server waits for any webhook on this cluster.

bench/null_webhook_server.py runs in a pod of lameduck's operator image (the same Python and
aiohttp), with a self-signed certificate; its MutatingWebhookConfiguration copies the rules,
namespaceSelector and matchConditions of lameduck's live one, so both are called for exactly
the same writes, one after the other, and the API server's admission histogram times each
under the same load at the same moments.
"""

from __future__ import annotations

import base64
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

from harness import REPO
from harness.certificates import self_signed
from harness.kube import Kube
from harness.manifests import container, deployment, service

NAMESPACE = "bench-null-webhook"
NAME = "null-webhook"
CONFIGURATION = "bench-null-webhook"
WEBHOOK = "null.bench.lameduck.dev"
# The label the API server's admission histogram names it by.
WEBHOOK_LABEL = f'name="{WEBHOOK}"'
LAMEDUCK_CONFIGURATION = "lameduck"
SERVER = REPO / "bench" / "null_webhook_server.py"
PORT = 9443


def manifests(cert: bytes, key: bytes, image: str) -> list[dict[str, Any]]:
    encoded = {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()}
    meta = {"name": NAME}
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "kubernetes.io/tls", "data": encoded},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {SERVER.name: SERVER.read_text()}},
        deployment(
            NAME,
            [
                container(
                    "server",
                    image,
                    PORT,
                    imagePullPolicy="IfNotPresent",
                    command=["/opt/lameduck/bin/python", f"/app/{SERVER.name}"],
                    args=["/tls/tls.crt", "/tls/tls.key", str(PORT)],
                    readinessProbe={"tcpSocket": {"port": PORT}, "periodSeconds": 2},
                    volumeMounts=[
                        {"name": "tls", "mountPath": "/tls", "readOnly": True},
                        {"name": "app", "mountPath": "/app", "readOnly": True},
                    ],
                )
            ],
            labels={"app": NAME},
            replicas=1,
            volumes=[
                {"name": "tls", "secret": {"secretName": NAME}},
                {"name": "app", "configMap": {"name": NAME}},
            ],
        ),
        service(NAME, [{"port": 443, "targetPort": PORT}]),
    ]


def deploy(kube: Kube, image: str = "lameduck/operator:dev") -> bytes:
    """The server running and ready; returns its certificate (the CA bundle to trust)."""
    host = f"{NAME}.{NAMESPACE}.svc"
    with tempfile.TemporaryDirectory() as folder:
        cert_file, key_file = self_signed(Path(folder), host, f"DNS:{host}")
        cert, key = cert_file.read_bytes(), key_file.read_bytes()
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    kube.apply(*manifests(cert, key, image), namespace=NAMESPACE)
    kube.run("rollout", "status", f"deployment/{NAME}", "-n", NAMESPACE, "--timeout=300s")
    return cert


def mirrored(lameduck: dict[str, Any], ca: bytes) -> dict[str, Any]:
    """The null webhook's configuration: lameduck's webhook entry (rules, selectors, match
    conditions) pointed at the null server, never reinvoked."""
    entry = copy.deepcopy(lameduck["webhooks"][0])
    entry["name"] = WEBHOOK
    entry["clientConfig"] = {
        "service": {"name": NAME, "namespace": NAMESPACE, "path": "/", "port": 443},
        "caBundle": base64.b64encode(ca).decode(),
    }
    entry["reinvocationPolicy"] = "Never"
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION},
        "webhooks": [entry],
    }


def follow_lameduck(kube: Kube, ca: bytes) -> None:
    """Configure the null webhook from lameduck's live configuration (the API server picks it
    up within a second or so; the burst it is measured in comes tens of seconds later)."""
    live = kube.get("mutatingwebhookconfiguration", LAMEDUCK_CONFIGURATION)
    kube.run("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(mirrored(live, ca)))


def remove(kube: Kube) -> None:
    kube.run("delete", "mutatingwebhookconfiguration", CONFIGURATION, "--ignore-not-found", check=False)
    kube.run("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=300s", check=False)
