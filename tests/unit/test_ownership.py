"""Reading managedFields: the foreign view, owners of a field, who changed what."""

from __future__ import annotations

from typing import Any

import jsonpatch
import pytest

from lameduck_operator.logic.ownership import (
    FieldOwner,
    Ownership,
    changed_managers,
    entries_removal_patch,
    foreign_view,
    grafted,
    latest_other_manager,
    managed_by,
    merge_trees,
    owners,
    ownership_restore_patch,
    pruned,
    restrict,
    subtree,
)


def entry(
    manager: str, fields: dict[str, Any], time: str = "2026-01-01T00:00:00Z", op: str = "Update"
) -> dict[str, Any]:
    return {"manager": manager, "operation": op, "time": time, "fieldsType": "FieldsV1", "fieldsV1": fields}


APP = 'k:{"name":"app"}'
STORED: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "web",
        "namespace": "shop",
        "managedFields": [
            entry(
                "kubectl",
                {
                    "f:spec": {
                        "f:template": {
                            "f:spec": {
                                "f:containers": {APP: {".": {}, "f:name": {}, "f:image": {}}},
                                "f:terminationGracePeriodSeconds": {},
                            }
                        }
                    }
                },
            ),
            entry(
                "lameduck",
                {
                    "f:spec": {
                        "f:template": {
                            "f:spec": {
                                "f:containers": {
                                    APP: {".": {}, "f:name": {}, "f:lifecycle": {"f:preStop": {"f:httpGet": {}}}}
                                },
                            }
                        }
                    }
                },
                time="2026-01-01T00:00:05Z",
                op="Apply",
            ),
            entry("kube-controller-manager", {"f:status": {}}, op="Update") | {"subresource": "status"},
        ],
    },
    "spec": {
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "x:1",
                        "lifecycle": {"preStop": {"httpGet": {"path": "/hold/app"}}},
                        "terminationMessagePath": "/dev/termination-log",
                    }
                ],
                "terminationGracePeriodSeconds": 65,
                "dnsPolicy": "ClusterFirst",
            }
        }
    },
    "status": {"replicas": 1},
}


def test_foreign_view_keeps_only_what_others_own() -> None:
    view = foreign_view(STORED)
    assert view["spec"]["template"]["spec"] == {
        "containers": [{"name": "app", "image": "x:1"}],
        "terminationGracePeriodSeconds": 65,
    }
    assert view["metadata"] == {"name": "web", "namespace": "shop"}
    assert "status" not in view


@pytest.mark.parametrize(
    "selector", ["k:[1]", "k:" + "[" * 100_000, "v:" + "[" * 100_000, "k:" + "[" * 900 + "]" * 900]
)
def test_a_selector_that_is_no_json_object_or_too_deep_matches_nothing(selector: str) -> None:
    """managedFields come from the API server; the CLI reads them from any file."""
    stored = {
        **STORED,
        "metadata": {
            **STORED["metadata"],
            "managedFields": [
                entry("kubectl", {"f:spec": {"f:template": {"f:spec": {"f:containers": {selector: {"f:image": {}}}}}}})
            ],
        },
    }
    assert foreign_view(stored)["spec"] == {"template": {"spec": {"containers": []}}}


def test_objects_without_managed_fields_are_taken_whole() -> None:
    bare = {"metadata": {"name": "web"}, "spec": {"replicas": 2}}
    assert foreign_view(bare) == bare


def test_owners_of_a_field() -> None:
    pod = ("spec", "template", "spec")
    assert owners(STORED, (*pod, "terminationGracePeriodSeconds")) == ["kubectl"]
    assert owners(STORED, (*pod, "containers", ("name", "app"), "lifecycle", "preStop")) == []
    assert owners(STORED, (*pod, "containers", ("name", "other"))) == []


def test_latest_other_manager_only_after_lameduck() -> None:
    assert latest_other_manager(STORED) is None
    later = {
        **STORED,
        "metadata": {
            **STORED["metadata"],
            "managedFields": [
                *STORED["metadata"]["managedFields"],
                entry("argocd", {"f:spec": {}}, time="2026-01-01T00:01:00Z"),
            ],
        },
    }
    assert latest_other_manager(later) == "argocd"


def test_changed_managers_between_observations() -> None:
    replaced = {
        **STORED,
        "metadata": {
            **STORED["metadata"],
            "managedFields": [*STORED["metadata"]["managedFields"], entry("kubectl-replace", {"f:spec": {}})],
        },
    }
    assert changed_managers(STORED, replaced) == ["kubectl-replace"]
    assert changed_managers(STORED, STORED) == []


def stored(*entries: dict[str, Any], **body: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "shop", "managedFields": list(entries)}, **body}


def test_a_deployment_lameduck_applied_to_is_managed_by_it() -> None:
    assert managed_by(STORED) is True
    kubectl_only = stored(entry("kubectl", {"f:spec": {}}))
    assert managed_by(kubectl_only) is False
    status_only = stored(
        entry("kubectl", {"f:spec": {}}), entry("lameduck", {"f:status": {}}) | {"subresource": "status"}
    )
    assert managed_by(status_only) is False, "a status write is not an apply of the Deployment"


def test_set_items_are_kept_by_value() -> None:
    obj = stored(
        entry("kubectl", {"f:metadata": {"f:finalizers": {'v:"example.com/keep"': {}}}}),
        entry("lameduck", {"f:metadata": {"f:finalizers": {'v:"lameduck.dev/mine"': {}}}}),
    )
    obj["metadata"]["finalizers"] = ["example.com/keep", "lameduck.dev/mine", "example.com/nobody"]
    assert foreign_view(obj)["metadata"]["finalizers"] == ["example.com/keep"]


def test_list_items_only_lameduck_owns_are_left_out_of_the_foreign_view() -> None:
    app, sidecar = {"name": "app", "image": "x:1"}, {"name": "lameduck", "image": "lameduck/sidecar:1"}
    obj = stored(
        entry("kubectl", {"f:spec": {"f:containers": {APP: {".": {}, "f:name": {}, "f:image": {}}}}}),
        entry("lameduck", {"f:spec": {"f:containers": {'k:{"name":"lameduck"}': {".": {}, "f:name": {}}}}}),
        spec={"containers": [app, sidecar]},
    )
    assert foreign_view(obj)["spec"] == {"containers": [app]}


@pytest.mark.parametrize(
    ("value", "tree", "kept"),
    [
        pytest.param({"name": "app", "image": "x:1"}, {".": {}}, {"name": "app", "image": "x:1"}, id="a leaf"),
        pytest.param(
            {"name": "app", "image": "x:1"}, {".": {}, "f:name": {}}, {"name": "app"}, id="a node with children"
        ),
        pytest.param(["a", "b", "c"], {"i:1": {}}, ["b"], id="an index selector keeps that item"),
        pytest.param(["a", "b", "c"], {'v:"c"': {}, 'v:"a"': {}}, ["a", "c"], id="value selectors keep their items"),
    ],
)
def test_restrict_keeps_what_the_tree_names(value: Any, tree: dict[str, Any], kept: Any) -> None:
    assert restrict(value, tree) == kept


def test_managers_owning_different_fields_under_one_parent_all_count() -> None:
    obj = stored(
        entry("kubectl", {"f:spec": {"f:replicas": {}}}),
        entry("hpa", {"f:spec": {"f:paused": {}}}),
        spec={"replicas": 3, "paused": False, "revisionHistoryLimit": 10},
    )
    assert foreign_view(obj)["spec"] == {"replicas": 3, "paused": False}


def test_owners_are_found_after_lameduck_own_entry() -> None:
    obj = stored(
        entry("lameduck", {"f:spec": {"f:replicas": {}}}),
        entry("kubectl", {"f:spec": {"f:replicas": {}}}),
        entry("helm", {"f:spec": {"f:replicas": {}}}),
    )
    assert owners(obj, ("spec", "replicas")) == ["helm", "kubectl"]


T0, T1, T2, T3 = (f"2026-01-01T00:00:0{i}Z" for i in range(4))


@pytest.mark.parametrize(
    ("before", "after", "changed"),
    [
        pytest.param([entry("kubectl", {}, T0)], [entry("kubectl", {}, T1)], ["kubectl"], id="a newer time is a write"),
        pytest.param([entry("kubectl", {}, T1)], [entry("kubectl", {}, T1)], [], id="the same time is not"),
        pytest.param(
            [entry("kubectl", {}, T1, "Update")],
            [entry("kubectl", {}, T1, "Update"), entry("kubectl", {}, T0, "Apply")],
            ["kubectl"],
            id="an apply by a manager that only updated before is a write",
        ),
        pytest.param([], [entry("lameduck", {}, T1, "Apply")], [], id="lameduck's own writes never count"),
        pytest.param(
            [entry("helm", {}, T0)],
            [entry("helm", {}, T1), entry("argocd", {}, T0), entry("kubectl", {}, T0)],
            ["argocd", "helm", "kubectl"],
            id="every writer once, sorted",
        ),
    ],
)
def test_changed_managers_are_the_other_managers_that_wrote(
    before: list[dict[str, Any]], after: list[dict[str, Any]], changed: list[str]
) -> None:
    assert changed_managers(stored(*before), stored(*after)) == changed


@pytest.mark.parametrize(
    ("entries", "latest"),
    [
        pytest.param(
            [entry("kubectl", {}, T0), entry("helm", {}, T1)], "helm", id="without lameduck the newest manager"
        ),
        pytest.param(
            [entry("lameduck", {}, T0), entry("argocd", {}, T2), entry("helm", {}, T3), entry("kubectl", {}, T1)],
            "helm",
            id="of several newer managers the latest",
        ),
        pytest.param(
            [entry("lameduck", {}, T1), entry("kubectl", {}, T1)], None, id="a write at lameduck's time is not newer"
        ),
    ],
)
def test_the_latest_other_manager(entries: list[dict[str, Any]], latest: str | None) -> None:
    assert latest_other_manager(stored(*entries)) == latest


# --- ownership_restore_patch -------------------------------------------------------------------------

GRACE_FIELDS: dict[str, Any] = {"f:spec": {"f:template": {"f:spec": {"f:terminationGracePeriodSeconds": {}}}}}
LABEL_FIELDS: dict[str, Any] = {"f:metadata": {"f:labels": {"f:tier": {}}}}
STATUS_ENTRY = {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status", "fieldsV1": {}}


def test_the_writers_entries_are_given_back_and_lameducks_update_entry_dropped() -> None:
    both = merge_trees([LABEL_FIELDS, GRACE_FIELDS])
    writer_before = {"manager": "kubectl", "operation": "Update", "fieldsV1": both}
    before = {"metadata": {"managedFields": [writer_before, STATUS_ENTRY]}}
    stored = {
        "metadata": {
            "managedFields": [
                {"manager": "kubectl", "operation": "Update", "fieldsV1": LABEL_FIELDS},
                STATUS_ENTRY,
                {"manager": "lameduck", "operation": "Update", "fieldsV1": GRACE_FIELDS},
            ]
        }
    }
    patch = ownership_restore_patch(before, stored)
    assert patch == [
        {"op": "test", "path": "/metadata/managedFields/0/manager", "value": "kubectl"},
        {"op": "test", "path": "/metadata/managedFields/2/manager", "value": "lameduck"},
        {"op": "replace", "path": "/metadata/managedFields/0/fieldsV1", "value": writer_before["fieldsV1"]},
        {"op": "remove", "path": "/metadata/managedFields/2"},
    ]
    restored = jsonpatch.apply_patch(stored, patch)
    assert restored["metadata"]["managedFields"] == [writer_before, STATUS_ENTRY]


def test_nothing_to_give_back_is_no_patch_and_lameducks_apply_entry_stays() -> None:
    apply_entry = {"manager": "lameduck", "operation": "Apply", "fieldsV1": GRACE_FIELDS}
    entries = [{"manager": "kubectl", "operation": "Update", "fieldsV1": LABEL_FIELDS}, apply_entry]
    assert (
        ownership_restore_patch({"metadata": {"managedFields": entries}}, {"metadata": {"managedFields": entries}})
        == []
    )


PRESTOP_PATH = ("spec", "template", "spec", "containers", ("name", "app"), "lifecycle", "preStop")
CONTAINERS_FIELDS: dict[str, Any] = {
    "f:spec": {"f:template": {"f:spec": {"f:containers": {APP: {".": {}, "f:name": {}, "f:lifecycle": {}}}}}}
}


def test_the_node_at_a_path_is_found_through_keyed_items_whatever_their_keys_spacing() -> None:
    spaced: dict[str, Any] = {"f:containers": {'k:{"name": "app"}': {"f:lifecycle": {"f:preStop": {"f:exec": {}}}}}}
    assert subtree(spaced, ("containers", ("name", "app"), "lifecycle", "preStop")) == {"f:exec": {}}
    assert subtree(spaced, ("containers", ("name", "web"), "lifecycle")) is None
    assert subtree(spaced, ("initContainers",)) is None


def test_grafting_merges_into_the_node_there_or_makes_the_nodes_on_the_way() -> None:
    hook: dict[str, Any] = {"f:exec": {"f:command": {}}}
    into = grafted(CONTAINERS_FIELDS, PRESTOP_PATH, hook)
    assert into["f:spec"]["f:template"]["f:spec"]["f:containers"] == {
        APP: {".": {}, "f:name": {}, "f:lifecycle": {"f:preStop": hook}}
    }
    made = grafted({}, PRESTOP_PATH, hook)
    assert subtree(made, PRESTOP_PATH) == hook
    assert 'k:{"name":"app"}' in made["f:spec"]["f:template"]["f:spec"]["f:containers"], "the API server's spelling"
    assert CONTAINERS_FIELDS["f:spec"]["f:template"]["f:spec"]["f:containers"][APP]["f:lifecycle"] == {}, "a copy"


def test_pruning_removes_the_node_and_the_nodes_it_leaves_empty_only() -> None:
    hook = grafted(CONTAINERS_FIELDS, PRESTOP_PATH, {"f:exec": {"f:command": {}}})
    assert pruned(hook, PRESTOP_PATH) == {
        "f:spec": {"f:template": {"f:spec": {"f:containers": {APP: {".": {}, "f:name": {}}}}}}
    }, "the lifecycle node it left empty went too, the item's own node stayed"
    alone = grafted({}, PRESTOP_PATH, {"f:exec": {}})
    assert pruned(alone, PRESTOP_PATH) == {}
    assert pruned(hook, ("spec", "replicas")) == hook, "nothing there: unchanged"


def test_owners_at_a_path_are_the_other_managers_with_their_fields_there() -> None:
    found = Ownership.of(STORED).owners_at(("spec", "template", "spec", "containers", ("name", "app")))
    assert found == (FieldOwner("kubectl", "Update", {".": {}, "f:name": {}, "f:image": {}}),)
    assert Ownership.of(STORED).owners_at(PRESTOP_PATH) == ()
    assert Ownership.of(STORED).ours_at(PRESTOP_PATH)
    assert not Ownership.of(STORED).ours_at(("spec", "template", "spec", "terminationGracePeriodSeconds"))
    kubectl = ("spec", "template", "spec", "terminationGracePeriodSeconds")
    assert Ownership.of(STORED).owners_at(kubectl, excluded=("kubectl",)) == ()


def test_every_entry_of_a_manager_is_removed_last_first_each_after_a_test_of_who_it_is() -> None:
    entries = [{"manager": "a"}, {"manager": "lameduck-takeover"}, {"manager": "b"}, {"manager": "lameduck-takeover"}]
    patch = entries_removal_patch({"metadata": {"managedFields": entries}}, "lameduck-takeover")
    left = jsonpatch.apply_patch({"metadata": {"managedFields": entries}}, patch)
    assert left["metadata"]["managedFields"] == [{"manager": "a"}, {"manager": "b"}]
    assert patch[0] == {"op": "test", "path": "/metadata/managedFields/3/manager", "value": "lameduck-takeover"}
    assert entries_removal_patch({"metadata": {}}, "lameduck-takeover") == []
