"""An offline stand-in for the API server's CRD validation, for unit tests.

It defaults, then checks the OpenAPI keywords our CRDs use and evaluates their CEL rules
with cel-python, reporting errors as "path: message" like the API server does. The real
API server stays the authority: the e2e suite applies the same examples to it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
}


def apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """Structural defaulting: a null property that is not nullable is pruned first (as the API
    server does), then a missing property with a default gets it, recursively."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name, sub in props.items():
            if name in value and value[name] is None and not sub.get("nullable"):
                del value[name]
            if value.get(name) is None and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def _type_ok(kind: str, value: Any) -> bool:
    if kind in ("integer",) and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, int) and not -(2**63) <= value < 2**63:
        return False  # the API server cannot decode it: it is no int64
    return isinstance(value, _TYPES[kind])


def _go_pattern(pattern: str) -> str:
    """The API server matches patterns with Go's regexp, where a final $ is the end of the text;
    Python's $ also matches before a final newline."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern


class _Pass:
    """One validation: the errors, whether any blocks the CEL rules, and the rules to judge."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.blocking = False
        self.rules: list[tuple[Mapping[str, Any], Any, str]] = []

    def error(self, text: str, *, blocking: bool = True) -> None:
        self.errors.append(text)
        self.blocking = self.blocking or blocking


def _validate(schema: Mapping[str, Any], value: Any, path: str, errors: list[str]) -> None:
    """The OpenAPI checks, then the CEL rules of every node, unless a blocking error (a wrong type,
    an unsupported value, too long, too many, required, unknown) was found anywhere: the API server
    judges no CEL rule of an object that has one (its hasBlockingErr)."""
    found = _Pass()
    _schema(schema, value, path, found)
    errors.extend(found.errors)
    if found.blocking:
        return
    for rule, node, at in found.rules:
        verdict = _cel_verdict(rule["rule"], node)
        if verdict is not True:
            message = rule["message"] if verdict is False else f"Invalid value: {verdict}"
            errors.append(f"{at}{rule.get('fieldPath', '')}: {message}")


def _schema(schema: Mapping[str, Any], value: Any, path: str, found: _Pass) -> None:
    kind = schema.get("type")
    if kind and not _type_ok(kind, value):
        found.error(f"{path}: {path} in body must be of type {kind}")
        return
    found.rules.extend((rule, value, path) for rule in schema.get("x-kubernetes-validations", []))
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(f'"{v}"' for v in schema["enum"])
        found.error(f'{path}: Unsupported value: "{value}": supported values: {supported}')
    if "minimum" in schema and value < schema["minimum"]:
        found.error(f"{path}: {path} in body should be greater than or equal to {schema['minimum']}", blocking=False)
    if "maximum" in schema and value > schema["maximum"]:
        found.error(f"{path}: {path} in body should be less than or equal to {schema['maximum']}", blocking=False)
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        found.error(f"{path}: may not be longer than {schema['maxLength']}")
    if "pattern" in schema and not re.search(_go_pattern(schema["pattern"]), value):
        found.error(f"{path}: {path} in body should match '{schema['pattern']}'", blocking=False)
    if kind == "array":
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            found.error(f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items")
        if schema.get("x-kubernetes-list-type") == "set":
            for index, item in enumerate(value):
                if item in value[:index]:
                    found.error(f'{path}[{index}]: Duplicate value: "{item}"', blocking=False)
        for index, item in enumerate(value):
            _schema(schema["items"], item, f"{path}[{index}]", found)
    if kind == "object":
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            found.error(f"{path}: Too many: {len(value)}: must have at most {schema['maxProperties']} items")
        props = schema.get("properties")
        for name in schema.get("required", []):
            if name not in value:
                found.error(f"{path}.{name}: Required value")
        for name, item in value.items():
            if props is not None and name in props:
                _schema(props[name], item, f"{path}.{name}", found)
            elif props is not None and "additionalProperties" not in schema:
                found.error(f'{path}.{name}: unknown field "{path}.{name}"')
            elif isinstance(schema.get("additionalProperties"), Mapping):
                _schema(schema["additionalProperties"], item, f"{path}.{name}", found)


_ENV = celpy.Environment()


def _cel_verdict(rule: str, value: Any) -> bool | str:
    """True or False; a rule that fails to evaluate on this value (duration('99999999h')
    overflows Go's durations) rejects it, as the API server does: the error, as text."""
    program = _ENV.program(_ENV.compile(rule))
    try:
        result = program.evaluate({"self": json_to_cel(value)})
    except CELEvalError as err:
        return f"evaluation error: {err.args[0] if err.args else err}"
    if isinstance(result, Exception):
        return f"evaluation error: {result}"
    return bool(result)


def default_errors(crd: Mapping[str, Any]) -> list[str]:
    """The API server validates every default against its own schema node, CEL rules included."""
    errors: list[str] = []

    def walk(schema: Mapping[str, Any], path: str) -> None:
        if "default" in schema:
            _validate(schema, copy.deepcopy(schema["default"]), f"{path}.default", errors)
        for name, sub in schema.get("properties", {}).items():
            walk(sub, f"{path}.{name}")
        if "items" in schema:
            walk(schema["items"], f"{path}[]")

    walk(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "")
    return errors


def validate(crd: Mapping[str, Any], obj: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the defaulted object, errors) as the API server would judge a create."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    defaulted = apply_defaults(schema, copy.deepcopy(dict(obj)))
    errors: list[str] = []
    spec_schema = schema["properties"]["spec"]
    _validate(spec_schema, defaulted.get("spec", {}), "spec", errors)
    return defaulted, errors
