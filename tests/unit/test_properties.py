"""Properties over generated input (Hypothesis; deterministic in CI: the "ci" profile in conftest.py):
parsing a policy raises nothing but PolicyInvalid and agrees with the CRD, durations round-trip,
merging an intent is idempotent and leaves it a subset, selection ignores the order of the policies,
and a Deployment of any shape is refused by the CLI's shape check or decided without a crash.
(The learned delay's properties are in test_learning.py.)"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from lameduck_operator.cli import Inputs, _summary, decide_offline, rendered
from lameduck_operator.logic.decision import decide
from lameduck_operator.logic.merge import KEYED_LISTS, is_subset, merge
from lameduck_operator.logic.selection import select_policy
from lameduck_operator.logic.shapes import deployment_errors
from lameduck_operator.model import (
    CLUSTER_SPEC_FIELDS,
    DURATION_MAX_LENGTH,
    DURATION_PATTERN,
    HOLD_FIELDS,
    LAME_DUCK_FIELDS,
    ErrorType,
    NotADuration,
    Policy,
    PolicyInvalid,
    format_seconds,
    parse_duration,
    parse_policy,
)
from lameduck_operator.names import API_VERSION, KIND_CLUSTER, KIND_NAMESPACED
from lameduck_operator.settings import Settings
from lameduck_sidecar.config import seconds as seconds_of_the_sidecar
from tests.unit.builders import container, deployment
from tests.unit.crd_validation import validate

# ---- parse_policy on anything JSON can say ---------------------------------------------------

FIELD_NAMES = sorted(
    {*CLUSTER_SPEC_FIELDS, *HOLD_FIELDS, *LAME_DUCK_FIELDS}
    | {"enabled", "matchLabels", "matchExpressions", "key", "operator", "values"}
)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and the infinities included
    | st.text(max_size=12)
    | st.sampled_from(["2s", "1m30s", "500ms", "10m", "1h", "0s", "Sleep", "In", "Exists", "TakeOver", "/x", "app"])
)
KEYS = st.sampled_from(FIELD_NAMES) | st.text(max_size=8)
JSON = st.recursive(
    LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5), max_leaves=25
)
METADATA = st.fixed_dictionaries(
    {"name": st.sampled_from(["p", "web-tier"]) | LEAVES},
    optional={"namespace": st.sampled_from(["shop"]) | LEAVES, "generation": LEAVES},
)
BODIES = st.fixed_dictionaries(
    {
        "apiVersion": st.just(API_VERSION) | LEAVES,
        "kind": st.sampled_from([KIND_NAMESPACED, KIND_CLUSTER]) | LEAVES,
        "metadata": METADATA | JSON,
        "spec": st.dictionaries(KEYS, JSON, max_size=8) | JSON,
    }
)


@given(BODIES)
@example({"apiVersion": API_VERSION, "kind": KIND_NAMESPACED, "metadata": {"name": "p", "generation": "7"}})
@example({"apiVersion": API_VERSION, "kind": KIND_NAMESPACED, "metadata": {"name": "p", "namespace": [1]}})
def test_parse_policy_raises_nothing_but_policy_invalid_of_one_line_typed_errors(body: dict[str, Any]) -> None:
    try:
        parse_policy(body)
    except PolicyInvalid as err:
        errors = err.errors
    else:
        return
    assert errors
    for error in errors:
        assert isinstance(error.type, ErrorType)
        assert "\n" not in str(error)


VALID_SPECS = st.fixed_dictionaries(
    {},
    optional={
        "mode": st.sampled_from(["Enforce", "Audit", "enforce"]),
        "priority": st.integers(-1001, 1001),
        "maxConcurrentRollouts": st.integers(0, 1001) | st.booleans(),
        "containers": st.lists(st.sampled_from(["app", "web", "App", "x" * 64]), max_size=3),
        "drainTimeout": st.sampled_from(["0s", "30s", "1h", "1h1ms", "99999999h", "1.5s"]),
        "terminationGracePeriodSeconds": st.integers(0, 7201),
        "hold": st.fixed_dictionaries(
            {},
            optional={
                "maxHold": st.sampled_from(["1s", "30s", "10m", "10m1ms", "999ms", "1m0.00001s"]),
                "propagationDelay": st.sampled_from(["0s", "2s", "5m", "5m1ms"]),
                "quietPeriod": st.sampled_from(["0s", "1s", "1m", "2m"]),
                "method": st.sampled_from(["Sidecar", "Sleep"]),
                "lameDuck": st.fixed_dictionaries(
                    {"port": st.integers(0, 65536), "path": st.sampled_from(["/x", "x", "/a b", "/" + "a" * 256])}
                ),
                "learnedBudget": st.fixed_dictionaries(
                    {}, optional={"maxHoldCap": st.sampled_from(["1s", "29s", "30s", "2m", "10m", "10m1ms", "2"])}
                ),
            },
        ),
        "selector": st.fixed_dictionaries(
            {},
            optional={
                "matchLabels": st.dictionaries(st.sampled_from(["app", "k" * 318]), st.sampled_from(["web", "v" * 64])),
                "matchExpressions": st.lists(
                    st.fixed_dictionaries(
                        {"key": st.just("app"), "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"])},
                        optional={"values": st.lists(st.just("web"), max_size=2)},
                    ),
                    max_size=3,
                ),
            },
        ),
    },
)


@settings(max_examples=80)  # each example runs the CRD's CEL rules in cel-python: tens of milliseconds
@given(VALID_SPECS)
def test_the_crd_accepts_exactly_the_specs_the_model_accepts(
    crds_by_kind: dict[str, dict[str, Any]], spec: dict[str, Any]
) -> None:
    crd = crds_by_kind[KIND_NAMESPACED]
    body = {"apiVersion": API_VERSION, "kind": KIND_NAMESPACED, "metadata": {"name": "p"}, "spec": spec}
    defaulted, crd_errors = validate(crd, body)
    try:
        policy = parse_policy(body)
    except PolicyInvalid as err:
        rejected = {e.path for e in err.errors}
    else:
        assert crd_errors == []
        assert parse_policy(defaulted) == policy
        return
    assert crd_errors, f"the CRD stores what the model rejects: {rejected}"
    # At a field the model names, or under it (the model quotes a long map key in its paths).
    crd_paths = {e.split(": ")[0] for e in crd_errors}
    assert any(p == m or p.startswith((f"{m}.", f"{m}[")) for p in crd_paths for m in rejected), (rejected, crd_paths)


# ---- durations ------------------------------------------------------------------------------


def to_the_millisecond(seconds: float) -> float:
    return round(seconds * 1000) / 1000


@given(st.from_regex(DURATION_PATTERN, fullmatch=True).filter(lambda t: len(t) <= DURATION_MAX_LENGTH))
def test_every_duration_the_pattern_takes_parses_and_formats_back(text: str) -> None:
    seconds = parse_duration(text)
    assert seconds is not None
    assert math.isfinite(seconds)
    assert seconds >= 0
    again = parse_duration(format_seconds(seconds))
    assert again == pytest.approx(to_the_millisecond(seconds), rel=1e-12, abs=1e-9)


# Whole minutes, whole milliseconds, and below a millisecond: where "1m1e-05s" came from.
COMPOSED_SECONDS = st.builds(
    lambda minutes, millis, below: minutes * 60 + millis / 1000 + below,
    st.integers(0, 10**6),
    st.integers(0, 59_999),
    st.floats(0, 0.001, exclude_max=True),
)


@given(st.floats(min_value=0, max_value=1e9) | COMPOSED_SECONDS)
@example(60.00001)
def test_format_seconds_writes_a_duration_every_reader_reads_back_to_the_millisecond(seconds: float) -> None:
    text = format_seconds(seconds)
    assert re.fullmatch(DURATION_PATTERN, text), text
    assert parse_duration(text) == pytest.approx(to_the_millisecond(seconds), rel=1e-12, abs=1e-9)
    assert seconds_of_the_sidecar("LAMEDUCK_MAX_HOLD", text) == parse_duration(text)
    assert format_seconds(parse_duration(text) or 0.0) == text, "formatting what it wrote changes nothing"


@given(st.floats(max_value=-1e-300) | st.sampled_from([math.nan, math.inf, -math.inf]))
def test_format_seconds_refuses_what_is_no_duration(seconds: float) -> None:
    with pytest.raises(NotADuration):
        format_seconds(seconds)


# ---- merge, then the subset test ------------------------------------------------------------

MANIFEST_KEYS = st.sampled_from(
    ["a", "b", "spec", "lifecycle", "preStop", "httpGet", "sleep", "containers", "initContainers", "env", "ports"]
)
HASHABLE_LEAVES = st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=3)


def _keyed(tree: dict[str, Any], unique: bool) -> dict[str, Any]:
    """Items of a keyed list made maps carrying their key (unique ones, for an intent), as the
    API server's list-maps and lameduck's intents have them."""
    for name, value in tree.items():
        if name in KEYED_LISTS and isinstance(value, list):
            key = KEYED_LISTS[name]
            items = [item if isinstance(item, dict) else {"v": item} for item in value]
            tree[name] = [item | {key: f"k{i}" if unique else item.get(key, i % 2)} for i, item in enumerate(items)]
    return tree


def manifests(unique: bool) -> st.SearchStrategy[dict[str, Any]]:
    return st.recursive(
        st.dictionaries(MANIFEST_KEYS, HASHABLE_LEAVES, max_size=3).map(lambda t: _keyed(t, unique)),
        lambda inner: st.dictionaries(
            MANIFEST_KEYS, HASHABLE_LEAVES | inner | st.lists(inner | HASHABLE_LEAVES, max_size=3), max_size=4
        ).map(lambda t: _keyed(t, unique)),
        max_leaves=20,
    )


@given(manifests(unique=False), manifests(unique=True))
def test_merging_an_intent_leaves_it_a_subset_and_merging_it_again_changes_nothing(
    base: dict[str, Any], intent: dict[str, Any]
) -> None:
    kept = copy.deepcopy(base)
    merged = merge(base, intent)
    assert is_subset(intent, merged)
    assert merge(merged, intent) == merged
    assert base == kept, "merge copies; it never changes its input"
    _assert_handlers_replaced_whole(intent, merged)


def _subset_by_definition(intent: Any, actual: Any, key: str | None = None) -> bool:
    """is_subset as first written, without its shortcuts: maps key by key (a preStop handler's
    keys exactly), keyed lists item by item, anything else by equality."""
    if isinstance(intent, Mapping):
        if not isinstance(actual, Mapping):
            return False
        if key == "preStop" and set(intent) != set(actual):
            return False
        return all(k in actual and _subset_by_definition(v, actual[k], k) for k, v in intent.items())
    if isinstance(intent, list) and key in KEYED_LISTS:
        if not isinstance(actual, list):
            return False
        by_key = {a.get(KEYED_LISTS[key]): a for a in actual if isinstance(a, Mapping)}
        return all(
            i.get(KEYED_LISTS[key]) in by_key and _subset_by_definition(i, by_key[i.get(KEYED_LISTS[key])])
            for i in intent
        )
    return bool(intent == actual)


@given(manifests(unique=True), manifests(unique=False))
@example({"lifecycle": {"preStop": {"sleep": {}}}}, {"lifecycle": {"preStop": {"sleep": {}, "exec": {}}}})
@example({"containers": [{"name": "a", "b": 1}]}, {"containers": [{"name": "b", "b": 1}, 3]})
@example({"env": [{"name": "a"}]}, {"env": {"name": "a"}})
@example({"a": 1.0, "b": None}, {"a": True, "b": None})
def test_is_subset_agrees_with_its_definition(intent: dict[str, Any], actual: dict[str, Any]) -> None:
    """Its shortcuts (leaves compared at once, dicts before the Mapping check) change no answer,
    on a manifest against another, against itself and against the intent merged into it."""
    merged = merge(actual, intent)
    for other in (actual, intent, merged):
        assert is_subset(intent, other) is _subset_by_definition(intent, other)
        assert is_subset(other, intent) is _subset_by_definition(other, intent)


def _assert_handlers_replaced_whole(intent: Mapping[str, Any], merged: Mapping[str, Any]) -> None:
    """A preStop handler's fields exclude each other: the intent's replaces the manifest's whole."""
    for key, value in intent.items():
        if key == "preStop":
            assert merged[key] == value
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            _assert_handlers_replaced_whole(value, merged[key])
        elif key in KEYED_LISTS and isinstance(value, list) and isinstance(merged.get(key), list):
            name = KEYED_LISTS[key]
            by_name = {m.get(name): m for m in merged[key] if isinstance(m, Mapping)}
            for item in value:
                _assert_handlers_replaced_whole(item, by_name[item[name]])


# ---- selection ignores the order of the policies --------------------------------------------

LABEL_VALUES = st.sampled_from(["web", "api"])
SELECTORS = st.fixed_dictionaries(
    {},
    optional={
        "matchLabels": st.dictionaries(st.sampled_from(["app", "tier"]), LABEL_VALUES, max_size=2),
        "matchExpressions": st.lists(
            st.sampled_from(
                [
                    {"key": "app", "operator": "Exists"},
                    {"key": "tier", "operator": "DoesNotExist"},
                    {"key": "app", "operator": "In", "values": ["web", "api"]},
                    {"key": "tier", "operator": "NotIn", "values": ["api"]},
                ]
            ),
            max_size=2,
        ),
    },
)


@st.composite
def policy_bodies(draw: st.DrawFn) -> dict[str, Any]:
    cluster = draw(st.booleans())
    spec: dict[str, Any] = {"selector": draw(SELECTORS), "priority": draw(st.integers(-2, 2))}
    meta: dict[str, Any] = {"name": draw(st.sampled_from(["a", "b", "c", "d"]))}
    if cluster:
        spec["namespaceSelector"] = draw(st.sampled_from([{}, {"matchLabels": {"env": "prod"}}]))
    else:
        meta["namespace"] = draw(st.sampled_from(["shop", "other"]))
    return {
        "apiVersion": API_VERSION,
        "kind": KIND_CLUSTER if cluster else KIND_NAMESPACED,
        "metadata": meta,
        "spec": spec,
    }


POLICY_LISTS = st.lists(
    policy_bodies(), max_size=8, unique_by=lambda b: (b["kind"], b["metadata"].get("namespace"), b["metadata"]["name"])
)


@given(
    POLICY_LISTS.flatmap(lambda bodies: st.tuples(st.just(bodies), st.permutations(bodies))),
    st.dictionaries(st.sampled_from(["app", "tier"]), LABEL_VALUES, max_size=2),
    st.sampled_from([{}, {"env": "prod"}]),
)
def test_selection_and_decision_ignore_the_order_of_the_policies(
    orders: tuple[list[dict[str, Any]], list[dict[str, Any]]], labels: dict[str, str], namespace_labels: dict[str, str]
) -> None:
    first, second = ([parse_policy(b) for b in bodies] for bodies in orders)
    web = deployment(labels=labels)
    assert select_policy(web, first, namespace_labels) == select_policy(web, second, namespace_labels)

    def decided(policies: list[Policy]) -> Any:
        d = decide(web, policies, Settings(), namespace_labels, lambda _: 0)
        return d.verdict, d.action, d.intent, d.losses

    assert decided(first) == decided(second)


# ---- a Deployment of any shape: refused by the shape check, or decided --------------------------

BASE: dict[str, Any] = deployment(
    labels={"app": "web"},
    annotations={"team": "shop", "lameduck.dev/skip": "false"},
    readinessGates=[{"conditionType": "example.com/warm"}],
    containers=[
        container(
            "app",
            8080,
            lifecycle={"preStop": {"exec": {"command": ["sleep", "5"]}}},
            env=[{"name": "X", "value": "1"}],
            readinessProbe={"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 2},
        ),
        container("log-shipper"),
    ],
    initContainers=[container("migrate")],
    terminationGracePeriodSeconds=30,
)
BASE["metadata"]["managedFields"] = [
    {"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
]
BASE["status"] = {"replicas": 1, "conditions": [{"type": "Progressing", "reason": "NewReplicaSetAvailable"}]}


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            found.extend(_paths(value, (*prefix, index)))
    return found


BASE_PATHS = _paths(BASE)[1:]
POLICIES = [
    parse_policy(
        {"apiVersion": API_VERSION, "kind": KIND_NAMESPACED, "metadata": {"name": "p", "namespace": "shop"}, "spec": s}
    )
    for s in (
        {"onConflict": "TakeOver", "readinessGate": {"enabled": True}},
        {"hold": {"method": "Sleep"}, "priority": -1},
    )
]


@settings(max_examples=400)  # most changes are refused by the shape check: enough get decided
@given(st.lists(st.tuples(st.sampled_from(BASE_PATHS), JSON), min_size=1, max_size=3))
def test_a_deployment_of_any_shape_is_refused_by_the_shape_check_or_decided(
    changes: list[tuple[tuple[Any, ...], Any]],
) -> None:
    """The CLI decides only what passes deployment_errors: anything that passes must be decided,
    rendered and reported without an exception."""
    manifest = copy.deepcopy(BASE)
    for path, value in changes:
        node: Any = manifest
        for step in path[:-1]:
            node = node[step] if isinstance(node, dict | list) and _has(node, step) else None
        if isinstance(node, dict | list) and _has(node, path[-1]):
            node[path[-1]] = value  # a step an earlier change replaced is left out
    if deployment_errors(manifest):
        event("refused by the shape check")
        return
    event("decided")
    manifest["metadata"].setdefault("namespace", "shop")
    inputs = Inputs(policies=POLICIES, deployments=[manifest])
    decision = decide_offline(manifest, inputs, Settings())
    rendered(manifest, decision)
    _summary(decision)


def _has(node: dict[Any, Any] | list[Any], step: Any) -> bool:
    if isinstance(node, dict):
        return step in node
    return isinstance(step, int) and 0 <= step < len(node)
