"""Reading the API server's structured answers, never its message text; what the adapters ask for."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes.client.exceptions import ApiException

from lameduck_operator.k8s.events import EventPoster
from lameduck_operator.k8s.learned import LearnedConfigMaps
from lameduck_operator.k8s.pod_conditions import invalid_fields
from lameduck_operator.k8s.sidecar_rbac import SidecarRbac
from lameduck_operator.logic.event_batches import MAX_MESSAGE, PolicyEvent
from lameduck_operator.logic.rbac import sidecar_role
from lameduck_operator.model import PolicyRef
from lameduck_operator.names import API_VERSION, KIND_CLUSTER, KIND_NAMESPACED, MANAGED_LABELS
from tests.unit.api_requests import recording_client

UID_IMMUTABLE = {
    "kind": "Status",
    "status": "Failure",
    "reason": "Invalid",
    "code": 422,
    "details": {"name": "web-1", "kind": "pods", "causes": [{"reason": "FieldValueInvalid", "field": "metadata.uid"}]},
}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(json.dumps(UID_IMMUTABLE), {"metadata.uid"}, id="a 422 naming metadata.uid"),
        pytest.param(json.dumps(UID_IMMUTABLE).encode(), {"metadata.uid"}, id="as bytes"),
        pytest.param(
            json.dumps({**UID_IMMUTABLE, "message": "metadata.uid", "details": {"causes": [{"field": "spec.x"}]}}),
            {"spec.x"},
            id="the message text is not read",
        ),
        pytest.param(json.dumps({"kind": "Status", "code": 422}), set(), id="a Status without causes"),
        pytest.param("<html>bad gateway</html>", set(), id="not JSON"),
        pytest.param(None, set(), id="no body"),
        pytest.param(json.dumps([1, 2]), set(), id="JSON that is no Status"),
    ],
)
def test_invalid_fields_come_from_the_status_causes(body: object, expected: set[str]) -> None:
    assert invalid_fields(body) == expected


class ConfigMapCalls:
    """The two CoreV1Api calls the learned-delays adapter makes, recorded; a read answers `stored`."""

    def __init__(self, stored: dict[str, Any] | None) -> None:
        self.stored = stored
        self.patched: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []

    def read_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> Any:
        if self.stored is None:
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(data=json.dumps(self.stored).encode())

    def patch_namespaced_config_map(self, name: str, namespace: str, body: dict[str, Any], **kwargs: Any) -> None:
        self.patched.append((name, namespace, body, kwargs))


def learned_adapter(stored: dict[str, Any] | None) -> tuple[LearnedConfigMaps, ConfigMapCalls]:
    adapter = LearnedConfigMaps.__new__(LearnedConfigMaps)
    calls = ConfigMapCalls(stored)
    adapter.core = calls  # type: ignore[assignment]
    return adapter, calls


async def test_the_learned_config_map_is_read_back_and_none_when_absent() -> None:
    adapter, _ = learned_adapter({"data": {"web": '{"version":1}', "odd": 3}})
    assert await adapter.read_learned("shop") == {"web": '{"version":1}'}
    adapter, _ = learned_adapter(None)
    assert await adapter.read_learned("shop") is None


async def test_the_learned_config_map_is_applied_as_lameduck_with_its_labels() -> None:
    adapter, calls = learned_adapter(None)
    await adapter.apply_learned("shop", {"web": "{}"})
    ((name, namespace, body, kwargs),) = calls.patched
    assert (name, namespace) == ("lameduck-learned", "shop")
    assert body["metadata"] == {"name": "lameduck-learned", "namespace": "shop", "labels": dict(MANAGED_LABELS)}
    assert body["data"] == {"web": "{}"}
    assert kwargs == {"field_manager": "lameduck", "force": True, "_content_type": "application/apply-patch+yaml"}


def test_the_sidecars_access_is_listed_at_start_by_its_name_and_labels() -> None:
    # By name, so that RBAC can limit the operator's list of Roles and RoleBindings to that
    # name; what comes back is read as before.
    current = sidecar_role("shop")["rules"]
    shop, jobs = ({"name": "lameduck-sidecar", "namespace": ns} for ns in ("shop", "jobs"))
    items = {
        "rolebindings": [{"metadata": shop, "subjects": [{"name": "web"}, {"name": "api"}]}, {"metadata": jobs}],
        "roles": [{"metadata": shop, "rules": current}, {"metadata": jobs, "rules": current[:1]}],
    }
    api_client, recorder = recording_client(lambda _, url, __: {"items": items[urlsplit(url).path.rsplit("/", 1)[1]]})
    api = SidecarRbac(api_client)
    assert api.list_sidecar_access() == {"shop": ("api", "web"), "jobs": ()}
    assert api.list_outdated_sidecar_roles() == {"jobs"}
    for sent in recorder.sent:
        query = parse_qs(urlsplit(sent.url).query)
        assert query["fieldSelector"] == ["metadata.name=lameduck-sidecar"]
        assert query["labelSelector"] == [",".join(f"{k}={v}" for k, v in MANAGED_LABELS.items())]


@pytest.mark.parametrize(
    ("policy", "path", "involved"),
    [
        pytest.param(
            PolicyRef(KIND_NAMESPACED, "web", "shop"),
            "/api/v1/namespaces/shop/events",
            {"apiVersion": API_VERSION, "kind": KIND_NAMESPACED, "name": "web", "namespace": "shop", "uid": "u-1"},
            id="a GracefulPolicy's in its namespace",
        ),
        pytest.param(
            PolicyRef(KIND_CLUSTER, "fleet"),
            "/api/v1/namespaces/default/events",
            {"apiVersion": API_VERSION, "kind": KIND_CLUSTER, "name": "fleet", "uid": "u-1"},
            id="a ClusterGracefulPolicy's in default, the only namespace the API server allows",
        ),
    ],
)
async def test_an_event_on_a_policy_names_it_as_kubectl_describe_finds_it(
    policy: PolicyRef, path: str, involved: dict[str, Any]
) -> None:
    posted: list[tuple[str, Any]] = []

    def answer(method: str, url: str, body: Any) -> Any:
        posted.append((urlsplit(url).path, body))
        return body

    api_client, _ = recording_client(answer)
    message = "injected the preStop hold, termination budget 65s, into 1 Deployment: " + "x" * 2000
    await EventPoster(api_client).post_policy_event(PolicyEvent(policy, "Injected", message), "u-1")
    ((where, body),) = posted
    assert where == path
    assert body["involvedObject"] == involved
    assert (body["reason"], body["type"], len(body["message"])) == ("Injected", "Normal", MAX_MESSAGE)
    assert body["metadata"]["generateName"] == f"{policy.name}."
