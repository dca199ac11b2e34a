"""Reading managedFields: the foreign view, owners of a field, who changed what."""

from __future__ import annotations

from typing import Any

from lameduck_operator.logic.ownership import changed_managers, foreign_view, latest_other_manager, owners


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
