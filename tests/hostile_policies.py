"""Hostile and careless policies, one table for every judge: huge and deep bodies, giant strings,
unicode, NaN and Infinity, integers past int64, booleans where integers go, durations that
overflow or sit just past a bound, weird lame-duck paths, fields where they do not belong, each
cross-field rule broken.

The unit tests (tests/unit/test_hostile_policies.py) judge each offline: the model, the CRD's
stand-in (tests/unit/crd_validation.py), the webhook, the CLI; they also check that the table goes
past every bound and breaks every CEL rule of both CRDs. The e2e suite
(tests/e2e/test_hostile_policies.py) sends the same cases to a live API server with the
repository's CRDs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lameduck_operator.model import (
    DRAIN_TIMEOUT,
    MAX_HOLD,
    MAX_HOLD_CAP,
    PROPAGATION_DELAY,
    QUIET_PERIOD,
    DurationRule,
    ErrorType,
)
from lameduck_operator.names import API_VERSION, KIND_CLUSTER, KIND_NAMESPACED

NS = "shop"
MEGABYTE = 1_000_000
Errors = tuple[tuple[str, ErrorType], ...]
ACCEPTED: Errors = ()
NOT_THE_CRDS = ""  # metadata, kind, apiVersion: the API server's own checks, not the CRD's


@dataclass(frozen=True)
class Hostile:
    name: str
    body: dict[str, Any]
    rejected: Errors = ACCEPTED
    # The CRD bound this case exceeds: (schema path, keyword), [] for items, .* for map values.
    bound: tuple[str, str] | None = None
    # Where the CRD reports it, when not at the model's paths (NOT_THE_CRDS: not the CRD's to judge).
    crd_path: str | None = None

    @property
    def judged_by_the_crd(self) -> bool:
        return self.crd_path != NOT_THE_CRDS

    @property
    def crd_paths(self) -> list[str]:
        """The field paths the CRD's refusal names."""
        return [self.crd_path] if self.crd_path else [path for path, _ in self.rejected]


def gp(spec: Any, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND_NAMESPACED,
        "metadata": {"name": "hostile", "namespace": NS} | meta,
        "spec": spec,
    }


def cgp(spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND_CLUSTER, "metadata": {"name": "hostile"}, "spec": spec}


def in_the_cluster(case: Hostile) -> Hostile:
    """The case's spec in a ClusterGracefulPolicy: both CRDs carry the rule it breaks."""
    return Hostile(f"{case.name}-cluster", cgp(case.body["spec"]), case.rejected, crd_path=case.crd_path)


def both_kinds(case: Hostile) -> list[Hostile]:
    return [case, in_the_cluster(case)]


def ids(cases: list[Hostile]) -> list[str]:
    return [c.name for c in cases]


def nest(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": value}
    return value


def lame_duck(port: Any = 8080, path: Any = "/lameduck") -> dict[str, Any]:
    return gp({"hold": {"lameDuck": {"port": port, "path": path}}})


def selector_cases(prefix: str, make: Callable[[dict[str, Any]], dict[str, Any]], suffix: str = "") -> list[Hostile]:
    """Every bound and rule of a label selector, broken (the bounds far past)."""
    s = prefix.removeprefix("spec.")
    cases = [
        # maxProperties 64 of matchLabels.
        Hostile(
            f"{s}-10k-labels",
            make({"matchLabels": {f"k{i}": "v" for i in range(10_000)}}),
            ((f"{prefix}.matchLabels", ErrorType.TOO_MANY),),
            (f"{prefix}.matchLabels", "maxProperties"),
        ),
        # maxLength 63 of each matchLabels value.
        Hostile(
            f"{s}-megabyte-label-value",
            make({"matchLabels": {"tier": "x" * MEGABYTE}}),
            ((f"{prefix}.matchLabels.tier", ErrorType.TOO_LONG),),
            (f"{prefix}.matchLabels.*", "maxLength"),
        ),
        # matchLabels' CEL rule self.all(k, size(k) <= 317).
        Hostile(
            f"{s}-megabyte-label-key",
            make({"matchLabels": {"k" * MEGABYTE: "web"}}),
            ((f"{prefix}.matchLabels", ErrorType.TOO_LONG),),
        ),
        # maxItems 32 of matchExpressions.
        Hostile(
            f"{s}-10k-expressions",
            make({"matchExpressions": [{"key": "app", "operator": "Exists"}] * 10_000}),
            ((f"{prefix}.matchExpressions", ErrorType.TOO_MANY),),
            (f"{prefix}.matchExpressions", "maxItems"),
        ),
        # maxLength 317 of an expression's key.
        Hostile(
            f"{s}-megabyte-expression-key",
            make({"matchExpressions": [{"key": "k" * MEGABYTE, "operator": "Exists"}]}),
            ((f"{prefix}.matchExpressions[0].key", ErrorType.TOO_LONG),),
            (f"{prefix}.matchExpressions[].key", "maxLength"),
        ),
        # maxItems 64 of an expression's values.
        Hostile(
            f"{s}-10k-values",
            make({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"] * 10_000}]}),
            ((f"{prefix}.matchExpressions[0].values", ErrorType.TOO_MANY),),
            (f"{prefix}.matchExpressions[].values", "maxItems"),
        ),
        # maxLength 63 of each value.
        Hostile(
            f"{s}-long-value",
            make({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["v" * 64]}]}),
            ((f"{prefix}.matchExpressions[0].values[0]", ErrorType.TOO_LONG),),
            (f"{prefix}.matchExpressions[].values[]", "maxLength"),
        ),
        # The operator's enum.
        Hostile(
            f"{s}-unknown-operator",
            make({"matchExpressions": [{"key": "app", "operator": "Matches", "values": [".*"]}]}),
            ((f"{prefix}.matchExpressions[0].operator", ErrorType.NOT_SUPPORTED),),
        ),
        # matchExpressions' CEL rule: values non-empty for In and NotIn, empty for Exists and
        # DoesNotExist (both ways).
        Hostile(
            f"{s}-in-without-values",
            make({"matchExpressions": [{"key": "app", "operator": "In", "values": []}]}),
            ((f"{prefix}.matchExpressions", ErrorType.INVALID),),
        ),
        Hostile(
            f"{s}-exists-with-values",
            make({"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["web"]}]}),
            ((f"{prefix}.matchExpressions", ErrorType.INVALID),),
        ),
    ]
    return [Hostile(f"{c.name}{suffix}", c.body, c.rejected, c.bound, c.crd_path) for c in cases]


def int_cases(field: str, low: Any, high: Any, make: Callable[[Any], dict[str, Any]]) -> list[Hostile]:
    """The field's minimum and maximum; past int64 no integer at all (the API server decodes it
    as a float: "must be of type integer")."""
    return [
        Hostile(f"{field}-{low}", make(low), ((field, ErrorType.OUT_OF_RANGE),), (field, "minimum")),
        Hostile(f"{field}-{high}"[:60], make(high), ((field, ErrorType.OUT_OF_RANGE),), (field, "maximum")),
    ]


def duration_cases(field: str, make: Callable[[Any], dict[str, Any]], rule: DurationRule) -> list[Hostile]:
    bad = ErrorType.INVALID
    _, low, high = rule.seconds
    # Refused by the field's CEL rule: self.matches(<a Go duration>) && duration(self) within the
    # bounds. Well formed, a millisecond out of bounds: its comparison refuses these, not its pattern.
    past = both_kinds(Hostile(f"{field}-past-its-maximum", make(f"{round(high * 1000) + 1}ms"), ((field, bad),)))
    under = [Hostile(f"{field}-under-its-minimum", make(f"{round(low * 1000) - 1}ms"), ((field, bad),))] if low else []
    return [
        *past,
        *under,
        # maxLength 32.
        Hostile(f"{field}-33-characters", make("1" * 32 + "s"), ((field, ErrorType.TOO_LONG),), (field, "maxLength")),
        Hostile(f"{field}-megabyte", make("1" * MEGABYTE + "s"), ((field, ErrorType.TOO_LONG),)),
        # The CEL rule fails to evaluate (duration() overflows Go's int64 nanoseconds): refused.
        Hostile(f"{field}-overflowing-go", make("9" * 31 + "h"), ((field, bad),)),
        Hostile(f"{field}-99999999h", make("99999999h"), ((field, bad),)),
        # type: string (and no JSON: the e2e suite cannot send them).
        Hostile(f"{field}-nan", make(math.nan), ((field, ErrorType.TYPE_INVALID),)),
        Hostile(f"{field}-infinity", make(math.inf), ((field, ErrorType.TYPE_INVALID),)),
        # The CEL rule's pattern ^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$ (Go's $: the end of the text).
        Hostile(f"{field}-NaN-text", make("NaN"), ((field, bad),)),
        Hostile(f"{field}-1e309-text", make("1e309"), ((field, bad),)),
        Hostile(f"{field}-negative", make("-1s"), ((field, bad),)),
        Hostile(f"{field}-fullwidth-digit", make("\uff12s"), ((field, bad),)),
        Hostile(f"{field}-newline", make("2s\n"), ((field, bad),)),
    ]


def hold(field: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: gp({"hold": {field: value}})


def learned_cap(value: Any) -> dict[str, Any]:
    return gp({"hold": {"learnedBudget": {"maxHoldCap": value}}})


def spec_field(field: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: gp({field: value})


MAXIMA: dict[str, Any] = {
    "hold": {"propagationDelay": "5m", "quietPeriod": "1m", "maxHold": "10m"},
    "drainTimeout": "1h",
    "maxConcurrentRollouts": 1000,
    "priority": 1000,
    "minReadySeconds": 3600,
}

CASES: list[Hostile] = [
    # Careless but valid: accepted, with sane values.
    Hostile("empty-spec", gp({})),
    Hostile("no-spec", gp(None)),
    Hostile(
        "every-field-null",
        gp(dict.fromkeys(("selector", "mode", "apply", "containers", "hold", "drainTimeout", "priority"))),
    ),
    Hostile("every-field-at-its-maximum", gp(MAXIMA)),
    Hostile(
        "every-bound-at-its-maximum-and-the-grace-period-too", gp(MAXIMA | {"terminationGracePeriodSeconds": 7200})
    ),
    Hostile(
        "every-field-at-its-minimum",
        gp(
            {
                "hold": {"propagationDelay": "0s", "quietPeriod": "0s", "maxHold": "1s"},
                "drainTimeout": "0s",
                "terminationGracePeriodSeconds": 1,
                "maxConcurrentRollouts": 1,
                "priority": -1000,
                "minReadySeconds": 0,
            }
        ),
    ),
    Hostile("max-hold-and-a-hundred-thousandth", gp({"hold": {"maxHold": "1m0.00001s"}})),
    Hostile("sub-microsecond-delay", gp({"hold": {"propagationDelay": "0.0000000001ms"}})),
    Hostile("thirty-leading-zeros", gp({"hold": {"maxHold": "0" * 29 + "30s"}})),
    Hostile("unicode-label-value", gp({"selector": {"matchLabels": {"tier": "wëb-🦆"}}})),
    Hostile("sleep-with-every-maximum", gp(MAXIMA | {"hold": MAXIMA["hold"] | {"method": "Sleep"}})),
    Hostile("selects-everything-everywhere", cgp({"selector": {}, "namespaceSelector": {}})),
    Hostile(
        "selects-everything-in-kube-system",
        cgp({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}),
    ),
    Hostile("lame-duck-path-climbing-up", lame_duck(path="/../../etc/passwd")),
    Hostile("lame-duck-path-naming-another-host", lame_duck(path="//evil.example/x")),
    Hostile("lame-duck-path-with-a-query", lame_duck(path="/x?y=1&z=%00")),
    Hostile("lame-duck-path-at-its-bound", lame_duck(path="/" + "a" * 255)),
    Hostile("lame-duck-port-at-its-bounds", lame_duck(port=65535)),
    # Over a bound, of the wrong type, or breaking a rule: rejected at the field. Each says which
    # rule of the CRD refuses it.
    *selector_cases("spec.selector", lambda s: gp({"selector": s})),
    *selector_cases("spec.namespaceSelector", lambda s: cgp({"namespaceSelector": s})),
    *selector_cases("spec.selector", lambda s: cgp({"selector": s}), suffix="-cluster"),
    *int_cases("spec.maxConcurrentRollouts", 0, 2**63, spec_field("maxConcurrentRollouts")),
    *int_cases("spec.priority", -(2**63), 2**64, spec_field("priority")),
    *int_cases("spec.terminationGracePeriodSeconds", 0, 10**30, spec_field("terminationGracePeriodSeconds")),
    *int_cases("spec.minReadySeconds", -1, 3601, spec_field("minReadySeconds")),
    *int_cases("spec.hold.lameDuck.port", 0, 65536, lambda port: lame_duck(port=port)),
    *duration_cases("spec.hold.propagationDelay", hold("propagationDelay"), PROPAGATION_DELAY),
    *duration_cases("spec.hold.quietPeriod", hold("quietPeriod"), QUIET_PERIOD),
    *duration_cases("spec.hold.maxHold", hold("maxHold"), MAX_HOLD),
    *duration_cases("spec.drainTimeout", spec_field("drainTimeout"), DRAIN_TIMEOUT),
    *duration_cases("spec.hold.learnedBudget.maxHoldCap", learned_cap, MAX_HOLD_CAP),
    Hostile("learned-budget-cap-at-its-bound", learned_cap("10m")),
    # spec.hold's CEL rule: maxHoldCap >= maxHold (the default 30s here).
    *both_kinds(
        Hostile(
            "learned-budget-cap-below-max-hold",
            learned_cap("29s"),
            (("spec.hold.learnedBudget.maxHoldCap", ErrorType.INVALID),),
        )
    ),
    # required: maxHoldCap.
    Hostile(
        "learned-budget-without-cap",
        gp({"hold": {"learnedBudget": {}}}),
        (("spec.hold.learnedBudget.maxHoldCap", ErrorType.REQUIRED),),
    ),
    # type: object.
    Hostile(
        "learned-budget-as-text",
        gp({"hold": {"learnedBudget": "2m"}}),
        (("spec.hold.learnedBudget", ErrorType.TYPE_INVALID),),
    ),
    # spec.hold's CEL rule: learnedBudget needs method Sidecar.
    *both_kinds(
        Hostile(
            "learned-budget-with-sleep",
            gp({"hold": {"method": "Sleep", "learnedBudget": {"maxHoldCap": "2m"}}}),
            (("spec.hold.learnedBudget", ErrorType.INVALID),),
        )
    ),
    # maxItems 64.
    Hostile(
        "10k-containers",
        gp({"containers": [f"c{i}" for i in range(10_000)]}),
        (("spec.containers", ErrorType.TOO_MANY),),
        ("spec.containers", "maxItems"),
    ),
    # maxLength 63.
    Hostile(
        "container-name-too-long",
        gp({"containers": ["a" * 64]}),
        (("spec.containers[0]", ErrorType.TOO_LONG),),
        ("spec.containers[]", "maxLength"),
    ),
    # pattern ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$.
    Hostile("unicode-container-name", gp({"containers": ["äpp"]}), (("spec.containers[0]", ErrorType.INVALID),)),
    # x-kubernetes-list-type: set.
    Hostile("duplicate-containers", gp({"containers": ["app", "app"]}), (("spec.containers[1]", ErrorType.DUPLICATE),)),
    # maxLength 256.
    Hostile(
        "lame-duck-path-too-long",
        lame_duck(path="/" + "a" * 256),
        (("spec.hold.lameDuck.path", ErrorType.TOO_LONG),),
        ("spec.hold.lameDuck.path", "maxLength"),
    ),
    Hostile(
        "lame-duck-path-megabyte", lame_duck(path="/" * MEGABYTE), (("spec.hold.lameDuck.path", ErrorType.TOO_LONG),)
    ),
    # pattern ^/[!-~]{0,255}$ (these five).
    Hostile("lame-duck-path-with-a-space", lame_duck(path="/a b"), (("spec.hold.lameDuck.path", ErrorType.INVALID),)),
    Hostile(
        "lame-duck-path-smuggling-a-header",
        lame_duck(path="/x HTTP/1.1\r\nHost: evil.example\r\n\r\n"),
        (("spec.hold.lameDuck.path", ErrorType.INVALID),),
    ),
    Hostile(
        "lame-duck-path-right-to-left-override",
        lame_duck(path="/a\u202eb"),
        (("spec.hold.lameDuck.path", ErrorType.INVALID),),
    ),
    Hostile("lame-duck-path-relative", lame_duck(path="lameduck"), (("spec.hold.lameDuck.path", ErrorType.INVALID),)),
    Hostile("lame-duck-path-empty", lame_duck(path=""), (("spec.hold.lameDuck.path", ErrorType.INVALID),)),
    # type: integer (these two).
    Hostile("lame-duck-port-as-text", lame_duck(port="8080"), (("spec.hold.lameDuck.port", ErrorType.TYPE_INVALID),)),
    Hostile("lame-duck-port-true", lame_duck(port=True), (("spec.hold.lameDuck.port", ErrorType.TYPE_INVALID),)),
    # required: port and path.
    Hostile(
        "lame-duck-empty",
        gp({"hold": {"lameDuck": {}}}),
        (("spec.hold.lameDuck.port", ErrorType.REQUIRED), ("spec.hold.lameDuck.path", ErrorType.REQUIRED)),
    ),
    # No such field: strict field validation refuses it (without, the API server would prune it).
    Hostile(
        "lame-duck-on-another-host",
        gp({"hold": {"lameDuck": {"port": 80, "path": "/", "host": "evil.example"}}}),
        (("spec.hold.lameDuck.host", ErrorType.UNKNOWN_FIELD),),
    ),
    # type: object.
    Hostile(
        "lame-duck-as-text", gp({"hold": {"lameDuck": "8080/x"}}), (("spec.hold.lameDuck", ErrorType.TYPE_INVALID),)
    ),
    # type: integer (these five; no JSON carries the last two, 1e309 and NaN).
    Hostile("true-for-an-integer", gp({"priority": True}), (("spec.priority", ErrorType.TYPE_INVALID),)),
    Hostile(
        "false-for-an-integer",
        gp({"maxConcurrentRollouts": False}),
        (("spec.maxConcurrentRollouts", ErrorType.TYPE_INVALID),),
    ),
    Hostile("float-for-an-integer", gp({"minReadySeconds": 1.5}), (("spec.minReadySeconds", ErrorType.TYPE_INVALID),)),
    Hostile("1e309-for-an-integer", gp({"priority": float("1e309")}), (("spec.priority", ErrorType.TYPE_INVALID),)),
    Hostile(
        "nan-for-an-integer",
        gp({"terminationGracePeriodSeconds": math.nan}),
        (("spec.terminationGracePeriodSeconds", ErrorType.TYPE_INVALID),),
    ),
    # type: boolean (these two).
    Hostile(
        "one-for-a-boolean",
        gp({"readinessGate": {"enabled": 1}}),
        (("spec.readinessGate.enabled", ErrorType.TYPE_INVALID),),
    ),
    Hostile(
        "text-for-a-boolean",
        gp({"readinessGate": {"enabled": "true"}}),
        (("spec.readinessGate.enabled", ErrorType.TYPE_INVALID),),
    ),
    # type: object (these two).
    Hostile("list-for-an-object", gp({"hold": []}), (("spec.hold", ErrorType.TYPE_INVALID),)),
    Hostile("text-for-the-spec", gp("everything"), (("spec", ErrorType.TYPE_INVALID),)),
    # The field's enum (these two).
    Hostile("enum-in-lower-case", gp({"mode": "enforce"}), (("spec.mode", ErrorType.NOT_SUPPORTED),)),
    Hostile(
        "enum-a-megabyte-long", gp({"onConflict": "T" * MEGABYTE}), (("spec.onConflict", ErrorType.NOT_SUPPORTED),)
    ),
    # No such field (strict field validation).
    Hostile(
        "deeply-nested-unknown-field",
        gp({"hold": {"a": nest(80)}}),
        (("spec.hold.a", ErrorType.UNKNOWN_FIELD),),
    ),
    # type: string (with strict field validation: an unknown field under it).
    Hostile(
        "deeply-nested-label-value",
        gp({"selector": {"matchLabels": {"a": nest(80)}}}),
        (("spec.selector.matchLabels.a", ErrorType.TYPE_INVALID),),
    ),
    # No such field (strict field validation; these three).
    Hostile(
        "unknown-field-with-a-newline",
        gp({"a\nb": 1}),
        (('spec."a\\nb"', ErrorType.UNKNOWN_FIELD),),
        crd_path="spec.a\nb",
    ),
    Hostile(
        "unicode-unknown-field",
        gp({"mödé": "Enforce"}),
        (('spec."m\\u00f6d\\u00e9"', ErrorType.UNKNOWN_FIELD),),
        crd_path="spec.mödé",
    ),
    Hostile(
        "namespace-selector-on-a-namespaced-policy",
        gp({"namespaceSelector": {}}),
        (("spec.namespaceSelector", ErrorType.UNKNOWN_FIELD),),
    ),
    # What a namespaced policy must not make the operator inject or reach: no field says it.
    Hostile(
        "another-sidecar-image",
        gp({"sidecar": {"image": "evil.example/x:1"}}),
        (("spec.sidecar", ErrorType.UNKNOWN_FIELD),),
    ),
    Hostile(
        "an-image-in-the-hold",
        gp({"hold": {"image": "evil.example/x:1"}}),
        (("spec.hold.image", ErrorType.UNKNOWN_FIELD),),
    ),
    Hostile(
        "a-volume-mount",
        gp({"volumeMounts": [{"name": "host", "mountPath": "/host"}]}),
        (("spec.volumeMounts", ErrorType.UNKNOWN_FIELD),),
    ),
    Hostile(
        "a-host-path-volume",
        gp({"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}),
        (("spec.volumes", ErrorType.UNKNOWN_FIELD),),
    ),
    Hostile(
        "a-capability",
        gp({"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}),
        (("spec.securityContext", ErrorType.UNKNOWN_FIELD),),
    ),
    Hostile(
        "env-from-a-secret",
        gp({"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
        (("spec.env", ErrorType.UNKNOWN_FIELD),),
    ),
    Hostile(
        "a-deployment-in-another-namespace",
        gp({"namespace": "kube-system"}),
        (("spec.namespace", ErrorType.UNKNOWN_FIELD),),
    ),
    # spec's CEL rule: terminationGracePeriodSeconds * 1000 >= maxHold + drainTimeout in ms (these two).
    *both_kinds(
        Hostile(
            "grace-period-one-under-the-largest-budget",
            gp({"hold": {"maxHold": "10m"}, "drainTimeout": "1h", "terminationGracePeriodSeconds": 4199}),
            (("spec.terminationGracePeriodSeconds", ErrorType.INVALID),),
        )
    ),
    Hostile(
        "grace-period-under-a-fractional-budget",
        gp(
            {
                "hold": {"maxHold": "1.5s", "propagationDelay": "1s"},
                "drainTimeout": "0.6s",
                "terminationGracePeriodSeconds": 2,
            }
        ),
        (("spec.terminationGracePeriodSeconds", ErrorType.INVALID),),
    ),
    # spec.hold's CEL rule: propagationDelay <= maxHold.
    *both_kinds(
        Hostile(
            "propagation-delay-past-max-hold",
            gp({"hold": {"propagationDelay": "5m", "maxHold": "4m59.999s"}}),
            (("spec.hold.propagationDelay", ErrorType.INVALID),),
        )
    ),
    # spec.hold's CEL rule: quietPeriod <= maxHold.
    *both_kinds(
        Hostile(
            "quiet-period-past-max-hold",
            gp({"hold": {"quietPeriod": "1m", "maxHold": "59.999s"}}),
            (("spec.hold.quietPeriod", ErrorType.INVALID),),
        )
    ),
    # Not the CRD's: the API server's checks of metadata, kind and apiVersion (kubectl's, before).
    Hostile("name-in-capitals", gp({}, name="Hostile"), (("metadata.name", ErrorType.INVALID),), crd_path=NOT_THE_CRDS),
    Hostile(
        "name-a-megabyte-long",
        gp({}, name="a" * MEGABYTE),
        (("metadata.name", ErrorType.TOO_LONG),),
        crd_path=NOT_THE_CRDS,
    ),
    Hostile("name-with-a-newline", gp({}, name="a\nb"), (("metadata.name", ErrorType.INVALID),), crd_path=NOT_THE_CRDS),
    Hostile(
        "namespace-climbing-up",
        gp({}, namespace="../etc"),
        (("metadata.namespace", ErrorType.INVALID),),
        crd_path=NOT_THE_CRDS,
    ),
    Hostile(
        "generation-as-text",
        gp({}, generation="1"),
        (("metadata.generation", ErrorType.TYPE_INVALID),),
        crd_path=NOT_THE_CRDS,
    ),
    Hostile(
        "metadata-as-a-list",
        gp({}) | {"metadata": ["hostile"]},
        (("metadata", ErrorType.TYPE_INVALID),),
        crd_path=NOT_THE_CRDS,
    ),
    Hostile(
        "kind-in-lower-case",
        gp({}) | {"kind": "gracefulpolicy"},
        (("kind", ErrorType.NOT_SUPPORTED),),
        crd_path=NOT_THE_CRDS,
    ),
    Hostile(
        "another-api-version",
        gp({}) | {"apiVersion": "lameduck.dev/v1"},
        (("apiVersion", ErrorType.NOT_SUPPORTED),),
        crd_path=NOT_THE_CRDS,
    ),
]
