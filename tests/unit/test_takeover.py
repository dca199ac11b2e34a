"""Values lameduck's server-side apply takes over (onConflict: TakeOver), recorded in
lameduck.dev/taken-over: what each write of the take-over and of its revert sends, and the
managedFields it leaves, against Deployments stored as the API server stores them."""

from __future__ import annotations

import copy
import json
from typing import Any, cast

import jsonpatch
import pytest

from lameduck_operator.deployment_writes import DeploymentWrites
from lameduck_operator.logic.admitted import Change, value_at, with_values
from lameduck_operator.logic.decision import Action, Decision, decide, revert_intent
from lameduck_operator.logic.intent import POD_PATH, FieldPath
from lameduck_operator.logic.merge import merge
from lameduck_operator.logic.ownership import FieldOwner, Ownership, merge_trees
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.logic.takeover import adoption_patch, hand_back_patch, held, server_side_write, taken_over
from lameduck_operator.model import PolicyRef
from lameduck_operator.names import TAKEN_OVER_ANNOTATION
from lameduck_operator.ports import FleetApi
from lameduck_operator.settings import Settings
from tests.unit.builders import policy

APP = 'k:{"name":"app"}'
PRESTOP: FieldPath = (*POD_PATH, "containers", ("name", "app"), "lifecycle", "preStop")
GRACE: FieldPath = (*POD_PATH, "terminationGracePeriodSeconds")
TEAMS_HOOK = {"exec": {"command": ["/bin/sh", "-c", "sleep 5"]}}
TEAMS_START = {"exec": {"command": ["/bin/sh", "-c", "echo started"]}}
HOLD = {"httpGet": {"path": "/hold/app", "port": 9901, "scheme": "HTTP"}}
TAKE_OVER = policy("web", "shop", {"apply": "Immediate", "onConflict": "TakeOver"})
TEAMS_PRESTOP_FIELDS: dict[str, Any] = {"f:exec": {"f:command": {}}}
# team-x's server-side apply of its Deployment, as the API server records it.
TEAMS_FIELDS: dict[str, Any] = {
    "f:metadata": {"f:annotations": {"f:team": {}}, "f:labels": {"f:tier": {}}},
    "f:spec": {
        "f:replicas": {},
        "f:selector": {},
        "f:template": {
            "f:metadata": {"f:labels": {"f:tier": {}}},
            "f:spec": {
                "f:containers": {
                    APP: {
                        ".": {},
                        "f:image": {},
                        "f:lifecycle": {
                            "f:postStart": {"f:exec": {"f:command": {}}},
                            "f:preStop": TEAMS_PRESTOP_FIELDS,
                        },
                        "f:name": {},
                    }
                }
            },
        },
    },
}
STATUS_ENTRY = {
    "manager": "kube-controller-manager",
    "operation": "Update",
    "subresource": "status",
    "fieldsType": "FieldsV1",
    "fieldsV1": {"f:status": {"f:replicas": {}}},
}


def entry(manager: str, operation: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": "apps/v1",
        "time": "2026-01-01T00:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }


def without(fields: dict[str, Any], *path: str) -> dict[str, Any]:
    """A copy of a FieldsV1 tree without the node at path (its parents stay)."""
    out = copy.deepcopy(fields)
    node = out
    for step in path[:-1]:
        node = node[step]
    del node[path[-1]]
    return out


TEAMS_FIELDS_TAKEN = without(
    TEAMS_FIELDS, "f:spec", "f:template", "f:spec", "f:containers", APP, "f:lifecycle", "f:preStop"
)
WRITTEN: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "web",
        "namespace": "shop",
        "uid": "uid-web",
        "resourceVersion": "7",
        "generation": 1,
        "labels": {"tier": "web"},
        "annotations": {"team": "x", "deployment.kubernetes.io/revision": "1"},
        "managedFields": [entry("team-x", "Apply", TEAMS_FIELDS), STATUS_ENTRY],
    },
    "spec": {
        "replicas": 0,
        "selector": {"matchLabels": {"tier": "web"}},
        "template": {
            "metadata": {"labels": {"tier": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "example.com/app:1",
                        "lifecycle": {"preStop": TEAMS_HOOK, "postStart": TEAMS_START},
                        "terminationMessagePath": "/dev/termination-log",
                    }
                ],
                "terminationGracePeriodSeconds": 30,
            },
        },
    },
    "status": {"replicas": 0},
}


def no_rollouts(_: PolicyRef) -> int:
    return 0


def decided(d: dict[str, Any]) -> Decision:
    return decide(d, [TAKE_OVER], Settings(), None, no_rollouts)


def stored(values: dict[str, Any], *entries: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(values)
    out["metadata"]["managedFields"] = [*entries, STATUS_ENTRY]
    out["metadata"]["resourceVersion"] = str(int(out["metadata"]["resourceVersion"]) + 1)
    return out


def applied_fields(intent: dict[str, Any]) -> dict[str, Any]:
    """What lameduck's apply entry owns after applying intent, as far as these tests look."""
    annotations: dict[str, Any] = {f"f:{key}": {} for key in intent["metadata"]["annotations"]}
    return {
        "f:metadata": {"f:annotations": annotations},
        "f:spec": {
            "f:template": {
                "f:spec": {
                    "f:containers": {APP: {".": {}, "f:name": {}, "f:lifecycle": {"f:preStop": {"f:httpGet": {}}}}},
                    "f:initContainers": {'k:{"name":"lameduck"}': {".": {}, "f:name": {}}},
                    "f:terminationGracePeriodSeconds": {},
                }
            }
        },
    }


def taken(decision: Decision) -> dict[str, Any]:
    """WRITTEN as stored once the take-over's writes are done: team-x lost the hook, lameduck owns it."""
    assert decision.intent is not None
    write = server_side_write(WRITTEN, decision.intent, decision.replaced)
    values = merge(WRITTEN, write.intent)
    return stored(
        values, entry("team-x", "Apply", TEAMS_FIELDS_TAKEN), entry("lameduck", "Apply", applied_fields(write.intent))
    )


def test_the_take_over_records_the_replaced_hook_with_its_owner_and_writes_the_whole_intent_in_one_patch() -> None:
    decision = decided(WRITTEN)
    assert decision.action is Action.APPLY
    assert decision.replaced == (PRESTOP,)
    assert decision.intent is not None
    write = server_side_write(WRITTEN, decision.intent, decision.replaced)
    assert taken_over(write.intent) == [
        Change(PRESTOP, TEAMS_HOOK, HOLD, (FieldOwner("team-x", "Apply", TEAMS_PRESTOP_FIELDS),))
    ]
    assert write.handed_back == ()
    assert write.take_over[0] == {"op": "test", "path": "/metadata/generation", "value": 1}
    patched = jsonpatch.apply_patch(WRITTEN, write.take_over)
    assert merge(patched, write.intent) == patched, "the apply after the patch changes no value: one template change"
    assert value_at(patched, PRESTOP) == HOLD


def test_the_take_over_fails_on_a_spec_changed_since_it_was_read_not_on_a_status_write() -> None:
    decision = decided(WRITTEN)
    assert decision.intent is not None
    write = server_side_write(WRITTEN, decision.intent, decision.replaced)
    status_written = copy.deepcopy(WRITTEN) | {"status": {"replicas": 0, "observedGeneration": 1}}
    status_written["metadata"]["resourceVersion"] = "8"
    jsonpatch.apply_patch(status_written, write.take_over)
    spec_written = copy.deepcopy(WRITTEN)
    spec_written["metadata"]["generation"] = 2
    spec_written["spec"]["template"]["spec"]["containers"].insert(0, {"name": "first", "image": "example.com/first:1"})
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(spec_written, write.take_over)


def test_a_taken_over_deployment_is_compliant_and_its_record_stands_as_first_written() -> None:
    now = taken(decided(WRITTEN))
    decision = decided(now)
    assert decision.action is Action.NONE, "judged as team-x wrote it: nothing to write, no new ReplicaSet"
    assert decision.replaced == ()
    assert decision.plan is not None
    assert decision.plan.replaced == (PRESTOP,)
    assert decision.intent is not None
    write = server_side_write(now, decision.intent, decision.plan.replaced)
    assert write.take_over == [], "the hook is lameduck's already"
    assert taken_over(write.intent) == taken_over(now), "what it was, and whose, as first recorded"


def test_revert_puts_the_hook_back_by_lameducks_apply_then_gives_team_x_its_managed_fields_back() -> None:
    now = taken(decided(WRITTEN))
    write = server_side_write(now, revert_intent(now), ())
    assert write.take_over == []
    assert write.handed_back == tuple(taken_over(now))
    assert write.intent["spec"] == {
        "template": {"spec": {"containers": [{"name": "app", "lifecycle": {"preStop": TEAMS_HOOK}}]}}
    }
    assert TAKEN_OVER_ANNOTATION in write.intent["metadata"]["annotations"], "kept until the hook is team-x's again"
    # What the API server stores for that apply: lameduck's other fields gone, the hook back.
    values = copy.deepcopy(WRITTEN)
    values["metadata"]["annotations"][TAKEN_OVER_ANNOTATION] = write.intent["metadata"]["annotations"][
        TAKEN_OVER_ANNOTATION
    ]
    lameducks: dict[str, Any] = {
        "f:metadata": {"f:annotations": {f"f:{TAKEN_OVER_ANNOTATION}": {}}},
        "f:spec": {
            "f:template": {
                "f:spec": {
                    "f:containers": {APP: {".": {}, "f:name": {}, "f:lifecycle": {"f:preStop": TEAMS_PRESTOP_FIELDS}}}
                }
            }
        },
    }
    after_apply = stored(values, entry("team-x", "Apply", TEAMS_FIELDS_TAKEN), entry("lameduck", "Apply", lameducks))
    assert held(after_apply, Ownership.of(after_apply)) == list(write.handed_back), "held until given back"
    patch = hand_back_patch(after_apply, write.handed_back, leaving=True)
    given_back = jsonpatch.apply_patch(after_apply, patch)
    assert given_back["metadata"]["managedFields"] == [entry("team-x", "Apply", TEAMS_FIELDS), STATUS_ENTRY]
    assert given_back["metadata"]["annotations"] == WRITTEN["metadata"]["annotations"]
    assert given_back["spec"] == WRITTEN["spec"]
    assert held(given_back, Ownership.of(given_back)) == []


def test_a_revert_that_failed_after_its_apply_puts_back_nothing_new_and_gives_back_again() -> None:
    now = taken(decided(WRITTEN))
    first = server_side_write(now, revert_intent(now), ())
    # Its apply went through, the hand-back did not: the hook is back, still lameduck's, and recorded.
    lameducks: dict[str, Any] = {
        "f:spec": {"f:template": {"f:spec": {"f:containers": {APP: {"f:lifecycle": {"f:preStop": {}}}}}}}
    }
    values = copy.deepcopy(WRITTEN)
    values["metadata"]["annotations"] = first.intent["metadata"]["annotations"] | values["metadata"]["annotations"]
    half_done = stored(values, entry("team-x", "Apply", TEAMS_FIELDS_TAKEN), entry("lameduck", "Apply", lameducks))
    again = server_side_write(half_done, revert_intent(half_done), ())
    assert again.intent == first.intent
    assert again.handed_back == first.handed_back


HELD = [
    pytest.param(HOLD, True, True, id="the value lameduck set"),
    pytest.param(TEAMS_HOOK, True, True, id="the value put back, still in lameduck's apply entry"),
    pytest.param(TEAMS_HOOK, False, False, id="the value put back and given back"),
    pytest.param({"exec": {"command": ["sleep", "1"]}}, True, False, id="a value someone set since"),
]


@pytest.mark.parametrize(("hook", "lameduck_owns", "is_held"), HELD)
def test_what_lameduck_holds_of_its_record(hook: dict[str, Any], lameduck_owns: bool, is_held: bool) -> None:
    now = taken(decided(WRITTEN))
    values = with_values(now, [(PRESTOP, hook)])
    ours: dict[str, Any] = {
        "f:spec": {"f:template": {"f:spec": {"f:containers": {APP: {"f:lifecycle": {"f:preStop": {}}}}}}}
    }
    d = stored(values, entry("lameduck", "Apply", ours if lameduck_owns else {"f:metadata": {}}))
    assert [c.path for c in held(d, Ownership.of(d))] == ([PRESTOP] if is_held else [])


def test_a_value_the_policy_no_longer_sets_is_put_back_and_handed_back_while_lameduck_stays() -> None:
    record = [Change(GRACE, 10, 65, (FieldOwner("team-x", "Apply", {}),))]
    encoded = [
        {
            "path": list(GRACE),
            "set": 65,
            "was": 10,
            "owners": [{"manager": "team-x", "operation": "Apply", "fieldsV1": {}}],
        }
    ]
    values = with_values(
        WRITTEN, [(GRACE, 65), (("metadata", "annotations", TAKEN_OVER_ANNOTATION), json.dumps(encoded))]
    )
    lameducks: dict[str, Any] = {
        "f:spec": {"f:minReadySeconds": {}, "f:template": {"f:spec": {"f:terminationGracePeriodSeconds": {}}}}
    }
    now = stored(values, entry("team-x", "Apply", TEAMS_FIELDS), entry("lameduck", "Apply", lameducks))
    assert taken_over(now) == record
    intent = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}}
    write = server_side_write(now, intent, ())
    assert value_at(write.intent, GRACE) == 10, "the team's grace period is put back by the same apply"
    assert write.handed_back == tuple(record)
    after = jsonpatch.apply_patch(now, hand_back_patch(now, write.handed_back, leaving=False))
    team, lameduck, _ = after["metadata"]["managedFields"]
    assert team["fieldsV1"] == merge_trees(
        [TEAMS_FIELDS, {"f:spec": {"f:template": {"f:spec": {"f:terminationGracePeriodSeconds": {}}}}}]
    )
    assert lameduck["fieldsV1"] == {"f:spec": {"f:minReadySeconds": {}}}, "the rest stays lameduck's"
    assert after["metadata"]["annotations"] == now["metadata"]["annotations"], (
        "the record is rewritten by the next apply"
    )


def test_nothing_handed_back_is_no_patch() -> None:
    now = taken(decided(WRITTEN))
    assert hand_back_patch(now, (), leaving=True) == []


TAKEOVER_FIELDS: dict[str, Any] = {
    "f:metadata": {"f:annotations": {f"f:{TAKEN_OVER_ANNOTATION}": {}, "f:lameduck.dev/policy": {}}},
    "f:spec": {"f:template": {"f:spec": {"f:containers": {APP: {"f:lifecycle": {"f:preStop": {"f:httpGet": {}}}}}}}},
}


def interrupted() -> dict[str, Any]:
    """WRITTEN once the take-over's patch went through and its apply did not."""
    decision = decided(WRITTEN)
    assert decision.intent is not None
    write = server_side_write(WRITTEN, decision.intent, decision.replaced)
    values = jsonpatch.apply_patch(WRITTEN, write.take_over)
    return stored(
        values, entry("team-x", "Apply", TEAMS_FIELDS_TAKEN), entry("lameduck-takeover", "Update", TAKEOVER_FIELDS)
    )


@pytest.mark.parametrize("lameducks", [None, {"f:spec": {"f:minReadySeconds": {}}}], ids=["none", "an apply entry"])
def test_what_an_interrupted_take_over_left_to_lameduck_takeover_becomes_lameducks_apply_entrys(
    lameducks: dict[str, Any] | None,
) -> None:
    half = interrupted()
    if lameducks is not None:
        half["metadata"]["managedFields"].insert(0, entry("lameduck", "Apply", lameducks))
    adopted = jsonpatch.apply_patch(half, adoption_patch(half))
    managers = [(e["manager"], e["operation"]) for e in adopted["metadata"]["managedFields"]]
    assert sorted(managers) == [("kube-controller-manager", "Update"), ("lameduck", "Apply"), ("team-x", "Apply")]
    (ours,) = (e for e in adopted["metadata"]["managedFields"] if e["manager"] == "lameduck")
    assert ours["fieldsV1"] == merge_trees([lameducks or {}, TAKEOVER_FIELDS])
    assert adoption_patch(adopted) == []
    assert [c.path for c in held(adopted, Ownership.of(adopted))] == [PRESTOP], "its record stands"


class RecordingApi:
    """The writes DeploymentWrites sends, each answered with the Deployment as given, in order."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, Any]] = []

    async def patch_deployment(self, ref: DeploymentRef, patch: list[dict[str, Any]]) -> dict[str, Any]:
        self.sent.append(("patch", patch))
        return self.answers.pop(0)

    async def apply_deployment(self, intent: dict[str, Any], force: bool) -> dict[str, Any]:
        self.sent.append(("apply", intent))
        return self.answers.pop(0)


async def test_a_revert_after_an_interrupted_take_over_adopts_then_puts_the_hook_back() -> None:
    half = interrupted()
    adopted = jsonpatch.apply_patch(half, adoption_patch(half))
    api = RecordingApi(adopted, adopted, adopted)
    await DeploymentWrites(cast(FleetApi, api)).revert(DeploymentRef("shop", "web"), half)
    (kind, adoption), (applied_kind, intent), (last, _) = api.sent
    assert (kind, adoption) == ("patch", adoption_patch(half))
    assert applied_kind == "apply"
    assert value_at(intent, PRESTOP) == TEAMS_HOOK
    assert last == "patch", "the hook's managedFields back to team-x"
