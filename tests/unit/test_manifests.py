"""harness/manifests.py's builders that the benchmarks share."""

from __future__ import annotations

from harness import manifests


def test_service_account_with_role_grants_exactly_its_rules_to_its_account_in_one_namespace() -> None:
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    account, role, binding = manifests.service_account_with_role("bench", "reader", rules)
    assert [o["kind"] for o in (account, role, binding)] == ["ServiceAccount", "Role", "RoleBinding"]
    assert all(o["metadata"] == {"name": "reader", "namespace": "bench"} for o in (account, role, binding))
    assert role["rules"] == rules
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "reader", "namespace": "bench"}]


def test_guarded_names_guard_over_lameduck_yes_unless_given_another_name_and_labels() -> None:
    default = manifests.guarded("ns", hold={"propagationDelay": "3s"})
    assert default["metadata"] == {"name": "guard", "namespace": "ns"}
    assert default["spec"] == {
        "apply": "Immediate",
        "selector": {"matchLabels": {"lameduck": "yes"}},
        "hold": {"propagationDelay": "3s"},
    }
    labels = {"faults": "yes"}
    given = manifests.guarded("ns", name="faults", labels=labels, maxConcurrentRollouts=2)
    assert given["metadata"] == {"name": "faults", "namespace": "ns"}
    assert given["spec"] == {"apply": "Immediate", "selector": {"matchLabels": labels}, "maxConcurrentRollouts": 2}
    assert given["spec"]["selector"]["matchLabels"] is not labels, "the policy holds a copy of the caller's labels"
