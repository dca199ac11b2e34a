"""Label selection, namespace selection, opt-out and precedence of overlapping policies."""

from __future__ import annotations

from typing import Any

import pytest

from lameduck_operator.logic.selection import DeploymentRef, deployment_ref, labels_match, policy_selects, select_policy
from lameduck_operator.model import LabelSelector, Requirement, SelectorOperator
from tests.unit.builders import deployment, policy

IN, NOT_IN, EXISTS, MISSING = (
    SelectorOperator.IN,
    SelectorOperator.NOT_IN,
    SelectorOperator.EXISTS,
    SelectorOperator.DOES_NOT_EXIST,
)


def expr(key: str, op: SelectorOperator, *values: str) -> LabelSelector:
    return LabelSelector(match_expressions=(Requirement(key, op, values),))


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        (LabelSelector(), {}, True),
        (LabelSelector(), {"a": "1"}, True),
        (LabelSelector(match_labels=(("tier", "web"),)), {"tier": "web", "x": "y"}, True),
        (LabelSelector(match_labels=(("tier", "web"),)), {"tier": "api"}, False),
        (LabelSelector(match_labels=(("tier", "web"),)), {}, False),
        (LabelSelector(match_labels=(("a", "1"), ("b", "2"))), {"a": "1"}, False),
        (expr("env", IN, "prod", "staging"), {"env": "prod"}, True),
        (expr("env", IN, "prod", "staging"), {"env": "dev"}, False),
        (expr("env", IN, "prod"), {}, False),
        (expr("env", NOT_IN, "dev"), {"env": "prod"}, True),
        (expr("env", NOT_IN, "dev"), {"env": "dev"}, False),
        (expr("env", NOT_IN, "dev"), {}, True),
        (expr("batch", EXISTS), {"batch": ""}, True),
        (expr("batch", EXISTS), {}, False),
        (expr("batch", MISSING), {}, True),
        (expr("batch", MISSING), {"batch": "yes"}, False),
        (
            LabelSelector(
                match_labels=(("tier", "web"),),
                match_expressions=(Requirement("env", IN, ("prod",)), Requirement("batch", MISSING)),
            ),
            {"tier": "web", "env": "prod"},
            True,
        ),
        (
            LabelSelector(match_labels=(("tier", "web"),), match_expressions=(Requirement("env", IN, ("prod",)),)),
            {"tier": "web", "env": "dev"},
            False,
        ),
    ],
)
def test_labels_match(selector: LabelSelector, labels: dict[str, str], matches: bool) -> None:
    assert labels_match(selector, labels) is matches


@pytest.mark.parametrize(
    ("namespace_selector", "namespace", "ns_labels", "selected"),
    [
        ({}, "shop", None, True),
        ({"matchLabels": {"env": "prod"}}, "shop", {"env": "prod"}, True),
        ({"matchLabels": {"env": "prod"}}, "shop", {"env": "dev"}, False),
        ({"matchLabels": {"env": "prod"}}, "shop", None, False),
        # The API server labels every namespace with its own name.
        ({"matchLabels": {"kubernetes.io/metadata.name": "shop"}}, "shop", None, True),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}, "shop", {}, True),
    ],
)
def test_cluster_policy_namespace_selector(
    namespace_selector: dict[str, Any], namespace: str, ns_labels: dict[str, str] | None, selected: bool
) -> None:
    cluster = policy("c", None, {"namespaceSelector": namespace_selector})
    assert policy_selects(cluster, deployment(namespace=namespace), ns_labels) is selected


def test_namespaced_policy_selects_only_its_own_namespace() -> None:
    assert policy_selects(policy(namespace="shop"), deployment(namespace="shop"), None)
    assert not policy_selects(policy(namespace="shop"), deployment(namespace="other"), None)


def test_excluded_namespaces_are_never_selected() -> None:
    excluded = frozenset({"kube-system"})
    assert not policy_selects(policy("c", None), deployment(namespace="kube-system"), None, excluded)
    assert policy_selects(policy("c", None), deployment(namespace="shop"), None, excluded)


def test_no_policy_selects() -> None:
    selection = select_policy(
        deployment(labels={"tier": "db"}), [policy(spec={"selector": {"matchLabels": {"tier": "web"}}})]
    )
    assert selection.winner is None
    assert selection.losses == ()


@pytest.mark.parametrize("value", ["true", "True", "TRUE"])
def test_opt_out_annotation(value: str) -> None:
    selection = select_policy(deployment(annotations={"lameduck.dev/skip": value}), [policy()])
    assert selection.opted_out
    assert selection.winner is not None


@pytest.mark.parametrize("value", ["false", "", "yes"])
def test_other_annotation_values_do_not_opt_out(value: str) -> None:
    assert not select_policy(deployment(annotations={"lameduck.dev/skip": value}), [policy()]).opted_out


@pytest.mark.parametrize(
    ("policies", "winner", "reason"),
    [
        # namespaced beats cluster, even with equal priority and an earlier name
        ([policy("b", "shop"), policy("a", None)], "b", "namespaced policy takes precedence"),
        # ... and even against a higher-priority cluster policy
        ([policy("b", "shop"), policy("a", None, {"priority": 100})], "b", "namespaced policy takes precedence"),
        # then priority
        ([policy("a", None), policy("b", None, {"priority": 5})], "b", "higher priority (5 > 0)"),
        ([policy("a", "shop", {"priority": -1}), policy("b", "shop")], "b", "higher priority (0 > -1)"),
        # then name
        ([policy("web", None), policy("api", None)], "api", 'equal priority; "api" sorts before "web"'),
        ([policy("web", "shop"), policy("api", "shop")], "api", 'equal priority; "api" sorts before "web"'),
    ],
)
def test_precedence_of_overlapping_policies(policies: list[Any], winner: str, reason: str) -> None:
    for ordering in (policies, list(reversed(policies))):
        selection = select_policy(deployment(), ordering)
        assert selection.winner is not None
        assert selection.winner.ref.name == winner
        assert len(selection.losses) == 1
        assert reason in selection.losses[0].reason
        assert selection.losses[0].winner == selection.winner.ref


def test_loss_names_the_winner() -> None:
    selection = select_policy(deployment(), [policy("base", None), policy("web", "shop")])
    assert str(selection.losses[0]) == (
        "ClusterGracefulPolicy base lost to GracefulPolicy shop/web: "
        "a namespaced policy takes precedence over a cluster policy"
    )


def test_three_way_overlap_lists_every_loser() -> None:
    selection = select_policy(
        deployment(), [policy("z", None, {"priority": 9}), policy("a", None), policy("m", "shop", {"priority": -5})]
    )
    assert selection.winner is not None
    assert selection.winner.ref.name == "m"
    assert [loss.policy.name for loss in selection.losses] == ["z", "a"]


@pytest.mark.parametrize(
    ("manifest", "ref"),
    [
        pytest.param({"metadata": {"name": "web", "namespace": "shop"}}, DeploymentRef("shop", "web"), id="as given"),
        pytest.param({"metadata": {"name": "web"}}, DeploymentRef("default", "web"), id="no namespace is default"),
        pytest.param({"metadata": {"namespace": "shop"}}, DeploymentRef("shop", ""), id="no name is empty"),
        pytest.param({}, DeploymentRef("default", ""), id="no metadata"),
    ],
)
def test_a_manifest_names_its_deployment(manifest: dict[str, Any], ref: DeploymentRef) -> None:
    assert deployment_ref(manifest) == ref
