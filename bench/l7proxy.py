"""An L7 proxy data plane for the rollout benchmark: HAProxy in front of the demo app,
learning the app's endpoints from DNS on its own schedule, as ingress controllers and
service meshes learn them from their own watches.

    kube.apply(*objects("lameduck-bench", "demo-none"))   # for the pods labelled app=demo-none
    # then send load to http://<ClusterIP of Service proxy_name("demo-none")>/, and read
    # HAProxy's servers with bench.dataplane.ProxySampler(kube, namespace, proxy_name(...))

The objects, all in the benchmark namespace, one set per app (label `app: <label>`), named
after it:

- a headless Service `<label>-headless` over the app pods (clusterIP None, publishNotReadyAddresses false, so
  its DNS name resolves to the ready pods only);
- HAProxy `<label>-l7proxy` (one replica, image lameduck/l7proxy:dev, bench/l7proxy/Dockerfile) with its
  configuration in a ConfigMap: a `resolvers` section reading the nameserver from the pod's
  /etc/resolv.conf (`parse-resolv-conf`), and a `server-template` over the headless Service's
  name, resolved every `resolve_interval` seconds (default 5 s: `timeout resolve` and
  `hold valid` both; HAProxy resolves again only when both have passed), `hold obsolete 0s`
  (an address gone from the answer is dropped at the next resolution);
- a ClusterIP Service `<label>-l7proxy` in front of HAProxy (port 80 for traffic, 8404 for its stats page).

Choices, as an ingress controller's defaults are:

- no active health checks (no `check` on the servers): ingress-nginx sends to every endpoint
  the API lists and does no health checks of its own (its passive `max_fails` is 0 by
  default), so a server is in rotation exactly while DNS lists its address;
- no retries (`retries 0`, `option redispatch` off): a request that fails to connect fails,
  and the benchmark sees what the proxy loses (ingress-nginx would retry a failed connect on
  another endpoint: a variant for later);
- upstream keep-alive pools (`option http-keep-alive`, `http-reuse always`), `balance
  roundrobin`; timeouts connect 2 s, client and server 30 s;
- only failed requests are logged (`option dontlog-normal`), to the pod's stdout.

The local cluster runs no cluster DNS, so by default (`cluster_dns=False`) the pod carries a
second container, bench/l7proxy/k8sdns.py, a small DNS server answering for the namespace's
headless Services from a watch of their EndpointSlices (ready endpoints, as CoreDNS does, with
no cache: CoreDNS's 5 s cache would add up to 5 s more). The pod's resolv.conf names it
(127.0.0.1), so HAProxy's configuration is the same either way. With `cluster_dns=True`
HAProxy uses the cluster's DNS.

The stats page (CSV at http://<pod IP>:8404/stats;csv) is what bench/dataplane.py's
HAProxySampler reads; /healthz on the same port is HAProxy's readiness probe.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from harness import manifests

IMAGE = "docker.io/lameduck/l7proxy:dev"
ACCOUNT = "l7proxy"  # ServiceAccount and Role of the in-pod DNS, one per namespace
BACKEND = "app"  # the HAProxy backend holding the app's servers
SERVER_PREFIX = "pod"  # servers are pod1 .. podN
HTTP_PORT = 8080  # HAProxy's listener in the pod (Service port 80)
STATS_PORT = 8404  # stats page (/stats;csv) and /healthz
APP_PORT = 8080  # the demo app's port (a headless Service's DNS gives pod IPs, no port mapping)
CONFIG_PATH = "/usr/local/etc/haproxy/haproxy.cfg"


@dataclass(frozen=True)
class ProxySettings:
    resolve_interval: float = 5.0  # seconds between resolutions of the headless Service
    servers: int = 10  # server-template slots (at least the app's pods during a rollout)
    cluster_dns: bool = False  # True: the cluster's DNS; False: the in-pod k8sdns.py
    domain: str = "cluster.local"
    image: str = IMAGE
    image_pull_policy: str = "Never"


def proxy_name(label: str) -> str:
    """HAProxy's Deployment, Service, ConfigMap and pod label (app=...) for the app `label`."""
    return f"{label}-l7proxy"


def headless_name(label: str) -> str:
    return f"{label}-headless"


def objects(namespace: str, label: str, settings: ProxySettings = ProxySettings()) -> list[dict[str, Any]]:
    """Everything the condition needs for the app whose pods carry `app: <label>`, in apply
    order: headless Service, RBAC of the in-pod DNS (unless cluster_dns), ConfigMap, HAProxy
    Deployment and Service (both proxy_name(label))."""
    return proxy_objects(namespace, proxy_name(label), {"app": label}, headless_name(label), settings)


def proxy_objects(
    namespace: str, name: str, selector: dict[str, str], headless: str, settings: ProxySettings = ProxySettings()
) -> list[dict[str, Any]]:
    """As objects(), with every name and the app pods' selector given."""
    found = [headless_service(namespace, headless, selector)]
    if not settings.cluster_dns:
        found += rbac(namespace)
    found += [
        config_map(namespace, name, headless, settings),
        proxy_deployment(namespace, name, headless, settings),
        proxy_service(namespace, name),
    ]
    return found


def headless_service(namespace: str, name: str, selector: dict[str, str]) -> dict[str, Any]:
    """A headless Service over the app pods: its DNS name resolves to the ready pods' IPs."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "l7proxy"}},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "selector": dict(selector),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def haproxy_config(namespace: str, headless: str, settings: ProxySettings = ProxySettings()) -> str:
    """HAProxy's configuration: traffic on :8080 to the app's pods found by DNS; stats on :8404."""
    interval = _ms(settings.resolve_interval)
    fqdn = f"{headless}.{namespace}.svc.{settings.domain}"
    server_options = "resolvers cluster resolve-prefer ipv4 init-addr none"
    return f"""\
global
    log stdout format raw local0 info
    maxconn 4096

resolvers cluster
    parse-resolv-conf
    accepted_payload_size 8192
    resolve_retries 3
    timeout resolve {interval}
    timeout retry 1s
    hold valid {interval}
    hold obsolete 0s
    hold nx {interval}
    hold other {interval}
    hold refused {interval}
    hold timeout {interval}

defaults
    mode http
    log global
    option httplog
    option dontlog-normal
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 30s
    retries 0
    no option redispatch

frontend http
    bind :{HTTP_PORT}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    option http-keep-alive
    http-reuse always
    server-template {SERVER_PREFIX} 1-{settings.servers} {fqdn}:{APP_PORT} {server_options}

frontend stats
    bind :{STATS_PORT}
    monitor-uri /healthz
    stats enable
    stats uri /stats
    stats show-legends
"""


def config_map(namespace: str, name: str, headless: str, settings: ProxySettings = ProxySettings()) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"haproxy.cfg": haproxy_config(namespace, headless, settings)},
    }


def rbac(namespace: str) -> list[dict[str, Any]]:
    """The in-pod DNS server's right to watch the namespace's EndpointSlices."""
    return manifests.service_account_with_role(
        namespace,
        ACCOUNT,
        [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}],
    )


def proxy_deployment(
    namespace: str, name: str, headless: str, settings: ProxySettings = ProxySettings()
) -> dict[str, Any]:
    """HAProxy, one replica, non-root; restarted when its configuration changes (a hash annotation)."""
    config_hash = hashlib.sha256(haproxy_config(namespace, headless, settings).encode()).hexdigest()[:16]
    restricted = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
    haproxy = {
        "name": "haproxy",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["haproxy", "-db", "-f", CONFIG_PATH],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT},
            {"name": "stats", "containerPort": STATS_PORT},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "stats"}, "periodSeconds": 1},
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_PATH, "subPath": "haproxy.cfg", "readOnly": True}],
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}},
        "securityContext": restricted,
    }
    containers: list[dict[str, Any]] = [haproxy]
    pod: dict[str, Any] = {
        "automountServiceAccountToken": not settings.cluster_dns,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
        "terminationGracePeriodSeconds": 5,
        "volumes": [{"name": "config", "configMap": {"name": name}}],
    }
    if not settings.cluster_dns:
        containers.append(
            {
                "name": "dns",
                "image": settings.image,
                "imagePullPolicy": settings.image_pull_policy,
                "command": ["python3", "/usr/local/bin/k8sdns.py", "--port", "53", "--domain", settings.domain],
                "resources": {"requests": {"cpu": "20m", "memory": "24Mi"}},
                "securityContext": restricted,
            }
        )
        pod["serviceAccountName"] = ACCOUNT
        # port 53 without privileges (a "safe" sysctl), and a resolv.conf naming the in-pod DNS
        pod["securityContext"]["sysctls"] = [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}]
        pod["dnsPolicy"] = "None"
        pod["dnsConfig"] = {
            "nameservers": ["127.0.0.1"],
            "searches": [f"{namespace}.svc.{settings.domain}", f"svc.{settings.domain}", settings.domain],
            "options": [{"name": "ndots", "value": "5"}],
        }
    return manifests.deployment(
        name,
        containers,
        namespace=namespace,
        labels={"app": name, "app.kubernetes.io/part-of": "l7proxy"},
        replicas=1,
        pod_labels={"app.kubernetes.io/part-of": "l7proxy"},
        pod_annotations={"lameduck.dev/l7proxy-config": config_hash},
        **pod,
    )


def proxy_service(namespace: str, name: str) -> dict[str, Any]:
    """The ClusterIP Service the load generator targets (port 80), and the stats page (8404)."""
    ports = [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {"name": "stats", "port": STATS_PORT, "targetPort": "stats", "protocol": "TCP"},
    ]
    return manifests.service(name, ports, namespace=namespace)
