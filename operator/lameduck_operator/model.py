"""The GracefulPolicy API as typed values: parsing, defaulting and validation.

The rules here mirror the CRD (OpenAPI + CEL) in crds/, which `crdgen` builds from the
same constants, so the CLI and the operator reject exactly what the API server rejects,
with the same field paths and messages.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from lameduck_operator.names import API_VERSION, KIND_CLUSTER, KIND_NAMESPACED, POLICY_KINDS

E = TypeVar("E", bound=StrEnum)


class Mode(StrEnum):
    ENFORCE = "Enforce"
    AUDIT = "Audit"


class ApplyStrategy(StrEnum):
    ON_NEXT_ROLLOUT = "OnNextRollout"
    IMMEDIATE = "Immediate"


class HoldMethod(StrEnum):
    SIDECAR = "Sidecar"
    SLEEP = "Sleep"


class ConflictStrategy(StrEnum):
    REPORT = "Report"
    TAKE_OVER = "TakeOver"


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


# Go-style durations restricted to the units a policy needs; CEL's duration() parses these.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_MAX_LENGTH = 32
CONTAINER_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CONTAINER_NAME_MAX_LENGTH = 63
MAX_CONTAINERS = 64
MAX_SELECTOR_EXPRESSIONS = 32
MAX_SELECTOR_VALUES = 64
MAX_SELECTOR_LABELS = 64
# A label key is an optional DNS subdomain prefix (253), a slash and a name (63); a value at most 63.
LABEL_KEY_MAX_LENGTH = 317
LABEL_VALUE_MAX_LENGTH = 63
BUDGET_MARGIN_SECONDS = 5
# metadata.name of a policy is a DNS-1123 subdomain, metadata.namespace a DNS-1123 label, as the
# API server requires of every custom resource; the CLI meets names no API server has checked.
NAME_PATTERN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
NAME_MAX_LENGTH = 253
NAMESPACE_PATTERN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
NAMESPACE_MAX_LENGTH = 63
# A field name shown in an error path as it is: visible ASCII, not too long. Any other is quoted.
_PLAIN_FIELD = re.compile(r"[!-~]{1,64}")


@dataclass(frozen=True)
class DurationRule:
    """Bounds and default of one duration field; shared with the CRD generator."""

    default: str
    minimum: str
    maximum: str

    @property
    def seconds(self) -> tuple[float, float, float]:
        """(default, minimum, maximum) in seconds."""
        return (_known_duration(self.default), _known_duration(self.minimum), _known_duration(self.maximum))

    @property
    def message(self) -> str:
        return f"must be a duration between {self.minimum} and {self.maximum}, such as 500ms, 2s or 1m30s"


@dataclass(frozen=True)
class IntRule:
    minimum: int
    maximum: int
    default: int | None = None


PROPAGATION_DELAY = DurationRule(default="2s", minimum="0s", maximum="5m")
QUIET_PERIOD = DurationRule(default="1s", minimum="0s", maximum="1m")
MAX_HOLD = DurationRule(default="30s", minimum="1s", maximum="10m")
DRAIN_TIMEOUT = DurationRule(default="30s", minimum="0s", maximum="1h")
MAX_CONCURRENT_ROLLOUTS = IntRule(minimum=1, maximum=1000, default=5)
PRIORITY = IntRule(minimum=-1000, maximum=1000, default=0)
TERMINATION_GRACE_PERIOD = IntRule(minimum=1, maximum=7200)
MIN_READY_SECONDS = IntRule(minimum=0, maximum=3600)
LAME_DUCK_PORT = IntRule(minimum=1, maximum=65535)
# An absolute HTTP path of visible ASCII, short: it goes into the sidecar's environment and request line.
LAME_DUCK_PATH_PATTERN = r"^/[!-~]{0,255}$"
LAME_DUCK_PATH_MAX_LENGTH = 256
MSG_LAME_DUCK_PATH = "must be an absolute HTTP path of visible ASCII characters, at most 256 long"
# spec.hold.learnedBudget.maxHoldCap: bounded as maxHold is, and required (no default could suit
# every maxHold it must not be below), so the rule's default is never used.
MAX_HOLD_CAP = DurationRule(default=MAX_HOLD.maximum, minimum=MAX_HOLD.minimum, maximum=MAX_HOLD.maximum)

# Messages of the cross-field rules; the CRD's CEL rules carry the same text.
MSG_PROPAGATION_OVER_MAX_HOLD = "must not be longer than maxHold"
MSG_QUIET_OVER_MAX_HOLD = "must not be longer than maxHold"
MSG_GRACE_UNDER_BUDGET = "must be at least maxHold + drainTimeout"
MSG_CAP_UNDER_MAX_HOLD = "must not be shorter than maxHold"
MSG_LEARNED_BUDGET_SLEEP = "needs method Sidecar: a Sleep hold sends no report to learn from"
MSG_SELECTOR_VALUES = "values must be non-empty for operators In and NotIn, and empty for Exists and DoesNotExist"
MSG_LABEL_KEY_TOO_LONG = f"keys may not be longer than {LABEL_KEY_MAX_LENGTH}"
# The longest message of a condition in a policy's status the CRD (as metav1.Condition) stores.
CONDITION_MESSAGE_MAX_LENGTH = 32768


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration such as "1m30s", or None when it is not one."""
    if not re.fullmatch(DURATION_PATTERN, text):
        return None
    return sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _DURATION_PART.findall(text))


def _known_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds is None:
        raise ValueError(f"not a duration: {text!r}")
    return seconds


class NotADuration(ValueError):
    """A number of seconds no duration stands for: negative, infinite or NaN."""


def format_seconds(seconds: float) -> str:
    """A short duration to the millisecond that parse_duration reads back: 2s, 1m30s, 500ms.

    Never in exponent notation (60.00001 s is 1m, not 1m1e-05s, which no duration parser
    reads: not the sidecar's, which would refuse to start). Raises NotADuration for a negative
    or non-finite number of seconds."""
    if not math.isfinite(seconds) or seconds < 0:
        raise NotADuration(f"not a duration: {seconds!r} seconds")
    millis = round(seconds * 1000)
    if 0 < millis < 1000:
        return f"{millis}ms"
    minutes, rest = divmod(millis, 60_000)
    whole, frac = divmod(rest, 1000)
    sec_text = f"{whole}{f'.{frac:03d}'.rstrip('0') if frac else ''}s" if rest or not minutes else ""
    return f"{minutes}m{sec_text}" if minutes else sec_text


class ErrorType(StrEnum):
    """What is wrong with a field, named as Kubernetes names a field error's type."""

    REQUIRED = "FieldValueRequired"
    TYPE_INVALID = "FieldValueTypeInvalid"
    NOT_SUPPORTED = "FieldValueNotSupported"
    INVALID = "FieldValueInvalid"
    TOO_LONG = "FieldValueTooLong"
    TOO_MANY = "FieldValueTooMany"
    DUPLICATE = "FieldValueDuplicate"
    OUT_OF_RANGE = "FieldValueOutOfRange"
    UNKNOWN_FIELD = "FieldValueUnknown"


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str
    type: ErrorType = ErrorType.INVALID

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class PolicyInvalid(ValueError):
    """A policy body that the API server would reject; carries every error found."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector; the empty selector matches everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()


@dataclass(frozen=True)
class PolicyRef:
    kind: str
    name: str
    namespace: str | None = None

    @property
    def is_cluster(self) -> bool:
        return self.kind == KIND_CLUSTER

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind} {self.namespace}/{self.name}"
        return f"{self.kind} {self.name}"

    @property
    def annotation_value(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"

    @classmethod
    def from_annotation(cls, value: object) -> PolicyRef | None:
        """The policy an annotation_value names; None for anything else."""
        parts = value.split("/") if isinstance(value, str) else []
        if len(parts) == 3 and parts[0] == KIND_NAMESPACED and all(parts[1:]):
            return cls(parts[0], parts[2], parts[1])
        if len(parts) == 2 and parts[0] == KIND_CLUSTER and parts[1]:
            return cls(parts[0], parts[1])
        return None


@dataclass(frozen=True)
class LameDuck:
    """Where the app offers a lame-duck mode: after a GET on this port and path it keeps
    serving, but closes each connection after its current response."""

    port: int
    path: str


@dataclass(frozen=True)
class LearnedBudget:
    """spec.hold.learnedBudget: size each Deployment's maxHold from what its trusted hold reports
    observed, between the policy's maxHold and this cap; read live by each hold as it starts
    (the grace period lameduck sets leaves room for the cap) and carried by the template from
    the Deployment's next rollout (docs/policy.md)."""

    max_hold_cap: float


@dataclass(frozen=True)
class HoldSpec:
    method: HoldMethod
    propagation_delay: float
    quiet_period: float
    max_hold: float
    lame_duck: LameDuck | None = None
    learned_budget: LearnedBudget | None = None


@dataclass(frozen=True)
class PolicySpec:
    selector: LabelSelector
    namespace_selector: LabelSelector | None
    mode: Mode
    apply: ApplyStrategy
    max_concurrent_rollouts: int
    containers: tuple[str, ...]
    hold: HoldSpec
    drain_timeout: float
    termination_grace_period_seconds: int | None
    readiness_gate: bool
    min_ready_seconds: int | None
    priority: int
    on_conflict: ConflictStrategy


@dataclass(frozen=True)
class Policy:
    ref: PolicyRef
    spec: PolicySpec
    generation: int = 0


def field_path(path: str, name: Any) -> str:
    """path.name, with a name that is not plain visible ASCII (a newline, a space, a megabyte)
    quoted and cut, so that an error stays one short line whatever the body holds."""
    text = name if isinstance(name, str) else str(name)
    if _PLAIN_FIELD.fullmatch(text):
        return f"{path}.{text}"
    cut = text[:_PLAIN_FIELD_SHOWN] + ("..." if len(text) > _PLAIN_FIELD_SHOWN else "")
    return f"{path}.{json.dumps(cut)}"


_PLAIN_FIELD_SHOWN = 64


class _Reader:
    """Walks an untrusted body, collecting errors with their field paths."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def error(self, path: str, message: str, kind: ErrorType) -> None:
        self.errors.append(FieldError(path, message, kind))

    def type_error(self, path: str, expected: str) -> None:
        self.error(path, f"must be of type {expected}", ErrorType.TYPE_INVALID)

    def obj(self, value: Any, path: str, known: Sequence[str]) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.type_error(path, "object")
            return {}
        for key in value:
            if key not in known:
                unknown = field_path(path, key)
                self.error(unknown, f'unknown field "{unknown}"', ErrorType.UNKNOWN_FIELD)
        return value

    def string(self, value: Any, path: str, max_length: int | None = None) -> str | None:
        if not isinstance(value, str):
            self.type_error(path, "string")
            return None
        if max_length is not None and len(value) > max_length:
            self.error(path, f"may not be longer than {max_length}", ErrorType.TOO_LONG)
            return None
        return value

    def boolean(self, value: Any, path: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.type_error(path, "boolean")
            return default
        return value

    def integer(self, value: Any, path: str, rule: IntRule) -> int | None:
        if value is None:
            return rule.default
        if isinstance(value, bool) or not isinstance(value, int):
            self.type_error(path, "integer")
            return rule.default
        if value < rule.minimum:
            self.error(path, f"should be greater than or equal to {rule.minimum}", ErrorType.OUT_OF_RANGE)
        elif value > rule.maximum:
            self.error(path, f"should be less than or equal to {rule.maximum}", ErrorType.OUT_OF_RANGE)
        return value

    def defaulted_integer(self, value: Any, path: str, rule: IntRule) -> int:
        parsed = self.integer(value, path, rule)
        assert rule.default is not None, "only for fields with a default"
        return rule.default if parsed is None else parsed

    def enum(self, value: Any, path: str, enum: type[E], default: E) -> E:
        if value is None:
            return default
        text = self.string(value, path)
        if text is None:
            return default
        try:
            return enum(text)
        except ValueError:
            supported = ", ".join(f'"{m.value}"' for m in enum)
            shown = json.dumps(text[:_PLAIN_FIELD_SHOWN])[1:-1]
            self.error(path, f'Unsupported value: "{shown}": supported values: {supported}', ErrorType.NOT_SUPPORTED)
            return default

    def duration(self, value: Any, path: str, rule: DurationRule) -> float:
        default, lower, upper = rule.seconds
        if value is None:
            return default
        text = self.string(value, path, DURATION_MAX_LENGTH)
        if text is None:
            return default
        seconds = parse_duration(text)
        if seconds is None or not lower <= seconds <= upper:
            self.error(path, rule.message, ErrorType.INVALID)
            return default
        return seconds

    def array(self, value: Any, path: str, limit: int) -> list[Any]:
        """The items of a list of at most `limit`; none when it is longer (one error, not one per item)."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.type_error(path, "array")
            return []
        if len(value) > limit:
            self.error(path, f"Too many: {len(value)}: must have at most {limit} items", ErrorType.TOO_MANY)
            return []
        return value

    def selector(self, value: Any, path: str) -> LabelSelector:
        body = self.obj(value, path, ("matchLabels", "matchExpressions"))
        labels = self.match_labels(body.get("matchLabels"), f"{path}.matchLabels")
        requirements: list[Requirement] = []
        exprs_path = f"{path}.matchExpressions"
        values_ok = True
        for index, raw in enumerate(self.array(body.get("matchExpressions"), exprs_path, MAX_SELECTOR_EXPRESSIONS)):
            req = self.requirement(raw, f"{exprs_path}[{index}]")
            if req is None:
                continue
            needs_values = req.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
            values_ok = values_ok and (bool(req.values) == needs_values)
            requirements.append(req)
        if not values_ok:
            self.error(exprs_path, MSG_SELECTOR_VALUES, ErrorType.INVALID)
        return LabelSelector(tuple(sorted(labels)), tuple(requirements))

    def match_labels(self, value: Any, path: str) -> list[tuple[str, str]]:
        if value is None:
            return []
        if not isinstance(value, Mapping):
            self.type_error(path, "object")
            return []
        if len(value) > MAX_SELECTOR_LABELS:
            self.error(
                path, f"Too many: {len(value)}: must have at most {MAX_SELECTOR_LABELS} items", ErrorType.TOO_MANY
            )
            return []
        labels: list[tuple[str, str]] = []
        for key, val in value.items():
            name = str(key)
            text = self.string(val, field_path(path, name), LABEL_VALUE_MAX_LENGTH)
            if len(name) > LABEL_KEY_MAX_LENGTH:
                self.error(path, MSG_LABEL_KEY_TOO_LONG, ErrorType.TOO_LONG)
            elif text is not None:
                labels.append((name, text))
        return labels

    def requirement(self, value: Any, path: str) -> Requirement | None:
        body = self.obj(value, path, ("key", "operator", "values"))
        if "key" not in body:
            self.error(f"{path}.key", "Required value", ErrorType.REQUIRED)
        if "operator" not in body:
            self.error(f"{path}.operator", "Required value", ErrorType.REQUIRED)
        if "key" not in body or "operator" not in body:
            return None
        key = self.string(body["key"], f"{path}.key", LABEL_KEY_MAX_LENGTH)
        operator = self.enum(body["operator"], f"{path}.operator", SelectorOperator, SelectorOperator.IN)
        values: list[str] = []
        for index, item in enumerate(self.array(body.get("values"), f"{path}.values", MAX_SELECTOR_VALUES)):
            text = self.string(item, f"{path}.values[{index}]", LABEL_VALUE_MAX_LENGTH)
            if text is not None:
                values.append(text)
        if key is None:
            return None
        return Requirement(key, operator, tuple(values))

    def container_names(self, value: Any, path: str) -> tuple[str, ...]:
        names: list[str] = []
        for index, item in enumerate(self.array(value, path, MAX_CONTAINERS)):
            item_path = f"{path}[{index}]"
            name = self.string(item, item_path, CONTAINER_NAME_MAX_LENGTH)
            if name is None:
                continue
            if not re.fullmatch(CONTAINER_NAME_PATTERN, name):
                self.error(item_path, f"should match '{CONTAINER_NAME_PATTERN}'", ErrorType.INVALID)
            elif name in names:
                self.error(item_path, f'Duplicate value: "{name}"', ErrorType.DUPLICATE)
            else:
                names.append(name)
        return tuple(names)


SPEC_FIELDS = (
    "selector",
    "mode",
    "apply",
    "maxConcurrentRollouts",
    "containers",
    "hold",
    "drainTimeout",
    "terminationGracePeriodSeconds",
    "readinessGate",
    "minReadySeconds",
    "priority",
    "onConflict",
)
CLUSTER_SPEC_FIELDS = (*SPEC_FIELDS, "namespaceSelector")
HOLD_FIELDS = ("method", "propagationDelay", "quietPeriod", "maxHold", "lameDuck", "learnedBudget")
LAME_DUCK_FIELDS = ("port", "path")
LEARNED_BUDGET_FIELDS = ("maxHoldCap",)


def parse_policy(body: Mapping[str, Any]) -> Policy:
    """Parse a GracefulPolicy or ClusterGracefulPolicy object; raise PolicyInvalid."""
    kind = body.get("kind")
    if kind not in POLICY_KINDS:
        raise PolicyInvalid([FieldError("kind", f"must be one of {', '.join(POLICY_KINDS)}", ErrorType.NOT_SUPPORTED)])
    if body.get("apiVersion") != API_VERSION:
        raise PolicyInvalid([FieldError("apiVersion", f'must be "{API_VERSION}"', ErrorType.NOT_SUPPORTED)])
    meta = body.get("metadata") or {}
    if not isinstance(meta, Mapping):
        raise PolicyInvalid([FieldError("metadata", "must be of type object", ErrorType.TYPE_INVALID)])
    name = _valid_name(meta.get("name"), "metadata.name", NAME_PATTERN, NAME_MAX_LENGTH)
    namespace = meta.get("namespace") if kind == KIND_NAMESPACED else None
    if namespace is not None and namespace != "":
        namespace = _valid_name(namespace, "metadata.namespace", NAMESPACE_PATTERN, NAMESPACE_MAX_LENGTH)
    generation = meta.get("generation")
    if generation is None:
        generation = 0
    elif isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        message = "must be a non-negative integer"
        raise PolicyInvalid([FieldError("metadata.generation", message, ErrorType.TYPE_INVALID)])
    ref = PolicyRef(kind=str(kind), name=name, namespace=namespace or None)
    return Policy(ref=ref, spec=parse_spec(body.get("spec"), cluster=ref.is_cluster), generation=generation)


def name_error(
    value: Any, path: str, pattern: str = NAME_PATTERN, max_length: int = NAME_MAX_LENGTH
) -> FieldError | None:
    """Why value is no object name (NAME_PATTERN) or namespace name (NAMESPACE_PATTERN), if it is not."""
    if value is None or value == "":
        return FieldError(path, "Required value", ErrorType.REQUIRED)
    if not isinstance(value, str):
        return FieldError(path, "must be of type string", ErrorType.TYPE_INVALID)
    if len(value) > max_length:
        return FieldError(path, f"may not be longer than {max_length}", ErrorType.TOO_LONG)
    if not re.fullmatch(pattern, value):
        message = "must consist of lower case alphanumeric characters, '-' or '.', and start and end with one"
        return FieldError(path, message, ErrorType.INVALID)
    return None


def _valid_name(value: Any, path: str, pattern: str, max_length: int) -> str:
    error = name_error(value, path, pattern, max_length)
    if error is not None:
        raise PolicyInvalid([error])
    return str(value)


def parse_spec(raw: Any, *, cluster: bool) -> PolicySpec:
    """Parse and default a policy spec; raise PolicyInvalid listing every error."""
    r = _Reader()
    spec = r.obj(raw, "spec", CLUSTER_SPEC_FIELDS if cluster else SPEC_FIELDS)
    hold_body = r.obj(spec.get("hold"), "spec.hold", HOLD_FIELDS)
    hold = HoldSpec(
        method=r.enum(hold_body.get("method"), "spec.hold.method", HoldMethod, HoldMethod.SIDECAR),
        propagation_delay=r.duration(
            hold_body.get("propagationDelay"), "spec.hold.propagationDelay", PROPAGATION_DELAY
        ),
        quiet_period=r.duration(hold_body.get("quietPeriod"), "spec.hold.quietPeriod", QUIET_PERIOD),
        max_hold=r.duration(hold_body.get("maxHold"), "spec.hold.maxHold", MAX_HOLD),
        lame_duck=_lame_duck(r, hold_body.get("lameDuck"), "spec.hold.lameDuck"),
        learned_budget=_learned_budget(r, hold_body.get("learnedBudget"), "spec.hold.learnedBudget"),
    )
    gate_body = r.obj(spec.get("readinessGate"), "spec.readinessGate", ("enabled",))
    parsed = PolicySpec(
        selector=r.selector(spec.get("selector"), "spec.selector"),
        namespace_selector=r.selector(spec.get("namespaceSelector"), "spec.namespaceSelector") if cluster else None,
        mode=r.enum(spec.get("mode"), "spec.mode", Mode, Mode.ENFORCE),
        apply=r.enum(spec.get("apply"), "spec.apply", ApplyStrategy, ApplyStrategy.ON_NEXT_ROLLOUT),
        max_concurrent_rollouts=r.defaulted_integer(
            spec.get("maxConcurrentRollouts"), "spec.maxConcurrentRollouts", MAX_CONCURRENT_ROLLOUTS
        ),
        containers=r.container_names(spec.get("containers"), "spec.containers"),
        hold=hold,
        drain_timeout=r.duration(spec.get("drainTimeout"), "spec.drainTimeout", DRAIN_TIMEOUT),
        termination_grace_period_seconds=r.integer(
            spec.get("terminationGracePeriodSeconds"), "spec.terminationGracePeriodSeconds", TERMINATION_GRACE_PERIOD
        ),
        readiness_gate=r.boolean(gate_body.get("enabled"), "spec.readinessGate.enabled", default=False),
        min_ready_seconds=r.integer(spec.get("minReadySeconds"), "spec.minReadySeconds", MIN_READY_SECONDS),
        priority=r.defaulted_integer(spec.get("priority"), "spec.priority", PRIORITY),
        on_conflict=r.enum(spec.get("onConflict"), "spec.onConflict", ConflictStrategy, ConflictStrategy.REPORT),
    )
    if not r.errors:
        _check_cross_field(r, parsed)
    if r.errors:
        raise PolicyInvalid(r.errors)
    return parsed


def _lame_duck(r: _Reader, raw: Any, path: str) -> LameDuck | None:
    if raw is None:
        return None
    body = r.obj(raw, path, LAME_DUCK_FIELDS)
    if not isinstance(raw, Mapping):
        return None
    if body.get("port") is None:
        r.error(f"{path}.port", "Required value", ErrorType.REQUIRED)
    if body.get("path") is None:
        r.error(f"{path}.path", "Required value", ErrorType.REQUIRED)
    port = r.integer(body.get("port"), f"{path}.port", LAME_DUCK_PORT)
    text = None if body.get("path") is None else r.string(body.get("path"), f"{path}.path", LAME_DUCK_PATH_MAX_LENGTH)
    if text is not None and not re.fullmatch(LAME_DUCK_PATH_PATTERN, text):
        r.error(f"{path}.path", MSG_LAME_DUCK_PATH, ErrorType.INVALID)
        text = None
    if port is None or text is None:
        return None
    return LameDuck(port=port, path=text)


def _learned_budget(r: _Reader, raw: Any, path: str) -> LearnedBudget | None:
    if raw is None:
        return None
    body = r.obj(raw, path, LEARNED_BUDGET_FIELDS)
    if not isinstance(raw, Mapping):
        return None
    if body.get("maxHoldCap") is None:
        r.error(f"{path}.maxHoldCap", "Required value", ErrorType.REQUIRED)
        return None
    errors = len(r.errors)
    cap = r.duration(body.get("maxHoldCap"), f"{path}.maxHoldCap", MAX_HOLD_CAP)
    return None if len(r.errors) > errors else LearnedBudget(max_hold_cap=cap)


def _check_cross_field(r: _Reader, spec: PolicySpec) -> None:
    """Rules spanning fields; the CRD states each as a CEL rule with the same message."""
    learned = spec.hold.learned_budget
    if learned is not None and learned.max_hold_cap < spec.hold.max_hold:
        r.error("spec.hold.learnedBudget.maxHoldCap", MSG_CAP_UNDER_MAX_HOLD, ErrorType.INVALID)
    if learned is not None and spec.hold.method is not HoldMethod.SIDECAR:
        r.error("spec.hold.learnedBudget", MSG_LEARNED_BUDGET_SLEEP, ErrorType.INVALID)
    if spec.hold.propagation_delay > spec.hold.max_hold:
        r.error("spec.hold.propagationDelay", MSG_PROPAGATION_OVER_MAX_HOLD, ErrorType.INVALID)
    if spec.hold.quiet_period > spec.hold.max_hold:
        r.error("spec.hold.quietPeriod", MSG_QUIET_OVER_MAX_HOLD, ErrorType.INVALID)
    grace = spec.termination_grace_period_seconds
    if grace is not None and grace < spec.hold.max_hold + spec.drain_timeout:
        r.error("spec.terminationGracePeriodSeconds", MSG_GRACE_UNDER_BUDGET, ErrorType.INVALID)


def whole_seconds(seconds: float) -> int:
    """Kubernetes takes whole seconds; round up so a budget is never short."""
    return math.ceil(seconds - 1e-9)
