"""Who set what: reading server-side-apply managedFields (FieldsV1) of a stored object.

lameduck plans against the "foreign view" of a Deployment: only the fields some other
manager owns. Fields only lameduck owns, and server defaults nobody owns, are left out, so
lameduck's own earlier values never look like someone else's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lameduck_operator.names import FIELD_MANAGER

FieldsTree = Mapping[str, Any]


def _entries(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """managedFields entries of the main resource (status and scale are other subresources)."""
    meta = obj.get("metadata") or {}
    return [e for e in meta.get("managedFields") or [] if not e.get("subresource")]


def managed_by(obj: Mapping[str, Any], manager: str = FIELD_MANAGER, operation: str | None = None) -> bool:
    return any(
        e.get("manager") == manager and (operation is None or e.get("operation") == operation) for e in _entries(obj)
    )


def merge_trees(trees: list[FieldsTree]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for tree in trees:
        for key, sub in tree.items():
            merged[key] = merge_trees([merged.get(key) or {}, sub or {}])
    return merged


def _item_matches(selector: str, item: Any) -> bool:
    kind, _, raw = selector.partition(":")
    try:
        wanted = json.loads(raw)
    except ValueError:
        return False
    if kind == "k":
        return isinstance(item, Mapping) and all(item.get(k) == v for k, v in wanted.items())
    return bool(kind == "v" and item == wanted)


def restrict(value: Any, tree: FieldsTree) -> Any:
    """The parts of value that tree names; a leaf node (no children) keeps the whole value."""
    children = {k: v for k, v in tree.items() if k != "."}
    if not children:
        return value
    if isinstance(value, Mapping):
        kept = {}
        for key, sub_value in value.items():
            sub_tree = tree.get(f"f:{key}")
            if sub_tree is not None:
                kept[key] = restrict(sub_value, sub_tree)
        return kept
    if isinstance(value, list):
        items = []
        for index, item in enumerate(value):
            match = next((t for s, t in children.items() if _item_matches(s, item)), None)
            if match is None:
                match = children.get(f"i:{index}")
            if match is not None:
                items.append(restrict(item, match))
        return items
    return value


def foreign_view(obj: Mapping[str, Any], manager: str = FIELD_MANAGER) -> dict[str, Any]:
    """The object as the other managers set it.

    Objects without managedFields (manifests, very old objects) are taken whole.
    """
    entries = _entries(obj)
    if not entries:
        return dict(obj)
    others = [e.get("fieldsV1") or {} for e in entries if e.get("manager") != manager]
    view = restrict(obj, merge_trees(others))
    meta = obj.get("metadata") or {}
    # Identity is needed to plan whatever anyone owns.
    view["metadata"] = {
        **(view.get("metadata") or {}),
        **{k: meta[k] for k in ("name", "namespace", "uid") if k in meta},
    }
    view.setdefault("apiVersion", obj.get("apiVersion"))
    view.setdefault("kind", obj.get("kind"))
    return dict(view)


WriteTimes = Mapping[tuple[str, str], str]


def write_times(obj: Mapping[str, Any], manager: str = FIELD_MANAGER) -> dict[tuple[str, str], str]:
    """When each other manager last wrote the main resource, by (manager, operation): what
    changed_managers compares, small enough to keep per Deployment instead of its body."""
    return {
        (str(e.get("manager")), str(e.get("operation"))): str(e.get("time", ""))
        for e in _entries(obj)
        if e.get("manager") != manager
    }


def managers_since(before: WriteTimes, current: Mapping[str, Any], manager: str = FIELD_MANAGER) -> list[str]:
    """Other managers that wrote since `before` (write_times of an earlier observation): a new
    entry or a newer time. (An entry whose fields merely shrank lost them to someone else; it
    wrote nothing.)"""
    after = write_times(current, manager)
    return sorted({name for (name, op), when in after.items() if (name, op) not in before or when > before[(name, op)]})


def changed_managers(
    previous: Mapping[str, Any], current: Mapping[str, Any], manager: str = FIELD_MANAGER
) -> list[str]:
    """Other managers that wrote between two observations (see managers_since)."""
    return managers_since(write_times(previous, manager), current, manager)


def latest_other_manager(obj: Mapping[str, Any], manager: str = FIELD_MANAGER) -> str | None:
    """The other manager that wrote after lameduck last did: the likeliest author of a change.

    None when no other manager's entry is newer: a client that only removed fields owns
    nothing afterwards and leaves no entry (the API audit log knows more).
    """
    entries = _entries(obj)
    ours = max((str(e.get("time", "")) for e in entries if e.get("manager") == manager), default="")
    newer = [e for e in entries if e.get("manager") != manager and str(e.get("time", "")) > ours]
    if not newer:
        return None
    return str(max(newer, key=lambda e: str(e.get("time", ""))).get("manager"))


def _child(tree: FieldsTree, step: str | tuple[str, str]) -> FieldsTree | None:
    if isinstance(step, str):
        found = tree.get(f"f:{step}")
        return None if found is None else dict(found)
    key, value = step
    for selector, sub in tree.items():
        if selector.startswith("k:") and _item_matches(selector, {key: value}):
            return dict(sub)
    return None


def owners(obj: Mapping[str, Any], path: tuple[str | tuple[str, str], ...], manager: str = FIELD_MANAGER) -> list[str]:
    """Other managers owning the field at path, or anything below it."""
    found = []
    for entry in _entries(obj):
        if entry.get("manager") == manager:
            continue
        node: FieldsTree | None = entry.get("fieldsV1") or {}
        for step in path:
            node = _child(node, step) if node is not None else None
        if node is not None:
            found.append(str(entry.get("manager")))
    return sorted(set(found))


def ownership_restore_patch(
    before: Mapping[str, Any], stored: Mapping[str, Any], manager: str = FIELD_MANAGER
) -> list[dict[str, Any]]:
    """JSON patch operations that give the writers back their managedFields entries as they stood
    before lameduck put back the values it had replaced, and drop lameduck's Update entry.

    Admission changes are attributed to nobody, so the writers' entries before the revert are
    their entries as they wrote them; putting a replaced value back hands it to lameduck's
    Update entry. Only main-resource entries are touched, each guarded by a test of who it is,
    so a status write in between (the controller's) does not get in the way.
    """
    wanted = {
        (e.get("manager"), e.get("operation")): e.get("fieldsV1")
        for e in _entries(before)
        if e.get("manager") != manager
    }
    tests: list[dict[str, Any]] = []
    replaces: list[dict[str, Any]] = []
    removals: list[dict[str, Any]] = []
    for index, entry in enumerate((stored.get("metadata") or {}).get("managedFields") or []):
        if entry.get("subresource"):
            continue
        key = (entry.get("manager"), entry.get("operation"))
        path = f"/metadata/managedFields/{index}"
        if key == (manager, "Update"):
            tests.append({"op": "test", "path": f"{path}/manager", "value": manager})
            removals.insert(0, {"op": "remove", "path": path})
        elif key in wanted and entry.get("fieldsV1") != wanted[key]:
            tests.append({"op": "test", "path": f"{path}/manager", "value": entry.get("manager")})
            replaces.append({"op": "replace", "path": f"{path}/fieldsV1", "value": wanted[key]})
    return [*tests, *replaces, *removals] if removals or replaces else []
