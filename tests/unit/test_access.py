"""What the operator and the sidecar send the API server, against what the chart and the
sidecar's Role grant: every request is allowed, and nothing is granted that no request needs.

The operator's adapters run on the official client with its HTTP layer recorded
(tests/unit/api_requests.py); the sidecar runs against a local HTTP server; the watches kopf
and the informers keep are read from the handlers' registry and the code. A grant added to the
chart that no code uses fails here, and so does a request the chart does not allow.
"""

from __future__ import annotations

import ast
import datetime
import json
import time
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord

from lameduck_operator.handlers import build_registry
from lameduck_operator.k8s.api import KubeApi
from lameduck_operator.k8s.leadership import lease_lock
from lameduck_operator.logic.decision import DeploymentEvent
from lameduck_operator.logic.event_batches import PolicyEvent
from lameduck_operator.logic.rbac import sidecar_role
from lameduck_operator.logic.readiness import PodView
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.model import PolicyRef
from lameduck_operator.names import (
    KIND_CLUSTER,
    KIND_NAMESPACED,
    LEARNED_CONFIGMAP,
    READINESS_CONDITION,
    SIDECAR_RBAC_NAME,
    TAKEOVER_MANAGER,
)
from lameduck_operator.runtime import Runtime
from lameduck_sidecar.k8s import NamespaceApi
from tests.unit.api_requests import Access, Sent, Using, access_of, echo, granted, needed, recording_client
from tests.unit.repo_data import REPO
from tests.unit.test_chart import NAMESPACE, ci, each_helm, env_of, only, render, runs_helm

__all__ = ["each_helm"]  # the fixture @runs_helm uses

OPERATOR = REPO / "operator" / "lameduck_operator"
# The official client's API objects the adapters hold (k8s/clients.py ApiClients).
CLIENTS = ("apps", "core", "custom", "rbac", "discovery", "networking")
# Every client API class the operator makes: those of ApiClients, and the Lease's.
API_CLASSES = {
    "AppsV1Api",
    "CoreV1Api",
    "CustomObjectsApi",
    "RbacAuthorizationV1Api",
    "DiscoveryV1Api",
    "NetworkingV1Api",
}
LEASE_API_CLASS = "CoordinationV1Api"
# The fixed names of the objects lameduck keeps; every other object's name varies.
OWN_NAMES = (SIDECAR_RBAC_NAME, LEARNED_CONFIGMAP)
# kopf's own watch besides the handlers' resources: CRDs, to notice when the lameduck.dev
# resources are (re)installed (kopf/_core/reactor/observation.py, resource_observer).
KOPF_OWN = {Access(verb, "apiextensions.k8s.io", "customresourcedefinitions", None) for verb in ("list", "watch")}


# --- what the operator's code sends ---------------------------------------------------------------


def _python_files() -> list[Path]:
    return sorted(OPERATOR.rglob("*.py"))


def client_methods_in_code() -> set[tuple[str, str]]:
    """Every method the operator takes from the client's API objects (`self.core.read_...`,
    called there or handed to a pager)."""
    found: set[tuple[str, str]] = set()
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "self"
                and node.value.attr in CLIENTS
            ):
                found.add((node.value.attr, node.attr))
    return found


def api_classes_in_code() -> set[str]:
    return {
        node.attr
        for path in _python_files()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr.endswith("Api") and node.attr[0].isupper()
    }


def informer_paths() -> set[str]:
    """The paths lameduck's own informers list and watch (`Informer(endpoint, "/api/v1/pods", ...)`)."""
    paths: set[str] = set()
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Informer":
                where = node.args[1]
                assert isinstance(where, ast.Constant), f"{path}: an Informer's path is not a literal"
                paths.add(str(where.value))
    return paths


def watches() -> set[Access]:
    """The lists and watches that run without the adapters: the informers', kopf's for each
    handler's resource, and kopf's own."""
    found = set(KOPF_OWN)
    for path in informer_paths():
        found |= {access_of("GET", path), access_of("GET", f"{path}?watch=true")}
    registry = build_registry(cast(Runtime, object()))
    for handler in registry._watching.get_all_handlers():
        selector = handler.selector
        assert selector is not None, handler
        assert isinstance(selector.any_name, str), selector  # one resource, not "everything"
        found |= {Access(verb, selector.group or "", selector.any_name, None) for verb in ("list", "watch")}
    return found


WEB = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "shop", "uid": "uid-web", "resourceVersion": "7"},
    "spec": {"template": {"spec": {"containers": [{"name": "app", "lifecycle": {"preStop": {"sleep": {}}}}]}}},
}
INTENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    # What the answer echoes back: a takeover's entry, which is then removed.
    "metadata": {"name": "web", "namespace": "shop", "managedFields": [{"manager": TAKEOVER_MANAGER}]},
    "spec": {"template": {"spec": {"containers": [{"name": "app", "lifecycle": {"preStop": {"httpGet": {}}}}]}}},
}
# What a JSON patch of a Deployment answers (the client checks it against its Deployment model).
PATCHED = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "app"}]}}},
}
POD = PodView(
    uid="uid-web-1",
    name="web-1",
    namespace="shop",
    labels={},
    ips=frozenset(),
    terminating=False,
    finished=False,
    gated=True,
    status=None,
    reason=None,
    resource_version="9",
)


async def drive_the_operator() -> tuple[list[Sent], set[tuple[str, str]]]:
    """Every adapter method, once, with what each sends and which client methods it took."""
    api_client, recorder = recording_client(lambda m, u, body: PATCHED if isinstance(body, list) else echo(m, u, body))
    api = KubeApi(api_client)
    used: set[tuple[str, str]] = set()
    for name in CLIENTS:
        setattr(api, name, Using(getattr(api, name), name, used))
    await api.apply_deployment(INTENT, force=False)
    await api.take_over(
        DeploymentRef("shop", "web"), [{"op": "test", "path": "/metadata/uid", "value": "uid-web"}], INTENT
    )
    await api.patch_deployment(DeploymentRef("shop", "web"), [{"op": "remove", "path": "/metadata/annotations/x"}])
    for ref in (PolicyRef(KIND_NAMESPACED, "web-tier", "shop"), PolicyRef(KIND_CLUSTER, "everywhere")):
        await api.apply_policy_status(ref, {"observedGeneration": 1})
        await api.set_policy_finalizer(ref, True)
        await api.set_policy_finalizer(ref, False)
    api.list_policies()
    api.list_namespaces()
    await api.apply_sidecar_rbac("shop", ["default"])
    await api.delete_sidecar_rbac("shop")
    await api.list_pods("shop")
    api.list_sidecar_access()
    api.list_outdated_sidecar_roles()
    await api.post_event(WEB, DeploymentEvent("Applied", "lameduck applied web-tier"))
    for ref in (PolicyRef(KIND_NAMESPACED, "web-tier", "shop"), PolicyRef(KIND_CLUSTER, "everywhere")):
        await api.post_policy_event(PolicyEvent(ref, "Injected", "injected into 1 Deployment: web"), "uid-1")
    await api.patch_pod_condition(POD, {"type": READINESS_CONDITION, "status": "True"}, True)
    api.list_services()
    api.list_endpoint_slices()
    await api.read_learned("shop")
    await api.apply_learned("shop", {"web": "{}"})
    api.list_l7_routes()
    return recorder.sent, used


async def test_every_client_method_in_the_operators_code_is_driven_here() -> None:
    # A call added to an adapter but not to drive_the_operator would escape the checks below.
    _, used = await drive_the_operator()
    assert client_methods_in_code() == used


def test_the_operator_makes_no_api_objects_but_those_recorded_here() -> None:
    assert api_classes_in_code() == {*API_CLASSES, LEASE_API_CLASS}
    assert informer_paths() == {"/apis/apps/v1/deployments", "/api/v1/pods"}


# --- against what the chart grants ------------------------------------------------------------


@runs_helm
async def test_the_cluster_role_grants_exactly_what_the_operator_sends_and_the_sidecars_role_holds() -> None:
    sent, _ = await drive_the_operator()
    # The operator may grant the sidecar only what it holds itself (RBAC's escalation check).
    wanted = needed(sent, OWN_NAMES) | watches() | granted(sidecar_role("shop")["rules"])
    have = granted(only(render(ci("defaults")), "ClusterRole")["rules"])
    assert sorted(have - wanted) == [], "granted, but nothing sends it"
    assert sorted(wanted - have) == [], "sent, but not granted"


@runs_helm
def test_what_lameduck_keeps_under_its_own_names_is_granted_by_name_only() -> None:
    # RBAC objects above all: with roles or rolebindings for any name, the operator could bind
    # itself or anyone to whatever it holds, in every namespace.
    rules = only(render(ci("defaults")), "ClusterRole")["rules"]
    for rule in rules:
        if set(rule["resources"]) & {"roles", "rolebindings", "configmaps"}:
            assert rule.get("resourceNames") in ([SIDECAR_RBAC_NAME], [LEARNED_CONFIGMAP]), rule
    for access in granted(rules):
        assert access.verb not in ("escalate", "bind", "impersonate", "update", "deletecollection", "*"), access


def lease_requests(name: str, namespace: str) -> list[Sent]:
    """What the election sends: it reads the Lease, creates it when there is none and replaces
    it to renew (kubernetes/leaderelection/leaderelection.py: lock.get, create and update)."""

    def answer(method: str, url: str, body: Any) -> dict[str, Any]:
        if method != "GET":
            return dict(body)
        now = "2026-01-01T00:00:00.000000Z"
        spec = {"holderIdentity": "other", "leaseDurationSeconds": 10, "acquireTime": now, "renewTime": now}
        return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"}, "spec": spec}

    api_client, recorder = recording_client(answer)
    lock = lease_lock(api_client, namespace=namespace, name=name, identity="lameduck-operator-0")
    now = str(datetime.datetime.fromtimestamp(time.time()))
    record = LeaderElectionRecord("lameduck-operator-0", "10", now, now)  # type: ignore[no-untyped-call]
    assert lock.create(name, namespace, record)  # type: ignore[no-untyped-call]
    assert lock.get(name, namespace)[0]  # type: ignore[no-untyped-call]
    assert lock.update(name, namespace, record)  # type: ignore[no-untyped-call]
    return recorder.sent


@runs_helm
def test_the_leader_election_role_grants_exactly_what_the_lease_lock_sends() -> None:
    for release in ("lameduck", "prod"):
        docs = render(ci("defaults"), release=release)
        lease = env_of(docs)["LAMEDUCK_LEASE_NAME"]
        assert lease is not None
        role = only(docs, "Role")
        assert role["metadata"]["namespace"] == NAMESPACE
        assert needed(lease_requests(lease, NAMESPACE), [lease]) == granted(role["rules"])


# --- the sidecar ---------------------------------------------------------------------------------


async def sidecar_requests(tmp_path: Path) -> list[Sent]:
    """Every NamespaceApi call, against a server that answers anything and notes each request."""
    sent: list[Sent] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        sent.append(Sent(request.method, str(request.rel_url)))
        if request.method == "POST":
            return web.json_response(await request.json(), status=201)
        if request.query.get("watch"):
            # One change, then the server ends the watch.
            response = web.StreamResponse()
            await response.prepare(request)
            event = {"type": "ADDED", "object": {"metadata": {"name": "web-x1", "resourceVersion": "2"}}}
            await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
            return response
        access = access_of(request.method, str(request.rel_url))
        if access.verb == "list":
            return web.json_response({"items": [], "metadata": {"resourceVersion": "1"}})
        return web.json_response({"metadata": {"name": access.name}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    token = tmp_path / "token"
    token.write_text("token")
    async with TestServer(app) as server:
        api = NamespaceApi(str(server.make_url("")), "shop", "web-1", str(token), str(tmp_path / "ca.crt"))
        await api.own_pod()
        await api.learned()
        await api.post_event({"metadata": {"generateName": "web-1."}})
        slices = api.slices()
        await anext(slices)  # listed
        await anext(slices)  # watched
        await slices.aclose()
    return sent


async def test_the_sidecars_role_grants_exactly_what_the_sidecar_sends(tmp_path: Path) -> None:
    # Its Role is bound to the pod's service account, which the app containers share:
    # whatever it grants beyond this, they gain too.
    public = {name for name in vars(NamespaceApi) if not name.startswith("_")}
    assert public == {"own_pod", "learned", "post_event", "slices"}, "a new call: drive it in sidecar_requests"
    sent = await sidecar_requests(tmp_path)
    assert needed(sent, [LEARNED_CONFIGMAP]) == granted(sidecar_role("shop")["rules"])
