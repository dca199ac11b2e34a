"""The official client's API groups that lameduck uses, shared by the k8s/ adapters, and how they
read an answer: every call asks for the raw response and parses its JSON once."""

from __future__ import annotations

import json
import socket
from typing import Any

from kubernetes import client

APPLY = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE = "application/strategic-merge-patch+json"


def json_body(response: Any) -> dict[str, Any]:
    data = json.loads(response.data)
    assert isinstance(data, dict)
    return data


class ApiClients:
    """Blocking client calls: the adapters run them in threads so the operator's event loop never stalls."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.rbac = client.RbacAuthorizationV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self.instance = socket.gethostname()
