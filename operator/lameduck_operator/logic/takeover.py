"""Values of other managers that lameduck's server-side apply replaces (`onConflict: TakeOver`),
recorded so that they go back to whoever had them.

A forced apply moves a field's ownership to lameduck, and lameduck's next apply without the
field (the revert's, or one whose intent no longer sets it) would remove it rather than give the
value back. So each such value is recorded in the annotation `lameduck.dev/taken-over`, which
every apply of lameduck's carries: the entries of logic/admitted.py (the path, the value lameduck
set, the value it replaced), each with the managedFields the other managers had there. The apply
that stops setting such a value puts the old one back itself, in the same write as the rest of
its changes (one template change, one rollout), and a JSON patch after it gives the owners their
managedFields there back; on revert that patch also drops lameduck's entries and the record.

The record is not lameduck.dev/admitted: those fields were written by JSON patch and are owned by
nobody, so they are reverted by JSON patch, while these are lameduck's by apply and are reverted
by its apply. One annotation for both would send every apply of a taken-over Deployment down the
JSON-patch path, whose writes lameduck's apply entry does not own.

A preStop hook of another handler kind cannot be replaced by an apply (both handlers would stay,
which the API server rejects): a JSON patch as lameduck-takeover writes the intent with its record
first, and the apply then owns what that wrote (the adapter removes lameduck-takeover's entry).
When that apply does not go through, lameduck-takeover's entry is left owning lameduck's fields:
lameduck's next write, apply or revert, first makes them its apply entry's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from lameduck_operator.logic.admitted import Change, encode, field_key, json_patch, recorded, value_at, with_values
from lameduck_operator.logic.intent import FieldPath
from lameduck_operator.logic.merge import is_subset, merge
from lameduck_operator.logic.ownership import REMOVE, Ownership, entries_patch, grafted, merge_trees, pruned
from lameduck_operator.names import FIELD_MANAGER, TAKEN_OVER_ANNOTATION, TAKEOVER_MANAGER

RECORD_PATH: FieldPath = ("metadata", "annotations", TAKEN_OVER_ANNOTATION)
PRESTOP = "preStop"


def taken_over(obj: Mapping[str, Any]) -> list[Change]:
    """The recorded take-overs, held or not."""
    return recorded(obj, TAKEN_OVER_ANNOTATION)


def _holds(change: Change, obj: Mapping[str, Any], ownership: Ownership) -> bool:
    if change.still_ours(obj):
        return True
    # Put back by lameduck's apply, whose entry still owns it: its owners are yet to get it back.
    current = value_at(obj, change.path)
    return (
        change.replaced
        and current is not None
        and is_subset(change.was, current, field_key(change.path))
        and ownership.ours_at(change.path)
    )


def held(obj: Mapping[str, Any], ownership: Ownership) -> list[Change]:
    """The recorded values lameduck still holds: where obj has the value lameduck set, or the value
    it put back while lameduck's apply still owns it (ownership: obj's)."""
    return [change for change in taken_over(obj) if _holds(change, obj, ownership)]


def as_written(view: Mapping[str, Any], obj: Mapping[str, Any], ownership: Ownership) -> Mapping[str, Any]:
    """view (obj as the other managers set it) with the values lameduck holds in place of theirs
    put back (where the view has their container); view itself when it holds none."""
    found = held(obj, ownership)
    if not found:
        return view
    return with_values(view, [(change.path, change.was) for change in found], make_items=False)


@dataclass(frozen=True)
class ServerSideWrite:
    """One server-side write of lameduck's, as decided; the adapter sends it in this order."""

    # A JSON patch as lameduck-takeover before the apply; empty when no hook of another kind is in the way.
    take_over: list[dict[str, Any]]
    # What lameduck applies, forced: the intent, the values it puts back, and the record.
    intent: dict[str, Any]
    # The values the apply puts back: their owners get them back after it (hand_back_patch).
    handed_back: tuple[Change, ...]


def server_side_write(
    deployment: Mapping[str, Any], intent: Mapping[str, Any], replaced: Sequence[FieldPath]
) -> ServerSideWrite:
    """How lameduck applies intent to deployment (as last read), taking the other managers' values
    at the paths `replaced` (the plan's under TakeOver; none for a revert, whose intent sets
    nothing): every recorded value it holds at another path is put back."""
    ownership = Ownership.of(deployment)
    holding = {change.path: change for change in held(deployment, ownership)}
    record: list[Change] = []
    for path in replaced:
        value = value_at(intent, path)
        if value is None:
            continue
        kept = holding.pop(path, None)
        if kept is not None:
            # Taken earlier: what it replaced, and whose it was, stay as first recorded.
            record.append(replace(kept, set=copy.deepcopy(value)))
            continue
        was = value_at(deployment, path)
        if was is not None:
            owners = ownership.owners_at(path, excluded=(TAKEOVER_MANAGER,))
            record.append(Change(path, copy.deepcopy(was), copy.deepcopy(value), owners))
    handed_back = tuple(holding.values())
    # Recorded until their owners have them back: a failed write in between loses nothing.
    record.extend(handed_back)
    # A copy only when something goes into it: the intent as decided is not changed after.
    applied = dict(intent)
    if handed_back:
        applied = with_values(intent, [(change.path, change.was) for change in handed_back])
    if record:
        applied = with_values(applied, [(RECORD_PATH, encode(record))])
    hooks = [
        path
        for path in replaced
        if path[-1] == PRESTOP and not is_subset(value_at(intent, path), value_at(deployment, path), PRESTOP)
    ]
    return ServerSideWrite(_take_over_patch(deployment, applied) if hooks else [], applied, handed_back)


def _take_over_patch(deployment: Mapping[str, Any], applied: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch that writes applied onto deployment. Guarded by the generation read, which
    every change of the spec raises (the patch's paths count list positions, and what it replaces
    is recorded as it was read), rather than the resourceVersion, which the deployment
    controller's status writes raise as well."""
    generation = (deployment.get("metadata") or {}).get("generation")
    ops = json_patch(deployment, merge(deployment, applied), guard=generation is None)
    if generation is not None:
        ops.insert(0, {"op": "test", "path": "/metadata/generation", "value": generation})
    return ops


def _pointer(*steps: str) -> str:
    return "/" + "/".join(step.replace("~", "~0").replace("/", "~1") for step in steps)


def hand_back_patch(stored: Mapping[str, Any], handed_back: Sequence[Change], *, leaving: bool) -> list[dict[str, Any]]:
    """JSON patch operations for after the apply that put handed_back's values back (stored: its
    answer): each value's recorded owners own it again, and lameduck's apply entry no longer does;
    leaving (a revert), all of lameduck's entries go, and the record. Only main-resource entries
    are touched, each guarded by a test of who it is; none when nothing was handed back."""
    if not handed_back:
        return []

    def wanted_of(entry: Mapping[str, Any]) -> Any:
        manager, operation = entry.get("manager"), entry.get("operation")
        fields: Mapping[str, Any] = entry.get("fieldsV1") or {}
        wanted: Mapping[str, Any] = fields
        if manager == FIELD_MANAGER and leaving:
            wanted = {}
        elif manager == FIELD_MANAGER and operation == "Apply":
            for change in handed_back:
                wanted = pruned(wanted, change.path)
        else:
            for change in handed_back:
                for owner in change.owners:
                    if (owner.manager, owner.operation) == (manager, operation):
                        wanted = grafted(wanted, change.path, owner.fields)
        if wanted == fields:
            return entry.get("fieldsV1")
        return wanted if wanted else REMOVE

    ops = entries_patch(stored, wanted_of)
    meta = stored.get("metadata") or {}
    if leaving and TAKEN_OVER_ANNOTATION in (meta.get("annotations") or {}):
        ops.append({"op": "remove", "path": _pointer("metadata", "annotations", TAKEN_OVER_ANNOTATION)})
    return ops


def adoption_patch(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """JSON patch operations that give lameduck's apply entry what lameduck-takeover's entries own
    (left by a take-over whose apply did not go through), so that lameduck's next apply, or its
    revert, owns and releases those fields like the rest of its own; none when there is no such
    entry. Each entry touched is guarded by a test of who it is."""
    entries = list((obj.get("metadata") or {}).get("managedFields") or [])
    leftover = [i for i, e in enumerate(entries) if e.get("manager") == TAKEOVER_MANAGER and not e.get("subresource")]
    if not leftover:
        return []
    ours = next(
        (
            i
            for i, e in enumerate(entries)
            if (e.get("manager"), e.get("operation")) == (FIELD_MANAGER, "Apply") and not e.get("subresource")
        ),
        None,
    )
    # Into lameduck's apply entry, or the first leftover one made lameduck's apply entry.
    into = leftover.pop(0) if ours is None else ours
    trees = [entries[i].get("fieldsV1") or {} for i in (into, *leftover)]
    path = f"/metadata/managedFields/{into}"
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": f"{path}/manager", "value": entries[into].get("manager")},
        *({"op": "test", "path": f"/metadata/managedFields/{i}/manager", "value": TAKEOVER_MANAGER} for i in leftover),
        {"op": "replace", "path": f"{path}/fieldsV1", "value": merge_trees(trees)},
    ]
    if ours is None:
        ops.append({"op": "replace", "path": f"{path}/manager", "value": FIELD_MANAGER})
        ops.append({"op": "replace", "path": f"{path}/operation", "value": "Apply"})
    ops.extend({"op": "remove", "path": f"/metadata/managedFields/{i}"} for i in reversed(leftover))
    return ops
