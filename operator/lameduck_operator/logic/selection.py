"""Which policy governs a Deployment: label selection, opt-out, and precedence."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lameduck_operator.model import LabelSelector, Policy, PolicyRef, SelectorOperator
from lameduck_operator.names import POLICY_ANNOTATION, SKIP_ANNOTATION

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class DeploymentRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def deployment_ref(deployment: Mapping[str, Any], default_namespace: str = "default") -> DeploymentRef:
    meta = deployment.get("metadata") or {}
    return DeploymentRef(namespace=meta.get("namespace") or default_namespace, name=meta.get("name", ""))


def labels_match(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics; the empty selector matches everything."""
    for key, value in selector.match_labels:
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator is SelectorOperator.IN and not (present and labels[req.key] in req.values):
            return False
        if req.operator is SelectorOperator.NOT_IN and present and labels[req.key] in req.values:
            return False
        if req.operator is SelectorOperator.EXISTS and not present:
            return False
        if req.operator is SelectorOperator.DOES_NOT_EXIST and present:
            return False
    return True


def namespace_labels_with_name(namespace: str, labels: Mapping[str, str] | None) -> dict[str, str]:
    """The API server labels every namespace with its name; assume it when labels are unknown."""
    merged = dict(labels or {})
    merged.setdefault(NAMESPACE_NAME_LABEL, namespace)
    return merged


def is_opted_out(deployment: Mapping[str, Any]) -> bool:
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(SKIP_ANNOTATION, "")).lower() == "true"


def policy_selects(
    policy: Policy,
    deployment: Mapping[str, Any],
    namespace_labels: Mapping[str, str] | None,
    excluded_namespaces: frozenset[str] = frozenset(),
) -> bool:
    """Whether the policy's selectors match; opt-out is judged separately."""
    ref = deployment_ref(deployment)
    if ref.namespace in excluded_namespaces:
        return False
    if not policy.ref.is_cluster and policy.ref.namespace != ref.namespace:
        return False
    if policy.spec.namespace_selector is not None:
        ns_labels = namespace_labels_with_name(ref.namespace, namespace_labels)
        if not labels_match(policy.spec.namespace_selector, ns_labels):
            return False
    labels = (deployment.get("metadata") or {}).get("labels") or {}
    return labels_match(policy.spec.selector, labels)


def carries_or_selected_by(
    ref: PolicyRef,
    specs: Iterable[Policy | None],
    deployment: Mapping[str, Any],
    namespace_labels: Mapping[str, str] | None,
    excluded_namespaces: frozenset[str] = frozenset(),
) -> bool:
    """Whether the Deployment carries fields lameduck applied for the policy, or one of the
    policy's specs (say, before and after a change) selects it."""
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    return annotations.get(POLICY_ANNOTATION) == ref.annotation_value or any(
        p is not None and policy_selects(p, deployment, namespace_labels, excluded_namespaces) for p in specs
    )


def precedence_key(policy: Policy) -> tuple[int, int, str]:
    """Sorts the winner first: namespaced beats cluster, then higher priority, then name."""
    return (1 if policy.ref.is_cluster else 0, -policy.spec.priority, policy.ref.name)


def why_first_wins(first: Policy, second: Policy) -> str:
    if first.ref.is_cluster != second.ref.is_cluster:
        return "a namespaced policy takes precedence over a cluster policy"
    if first.spec.priority != second.spec.priority:
        return f"higher priority ({first.spec.priority} > {second.spec.priority})"
    return f'equal priority; "{first.ref.name}" sorts before "{second.ref.name}"'


@dataclass(frozen=True)
class Loss:
    """A policy that selected a Deployment but lost to another one."""

    policy: PolicyRef
    winner: PolicyRef
    reason: str

    def __str__(self) -> str:
        return f"{self.policy} lost to {self.winner}: {self.reason}"


@dataclass(frozen=True)
class Selection:
    deployment: DeploymentRef
    winner: Policy | None
    losses: tuple[Loss, ...] = ()
    opted_out: bool = False


def select_policy(
    deployment: Mapping[str, Any],
    policies: Iterable[Policy],
    namespace_labels: Mapping[str, str] | None = None,
    excluded_namespaces: frozenset[str] = frozenset(),
) -> Selection:
    """The one policy that governs the Deployment, and which policies lost to it and why."""
    ref = deployment_ref(deployment)
    matching = sorted(
        (p for p in policies if policy_selects(p, deployment, namespace_labels, excluded_namespaces)),
        key=precedence_key,
    )
    if not matching:
        return Selection(deployment=ref, winner=None)
    winner = matching[0]
    losses = tuple(Loss(p.ref, winner.ref, why_first_wins(winner, p)) for p in matching[1:])
    return Selection(deployment=ref, winner=winner, losses=losses, opted_out=is_opted_out(deployment))
