"""Judging Deployments against their policy: compliant, pending, conflict, skipped, unmanaged."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from lameduck_operator.logic.compliance import Reason, State, check, missing_fields
from lameduck_operator.logic.decision import Decision, decide
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
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(kind)
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
    assert (verdict.state, verdict.reason) == (State.PENDING, Reason.OUTDATED)
    assert (
        verdict.message.split("; ")
        == list(verdict.missing)
        == [
            "the lameduck sidecar is missing",
            'container "app" lacks the lameduck preStop hold',
            "terminationGracePeriodSeconds is unset, the policy needs 65",
            'readinessGates is unset, the policy needs [{"conditionType": "lameduck.dev/endpoints-ready"}]',
            "minReadySeconds is unset, the policy needs 2",
        ]
    )


def test_outdated_sidecar_is_pending() -> None:
    old = plan_deployment(deployment(), policy(spec={"hold": {"quietPeriod": "5s"}}), SETTINGS)
    rendered = merge(deployment(), old.intent)
    new = plan_deployment(rendered, policy(), SETTINGS)
    verdict = check(rendered, new)
    assert verdict.state is State.PENDING
    assert verdict.message == "the lameduck sidecar differs from the policy"


def test_other_prestop_handler_beside_ours_is_not_compliant() -> None:
    plan = plan_deployment(deployment(), policy(), SETTINGS)
    rendered = merge(deployment(), plan.intent)
    rendered["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"] = {"command": ["x"]}
    assert 'container "app" lacks the lameduck preStop hold' in check(rendered, plan).message


def judged(d: dict[str, Any], policies: list[Any]) -> Decision:
    return decide(d, policies, SETTINGS, None, lambda _: 0)


def test_conflict_verdict_carries_the_reasons() -> None:
    d = deployment(containers=[container("app", lifecycle={"preStop": {"exec": {"command": ["sleep", "5"]}}})])
    verdict = judged(d, [policy()]).verdict
    assert (verdict.state, verdict.reason) == (State.CONFLICT, Reason.CONFLICTING_FIELDS)
    assert verdict.message == 'container "app" already has a preStop hook (exec)'


def test_unmanaged_and_skipped_deployments_have_no_plan() -> None:
    unmanaged = judged(deployment(namespace="other"), [policy(namespace="shop")])
    assert (unmanaged.verdict.state, unmanaged.verdict.reason) == (State.UNMANAGED, Reason.NO_POLICY)
    assert unmanaged.verdict.message == "no policy selects it"
    assert unmanaged.plan is None
    skipped = judged(deployment(annotations={"lameduck.dev/skip": "true"}), [policy()])
    assert (skipped.verdict.state, skipped.verdict.reason) == (State.SKIPPED, Reason.OPTED_OUT)
    assert skipped.verdict.message == 'opted out with lameduck.dev/skip: "true"'
    assert skipped.plan is None
    excluded = judged(deployment(namespace="kube-system"), [policy(namespace=None)])
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
