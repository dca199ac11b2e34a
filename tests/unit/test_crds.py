"""The CRDs: generated from the model, documented, and judging policies as the model does."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from lameduck_operator.crdgen import crd_files
from lameduck_operator.model import PolicyInvalid, parse_policy, parse_spec
from tests.unit.crd_validation import default_errors, validate
from tests.unit.repo_data import INVALID_SPECS, REPO, InvalidExample, invalid_examples, load_yaml, valid_policy_files

Crds = dict[str, dict[str, Any]]


def test_crd_files_are_generated_from_the_model() -> None:
    for name, text in crd_files().items():
        path = REPO / "crds" / name
        assert path.exists(), f"crds/{name} is missing: run make crds"
        assert path.read_text() == text, f"crds/{name} is stale: run make crds"
    assert {p.name for p in (REPO / "crds").glob("*.yaml")} == set(crd_files())


def _properties(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for name, sub in schema.get("properties", {}).items():
        yield f"{path}.{name}", sub
        yield from _properties(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _properties(schema["items"], f"{path}[]")


@pytest.mark.parametrize("kind", ["GracefulPolicy", "ClusterGracefulPolicy"])
def test_every_field_is_described_for_kubectl_explain(crds_by_kind: Crds, kind: str) -> None:
    schema = crds_by_kind[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    undocumented = [p for p, sub in _properties(schema, "") if p != ".metadata" and not sub.get("description")]
    assert undocumented == []


def test_crds_have_status_short_names_and_printer_columns(crds_by_kind: Crds) -> None:
    for kind, crd in crds_by_kind.items():
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert crd["spec"]["names"]["shortNames"]
        columns = {c["name"] for c in version["additionalPrinterColumns"]}
        assert {"Mode", "Matched", "Compliant", "Budget", "Age"} <= columns, kind
    assert crds_by_kind["GracefulPolicy"]["spec"]["scope"] == "Namespaced"
    assert crds_by_kind["ClusterGracefulPolicy"]["spec"]["scope"] == "Cluster"


@pytest.mark.parametrize("kind", ["GracefulPolicy", "ClusterGracefulPolicy"])
def test_every_default_passes_its_own_rules(crds_by_kind: Crds, kind: str) -> None:
    assert default_errors(crds_by_kind[kind]) == []


def test_crd_defaults_match_the_model(crds_by_kind: Crds) -> None:
    body = {"apiVersion": "lameduck.dev/v1alpha1", "kind": "GracefulPolicy", "metadata": {"name": "d"}, "spec": {}}
    defaulted, errors = validate(crds_by_kind["GracefulPolicy"], body)
    assert errors == []
    assert defaulted["spec"] == {
        "selector": {},
        "mode": "Enforce",
        "apply": "OnNextRollout",
        "maxConcurrentRollouts": 5,
        "hold": {"method": "Sidecar", "propagationDelay": "2s", "quietPeriod": "1s", "maxHold": "30s"},
        "drainTimeout": "30s",
        "readinessGate": {"enabled": False},
        "priority": 0,
        "onConflict": "Report",
    }
    assert parse_spec(defaulted["spec"], cluster=False) == parse_spec({}, cluster=False)


@pytest.mark.parametrize("path", valid_policy_files(), ids=lambda p: p.stem)
def test_example_policies_pass_the_crd_and_default_alike(crds_by_kind: Crds, path: Path) -> None:
    body = load_yaml(path)
    defaulted, errors = validate(crds_by_kind[body["kind"]], body)
    assert errors == []
    assert parse_policy(defaulted) == parse_policy(body)


@pytest.mark.parametrize("example", invalid_examples(), ids=lambda e: e.name)
def test_invalid_examples_fail_the_crd_with_documented_error(crds_by_kind: Crds, example: InvalidExample) -> None:
    _, errors = validate(crds_by_kind[example.body["kind"]], example.body)
    assert any(e.startswith(f"{example.path}: ") and example.message in e for e in errors), errors


@pytest.mark.parametrize(("spec", "path", "message"), INVALID_SPECS)
def test_crd_rejects_what_the_model_rejects(crds_by_kind: Crds, spec: dict[str, Any], path: str, message: str) -> None:
    body = {"apiVersion": "lameduck.dev/v1alpha1", "kind": "GracefulPolicy", "metadata": {"name": "x"}, "spec": spec}
    _, errors = validate(crds_by_kind["GracefulPolicy"], body)
    assert any(e.startswith(f"{path}: ") for e in errors), errors


@pytest.mark.parametrize(
    "spec",
    [
        {"hold": {"propagationDelay": "30s", "maxHold": "30s"}},
        {"hold": {"maxHold": "1s", "propagationDelay": "0s", "quietPeriod": "500ms"}},
        {"hold": {"maxHold": "10m"}, "drainTimeout": "1h"},
        {"terminationGracePeriodSeconds": 60},
        {"hold": {"maxHold": "1m30s"}, "drainTimeout": "29.5s", "terminationGracePeriodSeconds": 120},
        {"selector": {"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}},
        {"containers": ["app", "web-1"], "priority": -1000, "minReadySeconds": 0},
    ],
)
def test_crd_and_model_accept_the_same_edge_cases(crds_by_kind: Crds, spec: dict[str, Any]) -> None:
    body = {"apiVersion": "lameduck.dev/v1alpha1", "kind": "GracefulPolicy", "metadata": {"name": "x"}, "spec": spec}
    _, errors = validate(crds_by_kind["GracefulPolicy"], body)
    assert errors == []
    try:
        parse_spec(spec, cluster=False)
    except PolicyInvalid as err:  # pragma: no cover - the assertion below reports it
        pytest.fail(f"model rejected what the CRD accepts: {err}")
