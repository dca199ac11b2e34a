"""Hostile and careless policies, the table of tests/hostile_policies.py, judged offline.

Each one is judged by the model within a bound (a generous guard against a hang, not a speed
test), rejected with typed errors at the field's path, or accepted with sane values: a budget
within the grace period's bounds and a sidecar environment the sidecar reads. The CRD (its
offline stand-in, tests/unit/crd_validation.py) judges each alike, and states a bound for every
string, list, map and integer of the spec, each tried here past its limit; each of its CEL rules
refuses some case (the e2e suite sends the same table to a live API server,
tests/e2e/test_hostile_policies.py). The webhook's pure path and the CLI take each without a
crash. (A key given twice cannot be in a dict: the CLI refuses it when reading,
tests/unit/test_cli_exit_codes.py.)
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
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
    HoldMethod,
    Policy,
    PolicyInvalid,
    parse_policy,
)
from lameduck_operator.names import KIND_CLUSTER, KIND_NAMESPACED, POLICY_KINDS, SIDECAR_NAME
from lameduck_operator.settings import Settings
from lameduck_sidecar.config import load_config
from lameduck_sidecar.lame_duck import LameDuckTarget
from tests.hostile_policies import CASES, NS, Hostile, gp, ids
from tests.unit.builders import deployment
from tests.unit.crd_validation import validate

# A guard against a hang: every case takes milliseconds.
BOUND_SECONDS = 5.0
# What the CRD judges: not metadata, kind or apiVersion (the API server's own checks).
JUDGED_BY_THE_CRD = [c for c in CASES if c.judged_by_the_crd]


def judged(case: Hostile) -> Policy | PolicyInvalid:
    started = time.monotonic()
    try:
        result: Policy | PolicyInvalid = parse_policy(case.body)
    except PolicyInvalid as err:
        result = err
    assert time.monotonic() - started < BOUND_SECONDS, "a guard against a hang"
    return result


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


@pytest.mark.parametrize("case", JUDGED_BY_THE_CRD, ids=ids(JUDGED_BY_THE_CRD))
def test_the_crd_judges_each_as_the_model_does(crds_by_kind: dict[str, dict[str, Any]], case: Hostile) -> None:
    defaulted, errors = validate(crds_by_kind[case.body["kind"]], case.body)
    if not case.rejected:
        assert errors == []
        assert parse_policy(defaulted) == parse_policy(case.body), "the CRD's defaults are the model's"
        return
    assert errors, "the API server would store what the model rejects"
    for path in case.crd_paths:
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


@pytest.mark.parametrize("kind", [KIND_NAMESPACED, KIND_CLUSTER])
def test_each_cel_rule_of_the_crd_refuses_a_case_of_its_kind(
    crds_by_kind: dict[str, dict[str, Any]], kind: str
) -> None:
    """So that the e2e suite, which sends the table to a live API server, fails when a rule is
    dropped from either CRD: a rule no case breaks would go unnoticed there."""
    crd = crds_by_kind[kind]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = {
        (f"{path}{rule.get('fieldPath', '')}", rule["message"])
        for path, node in bounded_nodes(schema, "spec")
        for rule in node.get("x-kubernetes-validations", [])
    }
    refused: set[tuple[str, str]] = set()
    for case in JUDGED_BY_THE_CRD:
        if case.body["kind"] == kind:
            for error in validate(crd, case.body)[1]:
                path, _, message = error.partition(": ")
                refused.add((re.sub(r"\[\d+\]", "[]", path), message))
    assert len(rules) >= 10, "the CRD's rules, read"
    assert sorted(rules - refused) == [], "add a case of this kind that breaks each of these rules"


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
