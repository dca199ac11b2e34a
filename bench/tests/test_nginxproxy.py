"""The nginx data plane's pure parts: the controller's EndpointSlices -> server list and its
reload pacing (bench/nginxproxy/controller.py), the Kubernetes objects and nginx configuration
(bench/nginxproxy.py), the samplers' parsers (bench/dataplane.py), and its place in the
rollout benchmark's conditions."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bench import nginxproxy
from bench.dataplane import nginx_stub_status, nginx_upstreams
from bench.rollout import FRONTS
from bench.rollout_objects import CONDITIONS, DEFAULT_CONDITIONS, NGINX
from harness.tools import find_tool, harness_nginx

DATA = Path(__file__).parent / "data" / "dataplane"
# captured 2.3 s after `kubectl rollout restart` (its Service port is unnamed): three ready
# endpoints, and 10.214.0.64 terminating (ready false, serving true)
SLICES: list[dict[str, Any]] = json.loads((DATA / "endpointslices-rollout.json").read_text())


def _controller() -> ModuleType:
    path = Path(__file__).parents[2] / "bench" / "nginxproxy" / "controller.py"
    spec = importlib.util.spec_from_file_location("nginxproxy_controller", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONTROLLER = _controller()


def _slice(name: str, endpoints: list[dict[str, Any]], *, family: str = "IPv4", port: int = 8080) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "demo"}},
        "addressType": family,
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def _endpoint(address: str, **conditions: bool) -> dict[str, Any]:
    return {"addresses": [address], "conditions": conditions}


# -- EndpointSlices -> servers ----------------------------------------------------------------


def test_ready_servers_of_a_captured_rollout_leave_out_the_terminating_endpoint() -> None:
    servers = CONTROLLER.ready_servers(SLICES, "")
    assert servers == ["10.214.0.66:8080", "10.214.0.67:8080", "10.214.0.91:8080"]


def test_ready_servers_take_the_named_port_only() -> None:
    assert CONTROLLER.ready_servers(SLICES, "http") == []
    both = _slice("demo-a", [_endpoint("10.0.0.1", ready=True)])
    both["ports"] = [{"name": "metrics", "port": 9090}, {"name": "http", "port": 8080}]
    assert CONTROLLER.ready_servers([both], "http") == ["10.0.0.1:8080"]
    assert CONTROLLER.ready_servers([both], "metrics") == ["10.0.0.1:9090"]
    no_ports = _slice("demo-b", [_endpoint("10.0.0.2", ready=True)])
    no_ports["ports"] = None
    assert CONTROLLER.ready_servers([no_ports], "http") == []


def test_ready_servers_follow_the_ready_condition_whatever_serving_and_terminating_say() -> None:
    endpoints = [
        _endpoint("10.0.0.1"),  # no conditions: ready, as the API defines it
        _endpoint("10.0.0.2", ready=True, serving=True, terminating=False),
        _endpoint("10.0.0.3", ready=False, serving=True, terminating=True),  # draining
        _endpoint("10.0.0.4", ready=False, serving=False, terminating=True),
        _endpoint("10.0.0.5", ready=False, serving=False, terminating=False),  # not ready yet
        {"addresses": ["10.0.0.6"]},  # no conditions field at all
    ]
    assert CONTROLLER.ready_servers([_slice("demo-a", endpoints)], "http") == [
        "10.0.0.1:8080",
        "10.0.0.2:8080",
        "10.0.0.6:8080",
    ]


def test_ready_servers_bracket_ipv6_skip_fqdn_and_merge_slices() -> None:
    slices = [
        _slice("demo-v4", [_endpoint("10.0.0.2", ready=True), _endpoint("10.0.0.1", ready=True)]),
        _slice("demo-v4-more", [_endpoint("10.0.0.1", ready=True), _endpoint("10.0.0.3", ready=True)]),
        _slice("demo-v6", [_endpoint("fd00:10:244::5", ready=True), _endpoint("fd00::9", ready=False)], family="IPv6"),
        _slice("demo-fqdn", [_endpoint("demo.example.com", ready=True)], family="FQDN"),
    ]
    assert CONTROLLER.ready_servers(slices, "http") == [
        "10.0.0.1:8080",
        "10.0.0.2:8080",
        "10.0.0.3:8080",
        "[fd00:10:244::5]:8080",
    ]


def test_render_servers_one_line_each_without_passive_checks() -> None:
    text = CONTROLLER.render_servers(["10.0.0.1:8080", "[fd00::5]:8080"])
    assert text == "server 10.0.0.1:8080 max_fails=0;\nserver [fd00::5]:8080 max_fails=0;\n"


def test_render_servers_of_none_is_a_placeholder_marked_down() -> None:
    assert CONTROLLER.render_servers([]) == "server 127.0.0.1:1 down;\n"


# -- when to reload ---------------------------------------------------------------------------


def test_reload_delay_nothing_changed_means_no_reload() -> None:
    assert CONTROLLER.reload_delay(100.0, 99.0, False, 3.0) is None
    assert CONTROLLER.reload_delay(100.0, None, False, 3.0) is None


def test_reload_delay_at_once_when_the_last_reload_is_old_enough() -> None:
    assert CONTROLLER.reload_delay(100.0, None, True, 3.0) == 0.0
    assert CONTROLLER.reload_delay(100.0, 97.0, True, 3.0) == 0.0
    assert CONTROLLER.reload_delay(100.0, 50.0, True, 3.0) == 0.0


def test_reload_delay_waits_out_the_interval_since_the_last_reload() -> None:
    assert CONTROLLER.reload_delay(100.0, 99.0, True, 3.0) == pytest.approx(2.0)
    assert CONTROLLER.reload_delay(100.0, 100.0, True, 3.0) == pytest.approx(3.0)


def _bare_controller() -> Any:
    args = argparse.Namespace(port_name="http", min_interval=3.0)
    return CONTROLLER.Controller(args)


def test_controller_tracks_the_ready_set_from_list_and_watch_events() -> None:
    controller = _bare_controller()
    a = _slice("demo-a", [_endpoint("10.0.0.1", ready=True), _endpoint("10.0.0.2", ready=True)])
    controller.replace([a])
    assert controller.wanted == ["10.0.0.1:8080", "10.0.0.2:8080"]
    assert controller.changed.is_set()
    controller.changed.clear()

    draining = copy.deepcopy(a)
    draining["endpoints"][1]["conditions"] = {"ready": False, "serving": True, "terminating": True}
    controller.event("MODIFIED", draining)
    assert controller.wanted == ["10.0.0.1:8080"]
    assert controller.changed.is_set()
    controller.changed.clear()

    # an event that leaves the ready set as it was asks for nothing
    controller.event("MODIFIED", copy.deepcopy(draining))
    assert not controller.changed.is_set()

    controller.event("ADDED", _slice("demo-b", [_endpoint("10.0.0.3", ready=True)]))
    assert controller.wanted == ["10.0.0.1:8080", "10.0.0.3:8080"]
    controller.event("DELETED", draining)
    assert controller.wanted == ["10.0.0.3:8080"]
    assert controller.status()["ready"] == ["10.0.0.3:8080"]
    assert controller.status()["servers"] == []  # nginx not started: nothing applied


# -- the objects --------------------------------------------------------------------------------


def test_nginxproxy_objects() -> None:
    objects = nginxproxy.objects("bench", "demo-none")
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("ServiceAccount", "nginxproxy"),
        ("Role", "nginxproxy"),
        ("RoleBinding", "nginxproxy"),
        ("ConfigMap", "demo-none-nginx"),
        ("Deployment", "demo-none-nginx"),
        ("Service", "demo-none-nginx"),
    ]
    assert all(o["metadata"]["namespace"] == "bench" for o in objects)
    template = objects[4]["spec"]["template"]
    # the proxy's pods are not the app's: app=demo-none must not select them
    assert template["metadata"]["labels"]["app"] == "demo-none-nginx"
    assert objects[5]["spec"]["selector"] == {"app": "demo-none-nginx"}
    assert {p["name"]: p["port"] for p in objects[5]["spec"]["ports"]} == {
        "http": 80,
        "status": 8404,
        "controller": 8405,
    }


def test_nginxproxy_rbac_is_list_and_watch_of_endpointslices_in_its_namespace() -> None:
    account, role, binding = nginxproxy.rbac("bench")
    assert role["kind"] == "Role"  # not a ClusterRole: its own namespace only
    assert role["metadata"]["namespace"] == "bench"
    assert role["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "bench"}
    ]


def test_nginxproxy_pod_runs_the_controller_on_the_app_service() -> None:
    deployment = nginxproxy.objects("bench", "demo-none", nginxproxy.NginxSettings(min_reload_interval=1.5))[4]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "nginxproxy"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:2] == ["python3", "/usr/local/bin/nginxproxy-controller.py"]
    flags = dict(zip(command[2::2], command[3::2], strict=True))
    assert flags == {
        "--service": "demo-none",
        "--port-name": "http",
        "--servers": "/run/nginxproxy/servers.conf",
        "--config": "/etc/nginxproxy/nginx.conf",
        "--min-interval": "1.5",
        "--status-port": "8405",
    }
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/etc/nginxproxy/nginx.conf": "config", "/run/nginxproxy": "run"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["run"] == {"name": "run", "emptyDir": {}}
    assert volumes["config"]["configMap"] == {"name": "demo-none-nginx"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "status"}


def test_nginx_config_pools_upstream_connections_and_never_retries() -> None:
    config = nginxproxy.nginx_config()
    lines = [line.strip() for line in config.splitlines()]
    upstream = lines[lines.index("upstream app {") : lines.index("upstream app {") + 5]
    assert upstream == [
        "upstream app {",
        "include /run/nginxproxy/servers.conf;",
        "keepalive 32;",
        "keepalive_timeout 60000ms;",
        "}",
    ]
    assert {
        "proxy_pass http://app;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_next_upstream off;",
        "daemon off;",
        "worker_shutdown_timeout 10000ms;",
        "pid /run/nginxproxy/nginx.pid;",
        "listen 8080;",
        "listen 8404;",
        "stub_status;",
    } <= set(lines)
    # every path nginx writes is in the emptyDir (the root filesystem is read-only)
    written = [line for line in lines if line.split(" ")[0].endswith("_temp_path")]
    assert len(written) == 5
    assert all(line.split(" ")[1].startswith("/run/nginxproxy/") for line in written)


def test_nginx_config_follows_the_settings() -> None:
    settings = nginxproxy.NginxSettings(worker_shutdown_timeout=240, keepalive=320, worker_processes=2)
    lines = {line.strip() for line in nginxproxy.nginx_config(settings).splitlines()}
    assert {"worker_shutdown_timeout 240000ms;", "keepalive 320;", "worker_processes 2;"} <= lines


def nginx_binary() -> str:
    """$LAMEDUCK_NGINX, or the one hack/nginx.sh unpacks (`make unit` does). Without one the test
    skips, except under CI=true, where it fails: a skipped check must never count as passed."""
    found = find_tool("nginx", "LAMEDUCK_NGINX", harness_nginx(), on_path=False)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no nginx: run `make nginx` (hack/nginx.sh) or set LAMEDUCK_NGINX")
        pytest.skip("no nginx: run `make nginx` (hack/nginx.sh) or set LAMEDUCK_NGINX")
    return found


def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    """`nginx -t` on the rendered configuration, with the server list of a rollout and with
    the placeholder, its paths moved under tmp_path."""
    binary = nginx_binary()
    config = nginxproxy.nginx_config().replace(nginxproxy.RUN_DIR, str(tmp_path))
    (tmp_path / "nginx.conf").write_text(config)
    for servers in (CONTROLLER.ready_servers(SLICES, ""), ["[fd00::5]:8080"], []):
        (tmp_path / "servers.conf").write_text(CONTROLLER.render_servers(servers))
        test = [binary, "-e", "stderr", "-t", "-c", str(tmp_path / "nginx.conf")]
        done = subprocess.run(test, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr


# -- the samplers' parsers ------------------------------------------------------------------------


def test_nginx_upstreams_are_what_the_last_reload_loaded() -> None:
    # the controller's /upstreams while a change waits for its reload: nginx runs with two
    status = (DATA / "nginx-upstreams.json").read_text()
    assert nginx_upstreams(status) == ("10.214.0.66:8080", "10.214.0.91:8080")


def test_nginx_stub_status() -> None:
    # in the format nginx 1.22 printed in an offline run (bench/nginxproxy.py's configuration)
    text = (DATA / "nginx-stub-status.txt").read_text()
    assert nginx_stub_status(text) == {
        "active": 3,
        "accepts": 1207,
        "handled": 1207,
        "requests": 5311,
        "reading": 0,
        "writing": 1,
        "waiting": 2,
    }
    with pytest.raises(ValueError, match="not a stub_status page"):
        nginx_stub_status("<html>not found</html>")


# -- the rollout benchmark ----------------------------------------------------------------------


def test_every_proxied_condition_has_a_front_and_nginx_is_one() -> None:
    proxies = {c.proxy for c in CONDITIONS.values() if c.proxy}
    assert proxies == set(FRONTS)
    assert CONDITIONS["nginx"].proxy == NGINX
    assert FRONTS[NGINX].proxy_name("demo-none") == "demo-none-nginx"
    assert FRONTS[NGINX].objects("bench", "demo-none") == nginxproxy.objects("bench", "demo-none")
    assert set(DEFAULT_CONDITIONS) <= set(CONDITIONS)
