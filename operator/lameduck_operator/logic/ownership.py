"""Who set what: reading server-side-apply managedFields (FieldsV1) of a stored object.

lameduck plans against the "foreign view" of a Deployment: only the fields some other
manager owns. Fields only lameduck owns, and server defaults nobody owns, are left out, so
lameduck's own earlier values never look like someone else's.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lameduck_operator.logic.intent import FieldPath
from lameduck_operator.names import FIELD_MANAGER

FieldsTree = Mapping[str, Any]


def _entries(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """managedFields entries of the main resource (status and scale are other subresources)."""
    meta = obj.get("metadata") or {}
    return [e for e in meta.get("managedFields") or [] if not e.get("subresource")]


def merge_trees(trees: list[FieldsTree]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for tree in trees:
        _merge_tree_into(merged, tree)
    return merged


def _merge_tree_into(merged: dict[str, Any], tree: FieldsTree) -> None:
    # In place: merging each tree into a fresh copy of all the trees before it made the cost
    # grow with the product of the managers and the tree's size.
    for key, sub in tree.items():
        node = merged.get(key)
        if not isinstance(node, dict):
            node = merged[key] = {}
        _merge_tree_into(node, sub or {})


def _item_matches(selector: str, item: Any) -> bool:
    kind, _, raw = selector.partition(":")
    try:
        wanted = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to decode: matches nothing
        return False
    if kind == "k":
        return (
            isinstance(item, Mapping)
            and isinstance(wanted, Mapping)
            and all(item.get(k) == v for k, v in wanted.items())
        )
    return bool(kind == "v" and item == wanted)


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a JSON value, equal to another's exactly when the values are equal (==)."""
    if isinstance(value, Mapping):
        return (_MAP, frozenset((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return (_LIST, tuple(_frozen(v) for v in value))
    return value


_MAP, _LIST = object(), object()


class Selectors:
    """The item selectors of one FieldsV1 node (k:{...} by key fields, v:... by value), indexed by
    what they select, to find the first one an item matches without trying each in turn (which
    made matching a list's items to a node quadratic in the list's length)."""

    def __init__(self, node: FieldsTree, kinds: tuple[str, ...] = ("k", "v")) -> None:
        self.node = node
        self._subtrees: list[Any] = []
        # For k: selectors, by their sorted key names, then by the values they require.
        self._by_keys: dict[tuple[str, ...], dict[Any, int]] = {}
        self._by_value: dict[Any, int] = {}
        # Selectors whose values cannot be hashed: tried one by one (never from the API server).
        self._unindexed: list[tuple[int, str]] = []
        self._kinds = kinds
        for position, (selector, subtree) in enumerate(node.items()):
            self._subtrees.append(subtree)
            kind, _, raw = selector.partition(":")
            if kind not in kinds:
                continue
            try:
                wanted = json.loads(raw)
            except (ValueError, RecursionError):  # not JSON, or nested too deep to decode: matches nothing
                continue
            try:
                if kind == "k" and isinstance(wanted, Mapping):
                    keys = tuple(sorted(wanted))
                    values = tuple(_frozen(wanted[k]) for k in keys)
                    self._by_keys.setdefault(keys, {}).setdefault(values, position)
                elif kind == "v":
                    self._by_value.setdefault(_frozen(wanted), position)
                elif kind == "k":
                    self._unindexed.append((position, selector))
            except TypeError:
                self._unindexed.append((position, selector))
            except RecursionError:  # too deep to index, so too deep to compare: matches nothing
                continue

    def match(self, item: Any) -> Any:
        """The subtree of the first selector that item matches, or None."""
        found: list[int] = []
        try:
            if isinstance(item, Mapping):
                for keys, table in self._by_keys.items():
                    position = table.get(tuple(_frozen(item.get(k)) for k in keys))
                    if position is not None:
                        found.append(position)
            if self._by_value:
                position = self._by_value.get(_frozen(item))
                if position is not None:
                    found.append(position)
        except TypeError:
            # An item no hash can stand for: the definition, selector by selector.
            return next(
                (t for s, t in self.node.items() if s.partition(":")[0] in self._kinds and _item_matches(s, item)),
                None,
            )
        found.extend(position for position, selector in self._unindexed if _item_matches(selector, item))
        return self._subtrees[min(found)] if found else None


def restrict(value: Any, tree: FieldsTree) -> Any:
    """The parts of value that tree names; a leaf node (no children) keeps the whole value."""
    if not tree or (len(tree) == 1 and "." in tree):
        return value
    if isinstance(value, dict | Mapping):
        kept = {}
        for key, sub_value in value.items():
            sub_tree = tree.get(f"f:{key}")
            if sub_tree is not None:
                kept[key] = restrict(sub_value, sub_tree)
        return kept
    if isinstance(value, list):
        items = []
        children = {k: v for k, v in tree.items() if k != "."}
        selectors = Selectors(children)
        for index, item in enumerate(value):
            match = selectors.match(item)
            if match is None:
                match = children.get(f"i:{index}")
            if match is not None:
                items.append(restrict(item, match))
        return items
    return value


def _new_key(step: str | tuple[str, str]) -> str:
    """The FieldsV1 key the API server writes for a step: f:name, or k:{"name":"app"} for a keyed item."""
    if isinstance(step, str):
        return f"f:{step}"
    key, value = step
    return "k:" + json.dumps({key: value}, separators=(",", ":"))


def _child_key(tree: FieldsTree, step: str | tuple[str, str]) -> str | None:
    """The key of tree's child at step, if it has one."""
    if isinstance(step, str):
        key = f"f:{step}"
        return key if isinstance(tree.get(key), Mapping) else None
    item = {step[0]: step[1]}
    return next(
        (k for k, sub in tree.items() if k.startswith("k:") and isinstance(sub, Mapping) and _item_matches(k, item)),
        None,
    )


def subtree(tree: FieldsTree, path: FieldPath) -> FieldsTree | None:
    """The node of tree at path (a field's path in the object), or None when tree names nothing there."""
    node = tree
    for step in path:
        key = _child_key(node, step)
        if key is None:
            return None
        node = node[key]
    return node


def grafted(tree: FieldsTree, path: FieldPath, sub: FieldsTree) -> dict[str, Any]:
    """A copy of tree with sub merged in at path (the nodes on the way made where missing)."""
    out: dict[str, Any] = copy.deepcopy(dict(tree))
    node = out
    for step in path:
        key = _child_key(node, step) or _new_key(step)
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    _merge_tree_into(node, sub)
    return out


def pruned(tree: FieldsTree, path: FieldPath) -> dict[str, Any]:
    """A copy of tree without its node at path, nor the nodes that leaves empty."""
    out: dict[str, Any] = copy.deepcopy(dict(tree))
    trail: list[tuple[dict[str, Any], str]] = []
    node = out
    for step in path:
        key = _child_key(node, step)
        if key is None:
            return out
        trail.append((node, key))
        node = node[key]
    # The node goes, then each node above that it leaves empty (the tree itself stays).
    for parent, key in reversed(trail):
        del parent[key]
        if parent:
            break
    return out


@dataclass(frozen=True)
class FieldOwner:
    """One managedFields entry's part of a field: its FieldsV1 node at the field's path, as it stood."""

    manager: str
    operation: str
    fields: FieldsTree


@dataclass(frozen=True)
class Ownership:
    """One object's main-resource managedFields, read once: lameduck's entries and the others'.
    A decision asks it everything it needs (does lameduck manage it, the foreign view, who owns
    a field, who wrote last), so managedFields are parsed once per decision."""

    ours: tuple[Mapping[str, Any], ...]
    others: tuple[Mapping[str, Any], ...]

    @classmethod
    def of(cls, obj: Mapping[str, Any], manager: str = FIELD_MANAGER) -> Ownership:
        entries = _entries(obj)
        return cls(
            tuple(e for e in entries if e.get("manager") == manager),
            tuple(e for e in entries if e.get("manager") != manager),
        )

    def managed(self, operation: str | None = None) -> bool:
        """Whether lameduck has an entry (of that operation)."""
        return any(operation is None or e.get("operation") == operation for e in self.ours)

    def foreign_view(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The object as the other managers set it. Objects without managedFields (manifests,
        very old objects) are taken whole."""
        if not self.ours and not self.others:
            return dict(obj)
        view = restrict(obj, merge_trees([e.get("fieldsV1") or {} for e in self.others]))
        meta = obj.get("metadata") or {}
        # Identity is needed to plan whatever anyone owns.
        view["metadata"] = {
            **(view.get("metadata") or {}),
            **{k: meta[k] for k in ("name", "namespace", "uid") if k in meta},
        }
        view.setdefault("apiVersion", obj.get("apiVersion"))
        view.setdefault("kind", obj.get("kind"))
        return dict(view)

    def owners_at(self, path: FieldPath, excluded: tuple[str, ...] = ()) -> tuple[FieldOwner, ...]:
        """What each other manager (those in excluded aside) owns of the field at path."""
        found = []
        for entry in self.others:
            manager = str(entry.get("manager"))
            node = None if manager in excluded else subtree(entry.get("fieldsV1") or {}, path)
            if node is not None:
                found.append(FieldOwner(manager, str(entry.get("operation")), copy.deepcopy(dict(node))))
        return tuple(found)

    def ours_at(self, path: FieldPath, operation: str = "Apply") -> bool:
        """Whether lameduck's entry of that operation owns the field at path, or anything below it."""
        return any(
            e.get("operation") == operation and subtree(e.get("fieldsV1") or {}, path) is not None for e in self.ours
        )

    def latest_other(self) -> str | None:
        """The other manager that wrote after lameduck last did: the likeliest author of a change.

        None when no other manager's entry is newer: a client that only removed fields owns
        nothing afterwards and leaves no entry (the API audit log knows more).
        """
        ours = max((str(e.get("time", "")) for e in self.ours), default="")
        newer = [e for e in self.others if str(e.get("time", "")) > ours]
        if not newer:
            return None
        return str(max(newer, key=lambda e: str(e.get("time", ""))).get("manager"))

    def owners(self) -> Callable[[FieldPath], list[str]]:
        """Other managers owning the field at a path, or anything below it; for many paths of
        one object: each node's item selectors are indexed once."""
        entries = [(str(entry.get("manager")), entry.get("fieldsV1") or {}) for entry in self.others]
        indexed: dict[int, Selectors] = {}

        def child(tree: FieldsTree, step: str | tuple[str, str]) -> FieldsTree | None:
            # Nodes are only read, never copied: copying the containers' node at every step was quadratic.
            if isinstance(step, str):
                found = tree.get(f"f:{step}")
                return found if isinstance(found, Mapping) else None
            selectors = indexed.get(id(tree))
            if selectors is None or selectors.node is not tree:
                selectors = indexed[id(tree)] = Selectors(tree, kinds=("k",))
            key, value = step
            sub: FieldsTree | None = selectors.match({key: value})
            return sub

        def lookup(path: FieldPath) -> list[str]:
            found = []
            for name, fields in entries:
                node: FieldsTree | None = fields
                for step in path:
                    node = child(node, step) if node is not None else None
                if node is not None:
                    found.append(name)
            return sorted(set(found))

        return lookup


def managed_by(obj: Mapping[str, Any], manager: str = FIELD_MANAGER, operation: str | None = None) -> bool:
    return Ownership.of(obj, manager).managed(operation)


def foreign_view(obj: Mapping[str, Any], manager: str = FIELD_MANAGER) -> dict[str, Any]:
    """The object as the other managers set it (Ownership.foreign_view)."""
    return Ownership.of(obj, manager).foreign_view(obj)


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
    return Ownership.of(obj, manager).latest_other()


def owners(obj: Mapping[str, Any], path: FieldPath, manager: str = FIELD_MANAGER) -> list[str]:
    """Other managers owning the field at path, or anything below it."""
    return Ownership.of(obj, manager).owners()(path)


# What entry_patch's wanted_of gives for an entry that is to go.
REMOVE: Any = object()


def entries_patch(stored: Mapping[str, Any], wanted_of: Callable[[Mapping[str, Any]], Any]) -> list[dict[str, Any]]:
    """JSON patch operations that give each main-resource managedFields entry of stored the
    fieldsV1 wanted_of(entry) names (REMOVE: the entry goes; its own fieldsV1: it stays as it is).
    Each entry touched is guarded by a test of who it is, so a status write in between (the
    controller's) does not get in the way; the removals come last, the last entry first, so that
    the positions the other operations name hold."""
    tests: list[dict[str, Any]] = []
    replaces: list[dict[str, Any]] = []
    removals: list[dict[str, Any]] = []
    for index, entry in enumerate((stored.get("metadata") or {}).get("managedFields") or []):
        if entry.get("subresource"):
            continue
        wanted = wanted_of(entry)
        if wanted is not REMOVE and wanted == entry.get("fieldsV1"):
            continue
        path = f"/metadata/managedFields/{index}"
        tests.append({"op": "test", "path": f"{path}/manager", "value": entry.get("manager")})
        if wanted is REMOVE:
            removals.insert(0, {"op": "remove", "path": path})
        else:
            replaces.append({"op": "replace", "path": f"{path}/fieldsV1", "value": wanted})
    return [*tests, *replaces, *removals]


def ownership_restore_patch(
    before: Mapping[str, Any], stored: Mapping[str, Any], manager: str = FIELD_MANAGER
) -> list[dict[str, Any]]:
    """JSON patch operations that give the writers back their managedFields entries as they stood
    before lameduck put back the values it had replaced, and drop lameduck's Update entry.

    Admission changes are attributed to nobody, so the writers' entries before the revert are
    their entries as they wrote them; putting a replaced value back hands it to lameduck's
    Update entry.
    """
    wanted = {
        (e.get("manager"), e.get("operation")): e.get("fieldsV1")
        for e in _entries(before)
        if e.get("manager") != manager
    }

    def wanted_of(entry: Mapping[str, Any]) -> Any:
        key = (entry.get("manager"), entry.get("operation"))
        if key == (manager, "Update"):
            return REMOVE
        return wanted.get(key, entry.get("fieldsV1"))

    return entries_patch(stored, wanted_of)


def entries_removal_patch(obj: Mapping[str, Any], manager: str) -> list[dict[str, Any]]:
    """JSON patch operations that remove every managedFields entry of manager, each guarded by a
    test of who it is (the last first, so that the positions of the others hold)."""
    entries = (obj.get("metadata") or {}).get("managedFields") or []
    ops: list[dict[str, Any]] = []
    for index in reversed(range(len(entries))):
        if entries[index].get("manager") == manager:
            path = f"/metadata/managedFields/{index}"
            ops.append({"op": "test", "path": f"{path}/manager", "value": manager})
            ops.append({"op": "remove", "path": path})
    return ops
