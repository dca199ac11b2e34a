"""Hostile and careless policies, a table: huge and deep bodies, giant strings, unicode, NaN and
Infinity, integers past int64, booleans where integers go, durations that overflow, weird
lame-duck paths, fields where they do not belong.

Each one is judged by the model within a bound (a generous guard against a hang, not a speed
test), rejected with typed errors at the field's path, or accepted with sane values: a budget
within the grace period's bounds and a sidecar environment the sidecar reads. The CRD (its
offline stand-in, tests/unit/crd_validation.py) judges each alike, and states a bound for every
string, list, map and integer of the spec, each tried here past its limit. The webhook's pure path
and the CLI take each without a crash. (A key given twice cannot be in a dict: the CLI refuses
it when reading, tests/unit/test_cli_exit_codes.py.)
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from lameduck_operator.cli import EXIT_INVALID_OBJECTS, EXIT_NOT_COMPLIANT, EXIT_OK, main
from lameduck_operator.logic import budget
from lameduck_operator.logic.admission import Skip, review
from lameduck_operator.logic.compliance import State
from lameduck_operator.logic.decision import Action, Decision, Moment, decide
from lameduck_operator.logic.shapes import deployment_errors
from lameduck_operator.model import (
    BUDGET_MARGIN_SECONDS,
    DRAIN_TIMEOUT,
    MAX_HOLD,
    PROPAGATION_DELAY,
    QUIET_PERIOD,
    TERMINATION_GRACE_PERIOD,
    ErrorType,
    HoldMethod,
    Policy,
    PolicyInvalid,
    parse_policy,
)
from lameduck_operator.names import API_VERSION, KIND_CLUSTER, KIND_NAMESPACED, POLICY_KINDS, SIDECAR_NAME
from lameduck_operator.settings import Settings
from lameduck_sidecar.config import load_config
from lameduck_sidecar.lame_duck import LameDuckTarget
from tests.unit.builders import deployment
from tests.unit.crd_validation import validate

NS = "shop"
# A guard against a hang: every case takes milliseconds.
BOUND_SECONDS = 5.0
MEGABYTE = 1_000_000
Errors = tuple[tuple[str, ErrorType], ...]
ACCEPTED: Errors = ()
NOT_THE_CRDS = ""  # metadata, kind, apiVersion: the API server's own checks, not the CRD's


@dataclass(frozen=True)
class Hostile:
    name: str
    body: dict[str, Any]
    rejected: Errors = ACCEPTED
    # The CRD bound this case exceeds: (schema path, keyword), [] for items, .* for map values.
    bound: tuple[str, str] | None = None
    # Where the CRD reports it, when not at the model's paths (NOT_THE_CRDS: not the CRD's to judge).
    crd_path: str | None = None


def gp(spec: Any, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND_NAMESPACED,
        "metadata": {"name": "hostile", "namespace": NS} | meta,
        "spec": spec,
    }


def cgp(spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND_CLUSTER, "metadata": {"name": "hostile"}, "spec": spec}


def nest(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": value}
    return value


def lame_duck(port: Any = 8080, path: Any = "/lameduck") -> dict[str, Any]:
    return gp({"hold": {"lameDuck": {"port": port, "path": path}}})


def selector_cases(prefix: str, make: Callable[[dict[str, Any]], dict[str, Any]]) -> list[Hostile]:
    """Every bound of a label selector, far past it."""
    s = prefix.removeprefix("spec.")
    return [
        Hostile(
            f"{s}-10k-labels",
            make({"matchLabels": {f"k{i}": "v" for i in range(10_000)}}),
            ((f"{prefix}.matchLabels", ErrorType.TOO_MANY),),
            (f"{prefix}.matchLabels", "maxProperties"),
        ),
        Hostile(
            f"{s}-megabyte-label-value",
            make({"matchLabels": {"tier": "x" * MEGABYTE}}),
            ((f"{prefix}.matchLabels.tier", ErrorType.TOO_LONG),),
            (f"{prefix}.matchLabels.*", "maxLength"),
        ),
        Hostile(
            f"{s}-megabyte-label-key",
            make({"matchLabels": {"k" * MEGABYTE: "web"}}),
            ((f"{prefix}.matchLabels", ErrorType.TOO_LONG),),
        ),
        Hostile(
            f"{s}-10k-expressions",
            make({"matchExpressions": [{"key": "app", "operator": "Exists"}] * 10_000}),
            ((f"{prefix}.matchExpressions", ErrorType.TOO_MANY),),
            (f"{prefix}.matchExpressions", "maxItems"),
        ),
        Hostile(
            f"{s}-megabyte-expression-key",
            make({"matchExpressions": [{"key": "k" * MEGABYTE, "operator": "Exists"}]}),
            ((f"{prefix}.matchExpressions[0].key", ErrorType.TOO_LONG),),
            (f"{prefix}.matchExpressions[].key", "maxLength"),
        ),
        Hostile(
            f"{s}-10k-values",
            make({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"] * 10_000}]}),
            ((f"{prefix}.matchExpressions[0].values", ErrorType.TOO_MANY),),
            (f"{prefix}.matchExpressions[].values", "maxItems"),
        ),
        Hostile(
            f"{s}-long-value",
            make({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["v" * 64]}]}),
            ((f"{prefix}.matchExpressions[0].values[0]", ErrorType.TOO_LONG),),
            (f"{prefix}.matchExpressions[].values[]", "maxLength"),
        ),
        Hostile(
            f"{s}-unknown-operator",
            make({"matchExpressions": [{"key": "app", "operator": "Matches", "values": [".*"]}]}),
            ((f"{prefix}.matchExpressions[0].operator", ErrorType.NOT_SUPPORTED),),
        ),
    ]


def int_cases(field: str, low: Any, high: Any, make: Callable[[Any], dict[str, Any]]) -> list[Hostile]:
    return [
        Hostile(f"{field}-{low}", make(low), ((field, ErrorType.OUT_OF_RANGE),), (field, "minimum")),
        Hostile(f"{field}-{high}"[:60], make(high), ((field, ErrorType.OUT_OF_RANGE),), (field, "maximum")),
    ]


def duration_cases(field: str, make: Callable[[Any], dict[str, Any]]) -> list[Hostile]:
    bad = ErrorType.INVALID
    return [
        Hostile(f"{field}-33-characters", make("1" * 32 + "s"), ((field, ErrorType.TOO_LONG),), (field, "maxLength")),
        Hostile(f"{field}-megabyte", make("1" * MEGABYTE + "s"), ((field, ErrorType.TOO_LONG),)),
        Hostile(f"{field}-overflowing-go", make("9" * 31 + "h"), ((field, bad),)),
        Hostile(f"{field}-99999999h", make("99999999h"), ((field, bad),)),
        Hostile(f"{field}-nan", make(math.nan), ((field, ErrorType.TYPE_INVALID),)),
        Hostile(f"{field}-infinity", make(math.inf), ((field, ErrorType.TYPE_INVALID),)),
        Hostile(f"{field}-NaN-text", make("NaN"), ((field, bad),)),
        Hostile(f"{field}-1e309-text", make("1e309"), ((field, bad),)),
        Hostile(f"{field}-negative", make("-1s"), ((field, bad),)),
        Hostile(f"{field}-fullwidth-digit", make("\uff12s"), ((field, bad),)),
        Hostile(f"{field}-newline", make("2s\n"), ((field, bad),)),
    ]


def hold(field: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: gp({"hold": {field: value}})


def learned_cap(value: Any) -> dict[str, Any]:
    return gp({"hold": {"learnedBudget": {"maxHoldCap": value}}})


def spec_field(field: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: gp({field: value})


MAXIMA: dict[str, Any] = {
    "hold": {"propagationDelay": "5m", "quietPeriod": "1m", "maxHold": "10m"},
    "drainTimeout": "1h",
    "maxConcurrentRollouts": 1000,
    "priority": 1000,
    "minReadySeconds": 3600,
}

CASES: list[Hostile] = [
    # Careless but valid: accepted, with sane values.
    Hostile("empty-spec", gp({})),
    Hostile("no-spec", gp(None)),
    Hostile(
        "every-field-null",
        gp(dict.fromkeys(("selector", "mode", "apply", "containers", "hold", "drainTimeout", "priority"))),
    ),
    Hostile("every-field-at-its-maximum", gp(MAXIMA)),
    Hostile(
        "every-bound-at-its-maximum-and-the-grace-period-too", gp(MAXIMA | {"terminationGracePeriodSeconds": 7200})
    ),
    Hostile(
        "every-field-at-its-minimum",
        gp(
            {
                "hold": {"propagationDelay": "0s", "quietPeriod": "0s", "maxHold": "1s"},
                "drainTimeout": "0s",
                "terminationGracePeriodSeconds": 1,
                "maxConcurrentRollouts": 1,
                "priority": -1000,
                "minReadySeconds": 0,
            }
        ),
    ),
    Hostile("max-hold-and-a-hundred-thousandth", gp({"hold": {"maxHold": "1m0.00001s"}})),
    Hostile("sub-microsecond-delay", gp({"hold": {"propagationDelay": "0.0000000001ms"}})),
    Hostile("thirty-leading-zeros", gp({"hold": {"maxHold": "0" * 29 + "30s"}})),
    Hostile("unicode-label-value", gp({"selector": {"matchLabels": {"tier": "wëb-🦆"}}})),
    Hostile("sleep-with-every-maximum", gp(MAXIMA | {"hold": MAXIMA["hold"] | {"method": "Sleep"}})),
    Hostile("selects-everything-everywhere", cgp({"selector": {}, "namespaceSelector": {}})),
    Hostile(
        "selects-everything-in-kube-system",
        cgp({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}),
    ),
    Hostile("lame-duck-path-climbing-up", lame_duck(path="/../../etc/passwd")),
    Hostile("lame-duck-path-naming-another-host", lame_duck(path="//evil.example/x")),
    Hostile("lame-duck-path-with-a-query", lame_duck(path="/x?y=1&z=%00")),
    Hostile("lame-duck-path-at-its-bound", lame_duck(path="/" + "a" * 255)),
    Hostile("lame-duck-port-at-its-bounds", lame_duck(port=65535)),
    # Over a bound, or of the wrong type: rejected at the field.
    *selector_cases("spec.selector", lambda s: gp({"selector": s})),
    *selector_cases("spec.namespaceSelector", lambda s: cgp({"namespaceSelector": s})),
    *int_cases("spec.maxConcurrentRollouts", 0, 2**63, spec_field("maxConcurrentRollouts")),
    *int_cases("spec.priority", -(2**63), 2**64, spec_field("priority")),
    *int_cases("spec.terminationGracePeriodSeconds", 0, 10**30, spec_field("terminationGracePeriodSeconds")),
    *int_cases("spec.minReadySeconds", -1, 3601, spec_field("minReadySeconds")),
    *int_cases("spec.hold.lameDuck.port", 0, 65536, lambda port: lame_duck(port=port)),
    *duration_cases("spec.hold.propagationDelay", hold("propagationDelay")),
    *duration_cases("spec.hold.quietPeriod", hold("quietPeriod")),
    *duration_cases("spec.hold.maxHold", hold("maxHold")),
    *duration_cases("spec.drainTimeout", spec_field("drainTimeout")),
    *duration_cases("spec.hold.learnedBudget.maxHoldCap", learned_cap),
    Hostile("learned-budget-cap-at-its-bound", learned_cap("10m")),
    Hostile(
        "learned-budget-cap-below-max-hold",
        learned_cap("29s"),
        (("spec.hold.learnedBudget.maxHoldCap", ErrorType.INVALID),),
    ),
    Hostile(
        "learned-budget-without-cap",
        gp({"hold": {"learnedBudget": {}}}),
        (("spec.hold.learnedBudget.maxHoldCap", ErrorType.REQUIRED),),
    ),
    Hostile(
        "learned-budget-as-text",
        gp({"hold": {"learnedBudget": "2m"}}),
        (("spec.hold.learnedBudget", ErrorType.TYPE_INVALID),),
    ),
    Hostile(
        "learned-budget-with-sleep",
        gp({"hold": {"method": "Sleep", "learnedBudget": {"maxHoldCap": "2m"}}}),
        (("spec.hold.learnedBudget", ErrorType.INVALID),),
    ),
    Hostile(
        "10k-containers",
        gp({"containers": [f"c{i}" for i in range(10_000)]}),
        (("spec.containers", ErrorType.TOO_MANY),),
        ("spec.containers", "maxItems"),
    ),
    Hostile(
        "container-name-too-long",
        gp({"containers": ["a" * 64]}),
        (("spec.containers[0]", ErrorType.TOO_LONG),),
        ("spec.containers[]", "maxLength"),
    ),
    Hostile("unicode-container-name", gp({"containers": ["äpp"]}), (("spec.containers[0]", ErrorType.INVALID),)),
    Hostile("duplicate-containers", gp({"containers": ["app", "app"]}), (("spec.containers[1]", ErrorType.DUPLICATE),)),
    Hostile(
        "lame-duck-path-too-long",
        lame_duck(path="/" + "a" * 256),
        (("spec.hold.lameDuck.path", ErrorType.TOO_LONG),),
        ("spec.hold.lameDuck.path", "maxLength"),
    ),
    Hostile(
        "lame-duck-path-megabyte", lame_duck(path="/" * MEGABYTE), (("spec.hold.lameDuck.path", ErrorType.TOO_LONG),)
    ),
    Hostile("lame-duck-path-with-a-space", lame_duck(path="/a b"), (("spec.hold.lameDuck.path", ErrorType.INVALID),)),
    Hostile(
        "lame-duck-path-smuggling-a-header",
        lame_duck(path="/x HTTP/1.1\r\nHost: evil.example\r\n\r\n"),
        (("spec.hold.lameDuck.path", ErrorType.INVALID),),
    ),
    Hostile(
        "lame-duck-path-right-to-left-override",
        lame_duck(path="/a\u202eb"),
        (("spec.hold.lameDuck.path", ErrorType.INVALID),),
    ),
    Hostile("lame-duck-path-relative", lame_duck(path="lameduck"), (("spec.hold.lameDuck.path", ErrorType.INVALID),)),
    Hostile("lame-duck-path-empty", lame_duck(path=""), (("spec.hold.lameDuck.path", ErrorType.INVALID),)),
    Hostile("lame-duck-port-as-text", lame_duck(port="8080"), (("spec.hold.lameDuck.port", ErrorType.TYPE_INVALID),)),
    Hostile("lame-duck-port-true", lame_duck(port=True), (("spec.hold.lameDuck.port", ErrorType.TYPE_INVALID),)),
    Hostile(
        "lame-duck-empty",
        gp({"hold": {"lameDuck": {}}}),
        (("spec.hold.lameDuck.port", ErrorType.REQUIRED), ("spec.hold.lameDuck.path", ErrorType.REQUIRED)),
    ),
    Hostile(
        "lame-duck-on-another-host",
        gp({"hold": {"lameDuck": {"port": 80, "path": "/", "host": "evil.example"}}}),
        (("spec.hold.lameDuck.host", ErrorType.UNKNOWN_FIELD),),
    ),
    Hostile(
        "lame-duck-as-text", gp({"hold": {"lameDuck": "8080/x"}}), (("spec.hold.lameDuck", ErrorType.TYPE_INVALID),)
    ),
    Hostile("true-for-an-integer", gp({"priority": True}), (("spec.priority", ErrorType.TYPE_INVALID),)),
    Hostile(
        "false-for-an-integer",
        gp({"maxConcurrentRollouts": False}),
        (("spec.maxConcurrentRollouts", ErrorType.TYPE_INVALID),),
    ),
    Hostile("float-for-an-integer", gp({"minReadySeconds": 1.5}), (("spec.minReadySeconds", ErrorType.TYPE_INVALID),)),
    Hostile("1e309-for-an-integer", gp({"priority": float("1e309")}), (("spec.priority", ErrorType.TYPE_INVALID),)),
    Hostile(
        "nan-for-an-integer",
        gp({"terminationGracePeriodSeconds": math.nan}),
        (("spec.terminationGracePeriodSeconds", ErrorType.TYPE_INVALID),),
    ),
    Hostile(
        "one-for-a-boolean",
        gp({"readinessGate": {"enabled": 1}}),
        (("spec.readinessGate.enabled", ErrorType.TYPE_INVALID),),
    ),
    Hostile(
        "text-for-a-boolean",
        gp({"readinessGate": {"enabled": "true"}}),
        (("spec.readinessGate.enabled", ErrorType.TYPE_INVALID),),
    ),
    Hostile("list-for-an-object", gp({"hold": []}), (("spec.hold", ErrorType.TYPE_INVALID),)),
    Hostile("text-for-the-spec", gp("everything"), (("spec", ErrorType.TYPE_INVALID),)),
    Hostile("enum-in-lower-case", gp({"mode": "enforce"}), (("spec.mode", ErrorType.NOT_SUPPORTED),)),
    Hostile(
        "enum-a-megabyte-long", gp({"onConflict": "T" * MEGABYTE}), (("spec.onConflict", ErrorType.NOT_SUPPORTED),)
    ),
    Hostile(
        "deeply-nested-unknown-field",
        gp({"hold": {"a": nest(80)}}),
        (("spec.hold.a", ErrorType.UNKNOWN_FIELD),),
    ),
    Hostile(
        "deeply-nested-label-value",
        gp({"selector": {"matchLabels": {"a": nest(80)}}}),
        (("spec.selector.matchLabels.a", ErrorType.TYPE_INVALID),),
    ),
    Hostile(
        "unknown-field-with-a-newline",
        gp({"a\nb": 1}),
        (('spec."a\\nb"', ErrorType.UNKNOWN_FIELD),),
        crd_path="spec.a\nb",
    ),
    Hostile(
        "unicode-unknown-field",
        gp({"mödé": "Enforce"}),
        (('spec."m\\u00f6d\\u00e9"', ErrorType.UNKNOWN_FIELD),),
        crd_path="spec.mödé",
    ),
    Hostile(
        "namespace-selector-on-a-namespaced-policy",
        gp({"namespaceSelector": {}}),
        (("spec.namespaceSelector", ErrorType.UNKNOWN_FIELD),),
    ),
    Hostile(
        "grace-period-one-under-the-largest-budget",
        gp({"hold": {"maxHold": "10m"}, "drainTimeout": "1h", "terminationGracePeriodSeconds": 4199}),
        (("spec.terminationGracePeriodSeconds", ErrorType.INVALID),),
    ),
    Hostile(
        "grace-period-under-a-fractional-budget",
        gp(
            {
                "hold": {"maxHold": "1.5s", "propagationDelay": "1s"},
                "drainTimeout": "0.6s",
                "terminationGracePeriodSeconds": 2,
            }
        ),
        (("spec.terminationGracePeriodSeconds", ErrorType.INVALID),),
    ),
    Hostile(
        "propagation-delay-past-max-hold",
        gp({"hold": {"propagationDelay": "5m", "maxHold": "4m59.999s"}}),
        (("spec.hold.propagationDelay", ErrorType.INVALID),),
    ),
    Hostile("name-in-capitals", gp({}, name="Hostile"), (("metadata.name", ErrorType.INVALID),), crd_path=NOT_THE_CRDS),
    Hostile(
        "name-a-megabyte-long",
        gp({}, name="a" * MEGABYTE),
        (("metadata.name", ErrorType.TOO_LONG),),
        crd_path=NOT_THE_CRDS,
    ),
    Hostile("name-with-a-newline", gp({}, name="a\nb"), (("metadata.name", ErrorType.INVALID),), crd_path=NOT_THE_CRDS),
    Hostile(
        "namespace-climbing-up",
        gp({}, namespace="../etc"),
        (("metadata.namespace", ErrorType.INVALID),),
        crd_path=NOT_THE_CRDS,
    ),
    Hostile(
        "generation-as-text",
        gp({}, generation="1"),
        (("metadata.generation", ErrorType.TYPE_INVALID),),
        crd_path=NOT_THE_CRDS,
    ),
    Hostile(
        "metadata-as-a-list",
        gp({}) | {"metadata": ["hostile"]},
        (("metadata", ErrorType.TYPE_INVALID),),
        crd_path=NOT_THE_CRDS,
    ),
    Hostile(
        "kind-in-lower-case",
        gp({}) | {"kind": "gracefulpolicy"},
        (("kind", ErrorType.NOT_SUPPORTED),),
        crd_path=NOT_THE_CRDS,
    ),
    Hostile(
        "another-api-version",
        gp({}) | {"apiVersion": "lameduck.dev/v1"},
        (("apiVersion", ErrorType.NOT_SUPPORTED),),
        crd_path=NOT_THE_CRDS,
    ),
]


def judged(case: Hostile) -> Policy | PolicyInvalid:
    started = time.monotonic()
    try:
        result: Policy | PolicyInvalid = parse_policy(case.body)
    except PolicyInvalid as err:
        result = err
    assert time.monotonic() - started < BOUND_SECONDS, "a guard against a hang"
    return result


def ids(cases: list[Hostile]) -> list[str]:
    return [c.name for c in cases]


def test_the_table_names_each_case_once() -> None:
    assert len(set(ids(CASES))) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_the_model_rejects_at_the_field_or_accepts_sane_values(case: Hostile) -> None:
    result = judged(case)
    if case.rejected:
        assert isinstance(result, PolicyInvalid), f"accepted: {result}"
        found = {(e.path, e.type) for e in result.errors}
        assert set(case.rejected) <= found, found
        assert len(result.errors) <= 10, "a bounded report, not one error per item"
        assert all(len(str(e)) <= 600 and "\n" not in str(e) for e in result.errors), "each error one short line"
    else:
        assert isinstance(result, Policy), str(result)
        assert_sane(result)


def assert_sane(policy: Policy) -> None:
    spec = policy.spec
    for seconds, rule in [
        (spec.hold.propagation_delay, PROPAGATION_DELAY),
        (spec.hold.quiet_period, QUIET_PERIOD),
        (spec.hold.max_hold, MAX_HOLD),
        (spec.drain_timeout, DRAIN_TIMEOUT),
    ]:
        _, low, high = rule.seconds
        assert math.isfinite(seconds)
        assert low <= seconds <= high
    assert TERMINATION_GRACE_PERIOD.minimum <= budget.budget_seconds(spec) <= TERMINATION_GRACE_PERIOD.maximum
    decision = decide_for(policy, NS)
    if decision.intent is None:
        assert decision.verdict.state is State.UNMANAGED
        return
    pod = decision.intent["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] <= TERMINATION_GRACE_PERIOD.maximum
    if spec.hold.method is HoldMethod.SLEEP:
        assert pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] <= budget.budget_seconds(spec)
        return
    (sidecar,) = [c for c in pod["initContainers"] if c["name"] == SIDECAR_NAME]
    config = load_config({e["name"]: e.get("value", "x") for e in sidecar["env"]})  # the sidecar must start
    assert config.hold.max_hold == pytest.approx(spec.hold.max_hold, abs=0.001)
    assert config.hold.propagation_delay == pytest.approx(spec.hold.propagation_delay, abs=0.001)
    if spec.hold.lame_duck is not None:
        assert config.lame_duck == LameDuckTarget(spec.hold.lame_duck.port, spec.hold.lame_duck.path)


def decide_for(policy: Policy, namespace: str, moment: Moment = Moment.RECONCILE) -> Decision:
    return decide(
        deployment(namespace=namespace, labels={"app": "web"}), [policy], Settings(), None, lambda _: 0, moment=moment
    )


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.crd_path != NOT_THE_CRDS], ids=ids([c for c in CASES if c.crd_path != NOT_THE_CRDS])
)
def test_the_crd_judges_each_as_the_model_does(crds_by_kind: dict[str, dict[str, Any]], case: Hostile) -> None:
    defaulted, errors = validate(crds_by_kind[case.body["kind"]], case.body)
    if not case.rejected:
        assert errors == []
        assert parse_policy(defaulted) == parse_policy(case.body), "the CRD's defaults are the model's"
        return
    assert errors, "the API server would store what the model rejects"
    for path in [case.crd_path] if case.crd_path else [p for p, _ in case.rejected]:
        assert any(e.startswith(f"{path}: ") for e in errors), (path, errors[:3])


def bounded_nodes(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from bounded_nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), Mapping):
        yield from bounded_nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from bounded_nodes(schema["additionalProperties"], f"{path}.*")


BOUND_KEYWORDS = {
    "string": ("maxLength",),
    "array": ("maxItems",),
    "integer": ("minimum", "maximum"),
}


@pytest.mark.parametrize("kind", [KIND_NAMESPACED, KIND_CLUSTER])
def test_the_crd_bounds_every_field_of_the_spec_and_the_table_goes_past_each_bound(
    crds_by_kind: dict[str, dict[str, Any]], kind: str
) -> None:
    """So that the API server refuses what the model refuses, and never stores an object whose
    CEL rules or whose size no bound limits. (The status is the operator's alone to write.)"""
    schema = crds_by_kind[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    bounds: set[tuple[str, str]] = set()
    unbounded: list[str] = []
    for path, node in bounded_nodes(schema, "spec"):
        kind_of = str(node.get("type"))
        needed = BOUND_KEYWORDS.get(kind_of, ())
        if kind_of == "string" and "enum" in node:
            needed = ()
        if kind_of == "object" and isinstance(node.get("additionalProperties"), Mapping):
            needed = ("maxProperties",)
        missing = [k for k in needed if k not in node]
        unbounded.extend(f"{path} ({k})" for k in missing)
        bounds.update((path, k) for k in needed if k in node)
    assert unbounded == []
    tried = {case.bound for case in CASES if case.bound is not None}
    assert sorted(bounds - tried) == [], "add a case past each of these bounds"


def test_the_largest_budget_the_rules_allow_fits_the_grace_period_bounds() -> None:
    """maxHold + drainTimeout + the margin, at their maxima, must fit a grace period the API takes."""
    worst = MAX_HOLD.seconds[2] + DRAIN_TIMEOUT.seconds[2] + BUDGET_MARGIN_SECONDS
    assert worst <= TERMINATION_GRACE_PERIOD.maximum


def test_a_policy_selecting_kube_system_changes_nothing_there() -> None:
    everything = [c for c in CASES if c.name in ("selects-everything-in-kube-system", "selects-everything-everywhere")]
    for case in everything:
        policy = parse_policy(case.body)
        for namespace in ("kube-system", "kube-public", "kube-node-lease"):
            decision = decide_for(policy, namespace, Moment.ADMISSION)
            assert (decision.verdict.state, decision.action) == (State.UNMANAGED, Action.NONE)
            answer = review(admission_request(deployment(namespace=namespace, labels={"app": "web"})), judge(policy))
            assert "patch" not in answer.response["response"]


def admission_request(obj: Mapping[str, Any], kind: str = "Deployment") -> dict[str, Any]:
    request = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "apps", "version": "v1", "kind": kind},
        "namespace": NS,
        "operation": "CREATE",
        "object": obj,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def judge(policy: Policy) -> Callable[[Mapping[str, Any]], Decision]:
    return lambda obj: decide(obj, [policy], Settings(), None, lambda _: 0, moment=Moment.ADMISSION)


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_the_webhook_answers_each(case: Hostile) -> None:
    result = judged(case)
    if isinstance(result, PolicyInvalid):
        # Never in the operator's cache: the webhook sees such a body only as a review of itself.
        answer = review(admission_request(case.body, kind=str(case.body.get("kind"))), judge(parse_policy(gp({}))))
        assert (answer.skipped, answer.response["response"]["allowed"]) == (Skip.NOT_A_DEPLOYMENT, True)
        return
    written = deployment(namespace=NS, labels={"app": "web"})
    answer = review(admission_request(written), judge(result))
    assert answer.response["response"]["allowed"] is True
    if "patch" in answer.response["response"]:
        patch = json.loads(base64.b64decode(answer.response["response"]["patch"]))
        patched = jsonpatch.apply_patch(written, patch)
        assert deployment_errors(patched) == [], "the webhook writes what the API server takes"


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_the_cli_reports_each(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: Hostile) -> None:
    manifest = tmp_path / "hostile.yaml"
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    manifest.write_text(yaml.dump_all([case.body, deployment(namespace=NS, labels={"app": "web"})], Dumper=dumper))
    code = main(["check", "-f", str(manifest)], stdin=io.StringIO(""), out=io.StringIO())
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if case.body.get("kind") not in POLICY_KINDS:
        assert (code, err) == (EXIT_OK, ""), "an object of another kind is none of the CLI's business"
    elif case.rejected:
        assert code == EXIT_INVALID_OBJECTS
        lines = err.splitlines()
        assert all(line.startswith(f"lameduck: {manifest}: ") for line in lines), lines[:3]
        for path, _ in case.rejected:
            assert any(f": {path}: " in line for line in lines), (path, lines[:3])
    else:
        assert code in (EXIT_OK, EXIT_NOT_COMPLIANT)
        assert err == ""
