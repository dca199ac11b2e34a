"""Builds the GracefulPolicy and ClusterGracefulPolicy CRDs from the model's rules.

`make crds` writes them to crds/; a unit test fails when the files there drift from this.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from lameduck_operator.logic.budget import BudgetSource
from lameduck_operator.model import (
    CONDITION_MESSAGE_MAX_LENGTH,
    CONTAINER_NAME_MAX_LENGTH,
    CONTAINER_NAME_PATTERN,
    DRAIN_TIMEOUT,
    DURATION_MAX_LENGTH,
    DURATION_PATTERN,
    LABEL_KEY_MAX_LENGTH,
    LABEL_VALUE_MAX_LENGTH,
    LAME_DUCK_PATH_MAX_LENGTH,
    LAME_DUCK_PATH_PATTERN,
    LAME_DUCK_PORT,
    MAX_CONCURRENT_ROLLOUTS,
    MAX_CONTAINERS,
    MAX_HOLD,
    MAX_HOLD_CAP,
    MAX_SELECTOR_EXPRESSIONS,
    MAX_SELECTOR_LABELS,
    MAX_SELECTOR_VALUES,
    MIN_READY_SECONDS,
    MSG_CAP_UNDER_MAX_HOLD,
    MSG_GRACE_UNDER_BUDGET,
    MSG_LABEL_KEY_TOO_LONG,
    MSG_LEARNED_BUDGET_SLEEP,
    MSG_PROPAGATION_OVER_MAX_HOLD,
    MSG_QUIET_OVER_MAX_HOLD,
    MSG_SELECTOR_VALUES,
    PRIORITY,
    PROPAGATION_DELAY,
    QUIET_PERIOD,
    TERMINATION_GRACE_PERIOD,
    ApplyStrategy,
    ConflictStrategy,
    DurationRule,
    HoldMethod,
    IntRule,
    Mode,
    SelectorOperator,
)
from lameduck_operator.names import (
    API_VERSION,
    GROUP,
    KIND_CLUSTER,
    KIND_NAMESPACED,
    PART_OF_LABEL,
    PLURALS,
    SIDECAR_NAME,
    SKIP_ANNOTATION,
    VERSION,
    ReportField,
)

# CEL string literals need the regex's backslashes escaped.
_CEL_DURATION = "'" + DURATION_PATTERN.replace("\\", "\\\\") + "'"


def _deployment_named() -> dict[str, Any]:
    """A Deployment named in a status list (nonCompliant, lateTraffic, startingBudgets, ...): new
    dicts each time, which YAML writes out in full rather than as anchors."""
    return {
        "namespace": {"type": "string", "description": "The Deployment's namespace."},
        "name": {"type": "string", "description": "The Deployment's name."},
    }


def _is_duration(expr: str) -> str:
    return f"{expr}.matches({_CEL_DURATION})"


def _duration(rule: DurationRule, description: str) -> dict[str, Any]:
    bounds = f"duration(self) >= duration('{rule.minimum}') && duration(self) <= duration('{rule.maximum}')"
    return {
        "type": "string",
        "description": (
            f"{description} A duration such as 500ms, 2s or 1m30s, from {rule.minimum} to "
            f"{rule.maximum}. Default: {rule.default}."
        ),
        "default": rule.default,
        "maxLength": DURATION_MAX_LENGTH,
        "x-kubernetes-validations": [{"rule": f"{_is_duration('self')} && {bounds}", "message": rule.message}],
    }


def _integer(rule: IntRule, description: str) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "integer",
        "format": "int32",
        "description": description,
        "minimum": rule.minimum,
        "maximum": rule.maximum,
    }
    if rule.default is not None:
        schema["default"] = rule.default
        schema["description"] = f"{description} Default: {rule.default}."
    return schema


def _enum(values: list[str], default: str, description: str) -> dict[str, Any]:
    return {"type": "string", "description": f"{description} Default: {default}.", "enum": values, "default": default}


def _selector(description: str) -> dict[str, Any]:
    operators = [op.value for op in SelectorOperator]
    return {
        "type": "object",
        "description": description,
        "default": {},
        "x-kubernetes-map-type": "atomic",
        "properties": {
            "matchLabels": {
                "type": "object",
                "description": "Labels that must all be present with exactly these values.",
                "additionalProperties": {"type": "string", "maxLength": LABEL_VALUE_MAX_LENGTH},
                "maxProperties": MAX_SELECTOR_LABELS,
                "x-kubernetes-validations": [
                    {"rule": f"self.all(k, size(k) <= {LABEL_KEY_MAX_LENGTH})", "message": MSG_LABEL_KEY_TOO_LONG}
                ],
            },
            "matchExpressions": {
                "type": "array",
                "description": "Requirements that must all hold; evaluated as in any Kubernetes label selector.",
                "maxItems": MAX_SELECTOR_EXPRESSIONS,
                "x-kubernetes-list-type": "atomic",
                "x-kubernetes-validations": [
                    {
                        "rule": (
                            "self.all(e, e.operator in ['In', 'NotIn'] ? "
                            "(has(e.values) && size(e.values) > 0) : (!has(e.values) || size(e.values) == 0))"
                        ),
                        "message": MSG_SELECTOR_VALUES,
                    }
                ],
                "items": {
                    "type": "object",
                    "description": "One label requirement.",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {"type": "string", "description": "The label key.", "maxLength": LABEL_KEY_MAX_LENGTH},
                        "operator": {
                            "type": "string",
                            "description": "How the key relates to the values.",
                            "enum": operators,
                        },
                        "values": {
                            "type": "array",
                            "description": "Values: non-empty for In and NotIn, empty for Exists and DoesNotExist.",
                            "maxItems": MAX_SELECTOR_VALUES,
                            "x-kubernetes-list-type": "atomic",
                            "items": {"type": "string", "maxLength": LABEL_VALUE_MAX_LENGTH},
                        },
                    },
                },
            },
        },
    }


def _learned_budget() -> dict[str, Any]:
    cap = _duration(
        MAX_HOLD_CAP,
        "The longest maxHold lameduck may learn for a Deployment; at least maxHold.",
    )
    # Required: the rule's default is none a user chose.
    del cap["default"]
    cap["description"] = cap["description"].replace(f" Default: {MAX_HOLD_CAP.default}.", "")
    return {
        "type": "object",
        "description": "Optional: size each Deployment's maxHold from what its own trusted hold reports "
        "observed: when holds ended at maxHold with late traffic still arriving, or lost requests after they "
        "released, that Deployment's later holds get a longer maxHold (read by each hold as it starts, and "
        "carried by the template from its next rollout, so no extra restart), never below maxHold nor above "
        "maxHoldCap; it comes back down only when its recent holds all ended quiet well before it. Where "
        "lameduck sets the grace period it leaves room for maxHoldCap. Needs method Sidecar.",
        "required": ["maxHoldCap"],
        "properties": {"maxHoldCap": cap},
    }


def _hold() -> dict[str, Any]:
    max_hold_ok = _is_duration("self.maxHold")
    return {
        "type": "object",
        "description": "How each pod holds its app containers' preStop until traffic has stopped.",
        "default": {},
        "properties": {
            "method": _enum(
                [m.value for m in HoldMethod],
                HoldMethod.SIDECAR.value,
                "Sidecar: the lameduck sidecar holds until every EndpointSlice shows the pod not ready, "
                "then until no new connection reached the app for quietPeriod and at least "
                "propagationDelay passed. Sleep: a fixed native preStop sleep of maxHold, no sidecar. "
                "Pods on the host network never get the sidecar: select them with Sleep.",
            ),
            "propagationDelay": _duration(
                PROPAGATION_DELAY,
                "Minimum wait after every EndpointSlice shows the pod not ready, for data planes to catch up.",
            ),
            "quietPeriod": _duration(
                QUIET_PERIOD,
                "After the slices let go: how long no new connection may reach the app before the hold ends.",
            ),
            "maxHold": _duration(
                MAX_HOLD,
                "Upper bound of the hold; when reached the hold ends anyway (fail open) and a metric counts it. "
                "With method Sleep, the fixed hold.",
            ),
            "lameDuck": {
                "type": "object",
                "description": "Optional: the app's lame-duck mode. When a hold starts the sidecar sends "
                "GET http://127.0.0.1:<port><path>; from then on the app keeps serving but closes each "
                "connection after its current response (as Envoy's drain, gRPC's GOAWAY or Go's "
                "SetKeepAlivesEnabled(false) do). Requests on pooled or pinned connections then come on new "
                "connections, which the sidecar counts, so the hold ends when the data planes stop choosing "
                "the pod, without guessing. Any 2xx answer turns it on; any other answer, or none within 1s, "
                "leaves the hold as without it.",
                "required": ["port", "path"],
                "properties": {
                    "port": _integer(LAME_DUCK_PORT, "The app's port, on the pod's loopback address."),
                    "path": {
                        "type": "string",
                        "description": "The HTTP path that turns the app's lame-duck mode on.",
                        "maxLength": LAME_DUCK_PATH_MAX_LENGTH,
                        "pattern": LAME_DUCK_PATH_PATTERN,
                    },
                },
            },
            "learnedBudget": _learned_budget(),
        },
        "x-kubernetes-validations": [
            {
                "rule": f"!has(self.learnedBudget) || !has(self.learnedBudget.maxHoldCap) || !has(self.maxHold) || "
                f"!{_is_duration('self.learnedBudget.maxHoldCap')} || !{max_hold_ok} || "
                "duration(self.learnedBudget.maxHoldCap) >= duration(self.maxHold)",
                "message": MSG_CAP_UNDER_MAX_HOLD,
                "fieldPath": ".learnedBudget.maxHoldCap",
            },
            {
                "rule": f"!has(self.learnedBudget) || !has(self.method) || self.method == '{HoldMethod.SIDECAR.value}'",
                "message": MSG_LEARNED_BUDGET_SLEEP,
                "fieldPath": ".learnedBudget",
            },
            {
                "rule": f"!has(self.propagationDelay) || !has(self.maxHold) || "
                f"!{_is_duration('self.propagationDelay')} || !{max_hold_ok} || "
                "duration(self.propagationDelay) <= duration(self.maxHold)",
                "message": MSG_PROPAGATION_OVER_MAX_HOLD,
                "fieldPath": ".propagationDelay",
            },
            {
                "rule": f"!has(self.quietPeriod) || !has(self.maxHold) || "
                f"!{_is_duration('self.quietPeriod')} || !{max_hold_ok} || "
                "duration(self.quietPeriod) <= duration(self.maxHold)",
                "message": MSG_QUIET_OVER_MAX_HOLD,
                "fieldPath": ".quietPeriod",
            },
        ],
    }


def _spec(cluster: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "selector": _selector(
            "Selects Deployments by their labels. The empty selector {} selects every Deployment"
            + (" in the namespaces namespaceSelector selects." if cluster else " in this namespace.")
        ),
        "mode": _enum(
            [m.value for m in Mode], Mode.ENFORCE.value, "Enforce changes Deployments; Audit only reports compliance."
        ),
        "apply": _enum(
            [a.value for a in ApplyStrategy],
            ApplyStrategy.ON_NEXT_ROLLOUT.value,
            "OnNextRollout injects at admission, so a policy change costs no extra restart; "
            "Immediate patches matched Deployments now, which restarts them.",
        ),
        "maxConcurrentRollouts": _integer(
            MAX_CONCURRENT_ROLLOUTS, "With apply Immediate: how many Deployments of this policy may restart at once."
        ),
        "containers": {
            "type": "array",
            "description": "Names of the app containers that get the hold; those absent from a Deployment are "
            "ignored. Empty: every container except the lameduck sidecar.",
            "maxItems": MAX_CONTAINERS,
            "x-kubernetes-list-type": "set",
            "items": {"type": "string", "maxLength": CONTAINER_NAME_MAX_LENGTH, "pattern": CONTAINER_NAME_PATTERN},
        },
        "hold": _hold(),
        "drainTimeout": _duration(
            DRAIN_TIMEOUT,
            "What the app itself needs after SIGTERM to finish in-flight work. A pod deleted with a shorter "
            "grace period than its template's gets a shorter hold, so that this much is left.",
        ),
        "terminationGracePeriodSeconds": _integer(
            TERMINATION_GRACE_PERIOD,
            "The pod grace period to set. Unset: maxHold + drainTimeout + 5s, rounded up. "
            "lameduck never lowers a larger grace period already set. With hold.learnedBudget and neither this "
            "nor a grace period set by another manager: maxHoldCap + drainTimeout + 5s, room for any learned hold.",
        ),
        "readinessGate": {
            "type": "object",
            "description": "Adds the pod readiness gate lameduck.dev/endpoints-ready, which the operator sets "
            "True once every Service selecting the pod lists it in an EndpointSlice (reason EndpointsListed), "
            "or at once when no Service selects it (NoService); False (NotListed) until then. A pod being "
            "deleted, or already True, is never set False.",
            "default": {},
            "properties": {
                "enabled": {
                    "type": "boolean",
                    "description": "Whether to add the readiness gate. Default: false.",
                    "default": False,
                },
            },
        },
        "minReadySeconds": _integer(
            MIN_READY_SECONDS,
            "The Deployment's minReadySeconds. Unset: propagationDelay (rounded up) when the readiness gate "
            "is enabled, otherwise left alone. Never lowers a larger value.",
        ),
        "priority": _integer(
            PRIORITY,
            "Orders overlapping policies: a namespaced policy beats a cluster one, then the higher priority, "
            "then the name that sorts first.",
        ),
        "onConflict": _enum(
            [c.value for c in ConflictStrategy],
            ConflictStrategy.REPORT.value,
            "What to do when another manager already set a field lameduck needs (an app preStop hook, a lower "
            "grace period, readiness gates): Report leaves the Deployment alone and reports a conflict; "
            "TakeOver replaces those values.",
        ),
    }
    if cluster:
        properties["namespaceSelector"] = _selector(
            "Selects the namespaces this policy applies in, by their labels. The empty selector {} selects every "
            "namespace except kube-system, kube-public and kube-node-lease."
        )
    return {
        "type": "object",
        "description": (
            "Which Deployments this policy governs and how their pods must shut down. A Deployment opts out "
            f'with the annotation {SKIP_ANNOTATION}: "true".'
        ),
        "default": {},
        "properties": properties,
        "x-kubernetes-validations": [
            {
                "rule": "!has(self.terminationGracePeriodSeconds) || !has(self.hold) || "
                "!has(self.hold.maxHold) || !has(self.drainTimeout) || "
                f"!{_is_duration('self.hold.maxHold')} || !{_is_duration('self.drainTimeout')} || "
                "(duration(self.hold.maxHold) + duration(self.drainTimeout)).getMilliseconds() <= "
                "self.terminationGracePeriodSeconds * 1000",
                "message": MSG_GRACE_UNDER_BUDGET,
                "fieldPath": ".terminationGracePeriodSeconds",
            }
        ],
    }


def _count(description: str) -> dict[str, Any]:
    return {"type": "integer", "format": "int32", "description": description}


def _status() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "What the operator observed when it last evaluated this policy.",
        "properties": {
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The generation of the spec this status describes.",
            },
            "conditions": {
                "type": "array",
                "description": "Ready: the policy is in force. Conflict: Deployments or another policy stand in "
                "the way. Degraded: the operator could not evaluate or apply part of the policy.",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "maxItems": 8,
                "items": {
                    "type": "object",
                    "description": "One condition, as in metav1.Condition.",
                    "required": ["type", "status", "lastTransitionTime", "reason", "message"],
                    "properties": {
                        "type": {"type": "string", "description": "Ready, Conflict or Degraded.", "maxLength": 316},
                        "status": {
                            "type": "string",
                            "description": "True, False or Unknown.",
                            "enum": ["True", "False", "Unknown"],
                        },
                        "reason": {"type": "string", "description": "A CamelCase reason.", "maxLength": 1024},
                        "message": {
                            "type": "string",
                            "description": "A human message.",
                            "maxLength": CONDITION_MESSAGE_MAX_LENGTH,
                        },
                        "lastTransitionTime": {
                            "type": "string",
                            "format": "date-time",
                            "description": "When the status last changed.",
                        },
                        "observedGeneration": {
                            "type": "integer",
                            "format": "int64",
                            "description": "The generation the condition was set for.",
                        },
                    },
                },
            },
            "matched": _count("Deployments this policy governs (selected, not lost to another policy, not skipped)."),
            "compliant": _count("Matched Deployments that carry the policy's intent."),
            "pending": _count("Matched Deployments that will get the intent (next rollout, or waiting their turn)."),
            "conflicting": _count(
                "Matched Deployments lameduck leaves alone because another manager's value is in the way."
            ),
            "skipped": _count(
                f'Selected Deployments lameduck leaves alone: opted out with {SKIP_ANNOTATION}: "true", a pod '
                "template of more containers than lameduck judges, or no room for lameduck's annotations under "
                "the API server's limit."
            ),
            "budgetSeconds": _count("The termination budget this policy gives each pod, in seconds."),
            "nonCompliant": {
                "type": "array",
                "description": "Up to 20 Deployments that are not compliant, with the reason.",
                "maxItems": 20,
                "x-kubernetes-list-type": "atomic",
                "items": {
                    "type": "object",
                    "description": "One non-compliant Deployment.",
                    "properties": {
                        **_deployment_named(),
                        "state": {"type": "string", "description": "Pending or Conflict."},
                        "reason": {
                            "type": "string",
                            "description": (
                                "Why, as a CamelCase reason: Outdated, PendingNextRollout, WaitingTurn "
                                "or ConflictingFields."
                            ),
                        },
                        "message": {"type": "string", "description": "Why, in words."},
                    },
                },
            },
            "lateTraffic": {
                "type": "array",
                "description": "What delay each Deployment needs, from its recent holds (up to 20 Deployments: those "
                "whose maxHold is below the late traffic observed first, then the latest traffic first). Late traffic: "
                "from a hold's start until the last new connection or request reached the pod.",
                "maxItems": 20,
                "x-kubernetes-list-type": "atomic",
                "items": {
                    "type": "object",
                    "description": "One Deployment's recent holds.",
                    "properties": {
                        **_deployment_named(),
                        "holds": _count("Recent holds reported (the latest 20 at most)."),
                        "p50Seconds": {"type": "number", "description": "Late traffic, median, in seconds."},
                        "p99Seconds": {"type": "number", "description": "Late traffic, 99th percentile, in seconds."},
                        "maxSeconds": {"type": "number", "description": "Late traffic, the latest seen, in seconds."},
                        "timeouts": _count("Holds that ended at maxHold: traffic may have gone on after them."),
                        "maxHold": {"type": "string", "description": "The maxHold the pods were held with."},
                        "recommendedMaxHold": {
                            "type": "string",
                            "description": "A maxHold that covers the late traffic seen, with headroom, and the "
                            "quiet period after it.",
                        },
                        "recommendedBudgetSeconds": _count(
                            "The termination budget that recommended maxHold calls for, in seconds."
                        ),
                        ReportField.LOST_AFTER_RELEASE: _count(
                            "Connection attempts refused and connections reset on the pods after their holds "
                            "released, over the recent holds: the requests the holds could not save."
                        ),
                        "learnedMaxHold": {
                            "type": "string",
                            "description": "With hold.learnedBudget: the maxHold this Deployment's next holds "
                            "take as they start, and its next rollout's template carries (learned from its recent "
                            "holds, between maxHold and maxHoldCap). maxHold above is what its pods were held "
                            "with.",
                        },
                        "learnedFrom": _learned_from(),
                        "learnedDelay": {
                            "type": "string",
                            "description": "How long after stage 1 the next holds wait for busy reused connections "
                            "(learned from the recent holds, at most maxHold; 0s: taken as pinned after "
                            "propagationDelay). The sidecar reads it from the ConfigMap lameduck-learned.",
                        },
                        "warning": {
                            "type": "string",
                            "description": "Set when maxHold is below the late traffic observed.",
                        },
                    },
                },
            },
            "startingBudgets": {
                "type": "array",
                "description": "With hold.learnedBudget: up to 20 Deployments with no learned maxHold whose holds "
                "start at the starting budget, min(maxHoldCap, 2 x maxHold), because an L7 hop sends to them (an "
                "Ingress, HTTPRoute or GRPCRoute names a Service that selects their pods). Once their holds "
                "report, lateTraffic shows what is learned instead.",
                "maxItems": 20,
                "x-kubernetes-list-type": "atomic",
                "items": {
                    "type": "object",
                    "description": "One Deployment starting at the starting budget.",
                    "properties": {
                        **_deployment_named(),
                        "learnedMaxHold": {
                            "type": "string",
                            "description": "The starting budget: the maxHold its holds take as they start "
                            "(from the ConfigMap lameduck-learned), and its next rollout's template carries.",
                        },
                        "learnedFrom": _learned_from(),
                    },
                },
            },
            "overBudget": {
                "type": "array",
                "description": "Deployments whose pods were SIGKILLed at the end of their grace period in recent "
                "terminations (up to 20, most kills first): their budget is too small for the app's shutdown.",
                "maxItems": 20,
                "x-kubernetes-list-type": "atomic",
                "items": {
                    "type": "object",
                    "description": "One Deployment's recent terminations.",
                    "properties": {
                        **_deployment_named(),
                        "terminations": _count("Recent terminations observed (the latest 20 at most)."),
                        "killed": _count("Of those, the ones SIGKILLed at the end of the grace period."),
                    },
                },
            },
        },
    }


def _learned_from() -> dict[str, Any]:
    return {
        "type": "string",
        "enum": [source.value for source in BudgetSource],
        "description": "Where learnedMaxHold comes from: Reports (the Deployment's trusted hold reports), "
        "L7Backend (no history, and an L7 hop sends to it: the starting budget) or Default (no history: maxHold).",
    }


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
        {"name": "Apply", "type": "string", "jsonPath": ".spec.apply", "priority": 1},
        {"name": "Matched", "type": "integer", "jsonPath": ".status.matched"},
        {"name": "Compliant", "type": "integer", "jsonPath": ".status.compliant"},
        {"name": "Pending", "type": "integer", "jsonPath": ".status.pending", "priority": 1},
        {"name": "Conflicting", "type": "integer", "jsonPath": ".status.conflicting", "priority": 1},
        {
            "name": "Budget",
            "type": "integer",
            "jsonPath": ".status.budgetSeconds",
            "description": "Termination budget in seconds",
        },
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def crd(cluster: bool) -> dict[str, Any]:
    kind = KIND_CLUSTER if cluster else KIND_NAMESPACED
    plural = PLURALS[kind]
    what = (
        "Cluster-wide graceful-shutdown policy for the Deployments of the namespaces it selects."
        if cluster
        else "Graceful-shutdown policy for the Deployments of one namespace."
    )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {PART_OF_LABEL: SIDECAR_NAME}},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": ["cgpol"] if cluster else ["gpol"],
                "categories": ["lameduck"],
            },
            "scope": "Cluster" if cluster else "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": f"{what} API {API_VERSION}.",
                            "properties": {
                                "apiVersion": {"type": "string", "description": f"The API version: {API_VERSION}."},
                                "kind": {"type": "string", "description": f"{kind}."},
                                "metadata": {"type": "object"},
                                "spec": _spec(cluster),
                                "status": _status(),
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER = "# Generated by `make crds` from operator/lameduck_operator/crdgen.py. Do not edit by hand.\n"


def render_crd(cluster: bool) -> str:
    return HEADER + yaml.safe_dump(crd(cluster), sort_keys=False, width=120)


def crd_files() -> dict[str, str]:
    """File name -> content for crds/."""
    return {f"{crd(c)['metadata']['name']}.yaml": render_crd(c) for c in (False, True)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "crds")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in crd_files().items():
        (out / name).write_text(text)
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
