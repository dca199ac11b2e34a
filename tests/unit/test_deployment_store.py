"""The fleet's Deployment store: whole bodies back as they went in, metadata at hand."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lameduck_operator.deployment_store import DeploymentStore
from lameduck_operator.logic.selection import DeploymentRef
from tests.unit.builders import deployment


def test_a_body_comes_back_as_it_was_stored_and_its_metadata_is_at_hand() -> None:
    store = DeploymentStore("lameduck.dev/")
    body = deployment(
        "web",
        labels={"tier": "web"},
        annotations={
            "lameduck.dev/policy": "GracefulPolicy/shop/p",
            "kubectl.kubernetes.io/last-applied-configuration": "{...}" * 100,
        },
    )
    ref = store.put(body)
    assert ref == DeploymentRef("shop", "web")
    assert store.get(ref) == body
    assert store.get(ref) is not store.get(ref), "each caller gets its own copy to change"
    assert store.meta(ref) == {
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "labels": {"tier": "web"},
            "annotations": {"lameduck.dev/policy": "GracefulPolicy/shop/p"},
        },
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": c["name"], "image": c.get("image")}
                        for c in body["spec"]["template"]["spec"]["containers"]
                    ],
                    "initContainers": [],
                }
            }
        },
    }
    assert [r for r, _ in store.metas()] == [ref]


def test_namespaces_and_removal() -> None:
    store = DeploymentStore("lameduck.dev/")
    for name, namespace in (("a", "shop"), ("b", "shop"), ("c", "ops")):
        store.put(deployment(name, namespace=namespace))
    assert sorted(m["metadata"]["name"] for m in store.metas_in("shop")) == ["a", "b"]
    store.pop(DeploymentRef("shop", "a"))
    assert DeploymentRef("shop", "a") not in store
    assert store.get(DeploymentRef("shop", "a")) is None
    assert len(store) == 2


@given(
    st.lists(
        st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"]), st.sampled_from(["shop", "ops"]), st.integers(0, 2)),
        max_size=25,
    )
)
def test_a_namespaces_deployments_are_those_stored_there_now_in_the_order_first_stored(
    steps: list[tuple[bool, str, str, int]],
) -> None:
    """metas_in reads an index kept per namespace: after any puts (again, with other labels) and
    removals it gives what a pass over every Deployment would, in the same order: first stored first."""
    store = DeploymentStore("lameduck.dev/")
    for put, name, namespace, version in steps:
        if put:
            store.put(deployment(name, namespace=namespace, labels={"v": str(version)}))
        else:
            store.pop(DeploymentRef(namespace, name))
    for namespace in ("shop", "ops", "none"):
        by_pass = [meta for ref, meta in store.metas() if ref.namespace == namespace]
        assert store.metas_in(namespace) == by_pass


def test_when_other_managers_last_wrote_is_kept_without_the_body_and_without_lameduck_or_subresources() -> None:
    store = DeploymentStore("lameduck.dev/")
    body = deployment("web")
    body["metadata"]["managedFields"] = [
        {"manager": "kubectl", "operation": "Apply", "time": "2026-01-01T00:00:01Z", "fieldsV1": {"f:spec": {}}},
        {"manager": "lameduck", "operation": "Apply", "time": "2026-01-01T00:00:02Z", "fieldsV1": {}},
        {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status", "time": "x"},
        {"manager": "kubectl-edit", "operation": "Update", "time": "2026-01-01T00:00:03Z"},
    ]
    ref = store.put(body)
    assert store.write_times(ref) == {
        ("kubectl", "Apply"): "2026-01-01T00:00:01Z",
        ("kubectl-edit", "Update"): "2026-01-01T00:00:03Z",
    }
    assert store.write_times(DeploymentRef("shop", "gone")) is None


def test_an_earlier_generation_of_the_same_object_is_older_and_a_new_object_of_that_name_is_not() -> None:
    store = DeploymentStore("lameduck.dev/")
    body = deployment("web")
    body["metadata"].update(uid="u1", generation=3)
    store.put(body)

    def at(uid: str, generation: int) -> dict[str, object]:
        changed = deployment("web")
        changed["metadata"].update(uid=uid, generation=generation)
        return changed

    assert store.is_older(at("u1", 2))
    assert not store.is_older(at("u1", 3)), "a status update of the same generation is news"
    assert not store.is_older(at("u1", 4))
    assert not store.is_older(at("u2", 1)), "deleted and created again under the same name"
    assert not store.is_older(deployment("other"))


def test_the_very_deployment_stored_is_recognised_by_its_uid_and_resource_version() -> None:
    store = DeploymentStore("lameduck.dev/")
    body = deployment("web")
    body["metadata"] |= {"uid": "u-1", "resourceVersion": "7"}
    store.put(body)
    assert store.is_stored(body)
    newer = deployment("web")
    newer["metadata"] |= {"uid": "u-1", "resourceVersion": "8"}
    assert not store.is_stored(newer)
    recreated = deployment("web")
    recreated["metadata"] |= {"uid": "u-2", "resourceVersion": "7"}
    assert not store.is_stored(recreated)
    unversioned = deployment("api")
    store.put(unversioned)
    assert not store.is_stored(unversioned), "without a resourceVersion nothing is known to be the same"


def _rolled_out(uid: str = "u-1") -> dict[str, Any]:
    """A Deployment as the API server returns it: managedFields with the deployment controller's
    status entry between two main-resource entries, a resourceVersion and a status."""
    body = deployment("web")
    body["metadata"] |= {"uid": uid, "generation": 2, "resourceVersion": "7"}
    body["metadata"]["managedFields"] = [
        {"manager": "kubectl", "operation": "Apply", "time": "2026-01-01T00:00:01Z", "fieldsV1": {"f:spec": {}}},
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "subresource": "status",
            "time": "2026-01-01T00:00:02Z",
            "fieldsV1": {"f:status": {"f:replicas": {}}},
        },
        {"manager": "lameduck", "operation": "Apply", "time": "2026-01-01T00:00:03Z", "fieldsV1": {}},
    ]
    body["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 0}
    return body


def _status_written(body: dict[str, Any], version: str) -> dict[str, Any]:
    """body after a status write of the deployment controller: its status, its resourceVersion
    and its status entry's time."""
    written = copy.deepcopy(body)
    written["metadata"]["resourceVersion"] = version
    written["metadata"]["managedFields"][1]["time"] = "2026-01-01T00:00:09Z"
    written["status"] = {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1}
    return written


def test_a_status_write_keeps_only_what_it_changes_and_the_body_comes_back_as_it_was_written() -> None:
    store = DeploymentStore("lameduck.dev/")
    ref = store.put(_rolled_out())
    written = _status_written(_rolled_out(), "8")
    assert store.put_status(written)
    back = store.get(ref)
    assert back == written
    assert json.dumps(back) == json.dumps(written), "key order and list positions as written"
    assert store.is_stored(written), "its resourceVersion is the one kept"


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b["metadata"]["labels"].update(team="a"),
        lambda b: b["metadata"].update(finalizers=["example.com/keep"]),
        lambda b: b["metadata"]["managedFields"][0].update(fieldsV1={"f:metadata": {}}),
        lambda b: b["spec"].update(paused=True),
        lambda b: b["metadata"].update(uid="u-2"),
        lambda b: b["metadata"].update(generation=3),
    ],
    ids=["labels", "finalizers", "a main-resource entry", "spec, same generation", "uid", "generation"],
)
def test_a_write_that_changes_more_than_the_status_is_not_kept_by_put_status(change: Any) -> None:
    store = DeploymentStore("lameduck.dev/")
    ref = store.put(_rolled_out())
    written = _status_written(_rolled_out(), "8")
    change(written)
    assert not store.put_status(written)
    assert store.get(ref) == _rolled_out(), "nothing of it kept"
    other = _status_written(_rolled_out(), "8")
    other["metadata"]["name"] = "other"
    assert not store.put_status(other), "nothing stored under that name"


def test_a_body_without_status_resource_version_or_managed_fields_comes_back_as_it_went_in() -> None:
    store = DeploymentStore("lameduck.dev/")
    body = deployment("web")
    for key in ("status", "resourceVersion", "managedFields"):
        body.pop(key, None)
        body["metadata"].pop(key, None)
    ref = store.put(body)
    assert json.dumps(store.get(ref)) == json.dumps(body)
    null_status = _rolled_out()
    null_status["status"] = None
    ref = store.put(null_status)
    assert json.dumps(store.get(ref)) == json.dumps(null_status), "a null of its own is not taken for a place kept"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(extra=st.dictionaries(st.text(max_size=8), JSON, max_size=4), status=JSON)
def test_whatever_json_a_deployment_carries_comes_back_equal_and_in_its_order(
    extra: dict[str, Any], status: Any
) -> None:
    store = DeploymentStore("lameduck.dev/")
    body = _rolled_out()
    body["spec"]["template"]["metadata"] = {"annotations": {"x": json.dumps(extra)}}
    body |= {"extra": extra}
    ref = store.put(body)
    back = store.get(ref)
    assert back == body
    assert json.dumps(back) == json.dumps(body)
    written = copy.deepcopy(body) | {"status": status}
    assert store.put_status(written)
    assert json.dumps(store.get(ref)) == json.dumps(written)
