"""Fields lameduck wrote through a JSON patch (at admission), recorded on the Deployment itself.

A mutating webhook's changes are attributed in managedFields to the manager that sent the
request (kubectl, Argo CD, Flux), not to lameduck, so server-side apply cannot remove them
later. lameduck therefore records the paths it added or replaced in the annotation
`lameduck.dev/admitted`, treats them as its own when it plans (they are left out of the
foreign view) and removes exactly them on revert, with a JSON patch guarded by the
resourceVersion it read.

A path is a list of steps: a field name, or ["name", value] for an item of a list keyed by
name (containers, initContainers). A path names a leaf lameduck set: a value that was
absent before, or a whole list item lameduck added (its sidecar); a value lameduck replaced
(the default grace period of 30 s, a preStop taken over) is recorded with what it was, so
revert puts it back. Each entry also carries the value lameduck set: a value the writer sets
there later is the writer's, never taken for lameduck's (the API server's defaults added
inside lameduck's value, such as a container's terminationMessagePath, do not count).
Entry: {"path": [...], "set": value} or {"path": [...], "set": value, "was": value}.

The record of the values lameduck's server-side apply took from other managers
(`lameduck.dev/taken-over`, logic/takeover.py) has the same entries, each with the managedFields
the replaced value had: {..., "owners": [{"manager": m, "operation": o, "fieldsV1": {...}}]}.
"""

from __future__ import annotations

import copy
import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

import jsonpatch

from lameduck_operator.logic.intent import FieldPath
from lameduck_operator.logic.merge import REPLACED_WHOLE, is_subset, merge
from lameduck_operator.logic.ownership import FieldOwner
from lameduck_operator.names import ADMITTED_ANNOTATION

NAME_KEYED = frozenset({"containers", "initContainers"})


_ABSENT: Any = object()


@dataclass(frozen=True)
class Change:
    """One leaf lameduck set: added (was is absent) or replaced (was is the value before)."""

    path: FieldPath
    was: Any = _ABSENT
    # The value lameduck set; absent for the record's own annotation.
    set: Any = _ABSENT
    # Who owned the replaced value, in managedFields (a take-over's record only).
    owners: tuple[FieldOwner, ...] = ()

    def still_ours(self, obj: Mapping[str, Any], items: KeyedItems | None = None) -> bool:
        """Whether obj still holds the value lameduck set here (server defaults added inside it aside).

        items: one KeyedItems for every change checked against the same obj, to find list items fast.
        """
        current = _at(obj, self.path, items)
        if current is _ABSENT:
            return False
        return self.set is _ABSENT or is_subset(self.set, current, field_key(self.path))

    @property
    def replaced(self) -> bool:
        return self.was is not _ABSENT


def field_key(path: FieldPath) -> str | None:
    """The field name the value at path sits under, for the subset test's list and preStop rules."""
    last = path[-1] if path else None
    return last if isinstance(last, str) else None


def _path(raw: Any) -> FieldPath | None:
    if not isinstance(raw, list) or not raw:
        return None
    steps: list[str | tuple[str, str]] = []
    for step in raw:
        if isinstance(step, str):
            steps.append(step)
        elif isinstance(step, list) and len(step) == 2 and all(isinstance(s, str) for s in step):
            steps.append((step[0], step[1]))
        else:
            return None
    return tuple(steps)


def _owners(raw: Any) -> tuple[FieldOwner, ...]:
    """The readable owners of an entry; others are left out (an owner is only ever given fields back)."""
    found = []
    for owner in raw if isinstance(raw, list) else []:
        if not isinstance(owner, Mapping):
            continue
        manager, operation, fields = owner.get("manager"), owner.get("operation"), owner.get("fieldsV1")
        if isinstance(manager, str) and isinstance(operation, str) and isinstance(fields, Mapping):
            found.append(FieldOwner(manager, operation, fields))
    return tuple(found)


def admitted(obj: Mapping[str, Any]) -> list[Change]:
    """The changes recorded at admission (or by a JSON patch of the reconciler's)."""
    return recorded(obj, ADMITTED_ANNOTATION)


def recorded(obj: Mapping[str, Any], annotation: str) -> list[Change]:
    """The changes recorded in annotation; an unreadable record counts as none (nothing is
    removed on a guess)."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(annotation)
    if not raw:
        return []
    try:
        decoded = json.loads(raw)
    except (ValueError, TypeError, RecursionError):  # not JSON, not text, or nested too deep to decode
        return []
    found: list[Change] = []
    for entry in decoded if isinstance(decoded, list) else []:
        if not isinstance(entry, Mapping):
            continue
        path = _path(entry.get("path"))
        if path is not None:
            found.append(
                Change(path, entry.get("was", _ABSENT), entry.get("set", _ABSENT), _owners(entry.get("owners")))
            )
    return found


def admitted_paths(obj: Mapping[str, Any]) -> list[FieldPath]:
    return [change.path for change in admitted(obj)]


def _steps(path: FieldPath) -> list[Any]:
    return [s if isinstance(s, str) else list(s) for s in path]


def encode(changes: Sequence[Change]) -> str:
    """A record's annotation value."""
    entries = []
    for change in changes:
        entry: dict[str, Any] = {"path": _steps(change.path)}
        if change.set is not _ABSENT:
            entry["set"] = change.set
        if change.replaced:
            entry["was"] = change.was
        if change.owners:
            entry["owners"] = [
                {"manager": o.manager, "operation": o.operation, "fieldsV1": o.fields} for o in change.owners
            ]
        entries.append(entry)
    return json.dumps(entries, separators=(",", ":"))


class KeyedItems:
    """Finds the first item of a list whose field `key` is a given name, in constant time.

    Scanning the list at every step made a walk over one path per container quadratic in the
    container count. Each list is indexed once, on first use, by the positions of its items
    under each name. Items removed while walking are only marked (the positions of the others
    stay valid) until `compact` drops them, so any number of removals costs one pass.
    """

    def __init__(self) -> None:
        # Keyed by id(); the list is kept so that its id is never reused meanwhile.
        self._lists: dict[int, list[Any]] = {}
        self._positions: dict[tuple[int, str], dict[str, deque[int]]] = {}
        self._removed: dict[int, set[int]] = {}

    def find(self, items: list[Any], key: str, name: str) -> int | None:
        """The position of the first item still there whose `key` equals name, or None."""
        lid = id(items)
        self._lists[lid] = items
        index = self._positions.get((lid, key))
        if index is None:
            index = {}
            for position, item in enumerate(items):
                # Only a string equals a name: other values need no place in the index.
                value = item.get(key) if isinstance(item, Mapping) else None
                if isinstance(value, str):
                    index.setdefault(value, deque()).append(position)
            self._positions[(lid, key)] = index
        positions = index.get(name)
        removed = self._removed.get(lid, set())
        while positions and positions[0] in removed:
            positions.popleft()
        return positions[0] if positions else None

    def remove(self, items: list[Any], position: int) -> None:
        self._lists[id(items)] = items
        self._removed.setdefault(id(items), set()).add(position)

    def is_empty(self, value: Any) -> bool:
        """Whether value is an empty map, or a list all of whose items were removed."""
        if isinstance(value, list):
            return len(value) == len(self._removed.get(id(value), ()))
        return bool(value == {})

    def compact(self) -> None:
        """Drop the removed items from their lists."""
        for lid, removed in self._removed.items():
            items = self._lists[lid]
            items[:] = [item for position, item in enumerate(items) if position not in removed]
        self._removed.clear()
        self._positions.clear()
        self._lists.clear()


def _at(node: Any, path: FieldPath, items: KeyedItems | None = None) -> Any:
    """The value at path, or _ABSENT. Pass one KeyedItems to many calls over the same object."""
    finder = items if items is not None else KeyedItems()
    for step in path:
        if isinstance(step, tuple):
            key, value = step
            position = finder.find(node, key, value) if isinstance(node, list) else None
            node = _ABSENT if position is None else node[position]
        else:
            node = node.get(step, _ABSENT) if isinstance(node, Mapping) else _ABSENT
        if node is _ABSENT:
            return _ABSENT
    return node


def value_at(obj: Mapping[str, Any], path: FieldPath) -> Any:
    """The value at path; None when there is none."""
    found = _at(obj, path)
    return None if found is _ABSENT else found


def with_values(
    obj: Mapping[str, Any], values: Sequence[tuple[FieldPath, Any]], *, make_items: bool = True
) -> dict[str, Any]:
    """A copy of obj with each value put at its path, the maps on the way made where missing, and
    the named list items too unless make_items is False (then a value whose item is missing is
    left out)."""
    out: dict[str, Any] = copy.deepcopy(dict(obj))
    for path, value in values:
        _put(out, path, value, make_items)
    return out


def _put(node: Any, path: FieldPath, value: Any, make_items: bool) -> None:
    for position, step in enumerate(path[:-1]):
        if isinstance(step, tuple):
            if not isinstance(node, list):
                return
            key, name = step
            # A scan: a few values each time, and an item appended must be found by the next one.
            found = next((item for item in node if isinstance(item, dict) and item.get(key) == name), None)
            if found is None and not make_items:
                return
            if found is None:
                found = {key: name}
                node.append(found)
            node = found
        elif isinstance(node, dict):
            if not isinstance(node.get(step), dict | list):
                node[step] = [] if isinstance(path[position + 1], tuple) else {}
            node = node[step]
        else:
            return
    last = path[-1]
    if isinstance(last, str) and isinstance(node, dict):
        node[last] = copy.deepcopy(value)


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    """What turned before into after, leaf by leaf, with the values it replaced."""
    found = []
    in_before, in_after = KeyedItems(), KeyedItems()
    for path in added_paths(before, after):
        was = _at(before, path, in_before)
        value = _at(after, path, in_after)
        if value is _ABSENT:
            # An item of a keyed list without a name (the API server rejects it, but only after
            # admission): no leaf lameduck set, and no path it could find again.
            continue
        value = copy.deepcopy(value)
        replaced = was is not _ABSENT and was is not None
        found.append(Change(path, copy.deepcopy(was), value) if replaced else Change(path, set=value))
    return found


def added_paths(before: Any, after: Any, path: FieldPath = ()) -> list[FieldPath]:
    """The leaves of after that before lacks or holds with another value."""
    if before == after:
        return []
    if isinstance(after, Mapping) and path and path[-1] in REPLACED_WHOLE:
        return [path]
    if isinstance(after, Mapping):
        old = before if isinstance(before, Mapping) else {}
        found: list[FieldPath] = []
        for key, value in after.items():
            found.extend(added_paths(old.get(key), value, (*path, key)))
        return found
    if isinstance(after, list) and path and path[-1] in NAME_KEYED:
        # Item by item even into a new list: a container added later by its owner is not ours.
        by_name = {item.get("name"): item for item in before or [] if isinstance(item, Mapping)}
        found = []
        for item in after:
            name = str(item.get("name"))
            step = (*path, ("name", name))
            found.extend([step] if name not in by_name else added_paths(by_name[name], item, step))
        return found
    return [path]


def _remove(node: Any, path: FieldPath, items: KeyedItems) -> bool:
    """Remove the leaf at path; prune maps and lists the removal leaves empty. True if anything went.

    A list item removed is only marked in items: items.compact() drops it.
    """
    if not path or not isinstance(node, dict | list):
        return False
    step, rest = path[0], path[1:]
    if isinstance(step, tuple):
        if not isinstance(node, list):
            return False
        index = items.find(node, step[0], step[1])
        if index is None:
            return False
        if not rest:
            items.remove(node, index)
            return True
        return _remove(node[index], rest, items)
    if not isinstance(node, dict) or step not in node:
        return False
    if not rest:
        del node[step]
        return True
    removed = _remove(node[step], rest, items)
    if removed and items.is_empty(node[step]):
        # The API server stores an empty map or list as none: leave none behind either.
        del node[step]
    return removed


def _set(node: Any, path: FieldPath, value: Any, items: KeyedItems) -> None:
    """Put value at path, making the maps on the way; a missing list item is left missing."""
    for step in path[:-1]:
        if isinstance(step, tuple):
            node = _at(node, (step,), items)
            if node is _ABSENT:
                return
        elif isinstance(node, dict):
            node = node.setdefault(step, {})
        else:
            return
    last = path[-1]
    if isinstance(last, str) and isinstance(node, dict):
        node[last] = copy.deepcopy(value)


def restore(obj: Mapping[str, Any], recorded: Sequence[Change]) -> dict[str, Any]:
    """A copy of obj as it was before the recorded changes: added leaves removed, replaced ones put back.

    A leaf whose value is no longer the one lameduck set belongs to whoever changed it: kept.
    """
    out: dict[str, Any] = copy.deepcopy(dict(obj))
    in_obj, in_out = KeyedItems(), KeyedItems()
    for change in recorded:
        if not change.still_ours(obj, in_obj):
            continue
        if change.replaced:
            _set(out, change.path, change.was, in_out)
        else:
            _remove(out, change.path, in_out)
    in_out.compact()
    return out


def strip(obj: Mapping[str, Any], paths: Sequence[FieldPath]) -> dict[str, Any]:
    """A copy of obj without the fields at paths."""
    out: dict[str, Any] = copy.deepcopy(dict(obj))
    in_out = KeyedItems()
    for path in paths:
        _remove(out, path, in_out)
    in_out.compact()
    return out


def reverted(obj: Mapping[str, Any]) -> dict[str, Any]:
    """obj as it was before lameduck's recorded changes, without the record itself."""
    out = restore(obj, admitted(obj))
    # restore's copy is new: the record is removed from it in place rather than copied again.
    in_out = KeyedItems()
    _remove(out, ("metadata", "annotations", ADMITTED_ANNOTATION), in_out)
    in_out.compact()
    return out


# What one entry of the record adds to its path and values: {"path":,"set":,"was":} and a comma.
_ENTRY_OVERHEAD = len('{"path":,"set":,"was":},')
# What a step into a list item by name adds to a path, around the name: ["name",] and a comma.
_ITEM_STEP = len('["name",],')
_RECORD_PATH: FieldPath = ("metadata", "annotations", ADMITTED_ANNOTATION)
# One encoder for every value measured: json.dumps with separators builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _length(value: Any) -> int:
    """The length of value as _encode writes it inside the record."""
    if isinstance(value, str):
        return len(encode_basestring_ascii(value))
    return len(_ENCODER.encode(value))


def record_bound(base: Mapping[str, Any], intent: Mapping[str, Any]) -> int:
    """At least the length of the record `injected` writes when it merges intent into base (a
    Deployment without lameduck's admitted fields: `reverted`), found without copying either.

    The record lists the leaves added_paths finds where the merge differs from base. Each lies on
    a leaf of the intent walked alongside base by the same rules (a container base has no item
    of, a preStop handler, a value that is no map to go into); where base already holds the
    intent's value there is none. What an entry sets is at most the intent's value there and
    base's together (a keyed list merged), and what it replaced is base's: the leaves of either
    are disjoint parts of it, so all of them together are no longer than the whole intent, or
    than a list of base's values at those leaves, as JSON (each encoded once: a value at a time
    took as long as the rest of the decision).
    """
    paths: list[int] = []  # the length of each leaf's path
    befores: list[Any] = []  # base's value at each leaf that has one

    def walk(value: Any, before: Any, path_length: int, key: str | None) -> None:
        if before is not _ABSENT and before == value:
            return  # the merge leaves it as it was: no entry
        if isinstance(value, list) and key in NAME_KEYED:
            by_name = (
                {str(item.get("name")): item for item in before if isinstance(item, Mapping)}
                if isinstance(before, list)
                else {}
            )
            for item in value:
                name = str(item.get("name")) if isinstance(item, Mapping) else str(None)
                inside = by_name.get(name, _ABSENT)
                step = path_length + _ITEM_STEP + _length(name)
                if inside is _ABSENT:
                    paths.append(step)  # an item base lacks is one leaf, whole
                else:
                    walk(item, inside, step, None)
            return
        # type() first: a parsed Deployment's maps are dicts, and the ABC's check is slow.
        if not (type(value) is dict or isinstance(value, Mapping)) or not value or key in REPLACED_WHOLE:
            paths.append(path_length)
            if before is not _ABSENT:
                befores.append(before)
            return
        old = before if type(before) is dict or isinstance(before, Mapping) else {}
        for k, v in value.items():
            walk(v, old.get(k, _ABSENT), path_length + _length(k) + 1, k)

    walk(intent, base, 2, None)
    # The brackets around the entries; the record's own entry.
    own = _ENTRY_OVERHEAD + _length(_steps(_RECORD_PATH))
    entries = sum(_ENTRY_OVERHEAD + path for path in paths)
    return 2 + own + entries + _length(intent) + 2 * _length(befores)


def injected(obj: Mapping[str, Any], intent: Mapping[str, Any]) -> dict[str, Any]:
    """obj with the intent merged in place of what lameduck admitted earlier, and the new record.

    Earlier admitted fields go first, so a change of intent (a sidecar hold become a sleep)
    leaves nothing of the old one behind.
    """
    base = reverted(obj)
    merged = merge(base, intent)
    found = changes(base, merged)
    if not found:
        return merged
    record = [*found, Change(_RECORD_PATH)]
    annotations = merged.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[ADMITTED_ANNOTATION] = encode(record)
    return merged


def json_patch(before: Mapping[str, Any], after: Mapping[str, Any], *, guard: bool = False) -> list[dict[str, Any]]:
    """RFC 6902 operations from before to after; with guard, first a test of before's resourceVersion,
    so the patch fails rather than land on a Deployment changed since it was read."""
    ops: list[dict[str, Any]] = list(jsonpatch.make_patch(dict(before), dict(after)).patch)
    version = (before.get("metadata") or {}).get("resourceVersion")
    if guard and ops and version:
        ops.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": version})
    return ops
