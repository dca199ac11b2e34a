"""The rollout benchmark's variants sized for the simulated cloud LB (bench/rollout_objects.py):
the policy a user would write behind it, read by the operator's own model, and a sleep with the
grace period it needs."""

from __future__ import annotations

from typing import Any

from bench.lb_targets import DEFAULT_DEREGISTRATION_DELAY
from bench.rollout_objects import (
    CONDITIONS,
    DEFAULT_CONDITIONS,
    NAMESPACE,
    VARIANTS,
    demo_deployment,
    policy,
    routes,
    service,
)
from lameduck_operator.logic.budget import BudgetSource, budget_seconds, max_hold_for
from lameduck_operator.logic.l7_backends import RouteKind, deployment_is_l7_backend, route_kind_of, route_of
from lameduck_operator.logic.readiness import service_view
from lameduck_operator.logic.shapes import l7_errors
from lameduck_operator.model import parse_policy


def test_the_slow_lb_policy_holds_past_the_lb_s_deregistration_and_its_grace_period_follows() -> None:
    spec = parse_policy(policy(VARIANTS["lameduck-lb"])).spec
    assert spec.hold.max_hold > DEFAULT_DEREGISTRATION_DELAY
    assert budget_seconds(spec) >= spec.hold.max_hold + spec.drain_timeout
    default = parse_policy(policy(VARIANTS["lameduck"])).spec
    assert default.hold.max_hold < DEFAULT_DEREGISTRATION_DELAY  # the defaults cannot outlast it


def test_the_sleep_sized_for_the_lb_outlasts_it_within_its_grace_period() -> None:
    variant = VARIANTS["sleep50"]
    pod = demo_deployment("demo:dev", "demo", variant)["spec"]["template"]["spec"]
    sleep = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert sleep > DEFAULT_DEREGISTRATION_DELAY
    assert pod["terminationGracePeriodSeconds"] > sleep  # else the kubelet cuts the sleep short


def test_the_external_lb_condition_runs_only_when_asked_for() -> None:
    assert CONDITIONS["external-lb"].external_lb
    assert "external-lb" not in DEFAULT_CONDITIONS


def test_the_learned_budget_variant_starts_at_the_default_and_may_learn_past_the_lb() -> None:
    spec = parse_policy(policy(VARIANTS["lameduck-learned"])).spec
    default = parse_policy(policy(VARIANTS["lameduck"])).spec
    assert spec.hold.max_hold == default.hold.max_hold
    assert spec.hold.learned_budget is not None
    assert spec.hold.learned_budget.max_hold_cap > DEFAULT_DEREGISTRATION_DELAY


def in_namespace(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server keeps it after `kubectl apply -n NAMESPACE`."""
    return {**obj, "metadata": {**obj["metadata"], "namespace": NAMESPACE}}


def is_l7_backend(variant_name: str) -> bool:
    """Whether the operator's own reading of every variant's objects in the bench's namespace sees
    an L7 hop send to this variant's Deployment (as l7_routes.py and the CLI decide it)."""
    deployment = in_namespace(demo_deployment("demo:dev", "demo", VARIANTS[variant_name]))
    found = [route_of(in_namespace(each)) for variant in VARIANTS.values() for each in routes("demo", variant)]
    services = [service_view(in_namespace(service("demo", variant))) for variant in VARIANTS.values()]
    return deployment_is_l7_backend(deployment, NAMESPACE, services, [r for r in found if r is not None])


def test_the_ingress_variant_s_deployment_starts_behind_an_l7_hop_at_a_budget_past_the_lb() -> None:
    variant = VARIANTS["lameduck-learned-ingress"]
    (ingress,) = routes("demo", variant)
    assert route_kind_of(ingress) is RouteKind.INGRESS  # networking.k8s.io/v1, as the operator watches
    assert "ingressClassName" not in ingress["spec"]  # nothing serves it: the operator only reads it
    assert l7_errors(ingress, RouteKind.INGRESS) == []
    assert is_l7_backend("lameduck-learned-ingress")
    hold = parse_policy(policy(variant)).spec.hold
    start = max_hold_for(hold, learned=None, l7_backend=True)
    assert start.source is BudgetSource.L7_BACKEND
    assert start.seconds > DEFAULT_DEREGISTRATION_DELAY  # the first rollout may outlast the LB
    assert max_hold_for(hold, learned=None, l7_backend=False).seconds < DEFAULT_DEREGISTRATION_DELAY


def test_the_ingress_names_only_its_own_variant_s_service() -> None:
    assert [name for name in VARIANTS if routes("demo", VARIANTS[name])] == ["lameduck-learned-ingress"]
    # the same policy without the hop, in the same namespace: what the Ingress variant compares with
    assert not is_l7_backend("lameduck-learned")
    learned, behind_ingress = (
        policy(VARIANTS[name])["spec"] for name in ("lameduck-learned", "lameduck-learned-ingress")
    )
    assert learned["hold"] == behind_ingress["hold"]
