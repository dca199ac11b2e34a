"""What the rollout benchmark compares and the objects it creates for that.

Variants are ways of shutting a pod down (nothing, fixed preStop sleeps, lameduck with and
without its readiness gate); conditions are data planes (kube-proxy at its default sync
period, kube-proxy lagging, an L7 proxy in front: HAProxy or nginx, a simulated cloud load
balancer on the host); stops are ways a pod is made to stop.
Every variant gets its own Deployment and Service, created once, so a run of one variant
never waits for another's objects to be torn down and the order of runs can change freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness import manifests

NAMESPACE = "lameduck-bench"
RESTART_AT_SECOND = 3  # of steady load before the disruption


@dataclass(frozen=True)
class Variant:
    name: str
    title: str
    prestop_sleep: int | None = None
    lameduck: bool = False
    readiness_gate: bool = False
    propagation_delay: str | None = None  # the policy's hold.propagationDelay; None: its default
    lame_duck: bool = False  # the policy asks the demo app's lame-duck mode (spec.hold.lameDuck)
    slow_lb: bool = False  # the policy's hold carries SLOW_LB_HOLD (below)
    learned_budget: bool = False  # the policy's hold carries LEARNED_BUDGET_HOLD (below)
    ingress: bool = False  # an Ingress names the variant's Service as its backend (routes, below)
    grace_period: int | None = None  # the pod's terminationGracePeriodSeconds; None: Kubernetes' 30 s


VARIANTS = {
    "none": Variant("none", "(a) no policy"),
    "sleep5": Variant("sleep5", "(b) preStop sleep 5s", prestop_sleep=5),
    "sleep20": Variant("sleep20", "(c) preStop sleep 20s", prestop_sleep=20),
    "lameduck": Variant("lameduck", "(d) lameduck defaults", lameduck=True),
    "gate": Variant("gate", "(e) lameduck + readiness gate", lameduck=True, readiness_gate=True),
    # What the README tells users of an L7 proxy that pools upstream connections: a
    # propagationDelay of at least its refresh interval (the benchmark's HAProxy: 5 s).
    "tuned": Variant("tuned", "(f) lameduck, propagationDelay 6s", lameduck=True, propagation_delay="6s"),
    # The app offers a lame-duck mode (the demo app does, on /lameduck) and the policy names it.
    "lameduck-app": Variant("lameduck-app", "(g) lameduck, app lame-duck mode", lameduck=True, lame_duck=True),
    # For the external-lb condition (45 s deregistration by default): a sleep sized for that LB,
    # with the grace period a user must raise with it (or the kubelet cuts the sleep at 30 s),
    # and lameduck with the cap a user would raise (SLOW_LB_HOLD).
    "sleep50": Variant("sleep50", "(h) preStop sleep 50s", prestop_sleep=50, grace_period=80),
    "lameduck-lb": Variant("lameduck-lb", "(i) lameduck, maxHold raised for a slow LB", lameduck=True, slow_lb=True),
    # lameduck's defaults with a learned budget: maxHold 30 s until a hold is cut off while work
    # still arrives, then sized per Deployment from its trusted reports, within the cap
    "lameduck-learned": Variant(
        "lameduck-learned", "(j) lameduck, learned budget (cap 2m)", lameduck=True, learned_budget=True
    ),
    # The same behind an L7 hop the operator sees: with no history it starts at the starting
    # budget (docs/policy.md, "How a Deployment with no history starts"), not at maxHold
    "lameduck-learned-ingress": Variant(
        "lameduck-learned-ingress",
        "(k) lameduck, learned budget (cap 2m), behind an Ingress",
        lameduck=True,
        learned_budget=True,
        ingress=True,
    ),
}
DEFAULT_VARIANTS = ("none", "sleep5", "sleep20", "lameduck")


# The L7 proxies a condition may send the load through (bench/rollout.py's FRONTS)
HAPROXY = "haproxy"  # bench/l7proxy.py: DNS re-resolved every 5 s
NGINX = "nginx"  # bench/nginxproxy.py: upstream rewritten and reloaded on EndpointSlice changes

# -- the policies behind a slow external load balancer --------------------------------------
# What a user whose cloud LB keeps sending new connections for ~45 s after deregistration
# (the external-lb condition) writes, two ways: a static maxHold raised above that delay (the
# grace period follows: maxHold + drainTimeout + 5 s, 95 s; it fits delays up to about 55 s),
# or the learned budget (docs/policy.md), which starts at the default maxHold and is sized
# from what the Deployment's holds observed, up to the cap.
SLOW_LB_HOLD: dict[str, Any] = {"maxHold": "60s"}
LEARNED_BUDGET_HOLD: dict[str, Any] = {"learnedBudget": {"maxHoldCap": "2m"}}


@dataclass(frozen=True)
class Condition:
    name: str
    title: str
    proxy_min_sync: str  # kube-proxy's iptables minSyncPeriod
    proxy: str | None = None  # load through this in-cluster L7 proxy instead of the ClusterIP
    external_lb: bool = False  # load through the simulated cloud LB on this machine (bench/external_lb.py)


CONDITIONS = {
    "normal": Condition("normal", "kube-proxy, default 1 s sync", "1s"),
    "slow": Condition("slow", "kube-proxy lagging (10 s sync)", "10s"),
    "l7": Condition("l7", "HAProxy in front (DNS every 5 s)", "1s", proxy=HAPROXY),
    "nginx": Condition("nginx", "nginx in front (reloaded on EndpointSlice changes)", "1s", proxy=NGINX),
    "external-lb": Condition("external-lb", "cloud LB on the host (slow deregistration)", "1s", external_lb=True),
}
# nginx is not yet measured: the default run (make bench-rollout) keeps to the measured three;
# external-lb only when asked for: its rollouts take minutes (every old pod is held for the
# LB's deregistration delay, or its requests fail for that long)
DEFAULT_CONDITIONS = ("normal", "slow", "l7")


@dataclass(frozen=True)
class Stop:
    name: str
    title: str
    app: str  # which set of Deployments: "demo", or "stubborn" (ignores SIGTERM)
    clients: str  # the load generator's client mix
    replicas_before: int = 3
    replicas_after: int = 3


STOPS = {
    "restart": Stop("restart", "kubectl rollout restart", "demo", "mixed"),
    "scale-down": Stop("scale-down", "scale 6 -> 2", "demo", "mixed", replicas_before=6, replicas_after=2),
    "drain": Stop("drain", "kubectl drain (evictions, PDB)", "demo", "mixed"),
    "keepalive": Stop("keepalive", "restart, one keep-alive client", "demo", "one-keepalive"),
    "sigterm-ignored": Stop("sigterm-ignored", "restart, app ignores SIGTERM", "stubborn", "new-connections"),
}


def app_label(app: str, variant: Variant) -> str:
    return f"{app}-{variant.name}"


def demo_deployment(image: str, app: str, variant: Variant, replicas: int = 3) -> dict[str, Any]:
    env = [{"name": "LATENCY_MS", "value": "5"}]
    if app == "stubborn":
        env.append({"name": "IGNORE_SIGTERM", "value": "true"})
    container = manifests.container(
        "app",
        image,
        imagePullPolicy="Never",
        ports=[{"name": "http", "containerPort": 8080}],
        env=env,
        readinessProbe={"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
    )
    if variant.prestop_sleep:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": variant.prestop_sleep}}}
    name = app_label(app, variant)
    pod: dict[str, Any] = {}
    if variant.grace_period is not None:
        pod["terminationGracePeriodSeconds"] = variant.grace_period
    labels = {"app": name, "variant": variant.name}
    return manifests.deployment(name, [container], labels=labels, replicas=replicas, **pod)


def service(app: str, variant: Variant) -> dict[str, Any]:
    return manifests.service(app_label(app, variant), [{"name": "http", "port": 80, "targetPort": "http"}])


def routes(app: str, variant: Variant) -> list[dict[str, Any]]:
    """For a variant behind an L7 hop: an Ingress whose default backend is the app's Service; none
    otherwise. The operator only reads it (logic/l7_backends.py: the backend's Service name, not
    its class nor whether a controller serves it), so none is needed, and the load does not go
    through it: the condition's data plane carries the load, the Ingress only tells the operator
    that an L7 hop sends to the Deployment."""
    if not variant.ingress:
        return []
    name = app_label(app, variant)
    backend = {"service": {"name": name, "port": {"name": "http"}}}  # the API server requires a port
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"defaultBackend": backend},
        }
    ]


def disruption_budget(app: str, variant: Variant) -> dict[str, Any]:
    """What `kubectl drain` honours: at most one pod of the Deployment evicted at a time."""
    name = app_label(app, variant)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": name}}},
    }


def policy(variant: Variant) -> dict[str, Any]:
    spec: dict[str, Any] = {"apply": "Immediate", "selector": {"matchLabels": {"variant": variant.name}}}
    if variant.readiness_gate:
        spec["readinessGate"] = {"enabled": True}
    hold: dict[str, Any] = {}
    if variant.propagation_delay:
        hold["propagationDelay"] = variant.propagation_delay
    if variant.lame_duck:
        hold["lameDuck"] = {"port": 8080, "path": "/lameduck"}
    if variant.slow_lb:
        hold.update(SLOW_LB_HOLD)
    if variant.learned_budget:
        hold.update(LEARNED_BUDGET_HOLD)
    if hold:
        spec["hold"] = hold
    return {
        "apiVersion": "lameduck.dev/v1alpha1",
        "kind": "GracefulPolicy",
        "metadata": {"name": f"bench-{variant.name}", "namespace": NAMESPACE},
        "spec": spec,
    }


def endpoints_target(stop: Stop) -> int:
    """replicas - maxUnavailable while the pods stop: the endpoints a Service should never
    drop below (a rolling update's maxUnavailable of 25 % rounds down to 0 at 3 replicas;
    the PDB allows 1 during a drain; a scale-down ends at its new size)."""
    if stop.name == "drain":
        return stop.replicas_before - 1
    return min(stop.replicas_before, stop.replicas_after)
