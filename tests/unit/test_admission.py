"""The admission webhook's answers: a JSON patch for a rollout that needs the intent, nothing otherwise."""

from __future__ import annotations

import base64
import copy
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

import jsonpatch
import pytest

from lameduck_operator.cli import Inputs, decide_offline, rendered
from lameduck_operator.logic.admission import (
    Admitted,
    Invalid,
    Refusal,
    ReviewInvalid,
    parse,
    refusal_answer,
    review,
)
from lameduck_operator.logic.compliance import Reason, State
from lameduck_operator.logic.decision import Action, Decision, Moment, decide
from lameduck_operator.model import Policy
from lameduck_operator.names import ADMITTED_ANNOTATION
from lameduck_operator.settings import Settings
from tests.unit.builders import container, deployment, policy

UID = "705ab4f5-6393-11e8-b7cc-42010a800002"
DEPLOYMENT_KIND = {"group": "apps", "version": "v1", "kind": "Deployment"}
FOREIGN_EXEC = {"exec": {"command": ["sleep", "5"]}}
ENFORCE = policy()
SLEEP = policy(spec={"hold": {"method": "Sleep"}})


def judge_for(policies: list[Policy]) -> Callable[[Mapping[str, Any]], Decision]:
    def judge(obj: Mapping[str, Any]) -> Decision:
        return decide(obj, policies, Settings(), None, lambda _: 0, moment=Moment.ADMISSION)

    return judge


def never_judged(obj: Mapping[str, Any]) -> Decision:
    raise AssertionError(f"judge called for {obj!r}")


def request(
    operation: str,
    obj: Any,
    old: Any = None,
    kind: Mapping[str, str] = DEPLOYMENT_KIND,
    namespace: str = "shop",
) -> dict[str, Any]:
    req: dict[str, Any] = {
        "uid": UID,
        "kind": dict(kind),
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "alice"},
        "object": obj,
        "oldObject": old,
        "dryRun": False,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}


def answer_of(body: dict[str, Any], policies: list[Policy]) -> Admitted:
    return review(copy.deepcopy(body), judge_for(policies))


def patch_of(admitted: Admitted) -> list[dict[str, Any]]:
    response = admitted.response["response"]
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    assert ops == list(admitted.patch), "the encoded patch is the one reported"
    return ops


def applied(admitted: Admitted, obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server stores: the writer's object with the webhook's patch."""
    result: dict[str, Any] = jsonpatch.apply_patch(obj, patch_of(admitted))
    return result


def rendered_by_cli(obj: dict[str, Any], policies: list[Policy]) -> dict[str, Any]:
    """What `lameduck render` prints for the manifest."""
    return rendered(obj, decide_offline(obj, Inputs(policies=policies, deployments=[obj]), Settings()))


def pod_of(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def judged(obj: dict[str, Any], policies: list[Policy]) -> Decision:
    """The reconciler's decision once the object is stored."""
    return decide(obj, policies, Settings(), None, lambda _: 0)


def assert_unchanged(admitted: Admitted) -> None:
    assert admitted.response == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": UID, "allowed": True},
    }
    assert admitted.patch == ()


# --- writes that start a rollout get the intent ------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "p"),
    [
        pytest.param(deployment(), ENFORCE, id="Enforce and OnNextRollout, native sidecar"),
        pytest.param(deployment(), policy(spec={"apply": "Immediate"}), id="Immediate: the write is the rollout"),
        pytest.param(deployment(), SLEEP, id="Sleep method"),
        pytest.param(
            deployment(
                annotations={"team": "shop"},
                containers=[container("app", 8080), container("log-shipper")],
                initContainers=[container("migrate")],
            ),
            policy(spec={"containers": ["app"], "minReadySeconds": 5}),
            id="named container, the writer's annotations and init container",
        ),
        pytest.param(
            deployment(containers=[container("app", 8080, lifecycle={"preStop": FOREIGN_EXEC})]),
            policy(spec={"onConflict": "TakeOver"}),
            id="TakeOver of a foreign preStop",
        ),
        pytest.param(deployment(), policy(spec={"readinessGate": {"enabled": True}}), id="the readiness gate"),
        pytest.param(
            deployment(readinessGates=[{"conditionType": "example.com/warm"}]),
            policy(spec={"readinessGate": {"enabled": True}, "onConflict": "TakeOver"}),
            id="the readiness gate beside another, with TakeOver",
        ),
    ],
)
def test_a_create_gets_the_intent_as_lameduck_render_shows_it_and_is_then_compliant(
    obj: dict[str, Any], p: Policy
) -> None:
    admitted = answer_of(request("CREATE", obj), [p])
    response = admitted.response["response"]
    assert (response["uid"], response["allowed"], response["patchType"]) == (UID, True, "JSONPatch")
    assert "warnings" not in response
    assert admitted.decision is not None
    assert admitted.decision.action is Action.APPLY
    stored = applied(admitted, obj)
    assert stored == rendered_by_cli(obj, [p])
    assert ADMITTED_ANNOTATION in stored["metadata"]["annotations"]
    after = judged(stored, [p])
    assert (after.verdict.state, after.action) == (State.COMPLIANT, Action.NONE), after.verdict.message


def test_a_create_with_generate_name_is_patched_without_touching_name_or_namespace() -> None:
    obj = deployment()
    del obj["metadata"]["name"]
    del obj["metadata"]["namespace"]
    obj["metadata"]["generateName"] = "web-"
    admitted = answer_of(request("CREATE", obj), [ENFORCE])
    ops = patch_of(admitted)
    assert ops
    touched = [op["path"] for op in ops] + [op["from"] for op in ops if "from" in op]
    assert not [path for path in touched if path.startswith(("/metadata/name", "/metadata/namespace"))]
    stored = applied(admitted, obj)
    assert set(stored["metadata"]) == {"generateName", "labels", "annotations"}
    assert stored["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["httpGet"]["path"] == (
        "/hold/app"
    )


def test_a_deployment_created_with_generate_name_is_compliant_once_named() -> None:
    obj = deployment()
    del obj["metadata"]["name"]
    obj["metadata"]["generateName"] = "web-"
    stored = applied(answer_of(request("CREATE", obj), [ENFORCE]), obj)
    stored["metadata"]["name"] = "web-7xk2p"  # the API server names it after admission
    after = judged(stored, [ENFORCE])
    assert (after.verdict.state, after.verdict.reason) == (State.COMPLIANT, Reason.IN_PLACE)


def test_an_update_with_a_changed_template_gets_the_intent() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "example.com/app:2"
    admitted = answer_of(request("UPDATE", new, old), [ENFORCE])
    assert patch_of(admitted)
    stored = applied(admitted, new)
    assert stored == rendered_by_cli(new, [ENFORCE])
    assert judged(stored, [ENFORCE]).verdict.state is State.COMPLIANT


def test_an_update_with_the_same_template_starts_no_rollout_and_gets_nothing() -> None:
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 5
    new["metadata"]["labels"] = {"scaled": "yes"}
    admitted = review(request("UPDATE", new, old), never_judged)
    assert_unchanged(admitted)
    assert (admitted.decision, admitted.skipped) == (None, "template unchanged")


def test_a_deployment_already_carrying_the_intent_gets_nothing_more() -> None:
    first = deployment()
    stored = applied(answer_of(request("CREATE", first), [ENFORCE]), first)
    bumped = copy.deepcopy(stored)
    bumped["spec"]["template"]["spec"]["containers"][0]["image"] = "example.com/app:2"
    admitted = answer_of(request("UPDATE", bumped, stored), [ENFORCE])
    assert_unchanged(admitted)
    assert admitted.decision is not None
    assert (admitted.decision.verdict.state, admitted.decision.action) == (State.COMPLIANT, Action.NONE)


def test_a_template_written_without_lameducks_fields_gets_them_again() -> None:
    first = deployment()
    stored = applied(answer_of(request("CREATE", first), [ENFORCE]), first)
    rewritten = copy.deepcopy(stored)
    rewritten["spec"]["template"] = copy.deepcopy(first["spec"]["template"])  # the record stays in metadata
    admitted = answer_of(request("UPDATE", rewritten, stored), [ENFORCE])
    assert applied(admitted, rewritten) == stored


def test_an_update_under_a_changed_hold_method_replaces_the_old_intent_and_leaves_no_sidecar() -> None:
    first = deployment()
    stored = applied(answer_of(request("CREATE", first), [ENFORCE]), first)
    bumped = copy.deepcopy(stored)
    bumped["spec"]["template"]["metadata"]["labels"]["rev"] = "2"
    admitted = answer_of(request("UPDATE", bumped, stored), [SLEEP])
    now = applied(admitted, bumped)
    pod = now["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert pod["containers"][0]["lifecycle"]["preStop"] == {"sleep": {"seconds": 30}}
    unlabelled = copy.deepcopy(first)
    unlabelled["spec"]["template"]["metadata"]["labels"]["rev"] = "2"
    assert now == rendered_by_cli(unlabelled, [SLEEP]), "as if the sidecar had never been admitted"


def raised_grace(d: dict[str, Any]) -> None:
    d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 90


def own_prestop(d: dict[str, Any]) -> None:
    d["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"] = FOREIGN_EXEC


@pytest.mark.parametrize(
    ("edit", "state"),
    [
        pytest.param(raised_grace, State.COMPLIANT, id="a grace period raised above the budget is kept"),
        pytest.param(own_prestop, State.CONFLICT, id="the writer's own preStop is a conflict"),
    ],
)
def test_a_value_the_writer_sets_later_at_a_recorded_path_is_the_writers(
    edit: Callable[[dict[str, Any]], None], state: State
) -> None:
    first = deployment()
    stored = applied(answer_of(request("CREATE", first), [ENFORCE]), first)
    changed = copy.deepcopy(stored)
    edit(changed)
    admitted = answer_of(request("UPDATE", changed, stored), [ENFORCE])
    assert admitted.decision is not None
    assert admitted.decision.verdict.state is state
    after = applied(admitted, changed)
    assert pod_of(after)["terminationGracePeriodSeconds"] == pod_of(changed)["terminationGracePeriodSeconds"]
    assert pod_of(after)["containers"][0]["lifecycle"] == pod_of(changed)["containers"][0]["lifecycle"]
    assert judged(after, [ENFORCE]).verdict.state is state, "and it stays so"


# --- writes that pass unchanged ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "policies", "state", "reason"),
    [
        pytest.param(
            deployment(annotations={"lameduck.dev/skip": "true"}),
            [ENFORCE],
            State.SKIPPED,
            Reason.OPTED_OUT,
            id="opted out",
        ),
        pytest.param(deployment(), [policy(namespace="other")], State.UNMANAGED, Reason.NO_POLICY, id="unselected"),
        pytest.param(
            deployment(labels={"tier": "db"}),
            [policy(spec={"selector": {"matchLabels": {"tier": "web"}}})],
            State.UNMANAGED,
            Reason.NO_POLICY,
            id="labels the policy does not select",
        ),
        pytest.param(
            deployment(), [policy(spec={"mode": "Audit"})], State.PENDING, Reason.OUTDATED, id="Audit reports only"
        ),
        pytest.param(
            deployment(annotations={"lameduck.dev/policy": "GracefulPolicy/shop/gone"}),
            [],
            State.UNMANAGED,
            Reason.NO_POLICY,
            id="marked by a policy that is gone: reverting is the reconciler's",
        ),
    ],
)
def test_a_write_lameduck_has_nothing_to_add_to_passes_unchanged(
    obj: dict[str, Any], policies: list[Policy], state: State, reason: Reason
) -> None:
    admitted = answer_of(request("CREATE", obj), policies)
    assert_unchanged(admitted)
    assert admitted.decision is not None
    assert admitted.decision.action is Action.NONE
    assert (admitted.decision.verdict.state, admitted.decision.verdict.reason) == (state, reason)


@pytest.mark.parametrize(
    ("obj", "p", "why"),
    [
        pytest.param(
            deployment(containers=[container("app", 8080, lifecycle={"preStop": FOREIGN_EXEC})]),
            ENFORCE,
            'container "app" already has a preStop hook (exec)',
            id="a foreign exec preStop under onConflict Report",
        ),
        pytest.param(
            deployment(readinessGates=[{"conditionType": "example.com/warm"}]),
            policy(spec={"readinessGate": {"enabled": True}}),
            "readinessGates is already set by another manager (an atomic list)",
            id="readiness gates of another manager under onConflict Report",
        ),
    ],
)
def test_a_conflicting_deployment_is_admitted_unchanged_with_a_warning_naming_the_policy(
    obj: dict[str, Any], p: Policy, why: str
) -> None:
    admitted = answer_of(request("CREATE", obj), [p])
    response = admitted.response["response"]
    assert (response["uid"], response["allowed"]) == (UID, True)
    assert "patch" not in response
    assert "patchType" not in response
    [warning] = response["warnings"]
    assert warning.startswith(f"lameduck: GracefulPolicy shop/p not applied: {why}")
    assert admitted.decision is not None
    assert admitted.decision.verdict.state is State.CONFLICT


def test_a_warning_is_cut_to_what_the_api_server_accepts() -> None:
    long_name = "c" * 63
    many = [container(f"{long_name[:-2]}{i:02d}", lifecycle={"preStop": FOREIGN_EXEC}) for i in range(30)]
    [warning] = answer_of(request("CREATE", deployment(containers=many)), [ENFORCE]).response["response"]["warnings"]
    assert len(warning) == 1000


def deployment_without_spec() -> dict[str, Any]:
    d = deployment()
    del d["spec"]
    return d


@pytest.mark.parametrize(
    ("operation", "obj", "kind", "skipped"),
    [
        pytest.param("DELETE", None, DEPLOYMENT_KIND, "operation", id="DELETE"),
        pytest.param("CONNECT", deployment(), DEPLOYMENT_KIND, "operation", id="CONNECT"),
        pytest.param(None, deployment(), DEPLOYMENT_KIND, "operation", id="no operation"),
        pytest.param(
            "CREATE",
            deployment(),
            {"group": "apps", "version": "v1", "kind": "StatefulSet"},
            "not a Deployment",
            id="another kind",
        ),
        pytest.param("CREATE", deployment(), None, "not a Deployment", id="no kind"),
        pytest.param("CREATE", deployment_without_spec(), DEPLOYMENT_KIND, "not a Deployment", id="no spec"),
        pytest.param("UPDATE", None, DEPLOYMENT_KIND, "not a Deployment", id="no object"),
        pytest.param("CREATE", ["not", "an", "object"], DEPLOYMENT_KIND, "not a Deployment", id="object not a map"),
    ],
)
def test_other_requests_are_allowed_unchanged_without_a_decision(
    operation: str | None, obj: Any, kind: Mapping[str, str] | None, skipped: str
) -> None:
    body = request("CREATE", obj)
    body["request"]["operation"] = operation
    body["request"]["kind"] = kind
    admitted = review(body, never_judged)
    assert_unchanged(admitted)
    assert (admitted.decision, admitted.skipped) == (None, skipped)


# --- reviews lameduck cannot answer -----------------------------------------------------------------


def without(key: str) -> dict[str, Any]:
    body = request("CREATE", deployment())
    del body[key]
    return body


def with_request(**changes: Any) -> dict[str, Any]:
    body = request("CREATE", deployment())
    body["request"].update(changes)
    return body


def without_uid() -> dict[str, Any]:
    body = request("CREATE", deployment())
    del body["request"]["uid"]
    return body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param("AdmissionReview", Invalid.NOT_A_REVIEW, id="not a map"),
        pytest.param(None, Invalid.NOT_A_REVIEW, id="no body"),
        pytest.param([request("CREATE", deployment())], Invalid.NOT_A_REVIEW, id="a list"),
        pytest.param({**request("CREATE", deployment()), "kind": "Status"}, Invalid.NOT_A_REVIEW, id="wrong kind"),
        pytest.param(without("kind"), Invalid.NOT_A_REVIEW, id="no kind"),
        pytest.param(
            {**request("CREATE", deployment()), "apiVersion": "admission.k8s.io/v1beta1"},
            Invalid.UNSUPPORTED_VERSION,
            id="wrong apiVersion",
        ),
        pytest.param(without("request"), Invalid.NO_UID, id="no request"),
        pytest.param({**request("CREATE", deployment()), "request": "x"}, Invalid.NO_UID, id="request not a map"),
        pytest.param(without_uid(), Invalid.NO_UID, id="no uid"),
        pytest.param(with_request(uid=""), Invalid.NO_UID, id="empty uid"),
        pytest.param(with_request(uid=7), Invalid.NO_UID, id="uid not a string"),
    ],
)
def test_a_review_without_a_request_uid_to_answer_is_invalid(body: Any, reason: Invalid) -> None:
    with pytest.raises(ReviewInvalid) as raised:
        review(body, never_judged)
    assert raised.value.reason is reason


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"{not json", id="not JSON"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\x00", id="not text"),
        # Deeper than the parser recurses: a RecursionError, still a bad body and no bug.
        pytest.param(b"[" * 2 * sys.getrecursionlimit(), id="nested past the recursion limit"),
    ],
)
def test_a_body_that_does_not_parse_is_invalid_for_being_no_json(raw: bytes) -> None:
    with pytest.raises(ReviewInvalid) as raised:
        parse(raw)
    assert raised.value.reason is Invalid.NOT_JSON


def test_a_valid_body_parses_to_its_json() -> None:
    assert parse(b'{"kind": "AdmissionReview"}') == {"kind": "AdmissionReview"}


@pytest.mark.parametrize(
    ("refusal", "code"),
    [
        (Refusal.BAD_REQUEST, 400),
        (Refusal.TIMEOUT, 408),
        (Refusal.REQUEST_ENTITY_TOO_LARGE, 413),
        (Refusal.INTERNAL_ERROR, 500),
    ],
)
def test_a_refusal_is_a_status_with_its_kubernetes_reason_and_http_code(refusal: Refusal, code: int) -> None:
    assert refusal_answer(refusal, "why") == {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": "why",
        "reason": refusal.value,
        "code": code,
    }


def test_the_answer_echoes_the_request_uid_and_review_version() -> None:
    body = request("CREATE", deployment())
    body["request"]["uid"] = "another-uid"
    admitted = answer_of(body, [ENFORCE])
    assert admitted.response["apiVersion"] == "admission.k8s.io/v1"
    assert admitted.response["kind"] == "AdmissionReview"
    assert admitted.response["response"]["uid"] == "another-uid"


def test_the_judge_sees_the_object_with_the_request_namespace_and_the_request_is_left_as_it_was() -> None:
    obj = deployment()
    del obj["metadata"]["namespace"]
    body = request("CREATE", obj, namespace="shop")
    given = copy.deepcopy(body)
    seen: list[Mapping[str, Any]] = []

    def judge(written: Mapping[str, Any]) -> Decision:
        seen.append(written)
        return judge_for([ENFORCE])(written)

    admitted = review(body, judge)
    assert [w["metadata"]["namespace"] for w in seen] == ["shop"]
    assert body == given
    stored = applied(admitted, obj)
    assert "namespace" not in stored["metadata"]
    expected = rendered_by_cli(deployment(), [ENFORCE])
    del expected["metadata"]["namespace"]
    assert stored == expected
