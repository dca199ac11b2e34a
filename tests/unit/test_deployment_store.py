"""The fleet's Deployment store: whole bodies back as they went in, metadata at hand."""

from __future__ import annotations

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
