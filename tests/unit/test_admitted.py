"""Fields lameduck writes by JSON patch, recorded in lameduck.dev/admitted: found, recorded, reverted exactly."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest

from lameduck_operator.logic.admitted import (
    Change,
    _at,
    added_paths,
    admitted,
    admitted_paths,
    changes,
    encode,
    injected,
    json_patch,
    recorded,
    restore,
    reverted,
    strip,
    value_at,
    with_values,
)
from lameduck_operator.logic.decision import Moment, decide
from lameduck_operator.logic.intent import FieldPath
from lameduck_operator.logic.ownership import FieldOwner
from lameduck_operator.model import Policy, PolicyRef
from lameduck_operator.names import ADMITTED_ANNOTATION
from lameduck_operator.settings import Settings, SidecarSettings
from tests.unit.builders import container, deployment, policy

NATIVE = Settings()
CLASSIC = Settings(sidecar=SidecarSettings(native=False))
POD: FieldPath = ("spec", "template", "spec")
APP: FieldPath = (*POD, "containers", ("name", "app"))
RECORD: FieldPath = ("metadata", "annotations", ADMITTED_ANNOTATION)
HOLD = {"httpGet": {"path": "/hold/app", "port": 9901, "scheme": "HTTP"}}
SLEEP: dict[str, Any] = {"hold": {"method": "Sleep"}}


def no_rollouts(_: PolicyRef) -> int:
    return 0


def intent_for(d: dict[str, Any], p: Policy, settings: Settings = NATIVE) -> dict[str, Any]:
    """The intent decide chooses for d at admission (what the webhook and `lameduck render` inject)."""
    decision = decide(d, [p], settings, None, no_rollouts, moment=Moment.ADMISSION)
    assert decision.intent is not None
    return decision.intent


def with_record(d: dict[str, Any], record: str) -> dict[str, Any]:
    out = copy.deepcopy(d)
    out["metadata"].setdefault("annotations", {})[ADMITTED_ANNOTATION] = record
    return out


def with_spec(d: dict[str, Any], **fields: Any) -> dict[str, Any]:
    out = copy.deepcopy(d)
    out["spec"].update(fields)
    return out


def pod(d: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = d["spec"]["template"]["spec"]
    return spec


# --- added_paths ------------------------------------------------------------------------------------

WITH_INIT = deployment(initContainers=[container("migrate")])
WITH_ANNOTATION = deployment(annotations={"team": "shop"})


@pytest.mark.parametrize(
    ("before", "after", "paths"),
    [
        pytest.param(deployment(), deployment(), [], id="unchanged values give nothing"),
        pytest.param(
            deployment(),
            deployment(annotations={"a": "1", "b": "2"}),
            [("metadata", "annotations", "a"), ("metadata", "annotations", "b")],
            id="a new annotations map is recorded by its keys, never whole",
        ),
        pytest.param(
            WITH_ANNOTATION,
            deployment(annotations={"team": "shop", "a": "1"}),
            [("metadata", "annotations", "a")],
            id="a new annotation beside the writer's own is one path",
        ),
        pytest.param(
            deployment(),
            deployment(terminationGracePeriodSeconds=65),
            [(*POD, "terminationGracePeriodSeconds")],
            id="a new scalar is one path",
        ),
        pytest.param(
            deployment(terminationGracePeriodSeconds=30),
            deployment(terminationGracePeriodSeconds=65),
            [(*POD, "terminationGracePeriodSeconds")],
            id="a changed scalar is one path",
        ),
        pytest.param(
            deployment(),
            deployment(initContainers=[container("lameduck")]),
            [(*POD, "initContainers", ("name", "lameduck"))],
            id="a new list is recorded item by item, by name",
        ),
        pytest.param(
            WITH_INIT,
            deployment(initContainers=[container("migrate"), container("lameduck")]),
            [(*POD, "initContainers", ("name", "lameduck"))],
            id="a new list item is one path, by its name",
        ),
        pytest.param(
            deployment(),
            deployment(containers=[container("app", 8080), container("lameduck")]),
            [(*POD, "containers", ("name", "lameduck"))],
            id="a classic sidecar is one path among the app containers",
        ),
        pytest.param(
            deployment(),
            deployment(containers=[container("app", 8080, lifecycle={"preStop": HOLD})]),
            [(*APP, "lifecycle", "preStop")],
            id="a new preStop in a container is one path, however deep its handler",
        ),
        pytest.param(
            deployment(containers=[container("app", 8080, lifecycle={"preStop": {"sleep": {"seconds": 5}}})]),
            deployment(containers=[container("app", 8080, lifecycle={"preStop": {"sleep": {"seconds": 20}}})]),
            [(*APP, "lifecycle", "preStop")],
            id="a preStop is replaced whole, not by its changed leaf",
        ),
        pytest.param(
            deployment(containers=[container("app", 8080, lifecycle={"postStart": HOLD})]),
            deployment(containers=[container("app", 8080, lifecycle={"postStart": HOLD, "preStop": HOLD})]),
            [(*APP, "lifecycle", "preStop")],
            id="a lifecycle map the writer has is descended into",
        ),
        pytest.param(
            deployment(containers=[container("app", args=["a"])]),
            deployment(containers=[container("app", args=["a", "b"])]),
            [(*APP, "args")],
            id="a list not keyed by name is one path",
        ),
    ],
)
def test_added_paths_name_each_leaf_lameduck_set(
    before: dict[str, Any], after: dict[str, Any], paths: list[FieldPath]
) -> None:
    assert added_paths(before, after) == paths


def test_added_paths_of_a_real_injection_record_leaves_and_the_sidecar_as_one_item() -> None:
    d = deployment(annotations={"team": "shop"}, initContainers=[container("migrate")])
    p = policy()
    after = injected(d, intent_for(d, p))
    paths = added_paths(d, after)
    assert len(paths) == len(set(paths)) == 6
    assert set(paths) == {
        ("metadata", "annotations", "lameduck.dev/policy"),
        ("metadata", "annotations", "lameduck.dev/intent"),
        RECORD,
        (*APP, "lifecycle", "preStop"),
        (*POD, "initContainers", ("name", "lameduck")),
        (*POD, "terminationGracePeriodSeconds"),
    }


# --- admitted_paths: reading the record -------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        pytest.param("", id="empty"),
        pytest.param("not json", id="not JSON"),
        pytest.param("{", id="truncated JSON"),
        pytest.param('{"spec": 1}', id="a map, not a list"),
        pytest.param('"spec"', id="a string"),
        pytest.param("[[]]", id="an empty path"),
        pytest.param("[1, null]", id="entries that are not paths"),
        pytest.param('[["spec", 3]]', id="a step that is a number"),
        pytest.param('[["spec", ["name"]]]', id="a keyed step without its value"),
        pytest.param('[["spec", ["name", 1]]]', id="a keyed step whose value is not a string"),
    ],
)
def test_an_unreadable_record_counts_as_no_paths(record: str) -> None:
    d = with_record(deployment(terminationGracePeriodSeconds=65), record)
    assert admitted_paths(d) == []
    assert reverted(d) == deployment(terminationGracePeriodSeconds=65), "only the record itself goes"


def test_a_deployment_without_metadata_or_annotations_has_no_paths() -> None:
    assert admitted_paths({}) == []
    assert admitted_paths({"metadata": None}) == []
    assert admitted_paths(deployment()) == []


def test_readable_entries_of_a_record_are_kept_beside_unreadable_ones() -> None:
    record = json.dumps(
        [{"path": ["spec", "minReadySeconds"]}, {"path": [7]}, ["spec", "x"], {"path": ["spec", ["name", "app"], "x"]}]
    )
    d = with_record(deployment(), record)
    assert admitted_paths(d) == [("spec", "minReadySeconds"), ("spec", ("name", "app"), "x")]


def test_the_owners_of_a_replaced_value_are_read_back_as_written_and_unreadable_ones_left_out() -> None:
    owner = FieldOwner("team-x", "Apply", {"f:exec": {"f:command": {}}})
    change = Change(APP, was={"exec": {}}, set={"sleep": {}}, owners=(owner,))
    encoded = json.loads(encode([change]))
    assert encoded == [
        {
            "path": ["spec", "template", "spec", "containers", ["name", "app"]],
            "set": {"sleep": {}},
            "was": {"exec": {}},
            "owners": [{"manager": "team-x", "operation": "Apply", "fieldsV1": {"f:exec": {"f:command": {}}}}],
        }
    ]
    assert recorded(with_record(deployment(), encode([change])), ADMITTED_ANNOTATION) == [change]
    encoded[0]["owners"] += [{"manager": 7, "operation": "Apply", "fieldsV1": {}}, "team-y", {"manager": "z"}]
    assert recorded(with_record(deployment(), json.dumps(encoded)), ADMITTED_ANNOTATION) == [change]
    encoded[0]["owners"] = {"team-x": {}}
    assert recorded(with_record(deployment(), json.dumps(encoded)), ADMITTED_ANNOTATION)[0].owners == ()


def test_values_are_put_at_their_paths_making_maps_and_named_items_on_the_way() -> None:
    d = deployment(containers=[container("app", 8080)])
    out = with_values(
        d, [((*APP, "lifecycle", "preStop"), {"sleep": {}}), ((*POD, "containers", ("name", "w"), "image"), "w:1")]
    )
    assert pod(out)["containers"][0]["lifecycle"] == {"preStop": {"sleep": {}}}
    assert pod(out)["containers"][1] == {"name": "w", "image": "w:1"}
    assert pod(d)["containers"][0].get("lifecycle") is None, "a copy"
    assert with_values({}, [(("metadata", "annotations", "a"), "x")]) == {"metadata": {"annotations": {"a": "x"}}}
    assert value_at(out, (*POD, "containers", ("name", "w"), "image")) == "w:1"
    assert value_at(out, (*POD, "containers", ("name", "x"), "image")) is None
    kept = with_values(d, [((*POD, "containers", ("name", "w"), "image"), "w:1")], make_items=False)
    assert kept == d, "no item made: the value left out"


def test_a_replaced_value_is_read_with_what_it_was_and_what_was_set() -> None:
    record = json.dumps(
        [
            {"path": ["spec", "template", "spec", "terminationGracePeriodSeconds"], "set": "abc", "was": 30},
            {"path": ["spec", "minReadySeconds"], "was": None},
            ["spec", "template", "spec", "containers", ["name", "app"], "lifecycle", "preStop"],
            {"path": ["spec", 1], "was": 30},
            {"path": ["spec", "paused"], "set": True},
            {"was": 30},
        ]
    )
    assert admitted(with_record(deployment(), record)) == [
        Change((*POD, "terminationGracePeriodSeconds"), 30, "abc"),
        Change(("spec", "minReadySeconds"), None),
        Change(("spec", "paused"), set=True),
    ], "an entry that is not a map with a readable path is skipped"
    assert [c.replaced for c in admitted(with_record(deployment(), record))] == [True, True, False]


# --- strip and reverted -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "paths", "after"),
    [
        pytest.param(
            deployment(containers=[container("app", 8080, lifecycle={"preStop": HOLD})]),
            [(*APP, "lifecycle", "preStop")],
            deployment(containers=[container("app", 8080)]),
            id="a map the removal leaves empty goes (lifecycle: {})",
        ),
        pytest.param(
            deployment(containers=[container("app", 8080, lifecycle={"preStop": HOLD, "postStart": HOLD})]),
            [(*APP, "lifecycle", "preStop")],
            deployment(containers=[container("app", 8080, lifecycle={"postStart": HOLD})]),
            id="a map with the writer's fields stays",
        ),
        pytest.param(
            deployment(annotations={"lameduck.dev/policy": "x"}),
            [("metadata", "annotations", "lameduck.dev/policy")],
            deployment(),
            id="annotations left empty go",
        ),
        pytest.param(
            deployment(initContainers=[container("migrate"), container("lameduck")]),
            [(*POD, "initContainers", ("name", "lameduck"))],
            deployment(initContainers=[container("migrate")]),
            id="a list item goes by name",
        ),
        pytest.param(
            deployment(containers=[container("app", 8080), container("lameduck"), container("worker")]),
            [(*POD, "containers", ("name", "lameduck"))],
            deployment(containers=[container("app", 8080), container("worker")]),
            id="a classic sidecar goes from between app containers",
        ),
        pytest.param(
            deployment(initContainers=[container("lameduck")]),
            [(*POD, "initContainers")],
            deployment(),
            id="a whole list goes",
        ),
        pytest.param(
            deployment(initContainers=[container("lameduck")]),
            [(*POD, "initContainers", ("name", "lameduck"))],
            deployment(),
            id="a list its last item leaves empty goes",
        ),
        pytest.param(
            deployment(terminationGracePeriodSeconds=65),
            [
                ("metadata", "annotations", "absent"),
                (*POD, "initContainers", ("name", "lameduck")),
                (*POD, "containers", ("name", "gone"), "lifecycle"),
                (*POD, "containers", "lifecycle"),
                (*POD, ("name", "app")),
                (*POD, "terminationGracePeriodSeconds", "deeper"),
                ("spec", "replicas"),
            ],
            deployment(terminationGracePeriodSeconds=65),
            id="unknown paths are ignored",
        ),
        pytest.param(deployment(), [()], deployment(), id="the empty path removes nothing"),
    ],
)
def test_strip_removes_exactly_the_paths_and_prunes_what_they_leave_empty(
    before: dict[str, Any], paths: list[FieldPath], after: dict[str, Any]
) -> None:
    given = copy.deepcopy(before)
    assert strip(before, paths) == after
    assert before == given, "the input is left as it was"


@pytest.mark.parametrize(
    ("before", "recorded", "after"),
    [
        pytest.param(
            deployment(terminationGracePeriodSeconds=65),
            [Change((*POD, "terminationGracePeriodSeconds"), 30)],
            deployment(terminationGracePeriodSeconds=30),
            id="a replaced value is put back",
        ),
        pytest.param(
            deployment(containers=[container("app", lifecycle={"preStop": HOLD})]),
            [Change((*APP, "lifecycle", "preStop"), {"exec": {"command": ["sleep", "5"]}})],
            deployment(containers=[container("app", lifecycle={"preStop": {"exec": {"command": ["sleep", "5"]}}})]),
            id="a taken-over preStop is put back whole",
        ),
        pytest.param(
            deployment(),
            [Change(("spec", "minReadySeconds"), 5), Change((*APP, "lifecycle", "preStop"), HOLD)],
            deployment(),
            id="a value removed since is the writer's: it stays removed",
        ),
        pytest.param(
            deployment(),
            [Change((*POD, "containers", ("name", "gone"), "lifecycle"), {"preStop": HOLD})],
            deployment(),
            id="a list item that is gone is not made again",
        ),
        pytest.param(
            deployment(terminationGracePeriodSeconds=65, minReadySeconds=10),
            [Change((*POD, "terminationGracePeriodSeconds"))],
            deployment(minReadySeconds=10),
            id="an added value is removed",
        ),
    ],
)
def test_restore_puts_back_what_the_recorded_changes_replaced_and_removes_what_they_added(
    before: dict[str, Any], recorded: list[Change], after: dict[str, Any]
) -> None:
    given = copy.deepcopy(before)
    assert restore(before, recorded) == after
    assert before == given, "the input is left as it was"


def test_changes_record_what_each_replaced_value_was() -> None:
    before = deployment(
        terminationGracePeriodSeconds=30,
        containers=[container("app", 8080, lifecycle={"preStop": {"exec": {"command": ["sleep", "5"]}}})],
    )
    after = copy.deepcopy(before)
    pod(after)["terminationGracePeriodSeconds"] = 65
    pod(after)["containers"][0]["lifecycle"]["preStop"] = HOLD
    pod(after)["initContainers"] = [container("lameduck")]
    found = [(c.path, c.was) for c in changes(before, after)]
    assert sorted(found, key=str) == sorted(
        [
            ((*POD, "terminationGracePeriodSeconds"), 30),
            ((*APP, "lifecycle", "preStop"), {"exec": {"command": ["sleep", "5"]}}),
            ((*POD, "initContainers", ("name", "lameduck")), Change(()).was),
        ],
        key=str,
    )
    assert [c.set for c in changes(before, after)] == [_at(after, c.path) for c in changes(before, after)]


def test_a_value_changed_since_lameduck_set_it_is_not_lameducks() -> None:
    before = deployment(terminationGracePeriodSeconds=30)
    after = deployment(terminationGracePeriodSeconds=65)
    (change,) = changes(before, after)
    assert change.still_ours(after)
    raised = deployment(terminationGracePeriodSeconds=90)
    assert not change.still_ours(raised)
    assert restore(raised, [change]) == raised, "the writer's 90 is kept"
    assert restore(after, [change]) == before
    defaulted = copy.deepcopy(after)
    assert change.still_ours(defaulted)


def test_server_defaults_added_inside_lameducks_value_keep_it_lameducks() -> None:
    before = deployment()
    after = deployment(initContainers=[container("lameduck", 9901)])
    (change,) = changes(before, after)
    stored = copy.deepcopy(after)
    stored["spec"]["template"]["spec"]["initContainers"][0]["terminationMessagePath"] = "/dev/termination-log"
    assert change.still_ours(stored)
    assert restore(stored, [change]) == before


def test_reverted_removes_the_recorded_paths_and_the_record() -> None:
    d = deployment(
        annotations={"team": "shop", "lameduck.dev/policy": "GracefulPolicy/shop/p"},
        containers=[container("app", 8080, lifecycle={"preStop": HOLD})],
        terminationGracePeriodSeconds=65,
    )
    record = json.dumps(
        [
            {"path": ["metadata", "annotations", "lameduck.dev/policy"]},
            {"path": ["spec", "template", "spec", "containers", ["name", "app"], "lifecycle", "preStop"]},
            {"path": ["metadata", "annotations", ADMITTED_ANNOTATION]},
        ]
    )
    assert reverted(with_record(d, record)) == deployment(
        annotations={"team": "shop"}, terminationGracePeriodSeconds=65
    ), "what is not recorded stays, even where lameduck could have set it"


# --- injected: the round trip -----------------------------------------------------------------------

ROUND_TRIPS = [
    pytest.param(deployment(), policy(), NATIVE, id="one app container, native sidecar"),
    pytest.param(deployment(), policy(), CLASSIC, id="classic sidecar"),
    pytest.param(deployment(), policy(spec=SLEEP), NATIVE, id="Sleep method, no sidecar"),
    pytest.param(
        deployment(containers=[container("app", 8080), container("log-shipper")]),
        policy(spec={"containers": ["app"]}),
        CLASSIC,
        id="a named app container beside another, classic sidecar",
    ),
    pytest.param(
        deployment(
            annotations={"team": "shop"},
            initContainers=[container("migrate")],
            containers=[container("app", 8080, lifecycle={"postStart": {"exec": {"command": ["true"]}}})],
        ),
        policy(),
        NATIVE,
        id="the writer's annotations, init container and lifecycle",
    ),
    pytest.param(
        deployment(containers=[container("app", 8080), container("worker")]),
        policy(spec={"minReadySeconds": 10, "hold": {"maxHold": "2m"}, "apply": "Immediate"}),
        NATIVE,
        id="minReadySeconds and a longer hold, Immediate",
    ),
    pytest.param(
        deployment(terminationGracePeriodSeconds=300),
        policy(spec=SLEEP),
        CLASSIC,
        id="a grace period above the budget is kept",
    ),
    pytest.param(
        deployment(terminationGracePeriodSeconds=30),
        policy(),
        NATIVE,
        id="the default grace period stated, raised",
    ),
    pytest.param(
        deployment(containers=[container("app", 8080, lifecycle={"preStop": {"exec": {"command": ["sleep", "5"]}}})]),
        policy(spec={"onConflict": "TakeOver"}),
        NATIVE,
        id="TakeOver of a foreign preStop",
    ),
]


@pytest.mark.parametrize(("d", "p", "settings"), ROUND_TRIPS)
def test_reverting_an_injection_gives_back_the_deployment_as_written(
    d: dict[str, Any], p: Policy, settings: Settings
) -> None:
    intent = intent_for(d, p, settings)
    after = injected(d, intent)
    assert reverted(after) == d
    assert after != d
    assert injected(after, intent) == after, "injecting the same intent again changes nothing"


@pytest.mark.parametrize(("d", "p", "settings"), ROUND_TRIPS)
def test_an_injection_carries_its_intent_and_records_every_field_it_added(
    d: dict[str, Any], p: Policy, settings: Settings
) -> None:
    after = injected(d, intent_for(d, p, settings))
    record = admitted_paths(after)
    assert record[-1] == RECORD, "the record names itself, so a revert removes it too"
    assert sorted(record, key=str) == sorted(added_paths(d, after), key=str)
    judged = decide(after, [p], settings, None, no_rollouts)
    assert judged.verdict.state.value == "Compliant", judged.verdict.message


@pytest.mark.parametrize("settings", [NATIVE, CLASSIC], ids=["native sidecar", "classic sidecar"])
@pytest.mark.parametrize(
    ("d", "spec"),
    [
        pytest.param(deployment(containers=[container("app", 8080), container("worker")]), {}, id="added fields"),
        pytest.param(
            deployment(
                containers=[container("app", 8080, lifecycle={"preStop": {"exec": {"command": ["sleep", "5"]}}})],
                terminationGracePeriodSeconds=30,
            ),
            {"onConflict": "TakeOver"},
            id="replaced values",
        ),
    ],
)
def test_an_older_admitted_sidecar_hold_changed_to_sleep_leaves_no_sidecar_behind(
    d: dict[str, Any], spec: dict[str, Any], settings: Settings
) -> None:
    with_sidecar = injected(d, intent_for(d, policy(spec=spec), settings))
    sleep = policy(spec={**spec, **SLEEP})
    # decide plans against the Deployment as written (admitted fields undone): the old hold is no conflict.
    now = injected(with_sidecar, intent_for(with_sidecar, sleep, settings))
    assert now == injected(d, intent_for(d, sleep, settings)), "as if the sidecar had never been injected"
    names = [c["name"] for c in [*pod(now)["containers"], *pod(now).get("initContainers", [])]]
    assert names == [c["name"] for c in pod(d)["containers"]]
    assert pod(now)["containers"][0]["lifecycle"]["preStop"] == {"sleep": {"seconds": 30}}
    assert reverted(now) == d, "what the writer wrote comes back, replaced values too"


def test_a_deployment_carrying_the_intent_by_other_means_gets_no_record() -> None:
    d = deployment()
    intent = intent_for(d, policy())
    carried = injected(d, intent)
    del carried["metadata"]["annotations"][ADMITTED_ANNOTATION]
    assert injected(carried, intent) == carried, "nothing added, so nothing to record or later remove"


def test_replaced_values_are_recorded_with_what_they_were_and_put_back_on_revert() -> None:
    foreign = {"exec": {"command": ["sleep", "5"]}}
    d = deployment(
        containers=[container("app", 8080, lifecycle={"preStop": foreign})], terminationGracePeriodSeconds=30
    )
    after = injected(d, intent_for(d, policy(spec={"onConflict": "TakeOver"})))
    assert pod(after)["containers"][0]["lifecycle"]["preStop"] == HOLD
    assert pod(after)["terminationGracePeriodSeconds"] == 65
    replaced = {str(c.path[-1]): c.was for c in admitted(after) if c.replaced}
    assert replaced == {"preStop": foreign, "terminationGracePeriodSeconds": 30}
    assert reverted(after) == d


# --- json_patch ----------------------------------------------------------------------------------------


def patch_pairs() -> list[Any]:
    d = deployment(annotations={"team": "shop"}, containers=[container("app", 8080), container("worker")])
    sidecar = injected(d, intent_for(d, policy()))
    sleep = injected(sidecar, intent_for(sidecar, policy(spec=SLEEP)))
    classic = injected(d, intent_for(d, policy(), CLASSIC))
    return [
        pytest.param(d, sidecar, id="an injection"),
        pytest.param(sidecar, reverted(sidecar), id="a revert"),
        pytest.param(sidecar, sleep, id="a sidecar hold become a sleep"),
        pytest.param(classic, reverted(classic), id="a classic sidecar's revert"),
        pytest.param(d, d, id="no change"),
    ]


@pytest.mark.parametrize(("before", "after"), patch_pairs())
def test_applying_the_json_patch_to_before_gives_after(before: dict[str, Any], after: dict[str, Any]) -> None:
    given = copy.deepcopy(before)
    assert jsonpatch.apply_patch(before, json_patch(before, after)) == after
    assert before == given


def versioned(d: dict[str, Any], version: str | None) -> dict[str, Any]:
    out = copy.deepcopy(d)
    if version is not None:
        out["metadata"]["resourceVersion"] = version
    return out


@pytest.mark.parametrize(
    ("version", "change", "guard", "tested"),
    [
        pytest.param("42", True, True, True, id="ops and a version: the version is tested first"),
        pytest.param("42", False, True, False, id="no ops: no test alone"),
        pytest.param(None, True, True, False, id="no version: nothing to test"),
        pytest.param("", True, True, False, id="an empty version: nothing to test"),
        pytest.param("42", True, False, False, id="without guard: no test"),
    ],
)
def test_the_guard_tests_the_resource_version_only_when_there_are_ops_and_a_version(
    version: str | None, change: bool, guard: bool, tested: bool
) -> None:
    before = versioned(deployment(), version)
    after = injected(before, intent_for(before, policy())) if change else copy.deepcopy(before)
    ops = json_patch(before, after, guard=guard)
    unguarded = json_patch(before, after)
    if tested:
        assert ops == [{"op": "test", "path": "/metadata/resourceVersion", "value": version}, *unguarded]
    else:
        assert ops == unguarded
    assert bool(ops) is change
    assert jsonpatch.apply_patch(before, ops) == after


def test_a_guarded_patch_fails_on_a_deployment_changed_since_it_was_read() -> None:
    before = versioned(deployment(), "42")
    ops = json_patch(before, injected(before, intent_for(before, policy())), guard=True)
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(versioned(deployment(), "43"), ops)


@pytest.mark.parametrize("record", ["[" * 100_000, "[" * 900 + "]" * 900, "null", "7"])
def test_a_record_nested_too_deep_or_of_another_shape_counts_as_none(record: str) -> None:
    assert admitted(with_record(deployment(), record)) == []


def test_a_container_without_a_name_gets_no_record_entry() -> None:
    """The API server decodes a write before the webhook sees it, but rejects a nameless container
    only after admission: the webhook must answer such a write, and record nothing it cannot find."""
    nameless = deployment(initContainers=[{"image": "example.com/init:1"}])
    decision = decide(nameless, [policy()], Settings(), None, lambda _: 0, moment=Moment.ADMISSION)
    assert decision.intent is not None
    after = injected(nameless, decision.intent)
    assert all(None not in c.path and "None" not in str(c.path) for c in admitted(after))
    assert after["spec"]["template"]["spec"]["initContainers"][0] == {"image": "example.com/init:1"}
