"""Server-side-apply-like merging of an intent into a manifest, and the subset test.

Only the list and map shapes lameduck's intent touches are modelled: containers and
init containers merge by name (as the API server's list-map does); a preStop handler is
replaced whole because its handler fields are mutually exclusive; other lists are atomic.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

KEYED_LISTS = {"containers": "name", "initContainers": "name", "env": "name", "ports": "containerPort"}
REPLACED_WHOLE = frozenset({"preStop"})


def merge(base: Mapping[str, Any], intent: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of base with intent applied on top."""
    # Copied once here, then merged in place: copying again at every level of the recursion
    # made a review's merge cost grow with the manifest's depth.
    result: dict[str, Any] = copy.deepcopy(dict(base))
    _merge_into(result, intent)
    return result


def _merge_into(result: dict[str, Any], intent: Mapping[str, Any]) -> None:
    for key, value in intent.items():
        current = result.get(key)
        if key in REPLACED_WHOLE:
            result[key] = copy.deepcopy(value)
        elif isinstance(value, Mapping) and isinstance(current, dict):
            _merge_into(current, value)
        elif key in KEYED_LISTS and isinstance(value, list) and isinstance(current, list):
            _merge_keyed_into(current, value, KEYED_LISTS[key])
        else:
            result[key] = copy.deepcopy(value)


def _merge_keyed_into(current: list[Any], incoming: list[Any], key: str) -> None:
    index = {item.get(key): pos for pos, item in enumerate(current) if isinstance(item, Mapping)}
    for item in incoming:
        pos = index.get(item.get(key))
        if pos is None:
            current.append(copy.deepcopy(item))
        elif isinstance(current[pos], dict):
            _merge_into(current[pos], item)
        else:
            current[pos] = merge(current[pos], item)


# JSON's leaves: compared at once. Most of a Deployment's values are leaves, and the Mapping
# check goes through abc for every value that is not a dict (a third of is_subset's time, in
# bench.apply_path's decisions and the verdict on each write's answer).
_LEAVES = (str, int, float, bool, type(None))
_ABSENT = object()


def is_subset(intent: Any, actual: Any, key: str | None = None) -> bool:
    """Whether actual already carries everything intent says (server defaults may add more)."""
    if isinstance(intent, _LEAVES):
        return bool(intent == actual)
    if isinstance(intent, (dict, Mapping)):
        if not isinstance(actual, (dict, Mapping)):
            return False
        if key in REPLACED_WHOLE and set(intent) != set(actual):
            return False
        for k, v in intent.items():  # noqa: SIM110 (a loop: all() of a generator costs a frame per level)
            if k not in actual or not is_subset(v, actual[k], k):
                return False
        return True
    if isinstance(intent, list) and key in KEYED_LISTS:
        if not isinstance(actual, list):
            return False
        item_key = KEYED_LISTS[key]
        by_key = {a.get(item_key): a for a in actual if isinstance(a, (dict, Mapping))}
        for item in intent:
            found = by_key.get(item.get(item_key), _ABSENT)
            if found is _ABSENT or not is_subset(item, found):
                return False
        return True
    return bool(intent == actual)
