"""Parsing, defaulting and validation of policies, with field paths."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from lameduck_operator.model import (
    ApplyStrategy,
    ConflictStrategy,
    ErrorType,
    HoldMethod,
    Mode,
    NotADuration,
    PolicyInvalid,
    PolicyRef,
    SelectorOperator,
    format_seconds,
    parse_duration,
    parse_policy,
    parse_spec,
)
from lameduck_sidecar.config import seconds as seconds_of_the_sidecar
from tests.unit.repo_data import INVALID_SPECS, InvalidExample, invalid_examples, load_yaml, valid_policy_files


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0.0),
        ("2s", 2.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("2m500ms", 120.5),
        ("30 seconds", None),
        ("30", None),
        ("-1s", None),
        ("1d", None),
        ("", None),
        ("s", None),
        ("1us", None),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (2, "2s"), (0.5, "500ms"), (90, "1m30s"), (120, "2m"), (1.5, "1.5s"), (3600, "60m")],
)
def test_format_seconds_round_trips(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (60.00001, "1m"),  # was "1m1e-05s": no duration parser reads it, the sidecar would not start
        (120.0000001, "2m"),
        (61.0004, "1m1s"),
        (1.0000001, "1s"),
        (0.0004, "0s"),
        (0.9999, "1s"),
        (1234.5678, "20m34.568s"),
        (3600.001, "60m0.001s"),
    ],
)
def test_format_seconds_is_to_the_millisecond_and_never_in_exponent_notation(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text
    assert parse_duration(text) == pytest.approx(round(seconds * 1000) / 1000)
    assert seconds_of_the_sidecar("LAMEDUCK_MAX_HOLD", text) == pytest.approx(round(seconds * 1000) / 1000)


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf])
def test_format_seconds_refuses_what_is_no_duration(seconds: float) -> None:
    with pytest.raises(NotADuration):
        format_seconds(seconds)


def test_empty_spec_gets_documented_defaults() -> None:
    spec = parse_spec({}, cluster=False)
    assert spec.mode is Mode.ENFORCE
    assert spec.apply is ApplyStrategy.ON_NEXT_ROLLOUT
    assert spec.max_concurrent_rollouts == 5
    assert spec.containers == ()
    assert spec.hold.method is HoldMethod.SIDECAR
    assert (spec.hold.propagation_delay, spec.hold.quiet_period, spec.hold.max_hold) == (2.0, 1.0, 30.0)
    assert spec.drain_timeout == 30.0
    assert spec.termination_grace_period_seconds is None
    assert spec.readiness_gate is False
    assert spec.min_ready_seconds is None
    assert spec.priority == 0
    assert spec.on_conflict is ConflictStrategy.REPORT
    assert spec.selector.match_labels == ()
    assert spec.selector.match_expressions == ()
    assert spec.namespace_selector is None


def test_null_fields_are_defaulted_like_absent_ones() -> None:
    assert parse_spec({"terminationGracePeriodSeconds": None, "hold": None}, cluster=False) == parse_spec(
        {}, cluster=False
    )


def test_cluster_spec_has_namespace_selector() -> None:
    spec = parse_spec({"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "Exists"}]}}, cluster=True)
    assert spec.namespace_selector is not None
    assert spec.namespace_selector.match_expressions[0].operator is SelectorOperator.EXISTS


@pytest.mark.parametrize("path", valid_policy_files(), ids=lambda p: p.stem)
def test_example_policies_parse(path: Path) -> None:
    policy = parse_policy(load_yaml(path))
    assert policy.ref.name == path.stem or policy.ref.name in path.stem


@pytest.mark.parametrize("example", invalid_examples(), ids=lambda e: e.name)
def test_invalid_examples_fail_with_documented_error(example: InvalidExample) -> None:
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy(example.body)
    matching = [e for e in caught.value.errors if e.path == example.path and example.message in e.message]
    assert matching, f"expected {example.path}: {example.message}; got {caught.value}"


@pytest.mark.parametrize(("spec", "path", "message"), INVALID_SPECS)
def test_invalid_specs_name_the_field(spec: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(PolicyInvalid) as caught:
        parse_spec(spec, cluster=False)
    assert any(e.path == path and message in e.message for e in caught.value.errors), str(caught.value)


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(PolicyInvalid) as caught:
        parse_spec({"mode": "x", "apply": "y", "hold": {"maxHold": "z"}}, cluster=False)
    assert {e.path for e in caught.value.errors} == {"spec.mode", "spec.apply", "spec.hold.maxHold"}


def test_grace_period_exactly_at_budget_is_accepted() -> None:
    spec = parse_spec(
        {"hold": {"maxHold": "10s"}, "drainTimeout": "1m", "terminationGracePeriodSeconds": 70}, cluster=False
    )
    assert spec.termination_grace_period_seconds == 70


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"apiVersion": "lameduck.dev/v1alpha1", "kind": "Pod", "metadata": {"name": "x"}}, "kind"),
        ({"apiVersion": "lameduck.dev/v1", "kind": "GracefulPolicy", "metadata": {"name": "x"}}, "apiVersion"),
        ({"apiVersion": "lameduck.dev/v1alpha1", "kind": "GracefulPolicy", "metadata": {}}, "metadata.name"),
    ],
)
def test_objects_that_are_not_policies_are_rejected(body: dict[str, Any], path: str) -> None:
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy(body)
    assert caught.value.errors[0].path == path


def test_policy_refs_describe_scope() -> None:
    namespaced = parse_policy(
        {"apiVersion": "lameduck.dev/v1alpha1", "kind": "GracefulPolicy", "metadata": {"name": "a", "namespace": "n"}}
    )
    cluster = parse_policy(
        {"apiVersion": "lameduck.dev/v1alpha1", "kind": "ClusterGracefulPolicy", "metadata": {"name": "b"}}
    )
    assert namespaced.ref == PolicyRef("GracefulPolicy", "a", "n")
    assert str(namespaced.ref) == "GracefulPolicy n/a"
    assert cluster.ref.is_cluster
    assert cluster.ref.annotation_value == "ClusterGracefulPolicy/b"


@pytest.mark.parametrize(
    ("value", "ref"),
    [
        pytest.param("GracefulPolicy/shop/web", PolicyRef("GracefulPolicy", "web", "shop"), id="namespaced"),
        pytest.param("ClusterGracefulPolicy/fleet", PolicyRef("ClusterGracefulPolicy", "fleet"), id="cluster"),
        pytest.param("GracefulPolicy/web", None, id="a namespaced policy without its namespace"),
        pytest.param("ClusterGracefulPolicy/a/b", None, id="a cluster policy with one"),
        pytest.param("Deployment/shop/web", None, id="another kind"),
        pytest.param("GracefulPolicy//web", None, id="an empty part"),
        pytest.param(None, None, id="none"),
    ],
)
def test_the_policy_annotation_names_its_policy_back(value: object, ref: PolicyRef | None) -> None:
    assert PolicyRef.from_annotation(value) == ref
    if ref is not None:
        assert PolicyRef.from_annotation(ref.annotation_value) == ref


def test_a_list_over_its_bound_is_one_error_not_one_per_item() -> None:
    for spec, path in [
        ({"containers": ["app"] * 10_000}, "spec.containers"),
        ({"selector": {"matchExpressions": [{"key": "a"}] * 10_000}}, "spec.selector.matchExpressions"),
        ({"selector": {"matchLabels": {str(i): 1 for i in range(10_000)}}}, "spec.selector.matchLabels"),
    ]:
        with pytest.raises(PolicyInvalid) as caught:
            parse_spec(spec, cluster=False)
        assert [(e.path, e.type) for e in caught.value.errors] == [(path, ErrorType.TOO_MANY)]


@pytest.mark.parametrize(
    ("meta", "path", "kind"),
    [
        ({"name": "p", "generation": "1"}, "metadata.generation", ErrorType.TYPE_INVALID),
        ({"name": "p", "generation": -1}, "metadata.generation", ErrorType.TYPE_INVALID),
        ({"name": "p", "generation": math.inf}, "metadata.generation", ErrorType.TYPE_INVALID),
        ({"name": "p", "namespace": 5}, "metadata.namespace", ErrorType.TYPE_INVALID),
        ({"name": "p", "namespace": "Shop"}, "metadata.namespace", ErrorType.INVALID),
        ({"name": "web\ntier"}, "metadata.name", ErrorType.INVALID),
        ({"name": "p" * 254}, "metadata.name", ErrorType.TOO_LONG),
        ({"name": ["p"]}, "metadata.name", ErrorType.TYPE_INVALID),
        ({}, "metadata.name", ErrorType.REQUIRED),
    ],
)
def test_metadata_the_api_server_would_refuse_is_a_typed_error(
    meta: dict[str, Any], path: str, kind: ErrorType
) -> None:
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy({"apiVersion": "lameduck.dev/v1alpha1", "kind": "GracefulPolicy", "metadata": meta})
    assert [(e.path, e.type) for e in caught.value.errors] == [(path, kind)]


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"x\ny": 1}, 'spec."x\\ny"'),
        ({"k" * 100: 1}, 'spec."' + "k" * 64 + '..."'),
        ({1: 1}, "spec.1"),
        ({"selector": {"matchLabels": {"a b": 1}}}, 'spec.selector.matchLabels."a b"'),
    ],
)
def test_a_field_name_in_an_error_path_is_quoted_when_it_is_no_plain_one(spec: dict[Any, Any], path: str) -> None:
    with pytest.raises(PolicyInvalid) as caught:
        parse_spec(spec, cluster=False)
    assert [e.path for e in caught.value.errors] == [path]
    assert "\n" not in str(caught.value)
