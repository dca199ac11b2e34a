"""The Deployments the operator watches, kept small.

A Deployment as the API returns it is about 5 KB of JSON and some 30 KB once parsed into
Python objects: at 5,000 Deployments, 150 MiB. The reconcile loop needs a whole body only
when it judges that Deployment, so each is kept serialised, compressed, and read back on
demand (tens of microseconds); what the fleet reads of many Deployments at once (labels and
lameduck's annotations, to find those a policy change affects; the pods' service account and
container images, for the sidecar's access in a namespace) is kept parsed beside it, and so
is when other managers last wrote it, which every new observation is compared with.

What the deployment controller's status writes change (the status, the resourceVersion and
the status subresource's managedFields entries) is kept apart, so that such a write, three or
more per rollout, replaces only that part: the rest is compared with what is kept, not stored
again with everything derived from it (bench.apply_path: a whole body stored was the largest
part of the operator's CPU per apply).

Serialised by marshal, version 2: the interpreter's own format, written in a third of the time
JSON takes and read back faster, and never read by anything but this process. Its version 2
writes a value alike whatever object holds it (no references, no interned flags), so equal
bodies give equal bytes, which put_status compares. Compressed it is about a fifth larger than
JSON (2.2 KB against 1.85 KB for bench.apply_path's Deployment after lameduck's apply).
"""

from __future__ import annotations

import marshal
import sys
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from lameduck_operator.logic.decision import JudgedPart
from lameduck_operator.logic.selection import DeploymentRef, deployment_ref

# Compression level 1: most of the saving, at the least CPU.
LEVEL = 1
# marshal's format with neither references nor interned flags (see the module's docstring).
MARSHAL_VERSION = 2
STATUS = "status"


@dataclass(frozen=True, slots=True)
class Stored:
    # The body serialised, compressed, with None in place of each value a status write changes.
    packed: bytes
    # Those values (see _split), serialised, compressed.
    status: bytes
    # What is read of every Deployment at once: a body with only these metadata fields.
    meta: Mapping[str, Any]
    # What its decision reads but its status: what the next observation is compared with, without
    # parsing this one back. Its uid and generation: an older event of the same object is not
    # stored over it; its other managers' writes: who changed it since.
    judged: JudgedPart
    # Which version: the watch's event of the very object stored is nothing new.
    resource_version: str


def _shared(value: Any) -> Any:
    """One string object for what many Deployments repeat (label keys, namespaces, container
    names and images), not one per Deployment."""
    return sys.intern(value) if isinstance(value, str) else value


def _meta(body: Mapping[str, Any], annotation_prefix: str) -> dict[str, Any]:
    metadata = body.get("metadata") or {}
    annotations = {
        _shared(k): v for k, v in (metadata.get("annotations") or {}).items() if k.startswith(annotation_prefix)
    }
    pod = ((body.get("spec") or {}).get("template") or {}).get("spec") or {}
    # Who runs the pods and which containers: whether they run lameduck's sidecar, and as whom.
    pod_view: dict[str, Any] = {
        kind: [{"name": _shared(c.get("name")), "image": _shared(c.get("image"))} for c in pod.get(kind) or []]
        for kind in ("containers", "initContainers")
    }
    if pod.get("serviceAccountName"):
        pod_view["serviceAccountName"] = _shared(pod["serviceAccountName"])
    return {
        "metadata": {
            "name": metadata.get("name"),
            "namespace": _shared(metadata.get("namespace")),
            "labels": {_shared(k): v for k, v in (metadata.get("labels") or {}).items()},
            "annotations": annotations,
        },
        "spec": {"template": {"spec": pod_view}},
    }


def _shared_part(part: JudgedPart) -> JudgedPart:
    writes = tuple((_shared(name), _shared(operation), _shared(when)) for name, operation, when in part.writes)
    labels = tuple((_shared(k), v) for k, v in part.labels)
    return replace(part, labels=labels, annotations=tuple((_shared(k), v) for k, v in part.annotations), writes=writes)


def _of_status(entry: Any) -> bool:
    return isinstance(entry, Mapping) and entry.get("subresource") == STATUS


def _split(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """body with None in place of each value a status write changes (its status, its
    resourceVersion, the status subresource's managedFields entries: the places kept, so that
    _joined gives back the same body, key order and list positions included), and those values."""
    rest = dict(body)
    changed: dict[str, Any] = {}
    if STATUS in rest:
        changed[STATUS], rest[STATUS] = rest[STATUS], None
    meta = rest.get("metadata")
    if isinstance(meta, Mapping):
        meta = rest["metadata"] = dict(meta)
        if "resourceVersion" in meta:
            changed["resourceVersion"], meta["resourceVersion"] = meta["resourceVersion"], None
        entries = meta.get("managedFields")
        if isinstance(entries, list) and any(_of_status(e) for e in entries):
            changed["managedFields"] = [[i, e] for i, e in enumerate(entries) if _of_status(e)]
            meta["managedFields"] = [None if _of_status(e) else e for e in entries]
    return rest, changed


def _joined(rest: dict[str, Any], changed: Mapping[str, Any]) -> dict[str, Any]:
    if STATUS in changed:
        rest[STATUS] = changed[STATUS]
    if "resourceVersion" in changed:
        rest["metadata"]["resourceVersion"] = changed["resourceVersion"]
    for index, entry in changed.get("managedFields") or ():
        rest["metadata"]["managedFields"][index] = entry
    return rest


def _packed(value: Any) -> bytes:
    return zlib.compress(_serialised(value), LEVEL)


def _serialised(value: Any) -> bytes:
    return marshal.dumps(value, MARSHAL_VERSION)


def _unpacked(packed: bytes) -> Any:
    return marshal.loads(zlib.decompress(packed))


def _version(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("resourceVersion") or "")


class DeploymentStore:
    """Deployments by reference: whole bodies on demand, their labels and lameduck's
    annotations (those starting with `annotation_prefix`) at once."""

    def __init__(self, annotation_prefix: str) -> None:
        self.annotation_prefix = annotation_prefix
        self._items: dict[DeploymentRef, Stored] = {}
        # The refs of each namespace, in the order of _items: the sidecar's access reads a
        # namespace's Deployments at each publish, for every namespace judged since the last
        # (in a burst, all of them), which a pass over every Deployment each made quadratic.
        self._in_namespace: dict[str, dict[DeploymentRef, None]] = {}

    def put(self, body: Mapping[str, Any]) -> DeploymentRef:
        ref = deployment_ref(body)
        rest, changed = _split(body)
        judged = _shared_part(JudgedPart.of(body))
        meta = _meta(body, self.annotation_prefix)
        self._items[ref] = Stored(_packed(rest), _packed(changed), meta, judged, _version(body))
        self._in_namespace.setdefault(ref.namespace, {})[ref] = None
        return ref

    def put_status(self, body: Mapping[str, Any]) -> bool:
        """When body is the stored Deployment but for what a status write changes (its status,
        resourceVersion and the status subresource's managedFields entries), keep those of body
        and say True: get() then gives body. Else keep nothing and say False."""
        ref = deployment_ref(body)
        stored = self._items.get(ref)
        meta = body.get("metadata") or {}
        if (
            stored is None
            or stored.judged.uid != str(meta.get("uid") or "")
            or stored.judged.generation != int(meta.get("generation") or 0)
        ):
            return False
        rest, changed = _split(body)
        if _serialised(rest) != zlib.decompress(stored.packed):
            return False
        self._items[ref] = Stored(stored.packed, _packed(changed), stored.meta, stored.judged, _version(body))
        return True

    def get(self, ref: DeploymentRef) -> dict[str, Any] | None:
        stored = self._items.get(ref)
        if stored is None:
            return None
        return _joined(_unpacked(stored.packed), _unpacked(stored.status))

    def meta(self, ref: DeploymentRef) -> Mapping[str, Any] | None:
        """The Deployment with only its name, namespace, labels, lameduck's annotations, and its
        pods' service account and containers' names and images."""
        stored = self._items.get(ref)
        return None if stored is None else stored.meta

    def is_older(self, body: Mapping[str, Any]) -> bool:
        """Whether body is the stored Deployment (the same uid) at an earlier generation."""
        stored = self._items.get(deployment_ref(body))
        meta = body.get("metadata") or {}
        uid, generation = str(meta.get("uid") or ""), int(meta.get("generation") or 0)
        return stored is not None and stored.judged.uid == uid and generation < stored.judged.generation

    def is_stored(self, body: Mapping[str, Any]) -> bool:
        """Whether body is the very Deployment stored: the same uid at the same resourceVersion."""
        stored = self._items.get(deployment_ref(body))
        meta = body.get("metadata") or {}
        return (
            stored is not None
            and bool(stored.resource_version)
            and stored.resource_version == str(meta.get("resourceVersion") or "")
            and stored.judged.uid == str(meta.get("uid") or "")
        )

    def judged(self, ref: DeploymentRef) -> JudgedPart | None:
        """What a decision reads of the stored Deployment but its status (JudgedPart)."""
        stored = self._items.get(ref)
        return None if stored is None else stored.judged

    def write_times(self, ref: DeploymentRef) -> dict[tuple[str, str], str] | None:
        """write_times of the Deployment as stored, without parsing it back."""
        stored = self._items.get(ref)
        writes = () if stored is None else stored.judged.writes
        return None if stored is None else {(name, operation): when for name, operation, when in writes}

    def pop(self, ref: DeploymentRef) -> None:
        self._items.pop(ref, None)
        refs = self._in_namespace.get(ref.namespace)
        if refs is not None:
            refs.pop(ref, None)
            if not refs:
                del self._in_namespace[ref.namespace]

    def __contains__(self, ref: object) -> bool:
        return ref in self._items

    def __len__(self) -> int:
        return len(self._items)

    def refs(self) -> Iterator[DeploymentRef]:
        return iter(list(self._items))

    def metas(self) -> Iterator[tuple[DeploymentRef, Mapping[str, Any]]]:
        return iter([(ref, stored.meta) for ref, stored in self._items.items()])

    def metas_in(self, namespace: str) -> list[Mapping[str, Any]]:
        """The metadata views (see meta()) of one namespace's Deployments."""
        items = self._items
        return [items[ref].meta for ref in self._in_namespace.get(namespace, ())]
