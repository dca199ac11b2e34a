"""One decision: `lameduck check` and `render`, the operator's reconcile and the admission webhook agree on
every example.

Each scenario is the example policies with the example Deployments: as given, as `lameduck render`
makes them, and moved to namespaces only the Audit baseline selects, or none does. The CLI runs
in-process; the operator is a Fleet over an in-memory API, one fresh Fleet and exactly one
reconcile per Deployment (so no other Deployment's rollout takes a slot); the webhook answers a
CREATE of each Deployment.
"""

from __future__ import annotations

import base64
import copy
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import jsonpatch
import pytest
import yaml

from lameduck_operator.cli import EXIT_INVALID_OBJECTS, EXIT_NOT_COMPLIANT, load_inputs, main, rendered
from lameduck_operator.fleet import Fleet
from lameduck_operator.logic.admission import review
from lameduck_operator.logic.compliance import Reason, State
from lameduck_operator.logic.decision import Action, Decision, Moment, after_write, decide
from lameduck_operator.logic.selection import DeploymentRef, deployment_ref
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.model import Mode, Policy, PolicyRef, parse_policy
from lameduck_operator.names import KIND_NAMESPACED
from lameduck_operator.settings import Settings
from tests.unit.fake_api import FakeApi
from tests.unit.repo_data import EXAMPLES, InvalidExample, invalid_examples

POLICIES = EXAMPLES / "policies"
DEPLOYMENTS = EXAMPLES / "deployments"
SETTINGS = Settings()  # the CLI's settings without flags
# Every state and reason the examples must reach, so that each path is compared where it matters.
COVERED = {
    (State.COMPLIANT, Reason.IN_PLACE),
    (State.PENDING, Reason.PENDING_NEXT_ROLLOUT),
    (State.PENDING, Reason.OUTDATED),
    (State.CONFLICT, Reason.CONFLICTING_FIELDS),
    (State.SKIPPED, Reason.OPTED_OUT),
    (State.UNMANAGED, Reason.NO_POLICY),
}


def cli(*args: str, stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), stdin=io.StringIO(stdin), out=out)
    return code, out.getvalue()


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def example_manifests() -> str:
    return "".join(f"---\n{p.read_text()}\n" for p in sorted(DEPLOYMENTS.glob("*.yaml")))


def moved(text: str, namespace: str, labels: dict[str, str]) -> str:
    """The manifests' Deployments in one other namespace, with that namespace and its labels."""
    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}]
    if labels:
        docs[0]["metadata"]["labels"] = labels
    for doc in documents(text):
        if doc["kind"] == "Deployment":
            doc["metadata"]["namespace"] = namespace
            docs.append(doc)
    return yaml.safe_dump_all(docs, sort_keys=False)


@dataclass(frozen=True)
class Scenario:
    """Inputs as the CLI reads them: files and directories, plus stdin."""

    sources: tuple[str, ...]
    stdin: str = ""


@cache
def scenarios() -> dict[str, Scenario]:
    given = Scenario((str(POLICIES), str(DEPLOYMENTS)))
    _, out = cli("render", *_flags(given))
    namespaces = [d for d in documents(example_manifests()) if d["kind"] == "Namespace"]
    as_rendered = yaml.safe_dump_all(namespaces, sort_keys=False) + out
    return {
        "as given": given,
        "as rendered": Scenario((str(POLICIES), "-"), as_rendered),
        "in a staging namespace": Scenario(
            (str(POLICIES), "-"), moved(example_manifests(), "staging", {"env": "staging"})
        ),
        "in a namespace no policy selects": Scenario((str(POLICIES), "-"), moved(example_manifests(), "sandbox", {})),
    }


@dataclass(frozen=True)
class Outcome:
    """One scenario as the CLI sees and answers it."""

    policy_bodies: list[dict[str, Any]]
    policies: list[Policy]
    namespace_labels: dict[str, dict[str, str]]
    deployments: dict[DeploymentRef, dict[str, Any]]
    rows: dict[DeploymentRef, dict[str, Any]]
    rendered: dict[DeploymentRef, dict[str, Any]]


def policy_bodies() -> list[dict[str, Any]]:
    bodies = [documents(p.read_text())[0] for p in sorted(POLICIES.glob("*.yaml"))]
    for body in bodies:
        if body["kind"] == KIND_NAMESPACED:
            body["metadata"].setdefault("namespace", "default")
    return bodies


@cache
def outcome(name: str) -> Outcome:
    scenario = scenarios()[name]
    inputs = load_inputs(scenario.sources, "default", io.StringIO(scenario.stdin))
    check_code, check_out = cli("check", "-o", "json", *_flags(scenario), stdin=scenario.stdin)
    render_code, render_out = cli("render", *_flags(scenario), stdin=scenario.stdin)
    assert check_code in (0, EXIT_NOT_COMPLIANT)
    assert render_code == 0
    rows = {DeploymentRef(r["namespace"], r["name"]): r for r in json.loads(check_out)}
    bodies = policy_bodies()
    return Outcome(
        policy_bodies=bodies,
        policies=[parse_policy(b) for b in bodies],
        namespace_labels=inputs.namespace_labels,
        deployments={deployment_ref(d): d for d in inputs.deployments},
        rows=rows,
        rendered={deployment_ref(d): d for d in documents(render_out)},
    )


def _flags(scenario: Scenario) -> list[str]:
    return [arg for source in scenario.sources for arg in ("-f", source)]


def cases() -> list[Any]:
    """(scenario, Deployment) pairs, read as the CLI reads them."""
    found: list[Any] = []
    for name, scenario in scenarios().items():
        inputs = load_inputs(scenario.sources, "default", io.StringIO(scenario.stdin))
        found.extend(
            pytest.param(name, deployment_ref(d), id=f"{name}: {deployment_ref(d)}") for d in inputs.deployments
        )
    return found


CASES = cases()


# --- (b) the operator's reconcile -----------------------------------------------------------------------


@dataclass
class Reconciled:
    decision: Decision
    api: FakeApi
    fleet: Fleet


async def reconcile_once(o: Outcome, ref: DeploymentRef) -> Reconciled:
    """A fresh Fleet fed the scenario's namespaces, policies and Deployments; one reconcile of ref."""
    api = FakeApi()
    fleet = Fleet(
        SETTINGS,
        api,
        OperatorMetrics(),
        clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        call_later=lambda _delay, _callback: None,
    )
    fleet.synced.set()
    for namespace, labels in o.namespace_labels.items():
        fleet.namespace_seen({"metadata": {"name": namespace, "labels": labels}})
    for body in o.policy_bodies:
        fleet.policy_seen(copy.deepcopy(body))
    for d in o.deployments.values():
        fleet.deployment_seen(api.add(d, replicas=d["spec"].get("replicas", 1)))
    decision = await fleet.reconcile(ref)
    assert decision is not None
    assert set(fleet.decisions) == {ref}, "exactly one reconcile"
    # Kept as the write left it: an apply judged on the stored Deployment, anything else as decided.
    written = after_write(decision, api.view(ref.namespace, ref.name))
    assert fleet.decisions[ref].verdict == (written or decision).verdict
    return Reconciled(decision, api, fleet)


@pytest.mark.parametrize(("scenario", "ref"), CASES)
async def test_the_cli_and_the_operator_take_the_same_decision(scenario: str, ref: DeploymentRef) -> None:
    o = outcome(scenario)
    row = o.rows[ref]
    decision = (await reconcile_once(o, ref)).decision
    verdict = decision.verdict
    assert (row["state"], row["reason"]) == (verdict.state.value, verdict.reason.value), verdict.message
    assert row["policy"] == (str(verdict.policy) if verdict.policy else None)
    assert row["budgetSeconds"] == decision.budget_seconds
    assert row["lostPolicies"] == [str(loss) for loss in decision.losses]
    if verdict.state is not State.CONFLICT:
        # Conflicts name who set the value in the way: the operator reads managedFields, files have none.
        assert row["message"] == verdict.message


@pytest.mark.parametrize(("scenario", "ref"), CASES)
async def test_lameduck_render_shows_the_intent_the_operator_decides(scenario: str, ref: DeploymentRef) -> None:
    o = outcome(scenario)
    manifest = o.deployments[ref]
    decision = (await reconcile_once(o, ref)).decision
    assert o.rendered[ref] == rendered(manifest, decision)
    if decision.intent is not None and decision.verdict.state is not State.CONFLICT:
        assert o.rendered[ref] != manifest or decision.verdict.state is State.COMPLIANT


@pytest.mark.parametrize(("scenario", "ref"), CASES)
async def test_what_the_operator_applies_now_is_the_spec_lameduck_render_shows(
    scenario: str, ref: DeploymentRef
) -> None:
    o = outcome(scenario)
    reconciled = await reconcile_once(o, ref)
    stored = reconciled.api.view(ref.namespace, ref.name)
    if reconciled.decision.action is Action.APPLY:
        assert stored["spec"] == o.rendered[ref]["spec"]
    else:
        assert not [c for c in reconciled.api.calls if c.startswith(("apply", "patch"))]
        assert stored["spec"] == o.deployments[ref]["spec"]


# --- (c) the admission webhook -------------------------------------------------------------------------


def create_review(obj: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "parity",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "namespace": namespace,
            "operation": "CREATE",
            "object": copy.deepcopy(dict(obj)),
        },
    }


def governing(o: Outcome, row: Mapping[str, Any]) -> Policy | None:
    return next((p for p in o.policies if str(p.ref) == row["policy"]), None)


@pytest.mark.parametrize(
    "with_namespace", [True, False], ids=["object with its namespace", "namespace from the request"]
)
@pytest.mark.parametrize(("scenario", "ref"), CASES)
def test_the_webhook_admits_exactly_what_lameduck_render_shows(
    scenario: str, ref: DeploymentRef, with_namespace: bool
) -> None:
    o = outcome(scenario)
    row = o.rows[ref]
    obj = copy.deepcopy(o.deployments[ref])
    expected = copy.deepcopy(o.rendered[ref])
    if not with_namespace:
        del obj["metadata"]["namespace"]
        del expected["metadata"]["namespace"]
    labels = o.namespace_labels.get(ref.namespace)

    def judge(written: Mapping[str, Any]) -> Decision:
        return decide(written, o.policies, SETTINGS, labels, lambda _: 0, moment=Moment.ADMISSION)

    admitted = review(create_review(obj, ref.namespace), judge)
    response = admitted.response["response"]
    ops = json.loads(base64.b64decode(response["patch"])) if "patch" in response else []
    policy = governing(o, row)
    enforced = (
        policy is not None
        and policy.spec.mode is Mode.ENFORCE
        and row["state"] not in (State.CONFLICT, State.SKIPPED, State.UNMANAGED)
    )
    if enforced:
        assert jsonpatch.apply_patch(obj, ops) == expected
        assert bool(ops) is (row["state"] != State.COMPLIANT), "a compliant Deployment needs no patch"
    else:
        assert ops == [], "nothing is injected where the policy only audits, conflicts, or none governs"
    assert ("warnings" in response) is (row["state"] == State.CONFLICT)


# --- coverage: the examples reach every state --------------------------------------------------------


def test_the_examples_reach_every_state_and_reason_and_every_policy_kind_of_work() -> None:
    reached = {(State(r["state"]), Reason(r["reason"])) for name in scenarios() for r in outcome(name).rows.values()}
    assert reached >= COVERED, f"not reached: {sorted(COVERED - reached)}"
    governing_modes = {
        (p.spec.mode, p.spec.apply, p.spec.hold.method)
        for name in scenarios()
        for r in outcome(name).rows.values()
        if (p := governing(outcome(name), r)) is not None
    }
    assert {mode for mode, _, _ in governing_modes} == set(Mode)
    assert len({method for _, _, method in governing_modes}) == 2, "sidecar and sleep holds"
    assert len({apply for _, apply, _ in governing_modes}) == 2, "OnNextRollout and Immediate"


def test_every_example_deployment_is_compared() -> None:
    given = {deployment_ref(d) for d in documents(example_manifests()) if d["kind"] == "Deployment"}
    assert given == {ref for name, ref in (c.values for c in CASES) if name == "as given"}
    assert len(CASES) == 4 * len(given)


# --- invalid policies: rejected by both ----------------------------------------------------------------


@pytest.mark.parametrize("example", invalid_examples(), ids=lambda e: e.name)
async def test_an_invalid_example_is_rejected_by_the_cli_and_reported_invalid_by_the_operator(
    example: InvalidExample, capsys: pytest.CaptureFixture[str]
) -> None:
    file = EXAMPLES / "invalid" / f"{example.name}.yaml"
    code, out = cli("check", "-f", str(file), "-f", str(DEPLOYMENTS))
    assert (code, out) == (EXIT_INVALID_OBJECTS, "")
    err = capsys.readouterr().err
    assert f"{file}: {example.body['kind']} {example.body['metadata']['name']}: {example.path}: " in err
    assert example.message in err

    body = copy.deepcopy(example.body)
    if body["kind"] == KIND_NAMESPACED:
        body["metadata"].setdefault("namespace", "shop")
    status, api = await operator_status(body)
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert example.path in ready["message"]
    assert example.message in ready["message"]
    assert not [c for c in api.calls if c.startswith(("apply shop", "apply payments", "patch"))]


async def operator_status(body: dict[str, Any]) -> tuple[dict[str, Any], FakeApi]:
    api = FakeApi()
    fleet = Fleet(SETTINGS, api, OperatorMetrics(), clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    fleet.synced.set()
    inputs = load_inputs([str(DEPLOYMENTS)], "default", io.StringIO())
    for namespace, labels in inputs.namespace_labels.items():
        fleet.namespace_seen({"metadata": {"name": namespace, "labels": labels}})
    for d in inputs.deployments:
        fleet.deployment_seen(api.add(d))
    fleet.policy_seen(body)
    await fleet.drain()
    await fleet.publish()
    meta = body["metadata"]
    return api.statuses[PolicyRef(body["kind"], meta["name"], meta.get("namespace"))], api
