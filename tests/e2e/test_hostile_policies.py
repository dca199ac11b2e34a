"""Hostile and careless policies on a live API server with the repository's CRDs: the table of
tests/hostile_policies.py, which the unit tests judge offline (tests/unit/test_hostile_policies.py).

Each case the model refuses is refused with a 4xx that names the field, and leaves nothing
behind; each it accepts is taken with the model's defaults. The table breaks every CEL rule and
goes past every bound of both CRDs (unit-checked), so a rule dropped from a CRD fails a case here.
Then what no schema can refuse: policies over the namespaces no policy may touch, and two
policies over one Deployment, which the operator answers in their status.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from harness.install import OPERATOR_NAMESPACE, Operator
from harness.kube import Kube, wait_until
from harness.manifests import pause_deployment
from lameduck_operator.logic.selection import NAMESPACE_NAME_LABEL
from lameduck_operator.model import parse_policy
from lameduck_operator.names import GROUP, KIND_NAMESPACED, PLURALS, VERSION
from lameduck_operator.settings import DEFAULT_EXCLUDED_NAMESPACES
from tests.e2e.test_operator import policy, status
from tests.hostile_policies import CASES, Hostile, ids

# The only place a strict decoding error (400, no causes) names the fields it refuses.
UNKNOWN_FIELD = re.compile(r'unknown field "(.*?)"', re.DOTALL)


def sendable(case: Hostile) -> bool:
    """Whether JSON can carry the body: NaN and Infinity are no JSON (RFC 8259), so no client
    sends them and the API server never judges them; the model and the CLI still do (unit)."""
    try:
        json.dumps(case.body, allow_nan=False)
    except ValueError:
        return False
    return True


# What the CRD judges (metadata, kind and apiVersion are the API server's own checks), as JSON can carry it.
SENT = [c for c in CASES if c.judged_by_the_crd and sendable(c)]
REFUSED = [c for c in SENT if c.rejected]
TAKEN = [c for c in SENT if not c.rejected]


@pytest.fixture(scope="module")
def custom_objects(kube: Kube) -> Any:
    """The API client rather than kubectl: the API server's own answer (its status code, each
    cause's field), and the body sent as the table holds it (kubectl reads an integer past int64
    as a float before it sends it)."""
    return client.CustomObjectsApi(config.new_client_from_config(config_file=kube.kubeconfig))


@pytest.fixture(scope="module")
def policy_namespace(kube: Kube) -> Iterator[str]:
    """One namespace for every case's GracefulPolicy: nothing is stored in it but by mistake."""
    name = f"e2e-hostile-{secrets.token_hex(3)}"
    kube.run("create", "namespace", name)
    yield name
    kube.run("delete", "namespace", name, "--wait=false", check=False)


def addressed(case: Hostile, namespace: str) -> dict[str, Any]:
    """The case's body under a name of its own (one wrongly stored fails no other case); a
    GracefulPolicy in the test's namespace."""
    body = copy.deepcopy(case.body)
    body["metadata"]["name"] = f"hostile-{hashlib.sha256(case.name.encode()).hexdigest()[:10]}"
    if body["kind"] == KIND_NAMESPACED:
        body["metadata"]["namespace"] = namespace
    return body


def create(api: Any, body: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
    """POST the body with strict field validation, as kubectl sends it: an unknown field is
    refused, not pruned."""
    options: dict[str, Any] = {"field_validation": "Strict", "_request_timeout": 120}
    if dry_run:
        options["dry_run"] = "All"
    plural = PLURALS[body["kind"]]
    if body["kind"] == KIND_NAMESPACED:
        namespace = body["metadata"]["namespace"]
        return dict(api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body, **options))
    return dict(api.create_cluster_custom_object(GROUP, VERSION, plural, body, **options))


def where(body: dict[str, Any]) -> list[str]:
    """kubectl's arguments naming the stored object the body would be."""
    namespace = ["-n", body["metadata"]["namespace"]] if body["kind"] == KIND_NAMESPACED else []
    return [PLURALS[body["kind"]], body["metadata"]["name"], *namespace]


def named_paths(refusal: ApiException) -> set[str]:
    """The field paths a refusal names: each cause's field (422 Invalid), or the unknown fields
    a strict decoding error (400 BadRequest, without causes) lists."""
    text = refusal.body.decode() if isinstance(refusal.body, bytes) else str(refusal.body)
    answer = json.loads(text)
    causes = (answer.get("details") or {}).get("causes") or []
    return {str(c["field"]) for c in causes if c.get("field")} | set(UNKNOWN_FIELD.findall(answer.get("message", "")))


def names(path: str, named: set[str]) -> bool:
    """The field, or a field within it: strict validation names the innermost unknown key, so an
    object where a label value goes is refused at its keys."""
    return any(n == path or n.startswith((f"{path}.", f"{path}[")) for n in named)


@pytest.mark.parametrize("case", REFUSED, ids=ids(REFUSED))
def test_the_api_server_refuses_each_at_the_field_and_stores_nothing(
    kube: Kube, crds: None, custom_objects: Any, policy_namespace: str, case: Hostile
) -> None:
    body = addressed(case, policy_namespace)
    try:
        create(custom_objects, body)
    except ApiException as err:
        refusal = err
    else:
        kube.run("delete", *where(body), "--wait=false", check=False)
        pytest.fail("stored: the API server took what the model refuses")
    assert refusal.status in (400, 422), (refusal.status, refusal.reason)
    named = named_paths(refusal)
    for path in case.crd_paths:
        assert names(path, named), (path, sorted(named)[:5])
    left = kube.run("get", *where(body), check=False)
    assert left.returncode != 0, "a refused policy left an object behind"
    assert "(NotFound)" in left.stderr, left.stderr


@pytest.mark.parametrize("case", TAKEN, ids=ids(TAKEN))
def test_the_api_server_takes_each_careless_one_with_the_models_defaults(
    crds: None, custom_objects: Any, policy_namespace: str, case: Hostile
) -> None:
    body = addressed(case, policy_namespace)
    answer = create(custom_objects, body, dry_run=True)  # the object as it would be stored; nothing is
    assert parse_policy(answer).spec == parse_policy(body).spec, "the API server's defaults are the model's"


def reasons(found: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each condition of a policy's status as (status, reason): typed, unlike its message."""
    return {c["type"]: (c["status"], c["reason"]) for c in found.get("conditions", [])}


def test_a_cluster_policy_over_the_namespaces_no_policy_may_touch_governs_nothing_there(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    """Every Deployment of kube-system, kube-public, kube-node-lease and lameduck's own namespace
    (the operator's among them): no schema can refuse a label selector; the operator never selects
    there. In Audit mode, so that a regression shows in the counts instead of restarting the
    operator. The test's namespace is selected too: its Deployment shows the policy was evaluated."""
    assert kube.items("deployments", OPERATOR_NAMESPACE), "the operator's own Deployment, to be left alone"
    kube.apply(pause_deployment("web"), namespace=namespace)
    name = f"{namespace}-untouchable"
    untouchable = [*DEFAULT_EXCLUDED_NAMESPACES, OPERATOR_NAMESPACE, namespace]
    selector = {"matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": untouchable}]}
    kube.apply(policy(name, None, mode="Audit", namespaceSelector=selector))
    try:
        found = wait_until(
            lambda: (s := status(kube, None, name)).get("matched", 0) >= 1 and s,
            60,
            "the cluster policy counts the test's Deployment",
        )
        assert [(d["namespace"], d["name"]) for d in found["nonCompliant"]] == [(namespace, "web")]
        assert found["matched"] == 1
        assert reasons(found) == {
            "Ready": ("True", "Audited"),
            "Conflict": ("False", "NoConflicts"),
            "Degraded": ("False", "AsExpected"),
        }
    finally:
        kube.run("delete", "clustergracefulpolicy", name, "--wait=false", check=False)


def test_two_policies_of_equal_priority_over_one_deployment_the_name_decides_and_the_loser_says_so(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    kube.apply(pause_deployment("web", {"tier": "web"}), namespace=namespace)
    for name in ("b", "a"):
        kube.apply(policy(name, namespace, mode="Audit", selector={"matchLabels": {"tier": "web"}}))

    def overlap_told() -> dict[str, Any] | None:
        found = status(kube, namespace, "b")
        return found if reasons(found).get("Conflict") == ("True", "Overlap") else None

    loser = wait_until(overlap_told, 60, "policy b reports the overlap")
    assert loser["matched"] == 0
    assert reasons(loser) == {
        "Ready": ("True", "Audited"),
        "Conflict": ("True", "Overlap"),
        "Degraded": ("False", "AsExpected"),
    }
    winner = wait_until(
        lambda: (s := status(kube, namespace, "a")).get("matched") == 1 and s, 60, "policy a governs web"
    )
    assert reasons(winner) == {
        "Ready": ("True", "Audited"),
        "Conflict": ("False", "NoConflicts"),
        "Degraded": ("False", "AsExpected"),
    }
