"""A second L7 proxy data plane for the rollout benchmark: Debian's nginx in front of the demo
app, with an upstream keep-alive pool whose server list a small controller rewrites from the
app's EndpointSlices, reloading nginx on each change (the classic ingress-controller pattern,
ingress-nginx's before its Lua balancer).

    kube.apply(*objects("lameduck-bench", "demo-none"))   # for the Service demo-none
    # then send load to http://<ClusterIP of Service proxy_name("demo-none")>/, and read what
    # nginx runs with by bench.dataplane.NginxSampler(kube, namespace, proxy_name(...))

The objects, in the benchmark namespace, one set per app Service `<label>`:

- the controller's ServiceAccount, Role and RoleBinding `nginxproxy` (list and watch of
  EndpointSlices in that namespace, nothing more), one per namespace;
- a ConfigMap `<label>-nginx` with nginx.conf (nginx_config());
- nginx `<label>-nginx` (one replica, image lameduck/nginxproxy:dev, bench/nginxproxy/Dockerfile):
  one container whose main process is the controller (bench/nginxproxy/controller.py), which
  starts nginx as its child and reloads it (SIGHUP) when the Service's ready endpoints change,
  at most once per `min_reload_interval`;
- a ClusterIP Service `<label>-nginx` in front of it (80 for traffic; 8404 nginx's
  stub_status and /healthz; 8405 the controller's /upstreams).

Choices, as an ingress controller's defaults are (see docs/benchmarks.md):

- upstream keep-alive pool (`keepalive`, HTTP/1.1 with the Connection header cleared), round
  robin, passive health checks off (`max_fails=0`): a server is in rotation exactly while the
  last reload listed it;
- no retries (`proxy_next_upstream off`): a request that fails on one server fails, and the
  benchmark sees what the proxy loses;
- on reload, old workers finish their requests and exit within `worker_shutdown_timeout`;
- no access log; nginx's error log (stderr) has each failed upstream attempt, reloads and
  workers exiting, the controller's lines (stdout) each ready-set change and reload.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from harness import manifests

IMAGE = "docker.io/lameduck/nginxproxy:dev"
ACCOUNT = "nginxproxy"  # ServiceAccount and Role of the controller, one per namespace
UPSTREAM = "app"  # nginx's upstream holding the app's servers
HTTP_PORT = 8080  # nginx's listener in the pod (Service port 80)
STATUS_PORT = 8404  # nginx: /stub_status and /healthz
CONTROLLER_PORT = 8405  # the controller: /upstreams (JSON) and /healthz
APP_PORT_NAME = "http"  # the app Service's port, as named in its EndpointSlices
RUN_DIR = "/run/nginxproxy"  # an emptyDir: the server list, the pid file, nginx's temp files
SERVERS_FILE = f"{RUN_DIR}/servers.conf"
CONFIG_PATH = "/etc/nginxproxy/nginx.conf"
CONTROLLER = "/usr/local/bin/nginxproxy-controller.py"


@dataclass(frozen=True)
class NginxSettings:
    # ingress-nginx's --sync-rate-limit 0.3 is one sync per 3.3 s; a change is applied at
    # once when the last reload is older than this, else when it is this old
    min_reload_interval: float = 3.0
    # ingress-nginx defaults to 240 s, for long requests and websockets; the benchmark's
    # requests take milliseconds, and an old worker still busy after 10 s is worth seeing
    worker_shutdown_timeout: float = 10.0
    keepalive: int = 32  # idle upstream connections kept per worker
    keepalive_timeout: float = 60.0  # ingress-nginx's upstream-keepalive-timeout
    worker_processes: int = 1  # one pool to follow; the machine has 2 CPUs
    image: str = IMAGE
    image_pull_policy: str = "Never"


def proxy_name(label: str) -> str:
    """nginx's Deployment, Service, ConfigMap and pod label (app=...) for the app `label`."""
    return f"{label}-nginx"


def objects(namespace: str, label: str, settings: NginxSettings = NginxSettings()) -> list[dict[str, Any]]:
    """Everything the condition needs in front of the Service `label` (the app's pods carry
    `app: <label>`), in apply order: RBAC, ConfigMap, Deployment and Service (proxy_name(label))."""
    name = proxy_name(label)
    return [
        *rbac(namespace),
        config_map(namespace, name, settings),
        proxy_deployment(namespace, name, label, settings),
        proxy_service(namespace, name),
    ]


def _s(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def nginx_config(settings: NginxSettings = NginxSettings()) -> str:
    """nginx's configuration: traffic on :8080 to the upstream whose servers the controller
    writes into SERVERS_FILE; stub_status and /healthz on :8404."""
    return f"""\
daemon off;
master_process on;
worker_processes {settings.worker_processes};
worker_shutdown_timeout {_s(settings.worker_shutdown_timeout)};
pid {RUN_DIR}/nginx.pid;
error_log stderr notice;

events {{
    worker_connections 1024;
}}

http {{
    client_body_temp_path {RUN_DIR}/client_body;
    proxy_temp_path {RUN_DIR}/proxy;
    fastcgi_temp_path {RUN_DIR}/fastcgi;
    uwsgi_temp_path {RUN_DIR}/uwsgi;
    scgi_temp_path {RUN_DIR}/scgi;

    # Each failed upstream attempt (refused, reset, timed out) is in the error log, on stderr
    # as nginx writes it (-e stderr); an access log would have to open /dev/stdout, which a
    # non-root process may not be allowed to reopen.
    access_log off;
    keepalive_timeout 75s;

    upstream {UPSTREAM} {{
        include {SERVERS_FILE};
        keepalive {settings.keepalive};
        keepalive_timeout {_s(settings.keepalive_timeout)};
    }}

    server {{
        listen {HTTP_PORT};
        location / {{
            proxy_pass http://{UPSTREAM};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream off;
            proxy_connect_timeout 2s;
            proxy_send_timeout 30s;
            proxy_read_timeout 30s;
        }}
    }}

    server {{
        listen {STATUS_PORT};
        location = /stub_status {{
            stub_status;
        }}
        location = /healthz {{
            return 200 "ok\\n";
        }}
    }}
}}
"""


def config_map(namespace: str, name: str, settings: NginxSettings = NginxSettings()) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"nginx.conf": nginx_config(settings)},
    }


def rbac(namespace: str) -> list[dict[str, Any]]:
    """The controller's right to list and watch the namespace's EndpointSlices."""
    return manifests.service_account_with_role(
        namespace,
        ACCOUNT,
        [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}],
    )


def controller_command(service: str, settings: NginxSettings = NginxSettings()) -> list[str]:
    return [
        "python3",
        CONTROLLER,
        "--service",
        service,
        "--port-name",
        APP_PORT_NAME,
        "--servers",
        SERVERS_FILE,
        "--config",
        CONFIG_PATH,
        "--min-interval",
        str(settings.min_reload_interval),
        "--status-port",
        str(CONTROLLER_PORT),
    ]


def proxy_deployment(
    namespace: str, name: str, service: str, settings: NginxSettings = NginxSettings()
) -> dict[str, Any]:
    """The controller and its nginx, one replica, non-root, read-only root filesystem;
    restarted when the configuration changes (a hash annotation)."""
    config_hash = hashlib.sha256(nginx_config(settings).encode()).hexdigest()[:16]
    container = {
        "name": "nginx",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": controller_command(service, settings),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT},
            {"name": "status", "containerPort": STATUS_PORT},
            {"name": "controller", "containerPort": CONTROLLER_PORT},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "status"}, "periodSeconds": 1},
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_PATH, "subPath": "nginx.conf", "readOnly": True},
            {"name": "run", "mountPath": RUN_DIR},
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "48Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
    }
    return manifests.deployment(
        name,
        [container],
        namespace=namespace,
        labels={"app": name, "app.kubernetes.io/part-of": "nginxproxy"},
        replicas=1,
        pod_labels={"app.kubernetes.io/part-of": "nginxproxy"},
        pod_annotations={"lameduck.dev/nginxproxy-config": config_hash},
        serviceAccountName=ACCOUNT,
        securityContext={"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
        terminationGracePeriodSeconds=5,
        volumes=[{"name": "config", "configMap": {"name": name}}, {"name": "run", "emptyDir": {}}],
    )


def proxy_service(namespace: str, name: str) -> dict[str, Any]:
    """The ClusterIP Service the load generator targets (port 80), and the two status ports."""
    ports = [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {"name": "status", "port": STATUS_PORT, "targetPort": "status", "protocol": "TCP"},
        {"name": "controller", "port": CONTROLLER_PORT, "targetPort": "controller", "protocol": "TCP"},
    ]
    return manifests.service(name, ports, namespace=namespace)
