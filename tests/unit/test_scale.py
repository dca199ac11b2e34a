"""One large Deployment must not stall lameduck: linear lookups that agree with their
straightforward definitions, correct results at over a thousand containers, and the bound past
which a Deployment is not judged at all. (Speed itself is bench.admission_scale's.)"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

import jsonpatch
import pytest

from harness.wide import container as many_fields_container
from harness.wide import deployment as large_deployment
from harness.wide import fields_v1, stored
from lameduck_operator.logic.admission import Skip, review
from lameduck_operator.logic.admitted import _ABSENT, KeyedItems, _at, reverted, strip
from lameduck_operator.logic.compliance import Reason, State
from lameduck_operator.logic.decision import MAX_TEMPLATE_CONTAINERS, Action, Decision, Moment, decide
from lameduck_operator.logic.intent import FieldPath
from lameduck_operator.logic.ownership import Selectors, _item_matches, merge_trees, owners, restrict
from lameduck_operator.names import ADMITTED_ANNOTATION, SIDECAR_NAME
from lameduck_operator.settings import Settings
from tests.unit.builders import policy
from tests.unit.test_admission import never_judged, request

CASES = 300
NAMES = ["a", "b", "c", "d"]
SCALE = policy("scale", "scale", {"selector": {"matchLabels": {"app": "scale"}}})


# ---- the straightforward definitions the indexed versions must agree with ---------------


def at_by_scanning(node: Any, path: FieldPath) -> Any:
    for step in path:
        if isinstance(step, tuple):
            items = node if isinstance(node, list) else []
            node = next((i for i in items if isinstance(i, Mapping) and i.get(step[0]) == step[1]), None)
        else:
            node = node.get(step) if isinstance(node, Mapping) else None
        if node is None:
            return None
    return node


def remove_by_scanning(node: Any, path: FieldPath) -> bool:
    if not path or not isinstance(node, dict | list):
        return False
    step, rest = path[0], path[1:]
    if isinstance(step, tuple):
        if not isinstance(node, list):
            return False
        index = next((i for i, it in enumerate(node) if isinstance(it, Mapping) and it.get(step[0]) == step[1]), None)
        if index is None:
            return False
        if not rest:
            del node[index]
            return True
        return remove_by_scanning(node[index], rest)
    if not isinstance(node, dict) or step not in node:
        return False
    if not rest:
        del node[step]
        return True
    removed = remove_by_scanning(node[step], rest)
    if removed and node[step] in ({}, []):
        del node[step]
    return removed


def merge_trees_by_copying(trees: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for tree in trees:
        for key, sub in tree.items():
            merged[key] = merge_trees_by_copying([merged.get(key) or {}, sub or {}])
    return merged


# ---- random inputs: few names, so duplicates and misses are common -------------------


def random_items(rng: random.Random) -> list[Any]:
    items: list[Any] = []
    for _ in range(rng.randint(0, 8)):
        kind = rng.random()
        if kind < 0.1:
            items.append("not a map")
        elif kind < 0.2:
            items.append({"image": rng.choice(NAMES)})
        else:
            item: dict[str, Any] = {"name": rng.choice([*NAMES, None, 1])}
            if rng.random() < 0.6:
                item["lifecycle"] = {"preStop": {"sleep": {"seconds": rng.randint(1, 3)}}}
            if rng.random() < 0.3:
                item["env"] = [{"name": rng.choice(NAMES), "value": "v"} for _ in range(rng.randint(1, 3))]
            items.append(item)
    return items


def random_path(rng: random.Random) -> FieldPath:
    steps: list[str | tuple[str, str]] = ["spec", ("name", rng.choice(NAMES))]
    tails: list[list[str | tuple[str, str]]] = [[], ["lifecycle"], ["lifecycle", "preStop"], ["env", ("name", "a")]]
    tail = rng.choice(tails)
    return (*steps, *tail)


@pytest.mark.parametrize("seed", range(5))
def test_finding_an_item_by_index_agrees_with_scanning_the_list(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(CASES):
        obj = {"spec": random_items(rng)}
        finder = KeyedItems()
        for _ in range(5):
            path = random_path(rng)
            found = _at(obj, path, finder)
            assert (None if found is _ABSENT else found) is at_by_scanning(obj, path), (obj, path)


@pytest.mark.parametrize("seed", range(5))
def test_removing_many_paths_at_once_agrees_with_removing_them_one_by_one(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(CASES):
        obj = {"spec": random_items(rng), "keep": 1}
        paths = [random_path(rng) for _ in range(rng.randint(1, 6))]
        expected = copy.deepcopy(obj)
        for path in paths:
            remove_by_scanning(expected, path)
        assert strip(obj, paths) == expected, (obj, paths)


def random_selector(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.5:
        return "k:" + json.dumps({"name": rng.choice(NAMES)})
    if kind < 0.6:
        return "k:" + json.dumps({"containerPort": rng.choice([1, 2]), "protocol": "TCP"})
    if kind < 0.7:
        return "k:" + json.dumps({})
    if kind < 0.8:
        return "v:" + json.dumps(rng.choice(["x", 1, True, None, {"name": "a"}, [1]]))
    if kind < 0.9:
        return "k:{not json"
    return f"i:{rng.randint(0, 3)}"


def random_element(rng: random.Random) -> Any:
    kind = rng.random()
    if kind < 0.5:
        return {"name": rng.choice(NAMES)}
    if kind < 0.7:
        return {"containerPort": rng.choice([1, 2, 1.0]), "protocol": rng.choice(["TCP", "UDP"])}
    return rng.choice(["x", 1, True, None, {"name": "a"}, [1], [True], 1.0])


@pytest.mark.parametrize("seed", range(5))
def test_indexed_selectors_match_as_trying_each_selector_in_turn(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(CASES):
        node = {random_selector(rng): {"id": i} for i in range(rng.randint(0, 8))}
        selectors = Selectors(node)
        for _ in range(8):
            item = random_element(rng)
            expected = next((t for s, t in node.items() if _item_matches(s, item)), None)
            assert selectors.match(item) is expected, (node, item)


@pytest.mark.parametrize("seed", range(3))
def test_merging_trees_in_place_agrees_with_merging_copies(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(CASES):
        trees: list[Mapping[str, Any]] = [
            {f"f:{rng.choice(NAMES)}": {f"f:{rng.choice(NAMES)}": {}} for _ in range(rng.randint(0, 4))}
            for _ in range(rng.randint(0, 4))
        ]
        before = copy.deepcopy(trees)
        assert merge_trees(trees) == merge_trees_by_copying(trees)
        assert trees == before, "the inputs are left as they were"


# ---- correctness at over a thousand containers (the bound lifted) ------------------------

# The record of what lameduck added takes about 170 bytes a container of this shape, and the API
# server allows 256 KiB of annotations: past about 1,500 such containers lameduck's annotations
# would not fit, and the decision skips the Deployment.
LARGE = 1200


def judge_unbounded(obj: Mapping[str, Any]) -> Decision:
    return decide(obj, [SCALE], Settings(), {}, lambda _: 0, moment=Moment.ADMISSION, max_containers=None)


@pytest.fixture(scope="module")
def judged_large() -> tuple[dict[str, Any], dict[str, Any]]:
    written = large_deployment(LARGE)
    admitted = review(request("CREATE", written), judge_unbounded, max_containers=None)
    return written, stored(written, list(admitted.patch))


def test_every_container_of_a_large_deployment_gets_its_hold_and_the_sidecar_is_added_once(
    judged_large: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    written, after = judged_large
    pod = after["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == [
        c["name"] for c in written["spec"]["template"]["spec"]["containers"]
    ]
    assert all(c["lifecycle"]["preStop"]["httpGet"]["path"] == f"/hold/{c['name']}" for c in pod["containers"])
    assert [c["name"] for c in pod["initContainers"]] == [SIDECAR_NAME]
    env = {e["name"]: e.get("value") for e in pod["initContainers"][0]["env"]}
    assert len(env["LAMEDUCK_APP_PORTS"].split(",")) == 2 * LARGE


def test_a_large_deployment_is_compliant_once_admitted_and_reverts_to_what_was_written(
    judged_large: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    written, after = judged_large
    decision = decide(after, [SCALE], Settings(), {}, lambda _: 0, max_containers=None)
    assert (decision.verdict.state, decision.action) == (State.COMPLIANT, Action.NONE)
    back = reverted(after)
    back["metadata"].pop("managedFields")
    for key in ("uid", "resourceVersion"):
        back["metadata"].pop(key)
    assert back == written
    assert ADMITTED_ANNOTATION in after["metadata"]["annotations"]


def test_the_foreign_view_of_a_large_deployment_keeps_every_keyed_item_its_writer_owns() -> None:
    written = large_deployment(LARGE)
    tree = fields_v1({"spec": written["spec"]})
    assert restrict({"spec": written["spec"]}, tree) == {"spec": written["spec"]}


def test_the_owner_of_each_containers_field_is_found_among_a_thousand() -> None:
    written = large_deployment(LARGE)
    on_disk = stored(written, [])
    pod = ("spec", "template", "spec", "containers")
    assert owners(on_disk, (*pod, ("name", f"c{LARGE - 1}"), "image")) == ["kubectl-create"]
    assert owners(on_disk, (*pod, ("name", "missing"))) == []


# ---- the bound: removing it makes these fail -----------------------------------------


def template_of(containers: int, init_containers: int = 0) -> dict[str, Any]:
    obj = large_deployment(containers)
    if init_containers:
        obj["spec"]["template"]["spec"]["initContainers"] = [
            many_fields_container(containers + i) for i in range(init_containers)
        ]
    return obj


@pytest.mark.parametrize(
    ("containers", "init_containers", "judged"),
    [
        (MAX_TEMPLATE_CONTAINERS, 0, True),
        (MAX_TEMPLATE_CONTAINERS - 1, 1, True),
        (MAX_TEMPLATE_CONTAINERS + 1, 0, False),
        (MAX_TEMPLATE_CONTAINERS, 1, False),
        (4000, 0, False),
    ],
)
def test_a_review_over_the_bound_is_admitted_unchanged_without_being_judged(
    containers: int, init_containers: int, judged: bool
) -> None:
    body = request("CREATE", template_of(containers, init_containers))
    if judged:
        admitted = review(body, lambda obj: decide(obj, [SCALE], Settings(), {}, lambda _: 0, moment=Moment.ADMISSION))
        assert admitted.skipped is None
        assert admitted.patch
    else:
        admitted = review(body, never_judged)
        assert admitted.skipped is Skip.TEMPLATE_TOO_LARGE
        assert admitted.response["response"] == {"uid": body["request"]["uid"], "allowed": True}


@pytest.mark.parametrize(
    ("containers", "too_large"), [(MAX_TEMPLATE_CONTAINERS, False), (MAX_TEMPLATE_CONTAINERS + 1, True)]
)
def test_the_reconciler_reports_a_deployment_over_the_bound_without_planning_it(
    containers: int, too_large: bool
) -> None:
    decision = decide(template_of(containers), [SCALE], Settings(), {}, lambda _: 0)
    if too_large:
        assert (decision.verdict.state, decision.verdict.reason) == (State.SKIPPED, Reason.TEMPLATE_TOO_LARGE)
        assert decision.action is Action.NONE
        assert decision.plan is None
        assert decision.intent is None
        assert decision.event is not None
        assert decision.event.warning
    else:
        assert decision.verdict.reason is not Reason.TEMPLATE_TOO_LARGE
        assert decision.plan is not None


def test_a_deployment_no_policy_selects_is_unmanaged_whatever_its_size() -> None:
    decision = decide(template_of(MAX_TEMPLATE_CONTAINERS + 1), [], Settings(), {}, lambda _: 0)
    assert decision.verdict.reason is Reason.NO_POLICY


def test_the_bound_fits_what_the_patch_of_a_judged_review_changes() -> None:
    # A review at the bound is still judged whole: every container gets its hold.
    written = template_of(MAX_TEMPLATE_CONTAINERS)
    admitted = review(
        request("CREATE", written),
        lambda obj: decide(obj, [SCALE], Settings(), {}, lambda _: 0, moment=Moment.ADMISSION),
    )
    after = jsonpatch.apply_patch(written, list(admitted.patch))
    assert all("lifecycle" in c for c in after["spec"]["template"]["spec"]["containers"])
