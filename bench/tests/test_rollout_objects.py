"""The rollout benchmark's variants sized for the simulated cloud LB (bench/rollout_objects.py):
the policy a user would write behind it, read by the operator's own model, and a sleep with the
grace period it needs."""

from __future__ import annotations

from bench.lb_targets import DEFAULT_DEREGISTRATION_DELAY
from bench.rollout_objects import CONDITIONS, DEFAULT_CONDITIONS, VARIANTS, demo_deployment, policy
from lameduck_operator.logic.budget import budget_seconds
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
