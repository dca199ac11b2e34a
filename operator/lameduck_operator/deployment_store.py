"""The Deployments the operator watches, kept small.

A Deployment as the API returns it is about 5 KB of JSON and some 30 KB once parsed into
Python objects: at 5,000 Deployments, 150 MiB. The reconcile loop needs a whole body only
when it judges that Deployment, so each is kept as its JSON, compressed, and parsed on
demand (tens of microseconds); what the fleet reads of every Deployment at once (labels and
lameduck's annotations, to find those a policy change affects) is kept parsed beside it.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from lameduck_operator.logic.selection import DeploymentRef, deployment_ref

# Compression level 1: most of the saving, at the least CPU.
LEVEL = 1


@dataclass(frozen=True, slots=True)
class Stored:
    packed: bytes
    # What is read of every Deployment at once: a body with only these metadata fields.
    meta: Mapping[str, Any]


def _meta(body: Mapping[str, Any], annotation_prefix: str) -> dict[str, Any]:
    metadata = body.get("metadata") or {}
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items() if k.startswith(annotation_prefix)}
    return {
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "labels": dict(metadata.get("labels") or {}),
            "annotations": annotations,
        }
    }


class DeploymentStore:
    """Deployments by reference: whole bodies on demand, their labels and lameduck's
    annotations (those starting with `annotation_prefix`) at once."""

    def __init__(self, annotation_prefix: str) -> None:
        self.annotation_prefix = annotation_prefix
        self._items: dict[DeploymentRef, Stored] = {}

    def put(self, body: Mapping[str, Any]) -> DeploymentRef:
        ref = deployment_ref(body)
        packed = zlib.compress(json.dumps(body, separators=(",", ":")).encode(), LEVEL)
        self._items[ref] = Stored(packed, _meta(body, self.annotation_prefix))
        return ref

    def get(self, ref: DeploymentRef) -> dict[str, Any] | None:
        stored = self._items.get(ref)
        if stored is None:
            return None
        body: dict[str, Any] = json.loads(zlib.decompress(stored.packed))
        return body

    def meta(self, ref: DeploymentRef) -> Mapping[str, Any] | None:
        """The Deployment with only its name, namespace, labels and lameduck's annotations."""
        stored = self._items.get(ref)
        return None if stored is None else stored.meta

    def pop(self, ref: DeploymentRef) -> None:
        self._items.pop(ref, None)

    def __contains__(self, ref: object) -> bool:
        return ref in self._items

    def __len__(self) -> int:
        return len(self._items)

    def refs(self) -> Iterator[DeploymentRef]:
        return iter(list(self._items))

    def metas(self) -> Iterator[tuple[DeploymentRef, Mapping[str, Any]]]:
        return iter([(ref, stored.meta) for ref, stored in self._items.items()])

    def bodies_in(self, namespace: str) -> list[dict[str, Any]]:
        """Whole bodies of one namespace's Deployments."""
        found = []
        for ref in [r for r in self._items if r.namespace == namespace]:
            body = self.get(ref)
            if body is not None:
                found.append(body)
        return found
