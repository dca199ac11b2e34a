"""Whether lameduck's write leaves a Deployment's annotations within the API server's limit.

The API server refuses an object whose annotations, keys and values together, are over
ANNOTATIONS_MAX_BYTES. A Deployment just under it is valid, and lameduck's annotations
(`lameduck.dev/policy`, `intent` and, at admission, the `admitted` record) could push it over: at
admission that refuses the writer's own valid write, and a reconcile's write is refused at every
retry. So the decision measures the annotations as the write would leave them, by the way that
write goes: a server-side apply of the intent (its annotations over the Deployment's own) or a
JSON patch made from `injected` (the intent's annotations and the record of what it added).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lameduck_operator.logic.admitted import injected, record_bound, reverted
from lameduck_operator.names import ADMITTED_ANNOTATION, ANNOTATIONS_MAX_BYTES, INTENT_ANNOTATION, POLICY_ANNOTATION

# The annotations lameduck writes on a Deployment.
LAMEDUCKS = (POLICY_ANNOTATION, INTENT_ANNOTATION, ADMITTED_ANNOTATION)


def _bytes(text: Any) -> int:
    # The API server counts a Go string's bytes: UTF-8. A lone surrogate (JSON's "\ud800") is
    # U+FFFD there once decoded, 3 bytes, as many as surrogatepass gives it here.
    text = str(text)
    if text.isascii():  # known without reading the string: most annotations, and the largest
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    annotations = (obj.get("metadata") or {}).get("annotations")
    return annotations if isinstance(annotations, Mapping) else {}


def annotations_size(annotations: Mapping[str, Any]) -> int:
    """The size the API server holds against ANNOTATIONS_MAX_BYTES."""
    return sum(_bytes(key) + _bytes(value) for key, value in annotations.items())


@dataclass(frozen=True)
class Room:
    """A Deployment's annotations as a write leaves them: in all, and lameduck's own."""

    total: int
    lameducks: int

    @classmethod
    def of(cls, annotations: Mapping[str, Any]) -> Room:
        ours = {key: annotations[key] for key in LAMEDUCKS if key in annotations}
        return cls(annotations_size(annotations), annotations_size(ours))

    @property
    def fits(self) -> bool:
        return self.total <= ANNOTATIONS_MAX_BYTES


def after_apply(deployment: Mapping[str, Any], intent: Mapping[str, Any]) -> Room:
    """After a server-side apply of intent: the intent's annotations over the Deployment's (an
    annotation lameduck applied before and no longer sets is removed, which only shrinks them)."""
    return Room.of({**annotations_of(deployment), **annotations_of(intent)})


def after_patch(deployment: Mapping[str, Any], intent: Mapping[str, Any]) -> tuple[Room, dict[str, Any]]:
    """After a JSON patch to `injected(deployment, intent)`, and that Deployment."""
    after = injected(deployment, intent)
    return Room.of(annotations_of(after)), after


def patch_size_bound(deployment: Mapping[str, Any], intent: Mapping[str, Any]) -> int:
    """At least the size of the annotations a JSON patch to `injected(deployment, intent)` leaves,
    found without copying anything but a Deployment with an admitted record: `injected` costs a
    few times a whole decision, and a Deployment waiting for its next rollout or its turn is
    judged again at every change of its policy. Within the limit, they fit; else measure them
    with `after_patch`."""
    if ADMITTED_ANNOTATION in annotations_of(deployment):
        base: Mapping[str, Any] = reverted(deployment)
    else:
        base = deployment
    # The merge puts the intent's annotations over base's, and the record beside them.
    merged = {**annotations_of(base), **annotations_of(intent)}
    return annotations_size(merged) + _bytes(ADMITTED_ANNOTATION) + record_bound(base, intent)
