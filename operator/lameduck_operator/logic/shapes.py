"""The types of the fields lameduck reads from a Deployment or a Namespace (and, for the starting
budget, from a Service, an Ingress, an HTTPRoute or a GRPCRoute), as the API server
guarantees them (it decodes every object into its Go types before anyone sees it), checked for
input no API server has seen: the CLI's manifests. Pure.

Only the fields lameduck reads are described; any other field may hold anything. A field that is
absent or null is fine (Go decodes null as the zero value); an item of a list or a value of a map
must be of its type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lameduck_operator.logic.l7_backends import RouteKind
from lameduck_operator.model import (
    NAMESPACE_MAX_LENGTH,
    NAMESPACE_PATTERN,
    ErrorType,
    FieldError,
    field_path,
    name_error,
)

# A manifest with more wrong types than this is reported by its first ones.
MAX_SHAPE_ERRORS = 10


class Kind(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    INT_OR_STRING = "integer or string"
    OBJECT = "object"
    # managedFields[].fieldsV1: objects of objects, as deep as the object they describe.
    FIELDS = "fieldsV1"


@dataclass(frozen=True)
class Obj:
    fields: Mapping[str, Shape]
    # Fields that must be there, not null and not empty.
    required: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ListOf:
    items: Shape


@dataclass(frozen=True)
class MapOf:
    values: Shape


Shape = Kind | Obj | ListOf | MapOf

_LABELS = MapOf(Kind.STRING)
_PROBE_HANDLER = Obj({"host": Kind.STRING, "port": Kind.INT_OR_STRING})
_PROBE = Obj(
    {"periodSeconds": Kind.INTEGER, "httpGet": _PROBE_HANDLER, "tcpSocket": _PROBE_HANDLER, "grpc": _PROBE_HANDLER}
)
_CONTAINER = Obj(
    required=frozenset({"name"}),
    fields={
        "name": Kind.STRING,
        "image": Kind.STRING,
        "restartPolicy": Kind.STRING,
        "ports": ListOf(
            Obj(
                {"containerPort": Kind.INTEGER, "name": Kind.STRING, "protocol": Kind.STRING},
                required=frozenset({"containerPort"}),
            )
        ),
        "env": ListOf(Obj({"name": Kind.STRING, "value": Kind.STRING}, required=frozenset({"name"}))),
        "lifecycle": Obj({"preStop": Kind.OBJECT, "postStart": Kind.OBJECT}),
        "readinessProbe": _PROBE,
        "livenessProbe": _PROBE,
        "startupProbe": _PROBE,
    },
)
_METADATA = Obj(
    {
        "name": Kind.STRING,
        "namespace": Kind.STRING,
        "labels": _LABELS,
        "annotations": _LABELS,
        "generation": Kind.INTEGER,
        "resourceVersion": Kind.STRING,
        "managedFields": ListOf(
            Obj(
                {
                    "manager": Kind.STRING,
                    "operation": Kind.STRING,
                    "apiVersion": Kind.STRING,
                    "subresource": Kind.STRING,
                    "time": Kind.STRING,
                    "fieldsType": Kind.STRING,
                    "fieldsV1": Kind.FIELDS,
                }
            )
        ),
    }
)
DEPLOYMENT = Obj(
    {
        "metadata": _METADATA,
        "spec": Obj(
            {
                "replicas": Kind.INTEGER,
                "minReadySeconds": Kind.INTEGER,
                "template": Obj(
                    {
                        "metadata": Obj({"labels": _LABELS, "annotations": _LABELS}),
                        "spec": Obj(
                            {
                                "containers": ListOf(_CONTAINER),
                                "initContainers": ListOf(_CONTAINER),
                                "terminationGracePeriodSeconds": Kind.INTEGER,
                                "hostNetwork": Kind.BOOLEAN,
                                "readinessGates": ListOf(
                                    Obj({"conditionType": Kind.STRING}, required=frozenset({"conditionType"}))
                                ),
                            }
                        ),
                    }
                ),
            }
        ),
        "status": Obj(
            {
                "observedGeneration": Kind.INTEGER,
                "replicas": Kind.INTEGER,
                "updatedReplicas": Kind.INTEGER,
                "availableReplicas": Kind.INTEGER,
                "conditions": ListOf(Obj({"type": Kind.STRING, "reason": Kind.STRING})),
            }
        ),
    }
)
NAMESPACE = Obj({"metadata": Obj({"name": Kind.STRING, "labels": _LABELS})})
# What logic/l7_backends.py reads of a Service and of the routes that may name it.
_NAMED = Obj({"name": Kind.STRING, "namespace": Kind.STRING})
SERVICE = Obj({"metadata": _NAMED, "spec": Obj({"type": Kind.STRING, "selector": _LABELS})})
_INGRESS_BACKEND = Obj({"service": Obj({"name": Kind.STRING})})
INGRESS = Obj(
    {
        "metadata": _NAMED,
        "spec": Obj(
            {
                "defaultBackend": _INGRESS_BACKEND,
                "rules": ListOf(Obj({"http": Obj({"paths": ListOf(Obj({"backend": _INGRESS_BACKEND}))})})),
            }
        ),
    }
)
GATEWAY_ROUTE = Obj(
    {
        "metadata": _NAMED,
        "spec": Obj(
            {
                "rules": ListOf(
                    Obj(
                        {
                            "backendRefs": ListOf(
                                Obj(
                                    {
                                        "group": Kind.STRING,
                                        "kind": Kind.STRING,
                                        "name": Kind.STRING,
                                        "namespace": Kind.STRING,
                                    }
                                )
                            )
                        }
                    )
                )
            }
        ),
    }
)


def _is(kind: Kind, value: Any) -> bool:
    if kind is Kind.STRING:
        return isinstance(value, str)
    if kind is Kind.BOOLEAN:
        return isinstance(value, bool)
    if kind is Kind.INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is Kind.INT_OR_STRING:
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    return isinstance(value, Mapping)


def _fields_ok(value: Any) -> bool:
    """Objects of objects all the way down, null leaves allowed; iterative, however deep."""
    pending = [value]
    while pending:
        node = pending.pop()
        if not isinstance(node, Mapping) or not all(isinstance(k, str) for k in node):
            return False
        pending.extend(v for v in node.values() if v is not None)
    return True


def deployment_errors(obj: Mapping[str, Any]) -> list[FieldError]:
    """Why a Deployment manifest is none the API server would store, as far as lameduck reads it:
    its fields' types, and its name and namespace (when it names one)."""
    return named_object_errors(obj, DEPLOYMENT)


def l7_errors(obj: Mapping[str, Any], kind: RouteKind | None) -> list[FieldError]:
    """The same of a Service (kind None) or of a route of that kind."""
    shapes = {RouteKind.INGRESS: INGRESS, RouteKind.HTTP_ROUTE: GATEWAY_ROUTE, RouteKind.GRPC_ROUTE: GATEWAY_ROUTE}
    return named_object_errors(obj, SERVICE if kind is None else shapes[kind])


def named_object_errors(obj: Mapping[str, Any], shape: Shape) -> list[FieldError]:
    """Its fields' types as the shape says, and its name and namespace (when it names one)."""
    errors = shape_errors(obj, shape)
    meta = obj.get("metadata")
    if errors or not isinstance(meta, Mapping):
        return errors or [FieldError("metadata.name", "Required value", ErrorType.REQUIRED)]
    names = [name_error(meta.get("name"), "metadata.name")]
    if meta.get("namespace") is not None:
        names.append(name_error(meta["namespace"], "metadata.namespace", NAMESPACE_PATTERN, NAMESPACE_MAX_LENGTH))
    return [e for e in names if e is not None]


def namespace_errors(obj: Mapping[str, Any]) -> list[FieldError]:
    """Why a Namespace manifest is none the API server would store, as far as lameduck reads it."""
    errors = shape_errors(obj, NAMESPACE)
    meta = obj.get("metadata")
    if errors or not isinstance(meta, Mapping):
        return errors or [FieldError("metadata.name", "Required value", ErrorType.REQUIRED)]
    error = name_error(meta.get("name"), "metadata.name", NAMESPACE_PATTERN, NAMESPACE_MAX_LENGTH)
    return [] if error is None else [error]


def shape_errors(obj: Any, shape: Shape, path: str = "") -> list[FieldError]:
    """Fields of obj whose type is not the shape's, the first MAX_SHAPE_ERRORS of them."""
    errors: list[FieldError] = []
    _check(obj, shape, path, errors)
    return errors[:MAX_SHAPE_ERRORS]


def _wrong(errors: list[FieldError], path: str, expected: str) -> None:
    errors.append(FieldError(path or "<object>", f"must be of type {expected}", ErrorType.TYPE_INVALID))


def _check(value: Any, shape: Shape, path: str, errors: list[FieldError]) -> None:
    if len(errors) >= MAX_SHAPE_ERRORS:
        return
    if isinstance(shape, Kind):
        ok = _fields_ok(value) if shape is Kind.FIELDS else _is(shape, value)
        if not ok:
            _wrong(errors, path, shape.value)
    elif isinstance(shape, Obj):
        if not isinstance(value, Mapping):
            _wrong(errors, path, "object")
            return
        for name in sorted(shape.required):
            if value.get(name) is None or value.get(name) == "":
                errors.append(FieldError(f"{path}.{name}" if path else name, "Required value", ErrorType.REQUIRED))
        for name, sub in shape.fields.items():
            if value.get(name) is not None:
                _check(value[name], sub, field_path(path, name) if path else name, errors)
    elif isinstance(shape, ListOf):
        if not isinstance(value, list):
            _wrong(errors, path, "array")
            return
        for index, item in enumerate(value):
            _check(item, shape.items, f"{path}[{index}]", errors)
    else:
        if not isinstance(value, Mapping):
            _wrong(errors, path, "object")
            return
        for key, item in value.items():
            if not isinstance(key, str):
                _wrong(errors, field_path(path, key), "string (a key)")
            else:
                _check(item, shape.values, field_path(path, key), errors)
