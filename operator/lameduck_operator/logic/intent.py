"""The exact server-side-apply intent lameduck owns for one Deployment, and its conflicts.

The Deployment given here holds the fields other managers set: the API adapter strips
lameduck's own fields (from managedFields) before calling, and manifests read from files
are taken as written. So any value found here that differs from the intent belongs to
someone else, and replacing it is a conflict unless the policy says TakeOver.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lameduck_operator.logic import budget
from lameduck_operator.logic.selection import DeploymentRef, deployment_ref
from lameduck_operator.model import (
    ConflictStrategy,
    HoldMethod,
    Policy,
    PolicyRef,
    PolicySpec,
    format_seconds,
    parse_duration,
)
from lameduck_operator.names import HOLD_PATH_PREFIX, POLICY_ANNOTATION, READINESS_CONDITION, SIDECAR_NAME, SidecarEnv
from lameduck_operator.settings import Settings, SidecarSettings, image_repository

# The API server's default: present in every stored pod template whether anyone chose it or
# not, so it counts as unset (raising it takes nobody's choice away).
DEFAULT_GRACE_SECONDS = 30

# A field's path; ("name", "app") selects the item of a keyed list.
FieldPath = tuple[str | tuple[str, str], ...]
POD_PATH: FieldPath = ("spec", "template", "spec")
HANDLER_KINDS = ("exec", "httpGet", "tcpSocket", "sleep")
HOST_NETWORK_CONFLICT = (
    "the pod uses the host network: a sidecar there would see the node's connections and port, not the pod's; "
    "select it with a policy whose hold.method is Sleep"
)


@dataclass(frozen=True)
class Plan:
    deployment: DeploymentRef
    policy: PolicyRef
    budget_seconds: int
    app_containers: tuple[str, ...]
    intent: dict[str, Any]
    # Blocking: while any remains, nothing of the intent may be applied.
    conflicts: tuple[str, ...] = ()
    # Other managers' values the intent replaces because the policy says TakeOver.
    taken_over: tuple[str, ...] = ()
    # Their paths (TakeOver only): recorded with what they were, so that they go back
    # (logic/takeover.py).
    replaced: tuple[FieldPath, ...] = ()


def pod_spec(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}


def hold_handler(spec: PolicySpec, sidecar: SidecarSettings, container: str) -> dict[str, Any]:
    """The preStop handler of one app container."""
    if spec.hold.method is HoldMethod.SLEEP:
        return {"sleep": {"seconds": budget.sleep_seconds(spec)}}
    return {"httpGet": {"path": f"{HOLD_PATH_PREFIX}{container}", "port": sidecar.port, "scheme": "HTTP"}}


def is_lameduck_hold(handler: Mapping[str, Any], sidecar: SidecarSettings) -> bool:
    """An earlier lameduck hold (possibly from an older policy): ours to update, not a conflict."""
    get = handler.get("httpGet")
    return (
        set(handler) == {"httpGet"}
        and isinstance(get, Mapping)
        and get.get("port") == sidecar.port
        and str(get.get("path", "")).startswith(HOLD_PATH_PREFIX)
    )


def _field_env(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}


def app_ports(containers: list[Mapping[str, Any]]) -> list[int]:
    ports = {
        int(p["containerPort"])
        for c in containers
        for p in c.get("ports") or []
        if "containerPort" in p and p.get("protocol", "TCP") == "TCP"
    }
    return sorted(ports)


def probe_ports_and_periods(pod: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(port, periodSeconds) of each readiness and liveness probe by which kubelet connects to the pod.

    Every container but lameduck's shares the pod's network namespace, so the probes of all
    of them count, other native sidecars' too. Startup probes are left out: kubelet stops
    them once the container has started.
    """
    containers = [
        *(pod.get("containers") or []),
        *(c for c in pod.get("initContainers") or [] if c.get("restartPolicy") == "Always"),
    ]
    found = []
    for c in containers:
        if c.get("name") == SIDECAR_NAME:
            continue
        named = {p.get("name"): p.get("containerPort") for p in c.get("ports") or [] if p.get("name")}
        for kind in ("readinessProbe", "livenessProbe"):
            probe = c.get(kind) or {}
            handler = next((probe[k] for k in ("httpGet", "tcpSocket", "grpc") if k in probe), None)
            if not isinstance(handler, Mapping) or handler.get("host"):
                continue  # no connection, or one to another host
            port = handler.get("port")
            port = named.get(port) if isinstance(port, str) else port
            if isinstance(port, int) and not isinstance(port, bool):
                found.append((port, int(probe.get("periodSeconds") or 10)))
    return sorted(found)


def sidecar_container(
    spec: PolicySpec,
    sidecar: SidecarSettings,
    policy: PolicyRef,
    ports: list[int],
    probes: list[tuple[int, int]],
    *,
    max_hold: float | None = None,
) -> dict[str, Any]:
    """The sidecar as lameduck injects it: settings from the policy (max_hold: the maxHold in
    force, budget.max_hold_in_force; None: the policy's), identity from the downward API."""
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": sidecar.image,
        "imagePullPolicy": sidecar.image_pull_policy,
        "ports": [{"name": SIDECAR_NAME, "containerPort": sidecar.port, "protocol": "TCP"}],
        "env": [
            _field_env(SidecarEnv.POD_NAME, "metadata.name"),
            _field_env(SidecarEnv.POD_NAMESPACE, "metadata.namespace"),
            _field_env(SidecarEnv.POD_UID, "metadata.uid"),
            _field_env(SidecarEnv.POD_IP, "status.podIP"),
            {"name": SidecarEnv.PORT, "value": str(sidecar.port)},
            {"name": SidecarEnv.APP_PORTS, "value": ",".join(str(p) for p in ports)},
            {"name": SidecarEnv.PROPAGATION_DELAY, "value": format_seconds(spec.hold.propagation_delay)},
            {"name": SidecarEnv.QUIET_PERIOD, "value": format_seconds(spec.hold.quiet_period)},
            {
                "name": SidecarEnv.MAX_HOLD,
                "value": format_seconds(spec.hold.max_hold if max_hold is None else max_hold),
            },
            {"name": SidecarEnv.DRAIN_TIMEOUT, "value": format_seconds(spec.drain_timeout)},
            {"name": SidecarEnv.POLICY, "value": policy.annotation_value},
            {"name": SidecarEnv.NATIVE, "value": "true" if sidecar.native else "false"},
            {"name": SidecarEnv.PROBES, "value": ",".join(f"{port}:{period}" for port, period in probes)},
            _field_env(SidecarEnv.HOST_IP, "status.hostIP"),
            # Last and only when asked for: the intent of every other policy stays as it was.
            *(
                [{"name": SidecarEnv.LAME_DUCK, "value": f"{spec.hold.lame_duck.port}{spec.hold.lame_duck.path}"}]
                if spec.hold.lame_duck is not None
                else []
            ),
            # Only with a learned budget: how far a hold may take a learned maxHold it reads live.
            *(
                [{"name": SidecarEnv.MAX_HOLD_CAP, "value": format_seconds(budget.max_hold_room(spec.hold, max_hold))}]
                if spec.hold.learned_budget is not None
                else []
            ),
        ],
        "resources": {
            "requests": {"cpu": sidecar.cpu_request, "memory": sidecar.memory_request},
            "limits": {"memory": sidecar.memory_limit},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": sidecar.run_as_user,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The pod is Ready, so sent traffic, only once the sidecar serves: no hold call of a
        # pod that had traffic finds it absent. A startup probe would give the same guarantee
        # by starting the app containers only after it, which costs each new pod the sidecar's
        # start-up plus a probe period before the app even starts (docs/benchmarks.md).
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": sidecar.port, "scheme": "HTTP"},
            "periodSeconds": 1,
            "failureThreshold": 3,
        },
    }
    # The API server stores an empty value as no value at all: leave such entries out, or
    # the stored sidecar would never match the intent (the sidecar reads them as unset).
    container["env"] = [e for e in container["env"] if e.get("value") != ""]
    if sidecar.native:
        container["restartPolicy"] = "Always"
    else:
        # A classic sidecar gets SIGTERM with the app; joining the shared hold keeps it
        # serving the app's preStop until the hold ends.
        container["lifecycle"] = {"preStop": hold_handler(spec, sidecar, SIDECAR_NAME)}
    return container


# Who set the field at a path (from managedFields); nobody known for manifests.
OwnersOf = Callable[[FieldPath], Sequence[str]]


def _nobody(_: FieldPath) -> Sequence[str]:
    return ()


class _Findings:
    def __init__(self, take_over: bool, owners_of: OwnersOf) -> None:
        self.take_over = take_over
        self.owners_of = owners_of
        self.conflicts: list[str] = []
        self.taken_over: list[str] = []
        self.replaced: list[FieldPath] = []

    def replaceable(self, what: str, path: FieldPath) -> None:
        """Another manager's value the intent would replace: allowed only with TakeOver."""
        who = self.owners_of(path)
        named = f"{what}, set by {', '.join(who)}" if who else what
        (self.taken_over if self.take_over else self.conflicts).append(named)
        if self.take_over:
            self.replaced.append(path)

    def blocking(self, what: str) -> None:
        self.conflicts.append(what)


def _handler_kind(handler: Mapping[str, Any]) -> str:
    return "/".join(k for k in HANDLER_KINDS if k in handler) or "unknown"


def plan_deployment(
    deployment: Mapping[str, Any],
    policy: Policy,
    settings: Settings,
    owners_of: OwnersOf = _nobody,
    *,
    max_hold: float | None = None,
) -> Plan:
    """What lameduck must own in this Deployment under this policy, and what stands in the way.

    owners_of names who set a field, so conflicts say it. max_hold: the maxHold in force for this
    Deployment (budget.max_hold_in_force: the policy's, or the one learned for it); None: the
    policy's.
    """
    spec = policy.spec
    sidecar = settings.sidecar
    ref = deployment_ref(deployment)
    pod = pod_spec(deployment)
    containers: list[Mapping[str, Any]] = list(pod.get("containers") or [])
    init_containers: list[Mapping[str, Any]] = list(pod.get("initContainers") or [])
    findings = _Findings(spec.on_conflict is ConflictStrategy.TAKE_OVER, owners_of)

    candidates = [c for c in containers if c.get("name") != SIDECAR_NAME]
    if spec.containers:
        named = frozenset(spec.containers)
        # Only a string can be a name the policy lists (and a set cannot hold other values).
        apps = [c for c in candidates if isinstance(c.get("name"), str) and c.get("name") in named]
        if not apps:
            findings.blocking("none of the containers named by the policy exist: " + ", ".join(spec.containers))
    else:
        apps = candidates
        if not apps:
            findings.blocking("the pod template has no app container")

    for existing in [*containers, *init_containers]:
        if existing.get("name") == SIDECAR_NAME and not _is_our_sidecar(existing, sidecar):
            findings.blocking(
                f'a container named "{SIDECAR_NAME}" already exists and is not lameduck\'s sidecar '
                f"(image {existing.get('image', '?')})"
            )
    uses_sidecar = spec.hold.method is HoldMethod.SIDECAR
    if uses_sidecar and pod.get("hostNetwork") is True:
        # The sidecar judges traffic by its network namespace's sockets and counters and finds
        # the pod's endpoints by the pod IP: here both are the node's, and every such pod on a
        # node would want the same sidecar port.
        findings.blocking(HOST_NETWORK_CONFLICT)
    if uses_sidecar:
        for c in [*containers, *init_containers]:
            if c.get("name") == SIDECAR_NAME:
                continue
            if any(p.get("containerPort") == sidecar.port for p in c.get("ports") or []):
                findings.blocking(f'container "{c.get("name")}" already uses port {sidecar.port}, the sidecar\'s port')

    pod_intent: dict[str, Any] = {}
    app_entries = []
    for c in apps:
        name = str(c.get("name"))
        wanted = hold_handler(spec, sidecar, name)
        current = (c.get("lifecycle") or {}).get("preStop")
        if current and current != wanted and not is_lameduck_hold(current, sidecar):
            findings.replaceable(
                f'container "{name}" already has a preStop hook ({_handler_kind(current)})',
                (*POD_PATH, "containers", ("name", name), "lifecycle", "preStop"),
            )
        app_entries.append({"name": name, "lifecycle": {"preStop": wanted}})
    pod_intent["containers"] = app_entries

    if uses_sidecar:
        injected = sidecar_container(
            spec, sidecar, policy.ref, app_ports(apps), probe_ports_and_periods(pod), max_hold=max_hold
        )
        pod_intent["initContainers" if sidecar.native else "containers"] = (
            [injected] if sidecar.native else [*app_entries, injected]
        )

    # What the hold in force needs: a grace period someone else set, or the policy states, that
    # covers it stands (a hold raised live is bounded by the deletion's grace period anyway).
    # Only where lameduck sets the field does it leave room for the cap.
    total = budget.budget_seconds(spec, max_hold)
    current_grace = pod.get("terminationGracePeriodSeconds")
    set_by_others = current_grace not in (None, DEFAULT_GRACE_SECONDS)
    if not set_by_others and spec.termination_grace_period_seconds is None:
        total = max(total, budget.budget_seconds(spec, budget.max_hold_room(spec.hold, max_hold)))
    grace = budget.grace_period_to_apply(total, current_grace)
    if grace is not None:
        if set_by_others:
            findings.replaceable(
                f"terminationGracePeriodSeconds is {current_grace}, below the budget of {total}s",
                (*POD_PATH, "terminationGracePeriodSeconds"),
            )
        pod_intent["terminationGracePeriodSeconds"] = grace

    if spec.readiness_gate:
        gates = list(pod.get("readinessGates") or [])
        ours = {"conditionType": READINESS_CONDITION}
        if ours not in gates:
            if gates:
                # readinessGates is an atomic list: owning it means owning everyone's gates.
                findings.replaceable(
                    "readinessGates is already set by another manager (an atomic list)", (*POD_PATH, "readinessGates")
                )
            pod_intent["readinessGates"] = [*gates, ours]

    deployment_spec: dict[str, Any] = {"template": {"spec": pod_intent}}
    min_ready = budget.min_ready_seconds(spec)
    current_min_ready = (deployment.get("spec") or {}).get("minReadySeconds")
    if min_ready is not None and (current_min_ready is None or current_min_ready < min_ready):
        if current_min_ready:
            findings.replaceable(
                f"minReadySeconds is {current_min_ready}, below the required {min_ready}", ("spec", "minReadySeconds")
            )
        deployment_spec["minReadySeconds"] = min_ready

    intent = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": ref.name,
            "namespace": ref.namespace,
            "annotations": {POLICY_ANNOTATION: policy.ref.annotation_value},
        },
        "spec": deployment_spec,
    }
    return Plan(
        deployment=ref,
        policy=policy.ref,
        budget_seconds=total,
        app_containers=tuple(str(c.get("name")) for c in apps),
        intent=intent,
        conflicts=tuple(findings.conflicts),
        taken_over=tuple(findings.taken_over),
        replaced=tuple(findings.replaced),
    )


def carried_max_hold(deployment: Mapping[str, Any]) -> float | None:
    """The maxHold the Deployment's template gives lameduck's sidecar now (what its pods hold
    with); None when it has no such sidecar or no readable value."""
    pod = pod_spec(deployment)
    for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
        if container.get("name") != SIDECAR_NAME:
            continue
        for env in container.get("env") or []:
            value = env.get("value") if isinstance(env, Mapping) else None
            if env.get("name") == SidecarEnv.MAX_HOLD and isinstance(value, str):
                return parse_duration(value)
    return None


def runs_sidecar(pod: Mapping[str, Any], sidecar: SidecarSettings) -> bool:
    """Whether a pod spec, a template's or a pod's own, includes lameduck's sidecar."""
    return any(
        c.get("name") == SIDECAR_NAME and _is_our_sidecar(c, sidecar)
        for c in [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]
    )


def _is_our_sidecar(container: Mapping[str, Any], sidecar: SidecarSettings) -> bool:
    return image_repository(str(container.get("image", ""))) == image_repository(sidecar.image)
