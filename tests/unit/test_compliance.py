"""Judging Deployments against their policy: compliant, pending, conflict, skipped, unmanaged."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from lameduck_operator.logic.compliance import State, check, evaluate, missing_fields
from lameduck_operator.logic.intent import plan_deployment
from lameduck_operator.logic.merge import is_subset, merge
from lameduck_operator.settings import Settings, SidecarSettings
from tests.unit.builders import container, deployment, policy

SETTINGS = Settings()


def with_server_defaults(d: dict[str, Any]) -> dict[str, Any]:
    """What the API server adds when it stores a Deployment."""
    out = copy.deepcopy(d)
    pod = out["spec"]["template"]["spec"]
    pod.setdefault("restartPolicy", "Always")
    pod.setdefault("dnsPolicy", "ClusterFirst")
    for c in [*pod.get("containers", []), *pod.get("initContainers", [])]:
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("imagePullPolicy", "IfNotPresent")
        probe = c.get("startupProbe")
        if probe:
            probe.setdefault("timeoutSeconds", 1)
            probe.setdefault("successThreshold", 1)
    return out


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"readinessGate": {"enabled": True}},
        {"hold": {"method": "Sleep"}},
        {"containers": ["app"], "terminationGracePeriodSeconds": 100},
    ],
)
@pytest.mark.parametrize(
    "settings", [SETTINGS, Settings(sidecar=SidecarSettings(native=False))], ids=["native", "classic"]
)
def test_rendered_deployment_is_compliant_and_stays_so(spec: dict[str, Any], settings: Settings) -> None:
    original = deployment(containers=[container("app", 8080), container("metrics", 9100)])
    plan = plan_deployment(original, policy(spec=spec), settings)
    assert check(original, plan).state is State.PENDING
    rendered = merge(original, plan.intent)
    stored = with_server_defaults(rendered)
    assert check(stored, plan).state is State.COMPLIANT
    replan = plan_deployment(stored, policy(spec=spec), settings)
    assert replan.conflicts == (), "lameduck's own fields never conflict with it"
    assert check(stored, replan).state is State.COMPLIANT
    assert merge(stored, replan.intent) == stored, "applying again changes nothing"


def test_pending_lists_what_is_missing() -> None:
    plan = plan_deployment(deployment(), policy(spec={"readinessGate": {"enabled": True}}), SETTINGS)
    verdict = check(deployment(), plan)
    assert verdict.state is State.PENDING
    assert verdict.reason.split("; ") == [
        "the lameduck sidecar is missing",
        'container "app" lacks the lameduck preStop hold',
        "terminationGracePeriodSeconds is unset, the policy needs 65",
        'readinessGates is unset, the policy needs [{"conditionType": "lameduck.dev/endpoints-ready"}]',
        "minReadySeconds is unset, the policy needs 2",
    ]


def test_outdated_sidecar_is_pending() -> None:
    old = plan_deployment(deployment(), policy(spec={"hold": {"quietPeriod": "5s"}}), SETTINGS)
    rendered = merge(deployment(), old.intent)
    new = plan_deployment(rendered, policy(), SETTINGS)
    verdict = check(rendered, new)
    assert verdict.state is State.PENDING
    assert verdict.reason == "the lameduck sidecar differs from the policy"


def test_other_prestop_handler_beside_ours_is_not_compliant() -> None:
    plan = plan_deployment(deployment(), policy(), SETTINGS)
    rendered = merge(deployment(), plan.intent)
    rendered["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"] = {"command": ["x"]}
    assert 'container "app" lacks the lameduck preStop hold' in check(rendered, plan).reason


def test_conflict_verdict_carries_the_reasons() -> None:
    d = deployment(containers=[container("app", lifecycle={"preStop": {"exec": {"command": ["sleep", "5"]}}})])
    verdict = evaluate(d, [policy()], SETTINGS).verdict
    assert verdict.state is State.CONFLICT
    assert verdict.reason == 'container "app" already has a preStop hook (exec)'


def test_evaluate_unmanaged_and_skipped() -> None:
    unmanaged = evaluate(deployment(namespace="other"), [policy(namespace="shop")], SETTINGS)
    assert unmanaged.verdict.state is State.UNMANAGED
    assert unmanaged.verdict.reason == "no policy selects it"
    assert unmanaged.plan is None
    skipped = evaluate(deployment(annotations={"lameduck.dev/skip": "true"}), [policy()], SETTINGS)
    assert skipped.verdict.state is State.SKIPPED
    assert skipped.verdict.reason == 'opted out with lameduck.dev/skip: "true"'
    assert skipped.plan is None
    excluded = evaluate(deployment(namespace="kube-system"), [policy(namespace=None)], SETTINGS)
    assert excluded.verdict.state is State.UNMANAGED


@pytest.mark.parametrize(
    ("intent", "actual", "subset"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}, True),
        ({"a": 1}, {}, False),
        ({"containers": [{"name": "x", "v": 1}]}, {"containers": [{"name": "y"}, {"name": "x", "v": 1, "w": 2}]}, True),
        ({"containers": [{"name": "x", "v": 1}]}, {"containers": [{"name": "x", "v": 2}]}, False),
        ({"gates": [1]}, {"gates": [1, 2]}, False),
        ({"preStop": {"httpGet": {"path": "/h"}}}, {"preStop": {"httpGet": {"path": "/h", "host": ""}}}, True),
        ({"preStop": {"httpGet": {"path": "/h"}}}, {"preStop": {"httpGet": {"path": "/h"}, "exec": {}}}, False),
        ({"lifecycle": {"preStop": {"sleep": {}}}}, {"lifecycle": None}, False),
        ({"lifecycle": {"preStop": {"sleep": {}}}}, {"lifecycle": "x"}, False),
        ({"env": [{"name": "A", "value": "1"}]}, {"env": None}, False),
        ({"env": [{"name": "A", "value": "1"}]}, {"env": {"name": "A", "value": "1"}}, False),
    ],
)
def test_is_subset(intent: dict[str, Any], actual: dict[str, Any], subset: bool) -> None:
    assert is_subset(intent, actual) is subset


def test_merge_replaces_prestop_whole_and_merges_containers_by_name() -> None:
    base: dict[str, Any] = {
        "containers": [{"name": "a", "lifecycle": {"preStop": {"exec": {}}, "postStart": {"exec": {}}}}, {"name": "b"}]
    }
    intent = {"containers": [{"name": "a", "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}, {"name": "c"}]}
    assert merge(base, intent) == {
        "containers": [
            {"name": "a", "lifecycle": {"preStop": {"sleep": {"seconds": 1}}, "postStart": {"exec": {}}}},
            {"name": "b"},
            {"name": "c"},
        ]
    }
    assert base["containers"][0]["lifecycle"]["preStop"] == {"exec": {}}, "merge does not mutate its input"


def test_a_value_below_the_policy_shows_what_it_is_now() -> None:
    d = deployment(terminationGracePeriodSeconds=30)
    d["spec"]["minReadySeconds"] = 1
    plan = plan_deployment(d, policy(spec={"minReadySeconds": 5, "hold": {"method": "Sleep"}}), SETTINGS)
    assert missing_fields(d, plan)[1:] == [
        "terminationGracePeriodSeconds is 30, the policy needs 65",
        "minReadySeconds is 1, the policy needs 5",
    ]
