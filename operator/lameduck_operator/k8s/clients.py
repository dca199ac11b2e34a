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
# Lists at start-up come in pages of this many objects.
LIST_PAGE = 500


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
        self.networking = client.NetworkingV1Api(api_client)
        self.instance = socket.gethostname()

    def _list_all(self, lister: Any) -> list[dict[str, Any]]:
        """Every item a list call returns, page by page."""
        found: list[dict[str, Any]] = []
        more: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": LIST_PAGE, "_preload_content": False}
            if more:
                kwargs["_continue"] = more
            listed = json_body(lister(**kwargs))
            found.extend(listed.get("items", []))
            more = (listed.get("metadata") or {}).get("continue")
            if not more:
                return found
