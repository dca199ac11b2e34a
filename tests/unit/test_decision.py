"""The one decision per Deployment: apply, revert or leave it, with the event and verdict users see."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from lameduck_operator.logic.compliance import Reason, State, Verdict
from lameduck_operator.logic.decision import (
    Action,
    Decision,
    DeploymentEvent,
    JudgedPart,
    Moment,
    after_write,
    decide,
    holds_through_status,
    intent_digest,
    revert_intent,
    rollout_in_progress,
    with_digest,
)
from lameduck_operator.logic.intent import POD_PATH, FieldPath, plan_deployment
from lameduck_operator.logic.merge import merge
from lameduck_operator.logic.selection import DeploymentRef, Loss
from lameduck_operator.model import Policy, PolicyRef
from lameduck_operator.settings import Settings
from tests.unit.builders import container, deployment, policy
from tests.unit.fake_api import fields_tree

SETTINGS = Settings()
WEB = DeploymentRef("shop", "web")
POLICY = PolicyRef("GracefulPolicy", "p", "shop")
IMMEDIATE: dict[str, Any] = {"apply": "Immediate"}
T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z"
FOREIGN_EXEC = {"exec": {"command": ["sleep", "5"]}}
FOREIGN_HTTP = {"httpGet": {"path": "/shutdown", "port": 8080}}
OLD_HOLD = {"httpGet": {"path": "/hold/app", "port": 9901, "scheme": "HTTP"}}


def no_rollouts(_: PolicyRef) -> int:
    return 0


def all_slots_taken(_: PolicyRef) -> int:
    return 1


def run(
    d: dict[str, Any],
    policies: list[Policy],
    *,
    in_flight: Any = no_rollouts,
    settings: Settings = SETTINGS,
    namespace_labels: dict[str, str] | None = None,
    recent_writers: tuple[str, ...] = (),
) -> Decision:
    return decide(d, policies, settings, namespace_labels, in_flight, recent_writers=recent_writers)


def applied(d: dict[str, Any], p: Policy, *, digest: bool = True) -> dict[str, Any]:
    """The Deployment as stored after lameduck applied the policy's intent (with or without the digest mark)."""
    intent = plan_deployment(d, p, SETTINGS).intent
    marked = with_digest(intent) if digest else intent
    return managed(merge(d, marked), ("kubectl", T0, owned(d)), ("lameduck", T1, owned(marked)))


def prestop_path(container_name: str) -> FieldPath:
    return (*POD_PATH, "containers", ("name", container_name), "lifecycle", "preStop")


def app_prestop(d: dict[str, Any], handler: dict[str, Any] | None, name: str = "app") -> dict[str, Any]:
    out = copy.deepcopy(d)
    for c in out["spec"]["template"]["spec"]["containers"]:
        if c["name"] == name:
            if handler is None:
                c.pop("lifecycle", None)
            else:
                c["lifecycle"] = {"preStop": handler}
    return out


def owned(body: dict[str, Any]) -> dict[str, Any]:
    """The managedFields tree of every field set in body's metadata and spec."""
    return fields_tree({k: v for k, v in body.items() if k in ("metadata", "spec")})


def settled(d: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(d)
    out["status"] = {"observedGeneration": 0, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}
    return out


def managed(d: dict[str, Any], *entries: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    out = copy.deepcopy(d)
    out["metadata"]["managedFields"] = [
        {"manager": m, "operation": "Update", "time": t, "fieldsType": "FieldsV1", "fieldsV1": f} for m, t, f in entries
    ]
    return out


# --- the intent's digest -------------------------------------------------------------------------


def test_the_digest_is_16_hex_characters_and_follows_the_intent() -> None:
    one = plan_deployment(deployment(), policy(), SETTINGS).intent
    other = plan_deployment(deployment(), policy(spec={"hold": {"quietPeriod": "5s"}}), SETTINGS).intent
    digest = intent_digest(one)
    assert len(digest) == 16
    assert set(digest) <= set("0123456789abcdef")
    assert intent_digest(copy.deepcopy(one)) == digest, "the same intent gives the same digest"
    assert intent_digest(other) != digest, "a changed intent changes the digest"


def test_the_marked_intent_carries_its_digest_beside_the_policy_annotation() -> None:
    intent = plan_deployment(deployment(), policy(), SETTINGS).intent
    marked = with_digest(intent)
    assert marked["metadata"]["annotations"] == {
        "lameduck.dev/policy": "GracefulPolicy/shop/p",
        "lameduck.dev/intent": intent_digest(intent),
    }
    assert marked["spec"] == intent["spec"]
    assert "lameduck.dev/intent" not in intent["metadata"]["annotations"], "the plan's intent is left as it was"


# --- rollouts in progress ------------------------------------------------------------------------


def rollout(
    status: dict[str, int],
    generation: int | None = 2,
    spec_replicas: int | None = 3,
    conditions: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    d: dict[str, Any] = {"metadata": {"name": "web"}, "spec": {}, "status": dict(status)}
    if generation is not None:
        d["metadata"]["generation"] = generation
    if spec_replicas is not None:
        d["spec"]["replicas"] = spec_replicas
    if conditions is not None:
        d["status"]["conditions"] = conditions
    return d


SETTLED = {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}
DEADLINE = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
UPDATING = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
COMPLETE = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}


@pytest.mark.parametrize(
    ("d", "in_progress"),
    [
        pytest.param(rollout(SETTLED), False, id="every replica updated and available: settled"),
        pytest.param(rollout({**SETTLED, "observedGeneration": 1}), True, id="a generation not yet observed"),
        pytest.param(
            rollout({**SETTLED, "observedGeneration": 1}, conditions=[DEADLINE]),
            False,
            id="a rollout past its progress deadline no longer counts",
        ),
        pytest.param(
            rollout({**SETTLED, "observedGeneration": 1}, conditions=[UPDATING]),
            True,
            id="a rollout still progressing counts",
        ),
        pytest.param(
            rollout({**SETTLED, "updatedReplicas": 1, "replicas": 1, "availableReplicas": 1}),
            True,
            id="fewer updated replicas than the spec wants",
        ),
        pytest.param(
            rollout({**SETTLED, "replicas": 4}),
            True,
            id="old replicas still running beside the updated ones",
        ),
        pytest.param(
            rollout({**SETTLED, "availableReplicas": 1}, conditions=[COMPLETE]),
            False,
            id="a completed rollout whose pods became unavailable later (a node lost) is no rollout",
        ),
        pytest.param(
            rollout({**SETTLED, "availableReplicas": 1, "observedGeneration": 1}, conditions=[COMPLETE]),
            True,
            id="a completed rollout with a newer generation not yet observed is in progress",
        ),
        pytest.param(
            rollout({**SETTLED, "availableReplicas": 1, "replicas": 4}, conditions=[COMPLETE]),
            True,
            id="a completed rollout with old replicas beside the updated ones is in progress",
        ),
        pytest.param(
            rollout({**SETTLED, "availableReplicas": 2}),
            True,
            id="an updated replica not yet available",
        ),
        pytest.param(
            rollout(
                {"observedGeneration": 2, "updatedReplicas": 1, "replicas": 1, "availableReplicas": 1},
                spec_replicas=None,
            ),
            False,
            id="no spec.replicas means one replica",
        ),
        pytest.param(
            rollout({"observedGeneration": 2}, spec_replicas=None), True, id="one replica wanted, none updated yet"
        ),
        pytest.param(rollout({}, generation=None, spec_replicas=0), False, id="scaled to zero with an empty status"),
        pytest.param(
            rollout({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1}, spec_replicas=1),
            True,
            id="an updated replica with no available count yet",
        ),
        pytest.param(rollout({}, generation=1, spec_replicas=0), True, id="a first generation not yet observed"),
    ],
)
def test_a_rollout_is_in_progress_as_kubectl_rollout_status_judges_it(d: dict[str, Any], in_progress: bool) -> None:
    assert rollout_in_progress(d) is in_progress


def test_a_deployment_without_metadata_spec_or_status_is_judged_without_error() -> None:
    assert rollout_in_progress({}) is True, "one replica wanted by default, none updated"


# --- revert ----------------------------------------------------------------------------------------


def test_the_revert_intent_names_only_the_deployment() -> None:
    assert revert_intent(deployment("api", "shop")) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "shop"},
    }


# --- decide: Deployments no policy governs -------------------------------------------------------


def test_a_deployment_no_policy_selects_is_left_alone_as_unmanaged() -> None:
    decision = run(deployment(namespace="other"), [policy()])
    assert decision == Decision(
        DeploymentRef("other", "web"),
        Action.NONE,
        decision.verdict,
    )
    assert (decision.verdict.deployment, decision.verdict.policy) == (DeploymentRef("other", "web"), None)
    assert (decision.verdict.state, decision.verdict.reason) == (State.UNMANAGED, Reason.NO_POLICY)
    assert decision.verdict.message == "no policy selects it"


def test_an_opted_out_deployment_keeps_the_losses_of_its_policies() -> None:
    d = deployment(annotations={"lameduck.dev/skip": "true"})
    winner, loser = policy("a"), policy("b")
    decision = run(d, [winner, loser])
    assert decision.action is Action.NONE
    assert decision.deployment == WEB
    assert decision.verdict.deployment == WEB
    assert decision.verdict.policy == winner.ref
    assert (decision.verdict.state, decision.verdict.reason) == (State.SKIPPED, Reason.OPTED_OUT)
    assert decision.verdict.message == 'opted out with lameduck.dev/skip: "true"'
    assert decision.losses == (Loss(loser.ref, winner.ref, 'equal priority; "a" sorts before "b"'),)
    assert decision.event is None
    assert decision.starts_rollout is False


@pytest.mark.parametrize(
    ("mark", "event"),
    [
        pytest.param(
            "annotation",
            DeploymentEvent(
                "Reverted",
                "removed lameduck's fields (no policy selects it) from",
                policy=PolicyRef("GracefulPolicy", "gone", "shop"),
            ),
            id="the policy annotation alone marks it as ours, and names the policy told",
        ),
        pytest.param(
            "managedFields",
            DeploymentEvent("Reverted", "lameduck removed its fields: no policy selects it"),
            id="lameduck's managedFields entry alone marks it; no policy to tell, so the Deployment is told",
        ),
    ],
)
def test_a_deployment_lameduck_changed_but_no_policy_governs_is_reverted(mark: str, event: DeploymentEvent) -> None:
    if mark == "annotation":
        d = deployment(annotations={"lameduck.dev/policy": "GracefulPolicy/shop/gone"})
    else:
        d = managed(deployment(), ("kubectl", T0, owned(deployment())), ("lameduck", T1, {}))
    decision = run(d, [])
    assert decision.action is Action.REVERT
    assert decision.deployment == WEB
    assert decision.verdict == Verdict(WEB, None, State.UNMANAGED, Reason.NO_POLICY, "no policy selects it")
    assert decision.starts_rollout is True
    assert decision.event == event


def test_an_opted_out_deployment_lameduck_changed_is_reverted_and_keeps_its_losses() -> None:
    d = deployment(annotations={"lameduck.dev/skip": "true", "lameduck.dev/policy": "GracefulPolicy/shop/a"})
    winner, loser = policy("a"), policy("b")
    decision = run(d, [winner, loser])
    assert decision.action is Action.REVERT
    assert decision.losses == (Loss(loser.ref, winner.ref, 'equal priority; "a" sorts before "b"'),)
    assert decision.event == DeploymentEvent(
        "Reverted", """removed lameduck's fields (opted out with lameduck.dev/skip: "true") from""", policy=winner.ref
    )


def test_namespace_labels_and_excluded_namespaces_reach_the_selection() -> None:
    prod_only = policy("prod", None, {"namespaceSelector": {"matchLabels": {"env": "prod"}}})
    assert run(deployment(), [prod_only], namespace_labels={"env": "prod"}).verdict.policy == prod_only.ref
    assert run(deployment(), [prod_only], namespace_labels={"env": "dev"}).verdict.state is State.UNMANAGED
    excluding_shop = Settings(excluded_namespaces=frozenset({"shop"}))
    assert run(deployment(), [policy()], settings=excluding_shop).verdict.state is State.UNMANAGED


# --- decide: a governing policy -------------------------------------------------------------------


def test_audit_reports_with_the_intent_and_budget_but_changes_nothing() -> None:
    p = policy(spec={"mode": "Audit", **IMMEDIATE})
    decision = run(deployment(), [p])
    assert decision.action is Action.NONE
    assert decision.deployment == WEB
    assert (decision.verdict.deployment, decision.verdict.policy, decision.verdict.state) == (
        WEB,
        p.ref,
        State.PENDING,
    )
    assert decision.intent == with_digest(plan_deployment(deployment(), p, SETTINGS).intent)
    assert decision.budget_seconds == 65
    assert decision.event is None


def test_a_first_apply_injects_and_is_told_on_its_policy() -> None:
    d = deployment(containers=[container("app", 8080), container("worker")])
    p = policy(spec=IMMEDIATE)
    decision = run(d, [p])
    assert decision.action is Action.APPLY
    assert decision.deployment == WEB
    assert (decision.verdict.deployment, decision.verdict.policy, decision.verdict.state) == (WEB, p.ref, State.PENDING)
    assert decision.intent == with_digest(plan_deployment(d, p, SETTINGS).intent)
    assert decision.budget_seconds == 65
    assert decision.starts_rollout is True
    assert decision.replaced == ()
    assert decision.event == DeploymentEvent(
        "Injected", "injected the preStop hold, termination budget 65s, into", policy=p.ref
    )


def test_a_changed_policy_updates_the_intent_it_applied_before() -> None:
    p = policy(spec=IMMEDIATE)
    before = applied(deployment(), policy(spec={**IMMEDIATE, "hold": {"quietPeriod": "5s"}}))
    decision = run(before, [p])
    assert decision.action is Action.APPLY
    assert decision.event == DeploymentEvent("Updated", "updated lameduck's fields on", policy=p.ref)
    assert decision.event.warning is False


def test_a_compliant_deployment_with_its_digest_is_left_as_it_is() -> None:
    p = policy(spec=IMMEDIATE)
    decision = run(applied(deployment(), p), [p], in_flight=all_slots_taken)
    assert decision.action is Action.NONE
    assert decision.verdict.state is State.COMPLIANT
    assert decision.intent is not None
    assert decision.budget_seconds == 65


def test_a_compliant_deployment_with_a_stale_digest_is_marked_at_once_without_a_rollout() -> None:
    p = policy(spec={**IMMEDIATE, "maxConcurrentRollouts": 1})
    decision = run(applied(deployment(), p, digest=False), [p], in_flight=all_slots_taken)
    assert decision.action is Action.APPLY, "marking the digest starts no rollout, so it needs no rollout slot"
    assert decision.starts_rollout is False
    assert decision.verdict.state is State.COMPLIANT


def test_a_rollout_waits_its_turn_when_the_policys_rollouts_are_all_in_progress() -> None:
    p = policy(spec={**IMMEDIATE, "maxConcurrentRollouts": 1})
    decision = run(settled(deployment()), [p], in_flight=all_slots_taken)
    assert decision.action is Action.NONE
    assert decision.deployment == WEB
    assert (decision.verdict.deployment, decision.verdict.policy) == (WEB, p.ref)
    assert (decision.verdict.state, decision.verdict.reason) == (State.PENDING, Reason.WAITING_TURN)
    assert decision.verdict.message == "waits its turn: 1 of at most 1 rollouts in progress"
    assert decision.verdict.missing[0] == "the lameduck sidecar is missing"


def test_a_deployment_already_rolling_out_does_not_wait_for_a_slot() -> None:
    p = policy(spec={**IMMEDIATE, "maxConcurrentRollouts": 1})
    d = deployment()
    d["metadata"]["generation"] = 2
    d["status"] = {"observedGeneration": 1}
    assert run(d, [p], in_flight=all_slots_taken).action is Action.APPLY


def test_on_next_rollout_waits_and_says_what_is_missing_or_that_it_is_outdated() -> None:
    p = policy()
    missing = run(deployment(), [p])
    assert missing.action is Action.NONE
    assert missing.deployment == WEB
    assert missing.verdict.deployment == WEB
    assert missing.verdict.policy == p.ref
    assert (missing.verdict.state, missing.verdict.reason) == (State.PENDING, Reason.PENDING_NEXT_ROLLOUT)
    assert missing.verdict.message.startswith("injected at the next rollout: the lameduck sidecar is missing; ")
    outdated = run(applied(deployment(), p, digest=False), [p])
    assert outdated.verdict.reason is Reason.PENDING_NEXT_ROLLOUT
    assert outdated.verdict.message == "injected at the next rollout: outdated"


def test_a_readiness_gate_policy_is_applied_like_any_other_field() -> None:
    p = policy(spec={**IMMEDIATE, "readinessGate": {"enabled": True}})
    decision = run(deployment(), [p])
    assert decision.action is Action.APPLY
    assert decision.intent is not None
    pod = decision.intent["spec"]["template"]["spec"]
    assert pod["readinessGates"] == [{"conditionType": "lameduck.dev/endpoints-ready"}]
    assert decision.intent["spec"]["minReadySeconds"] == 2, "propagationDelay, with the gate on"
    assert decision.event is not None
    assert decision.event.reason == "Injected"
    at_admission = decide(deployment(), [p], SETTINGS, None, no_rollouts, moment=Moment.ADMISSION)
    assert at_admission.action is Action.APPLY
    assert at_admission.intent == decision.intent


def test_a_readiness_gate_policy_under_on_next_rollout_waits_for_the_rollout() -> None:
    p = policy(spec={"readinessGate": {"enabled": True}})
    decision = run(deployment(), [p])
    assert decision.action is Action.NONE
    assert (decision.verdict.state, decision.verdict.reason) == (State.PENDING, Reason.PENDING_NEXT_ROLLOUT)
    assert "readinessGates" in decision.verdict.message


def test_a_conflict_is_a_warning_event_naming_the_policy() -> None:
    p = policy(spec=IMMEDIATE)
    decision = run(app_prestop(deployment(), FOREIGN_EXEC), [p])
    assert decision.action is Action.NONE
    assert decision.event == DeploymentEvent(
        "Conflict", 'GracefulPolicy shop/p: container "app" already has a preStop hook (exec)', warning=True
    )


# --- decide: drift ----------------------------------------------------------------------------------


def drifted(p: Policy, argocd: str | None) -> dict[str, Any]:
    """lameduck applied p, then someone removed the app's hold and set the grace period back to 30s."""
    d = app_prestop(applied(deployment(), p), None)
    d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 30
    if argocd:
        grace: dict[str, Any] = {"f:spec": {"f:template": {"f:spec": {"f:terminationGracePeriodSeconds": {}}}}}
        d = managed(
            d,
            *[(e["manager"], e["time"], e["fieldsV1"]) for e in d["metadata"]["managedFields"]],
            ("argocd", argocd, grace),
        )
    return d


DRIFT_WHAT = 'container "app" lacks the lameduck preStop hold; terminationGracePeriodSeconds is 30, the policy needs 65'


@pytest.mark.parametrize(
    ("argocd", "recent_writers", "who"),
    [
        pytest.param(T2, ("kubectl-edit", "helm"), "kubectl-edit, helm", id="the writers seen since the last look"),
        pytest.param(T2, (), "argocd", id="else the manager that wrote after lameduck"),
        pytest.param(T0, (), "a client that left no managedFields entry", id="else a client that left no trace"),
        pytest.param(None, (), "a client that left no managedFields entry", id="or no entry at all"),
    ],
)
def test_drift_is_restored_with_a_warning_that_says_who_changed_what(
    argocd: str | None, recent_writers: tuple[str, ...], who: str
) -> None:
    p = policy(spec=IMMEDIATE)
    decision = run(drifted(p, argocd), [p], recent_writers=recent_writers)
    assert decision.action is Action.APPLY
    assert decision.starts_rollout is True
    assert decision.event == DeploymentEvent(
        "DriftRestored", f"{who} changed lameduck's fields ({DRIFT_WHAT}); restored", warning=True
    )


# --- decide: TakeOver -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("handlers", "replaced"),
    [
        pytest.param({"app": FOREIGN_EXEC}, ("app",), id="a foreign exec hook goes"),
        pytest.param({"app": FOREIGN_HTTP}, ("app",), id="a foreign httpGet hook goes"),
        pytest.param({"app": FOREIGN_EXEC, "worker": None}, ("app",), id="a container without a hook is not named"),
        pytest.param({"app": OLD_HOLD, "worker": FOREIGN_EXEC}, ("worker",), id="lameduck's own older hold stays"),
        pytest.param({"app": FOREIGN_HTTP, "worker": FOREIGN_EXEC}, ("app", "worker"), id="each foreign hook goes"),
    ],
)
def test_take_over_names_the_app_containers_whose_foreign_prestop_must_go(
    handlers: dict[str, dict[str, Any] | None], replaced: tuple[str, ...]
) -> None:
    d = deployment(containers=[container("app", 8080), container("worker")])
    for name, handler in handlers.items():
        d = app_prestop(d, handler, name)
    decision = run(d, [policy(spec={**IMMEDIATE, "onConflict": "TakeOver"})])
    assert decision.action is Action.APPLY
    assert decision.replaced == tuple(prestop_path(name) for name in replaced)


def test_another_managers_prestop_equal_to_lameducks_is_shared_not_removed_under_either_strategy() -> None:
    sleep = {"hold": {"method": "Sleep"}}
    d = app_prestop(deployment(), {"sleep": {"seconds": 30}})
    for strategy in ("Report", "TakeOver"):
        decision = run(d, [policy(spec={**IMMEDIATE, **sleep, "onConflict": strategy})])
        assert decision.action is Action.APPLY
        assert decision.replaced == ()
        assert decision.verdict.state is State.PENDING


def test_take_over_replaces_a_foreign_prestop_of_an_unknown_handler_kind() -> None:
    d = app_prestop(deployment(), {"grpc": {"port": 1}})
    decision = run(d, [policy(spec={**IMMEDIATE, "onConflict": "TakeOver"})])
    assert decision.replaced == (prestop_path("app"),)
    assert decision.plan is not None
    assert decision.plan.taken_over == ('container "app" already has a preStop hook (unknown)',)


# --- decide: who set what is in the way -------------------------------------------------------------

APP_PRESTOP_FIELDS = fields_tree(
    {"spec": {"template": {"spec": {"containers": [{"name": "app", "lifecycle": {"preStop": FOREIGN_EXEC}}]}}}}
)


def test_a_conflict_names_every_manager_that_set_the_value() -> None:
    d = app_prestop(deployment(), FOREIGN_EXEC)
    d = managed(d, ("kubectl", T0, owned(d)), ("helm", T0, APP_PRESTOP_FIELDS))
    verdict = run(d, [policy(spec=IMMEDIATE)]).verdict
    assert verdict.message == 'container "app" already has a preStop hook (exec), set by helm, kubectl'


def test_conflicts_nobody_owns_stay_as_they_were_beside_named_ones() -> None:
    d = app_prestop(deployment(containers=[container("app", 9901)]), FOREIGN_EXEC)
    d = managed(d, ("kubectl", T0, owned(d)), ("helm", T0, APP_PRESTOP_FIELDS))
    verdict = run(d, [policy(spec=IMMEDIATE)]).verdict
    assert verdict.message.split("; ") == [
        'container "app" already uses port 9901, the sidecar\'s port',
        'container "app" already has a preStop hook (exec), set by helm, kubectl',
    ]


@pytest.mark.parametrize(
    ("spec", "field", "value", "conflict"),
    [
        pytest.param(
            {"readinessGate": {"enabled": True}},
            "readinessGates",
            [{"conditionType": "example.com/ready"}],
            "readinessGates is already set by another manager (an atomic list)",
            id="readinessGates",
        ),
        pytest.param(
            {"minReadySeconds": 10},
            "minReadySeconds",
            5,
            "minReadySeconds is 5, below the required 10",
            id="minReadySeconds",
        ),
    ],
)
def test_a_conflict_on_a_deployment_field_names_who_set_it(
    spec: dict[str, Any], field: str, value: Any, conflict: str
) -> None:
    d = deployment()
    fields: dict[str, Any]
    if field == "readinessGates":
        d["spec"]["template"]["spec"][field] = value
        fields = {"f:spec": {"f:template": {"f:spec": {f"f:{field}": {}}}}}
    else:
        d["spec"][field] = value
        fields = {"f:spec": {f"f:{field}": {}}}
    d = managed(d, ("kubectl", T0, owned(d)), ("helm", T0, fields))
    verdict = run(d, [policy(spec={"mode": "Audit", **spec})]).verdict
    assert verdict.state is State.CONFLICT
    assert verdict.message == f"{conflict}, set by helm, kubectl"


class CountingMetadata(dict[str, Any]):
    """A Deployment's metadata that counts how often its managedFields are read."""

    reads = 0

    def __getitem__(self, key: str) -> Any:
        if key == "managedFields":
            CountingMetadata.reads += 1
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key == "managedFields":
            CountingMetadata.reads += 1
        return super().get(key, default)


def test_a_decision_reads_managed_fields_once() -> None:
    """Whether lameduck manages it, the foreign view, who owns each field and who wrote last
    all come from one reading (logic/ownership.Ownership), not one per question."""
    p = policy(spec=IMMEDIATE)
    d = drifted(p, T2)
    d["metadata"] = CountingMetadata(d["metadata"])
    CountingMetadata.reads = 0
    decision = run(d, [p])
    assert decision.event is not None
    assert decision.event.reason == "DriftRestored", "the path that asks all four questions"
    assert CountingMetadata.reads == 1


# --- after a write: the verdict without deciding again ------------------------------------------


def test_an_apply_stored_as_written_is_compliant_without_deciding_again() -> None:
    p = policy(spec=IMMEDIATE)
    decision = run(deployment(), [p])
    assert decision.action is Action.APPLY
    stored = applied(deployment(), p)
    written = after_write(decision, stored)
    assert written is not None
    assert (written.action, written.verdict.state, written.event) == (Action.NONE, State.COMPLIANT, None)
    assert written.verdict == run(stored, [p]).verdict, "what deciding again would say"
    assert holds_through_status(written)


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param(lambda p: deployment(), id="the write did not land"),
        pytest.param(lambda p: applied(deployment(), p, digest=False), id="without the intent's digest"),
        pytest.param(lambda p: app_prestop(applied(deployment(), p), FOREIGN_EXEC), id="changed by another writer"),
    ],
)
def test_a_stored_deployment_that_does_not_carry_the_write_is_decided_again(stored: Any) -> None:
    p = policy(spec=IMMEDIATE)
    assert after_write(run(deployment(), [p]), stored(p)) is None


def test_a_reverts_decision_stands_as_it_was_taken() -> None:
    d = deployment(annotations={"lameduck.dev/policy": "GracefulPolicy/shop/gone"})
    decision = run(d, [])
    assert after_write(decision, deployment()) is decision


@pytest.mark.parametrize(
    ("decision", "holds"),
    [
        pytest.param(lambda p: run(applied(deployment(), p), [p]), True, id="compliant"),
        pytest.param(lambda p: run(app_prestop(deployment(), FOREIGN_EXEC), [p]), True, id="a conflict"),
        pytest.param(lambda p: run(deployment(), [p]), False, id="an apply: it reads whether a rollout runs"),
        pytest.param(
            lambda p: run(deployment(), [p], in_flight=all_slots_taken), False, id="waiting for a rollout slot"
        ),
    ],
)
def test_which_decisions_hold_while_only_the_status_changes(decision: Any, holds: bool) -> None:
    assert holds_through_status(decision(policy(spec=IMMEDIATE))) is holds


def _status_update(d: dict[str, Any]) -> None:
    d["status"] = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1}
    d["metadata"]["resourceVersion"] = "99"
    d["metadata"]["managedFields"].append(
        {"manager": "kube-controller-manager", "operation": "Update", "time": T2, "subresource": "status"}
    )


@pytest.mark.parametrize(
    ("change", "same"),
    [
        pytest.param(_status_update, True, id="the controller's status update"),
        pytest.param(lambda d: d["metadata"].update(generation=3), False, id="a new spec"),
        pytest.param(lambda d: d["metadata"]["labels"].update(tier="db"), False, id="a label"),
        pytest.param(
            lambda d: d["metadata"]["annotations"].update({"lameduck.dev/skip": "true"}), False, id="opting out"
        ),
        pytest.param(lambda d: d["metadata"].update(uid="another"), False, id="another object of that name"),
        pytest.param(lambda d: d["metadata"]["managedFields"][0].update(time=T2), False, id="another writer"),
    ],
)
def test_what_a_decision_reads_besides_the_status(change: Any, same: bool) -> None:
    before = applied(deployment(labels={"tier": "web"}), policy(spec=IMMEDIATE))
    before["metadata"] |= {"uid": "u-1", "generation": 2}
    after = copy.deepcopy(before)
    change(after)
    assert (JudgedPart.of(after) == JudgedPart.of(before)) is same
