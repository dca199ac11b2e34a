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
    return isinstance(value, _TYPES[kind])


def _go_pattern(pattern: str) -> str:
    """The API server matches patterns with Go's regexp, where a final $ is the end of the text;
    Python's $ also matches before a final newline."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern


def _validate(schema: Mapping[str, Any], value: Any, path: str, errors: list[str]) -> None:
    kind = schema.get("type")
    if kind and not _type_ok(kind, value):
        errors.append(f"{path}: {path} in body must be of type {kind}")
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(f'"{v}"' for v in schema["enum"])
        errors.append(f'{path}: Unsupported value: "{value}": supported values: {supported}')
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: {path} in body should be greater than or equal to {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: {path} in body should be less than or equal to {schema['maximum']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: may not be longer than {schema['maxLength']}")
    if "pattern" in schema and not re.search(_go_pattern(schema["pattern"]), value):
        errors.append(f"{path}: {path} in body should match '{schema['pattern']}'")
    if kind == "array":
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items")
        if schema.get("x-kubernetes-list-type") == "set":
            for index, item in enumerate(value):
                if item in value[:index]:
                    errors.append(f'{path}[{index}]: Duplicate value: "{item}"')
        for index, item in enumerate(value):
            _validate(schema["items"], item, f"{path}[{index}]", errors)
    if kind == "object":
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            errors.append(f"{path}: Too many: {len(value)}: must have at most {schema['maxProperties']} items")
        props = schema.get("properties")
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}.{name}: Required value")
        for name, item in value.items():
            if props is not None and name in props:
                _validate(props[name], item, f"{path}.{name}", errors)
            elif props is not None and "additionalProperties" not in schema:
                errors.append(f'{path}.{name}: unknown field "{path}.{name}"')
            elif isinstance(schema.get("additionalProperties"), Mapping):
                _validate(schema["additionalProperties"], item, f"{path}.{name}", errors)
    if errors:
        return  # CEL rules are judged only on values that pass the schema checks
    for rule in schema.get("x-kubernetes-validations", []):
        verdict = _cel_verdict(rule["rule"], value)
        if verdict is not True:
            message = rule["message"] if verdict is False else f"Invalid value: {verdict}"
            errors.append(f"{path}{rule.get('fieldPath', '')}: {message}")


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
