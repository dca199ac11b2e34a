"""lameduck's write never takes a Deployment's annotations over the API server's limit: counted
as the API server counts them, at the boundary (exactly at the limit, one byte over) for each way
the write goes, and as the webhook, the reconciler, the policy's status and `lameduck check`
report it. The bound that spares most decisions the exact count never undercounts (a property)."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lameduck_operator.cli import EXIT_NOT_COMPLIANT, EXIT_OK, main
from lameduck_operator.logic import decision as decision_module
from lameduck_operator.logic.admission import review
from lameduck_operator.logic.admitted import injected
from lameduck_operator.logic.annotation_room import annotations_of, annotations_size, patch_size_bound
from lameduck_operator.logic.compliance import Reason, State
from lameduck_operator.logic.decision import Action, Decision, decide
from lameduck_operator.logic.status import summarize
from lameduck_operator.model import Policy
from lameduck_operator.names import ADMITTED_ANNOTATION, ANNOTATIONS_MAX_BYTES, GROUP, SIDECAR_NAME
from lameduck_operator.settings import Settings
from tests.unit.builders import container, deployment, policy
from tests.unit.test_admission import applied, judge_for, patch_of, request
from tests.unit.test_fleet import Harness

FILLER = "example.com/filler"
IMMEDIATE = policy(spec={"apply": "Immediate"})
ON_NEXT_ROLLOUT = policy()
# The policy after a change of its hold: the Deployments it injected are outdated.
IMMEDIATE_LONGER = policy(spec={"apply": "Immediate", "hold": {"maxHold": "45s"}})
NO_ROOM_WARNING = "lameduck: GracefulPolicy shop/p not applied: no room for lameduck's annotations ("
# Exactly at the limit lameduck writes; one byte over, it does not.
BOUNDARY = [pytest.param(0, True, id="exactly-at-the-limit"), pytest.param(1, False, id="one-byte-over")]


def size(annotations: Mapping[str, str]) -> int:
    """As apimachinery's ValidateAnnotationsSize: len() of Go strings, UTF-8 bytes."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())


def with_filler(obj: Mapping[str, Any], filler_bytes: int) -> dict[str, Any]:
    """obj with one more annotation, of filler_bytes bytes, key and value together."""
    out = copy.deepcopy(dict(obj))
    out["metadata"].setdefault("annotations", {})[FILLER] = "x" * (filler_bytes - len(FILLER))
    return out


def filled_to(obj: Mapping[str, Any], lameducks_then: int, over: int) -> dict[str, Any]:
    """obj filled so that, once lameduck's write adds lameducks_then bytes of annotations to the
    annotations it has, they are `over` bytes over the limit."""
    own = size(annotations_of(obj))
    return with_filler(obj, ANNOTATIONS_MAX_BYTES - own - lameducks_then + over)


def lameducks(obj: Mapping[str, Any]) -> int:
    return size({k: v for k, v in annotations_of(obj).items() if k.startswith(f"{GROUP}/")})


def reconciled(obj: Mapping[str, Any], p: Policy, in_flight: int = 0) -> Decision:
    return decide(obj, [p], Settings(), None, lambda _: in_flight)


def admitted_under(p: Policy, obj: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Deployment as stored after the webhook injected p into its create."""
    written = obj or deployment()
    return applied(review(request("CREATE", copy.deepcopy(written)), judge_for([p])), written)


def assert_no_room(decision: Decision) -> None:
    assert (decision.verdict.state, decision.verdict.reason) == (State.SKIPPED, Reason.NO_ROOM_FOR_ANNOTATIONS)
    assert decision.action is Action.NONE
    assert decision.patched is None
    assert decision.event is not None
    assert (decision.event.reason, decision.event.warning, decision.event.policy) == (
        "NoRoomForAnnotations",
        True,
        None,
    )
    assert str(ANNOTATIONS_MAX_BYTES) in decision.verdict.message


# ---- counted as the API server counts -----------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({}, 0),
        ({"a": "b"}, 2),
        ({"a": ""}, 1),
        ({"é": "€"}, 2 + 3),  # two bytes, three bytes
        ({"k": "😀"}, 1 + 4),  # one astral character, four bytes
        ({"k": "\ud800"}, 1 + 3),  # a lone surrogate: U+FFFD once Go decodes it
        ({"a": "b", "cc": "dd"}, 6),
    ],
)
def test_annotations_are_counted_in_utf8_bytes_of_keys_and_values(annotations: dict[str, str], expected: int) -> None:
    assert annotations_size(annotations) == expected


def test_the_limit_is_the_api_servers() -> None:
    assert ANNOTATIONS_MAX_BYTES == 262144  # apimachinery's TotalAnnotationSizeLimitB, 256 KiB


# ---- the webhook: a valid write is never made a refused one -------------------------------------


@pytest.mark.parametrize(("over", "injects"), BOUNDARY)
def test_the_webhook_injects_only_what_keeps_the_annotations_within_the_limit(over: int, injects: bool) -> None:
    added = lameducks(admitted_under(ON_NEXT_ROLLOUT))
    written = filled_to(deployment(), added, over)
    admitted = review(request("CREATE", copy.deepcopy(written)), judge_for([ON_NEXT_ROLLOUT]))
    assert admitted.decision is not None
    if injects:
        stored = applied(admitted, written)
        assert size(annotations_of(stored)) == ANNOTATIONS_MAX_BYTES, "as the API server counts them"
        assert admitted.decision.action is Action.APPLY
        assert "warnings" not in admitted.response["response"]
    else:
        assert patch_of(admitted) == [], "admitted as written"
        warnings = admitted.response["response"]["warnings"]
        assert len(warnings) == 1
        assert warnings[0].startswith(NO_ROOM_WARNING)
        assert_no_room(admitted.decision)


def test_the_webhook_admits_unchanged_a_write_over_the_limit_by_itself_and_says_why() -> None:
    written = with_filler(deployment(), ANNOTATIONS_MAX_BYTES + 1)
    admitted = review(request("CREATE", copy.deepcopy(written)), judge_for([ON_NEXT_ROLLOUT]))
    assert patch_of(admitted) == []
    assert admitted.response["response"]["warnings"][0].startswith(NO_ROOM_WARNING)


# ---- the reconciler: no write the API server refuses, whichever way it goes ----------------------


@pytest.mark.parametrize(("over", "writes"), BOUNDARY)
def test_a_server_side_apply_is_written_only_within_the_limit(over: int, writes: bool) -> None:
    intent = reconciled(deployment(), IMMEDIATE).intent
    assert intent is not None
    obj = filled_to(deployment(), size(intent["metadata"]["annotations"]), over)
    decision = reconciled(obj, IMMEDIATE)
    if writes:
        assert decision.action is Action.APPLY
        assert decision.patched is None, "by server-side apply"
        assert size({**annotations_of(obj), **intent["metadata"]["annotations"]}) == ANNOTATIONS_MAX_BYTES
    else:
        assert_no_room(decision)


@pytest.mark.parametrize(("over", "writes"), BOUNDARY)
def test_a_json_patch_of_admitted_fields_is_written_only_within_the_limit(over: int, writes: bool) -> None:
    stored = admitted_under(ON_NEXT_ROLLOUT)
    changed = reconciled(stored, IMMEDIATE_LONGER)
    assert changed.action is Action.APPLY
    assert changed.intent is not None
    own = size(annotations_of(stored))
    then = size(annotations_of(injected(stored, changed.intent)))
    obj = filled_to(stored, then - own, over)
    decision = reconciled(obj, IMMEDIATE_LONGER)
    if writes:
        assert decision.action is Action.APPLY
        assert decision.patched is not None, "by JSON patch"
        assert size(annotations_of(decision.patched)) == ANNOTATIONS_MAX_BYTES
    else:
        assert_no_room(decision)


@pytest.mark.parametrize(("over", "pending"), BOUNDARY)
def test_a_deployment_waiting_for_its_next_rollout_is_judged_by_the_webhooks_write_then(
    over: int, pending: bool
) -> None:
    added = lameducks(admitted_under(ON_NEXT_ROLLOUT))
    decision = reconciled(filled_to(deployment(), added, over), ON_NEXT_ROLLOUT)
    if pending:
        assert (decision.verdict.state, decision.verdict.reason) == (State.PENDING, Reason.PENDING_NEXT_ROLLOUT)
    else:
        assert_no_room(decision)


@pytest.mark.parametrize(("over", "waits"), BOUNDARY)
def test_a_deployment_that_could_never_be_written_does_not_wait_for_a_rollout_slot(over: int, waits: bool) -> None:
    intent = reconciled(deployment(), IMMEDIATE).intent
    assert intent is not None
    obj = filled_to(deployment(), size(intent["metadata"]["annotations"]), over)
    obj["spec"]["replicas"] = 0  # no rollout of its own in progress: it would start one
    decision = reconciled(obj, IMMEDIATE, in_flight=5)
    if waits:
        assert (decision.verdict.state, decision.verdict.reason) == (State.PENDING, Reason.WAITING_TURN)
    else:
        assert_no_room(decision)


def test_a_deployment_far_from_the_limit_waits_for_its_next_rollout_without_its_patch_being_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(*_: Any) -> None:
        raise AssertionError("the patched Deployment was made to measure it")

    fresh, injected_before = deployment(), admitted_under(ON_NEXT_ROLLOUT)
    monkeypatch.setattr(decision_module, "after_patch", never)
    for obj in (fresh, injected_before):
        decision = reconciled(obj, policy(spec={"hold": {"maxHold": "45s"}}))
        assert (decision.verdict.state, decision.verdict.reason) == (State.PENDING, Reason.PENDING_NEXT_ROLLOUT)


def test_a_deployment_that_carries_its_intent_at_the_limit_is_compliant() -> None:
    added = lameducks(admitted_under(ON_NEXT_ROLLOUT))
    stored = admitted_under(ON_NEXT_ROLLOUT, filled_to(deployment(), added, 0))
    assert size(annotations_of(stored)) == ANNOTATIONS_MAX_BYTES
    decision = reconciled(stored, ON_NEXT_ROLLOUT)
    assert (decision.verdict.state, decision.action) == (State.COMPLIANT, Action.NONE)


def test_a_deployment_without_room_is_counted_skipped_in_its_policys_status() -> None:
    added = lameducks(admitted_under(ON_NEXT_ROLLOUT))
    decision = reconciled(filled_to(deployment(), added, 1), ON_NEXT_ROLLOUT)
    summary = summarize(ON_NEXT_ROLLOUT.ref, [decision.verdict], [], {})
    assert (summary.matched, summary.pending, summary.skipped, summary.non_compliant) == (0, 0, 1, [])


async def test_the_reconciler_writes_nothing_and_tells_the_deployment_once() -> None:
    h = Harness()
    intent = reconciled(deployment(), IMMEDIATE).intent
    assert intent is not None
    obj = filled_to(deployment(labels={"tier": "web"}), size(intent["metadata"]["annotations"]), 1)
    h.fleet.deployment_seen(h.api.add(obj))
    h.policy(name="p", apply="Immediate", selector={"matchLabels": {"tier": "web"}})
    await h.settle()
    await h.settle()
    assert [c for c in h.api.calls if c.startswith(("apply", "patch"))] == [], "no write the API server refuses"
    assert [(name, e.reason) for name, e in h.api.events] == [("web", "NoRoomForAnnotations")]
    assert h.state("web") is State.SKIPPED
    status = h.api.statuses[IMMEDIATE.ref]
    assert (status["matched"], status["skipped"]) == (0, 1)
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Degraded"] == "AsExpected"


# ---- lameduck check ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "state", "code"),
    [
        pytest.param(0, "Pending (PendingNextRollout)", EXIT_NOT_COMPLIANT, id="exactly-at-the-limit"),
        pytest.param(1, "Skipped (NoRoomForAnnotations)", EXIT_OK, id="one-byte-over"),
    ],
)
def test_check_reports_a_deployment_without_room_as_skipped(over: int, state: str, code: int) -> None:
    added = lameducks(admitted_under(ON_NEXT_ROLLOUT))
    manifests = [
        {
            "apiVersion": "lameduck.dev/v1alpha1",
            "kind": "GracefulPolicy",
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {},
        },
        filled_to(deployment(), added, over),
    ]
    out = io.StringIO()
    given_in = io.StringIO("\n---\n".join(json.dumps(m) for m in manifests))
    assert main(["check", "-f", "-"], stdin=given_in, out=out) == code
    assert out.getvalue().startswith(f"shop/web: {state} under GracefulPolicy shop/p\n")


def test_render_leaves_a_deployment_without_room_as_it_is() -> None:
    added = lameducks(admitted_under(ON_NEXT_ROLLOUT))
    obj = filled_to(deployment(), added, 1)
    manifests = [
        {"apiVersion": "lameduck.dev/v1alpha1", "kind": "GracefulPolicy", "metadata": {"name": "p"}, "spec": {}},
        obj,
    ]
    out = io.StringIO()
    given_in = io.StringIO("\n---\n".join(json.dumps(m) for m in manifests))
    assert main(["render", "-n", "shop", "-f", "-"], stdin=given_in, out=out) == EXIT_OK
    assert ADMITTED_ANNOTATION not in out.getvalue()


# ---- the bound never undercounts ---------------------------------------------------------------

NAMES = st.text(min_size=1, max_size=6)
HOOK = st.fixed_dictionaries({"exec": st.fixed_dictionaries({"command": st.lists(NAMES, min_size=1, max_size=3)})})
POLICIES = st.builds(
    lambda method, take_over, gate, max_hold: policy(
        spec={
            "hold": {"method": method, "maxHold": max_hold},
            "onConflict": "TakeOver" if take_over else "Report",
            "readinessGate": {"enabled": gate},
        }
    ),
    st.sampled_from(["Sidecar", "Sleep"]),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["30s", "45s"]),
)


@st.composite
def deployments(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    containers = []
    for name in names:
        fields: dict[str, Any] = {}
        if draw(st.booleans()):
            fields["lifecycle"] = {"preStop": draw(HOOK)}
        containers.append(container(name, *draw(st.lists(st.integers(1, 65535), max_size=2, unique=True)), **fields))
    pod: dict[str, Any] = {}
    if draw(st.booleans()):
        pod["terminationGracePeriodSeconds"] = draw(st.integers(1, 100))
    if draw(st.booleans()):
        inits = draw(st.lists(NAMES | st.just(SIDECAR_NAME), min_size=1, max_size=2, unique=True))
        pod["initContainers"] = [container(name, *draw(st.lists(st.integers(1, 65535), max_size=1))) for name in inits]
    if draw(st.booleans()):
        pod["readinessGates"] = [{"conditionType": draw(NAMES)}]
    annotations = draw(st.dictionaries(NAMES, NAMES, max_size=3))
    obj = deployment(containers=containers, annotations=annotations, **pod)
    if draw(st.booleans()):
        obj["spec"]["minReadySeconds"] = draw(st.integers(0, 10))
    return obj


@given(deployments(), POLICIES, st.one_of(st.none(), POLICIES))
def test_the_bound_on_a_patched_deployments_annotations_is_never_below_their_size(
    obj: dict[str, Any], now: Policy, before: Policy | None
) -> None:
    if before is not None:
        # Injected at an earlier admission, under another policy: its record is reverted first.
        obj = admitted_under(before, obj)
    decision = decide(obj, [now], Settings(), None, lambda _: 0)
    if decision.intent is None:
        return
    exact = annotations_size(annotations_of(injected(obj, decision.intent)))
    assert patch_size_bound(obj, decision.intent) >= exact
