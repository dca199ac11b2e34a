"""A minimal ingress controller of the classic kind, for the rollout benchmark's nginx data
plane: it watches one Service's EndpointSlices, writes its ready endpoints as the `server`
lines of nginx's upstream, and reloads nginx (SIGHUP to the master, what `nginx -s reload`
sends) when that list changes, as ingress-nginx did before its Lua balancer.

It is the container's main process: it lists the slices, writes the server list, starts
nginx as its child (the configuration says `daemon off`), then keeps them in step. SIGTERM
to it is passed to nginx as SIGQUIT (graceful shutdown); when nginx exits, so does it.

Refresh: a change of the ready set is applied at once if the last reload is at least
`--min-interval` seconds old, else when it is (changes in between are coalesced into that
one reload), as ingress-nginx's sync rate limit does. A slice event that leaves the list as
it was reloads nothing. Before each reload the configuration is tested (`nginx -t`), as
ingress-nginx does; a failed test keeps the previous list.

    python3 controller.py --service demo --port-name http --servers /run/nginxproxy/servers.conf \
        --config /etc/nginxproxy/nginx.conf [--namespace NS] [--min-interval 3] [--status-port 8405]

GET /upstreams on the status port gives what nginx was last loaded with, as JSON (what
bench/dataplane.py's NginxSampler reads); /healthz answers while nginx runs. Each change of
the ready set and each reload is logged to stdout with a wall-clock time. Standard library
only (the image has python3 and nginx, nothing more).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SA = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_LABEL = "kubernetes.io/service-name"
# nginx refuses an upstream without servers: while none is ready, one that is marked down
# stands in, and nginx answers 502 (no live upstreams) without connecting anywhere.
PLACEHOLDER = "server 127.0.0.1:1 down;"


# -- pure: what to write, and when -------------------------------------------------------


def ready_servers(slices: Iterable[dict[str, Any]], port_name: str) -> list[str]:
    """host:port of every ready endpoint in the slices (API JSON), on the port named
    `port_name`, sorted and without repeats; IPv6 addresses in brackets. Ready as the API
    defines it (unset means ready), whatever serving and terminating say: a terminating
    endpoint is never ready, so it leaves the list as ingress-nginx drops it. FQDN slices
    and slices without that port are skipped."""
    servers: set[str] = set()
    for item in slices:
        family = item.get("addressType")
        if family not in ("IPv4", "IPv6"):
            continue
        port = next((p.get("port") for p in item.get("ports") or [] if (p.get("name") or "") == port_name), None)
        if port is None:
            continue
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                host = f"[{address}]" if family == "IPv6" else address
                servers.add(f"{host}:{port}")
    return sorted(servers)


def render_servers(servers: list[str]) -> str:
    """The file nginx includes inside its `upstream` block: one `server` line each, with
    nginx's passive health check off (max_fails=0, as ingress-nginx's default), or the
    placeholder when there is none."""
    lines = [f"server {server} max_fails=0;" for server in servers] or [PLACEHOLDER]
    return "\n".join(lines) + "\n"


def reload_delay(now: float, last_reload: float | None, changed: bool, min_interval: float) -> float | None:
    """Seconds to wait before reloading: None when nothing changed, 0 when a reload may go
    now, else until `min_interval` has passed since the last one (monotonic seconds)."""
    if not changed:
        return None
    if last_reload is None:
        return 0.0
    return max(0.0, last_reload + min_interval - now)


# -- the API: a list and watch of one Service's EndpointSlices ------------------------------


def api_get(path: str, timeout: float | None) -> Any:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    with open(f"{SA}/token") as f:
        token = f.read().strip()
    context = ssl.create_default_context(cafile=f"{SA}/ca.crt")
    request = urllib.request.Request(f"https://{host}:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    return urllib.request.urlopen(request, context=context, timeout=timeout)


def watch_slices(
    namespace: str,
    service: str,
    on_list: Callable[[list[dict[str, Any]]], None],
    on_event: Callable[[str, dict[str, Any]], None],
    listing: dict[str, Any] | None = None,
) -> None:
    """List, then watch from the list's version; list again on any error, as an informer does."""
    base = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    selector = {"labelSelector": f"{SERVICE_LABEL}={service}"}
    while True:
        try:
            if listing is None:
                with api_get(f"{base}?{urllib.parse.urlencode(selector)}", timeout=10) as response:
                    listing = json.load(response)
                on_list(listing["items"])
            query = {**selector, "watch": "1", "resourceVersion": listing["metadata"]["resourceVersion"]}
            query["timeoutSeconds"] = "300"
            listing = None
            with api_get(f"{base}?{urllib.parse.urlencode(query)}", timeout=330) as stream:
                for line in stream:
                    event = json.loads(line)
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        on_event(event["type"], event["object"])
                    elif event["type"] == "ERROR":  # e.g. 410 Gone: the version is too old
                        break
        except Exception as err:
            print(f"{time.time():.3f} watch: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            listing = None
            time.sleep(0.5)


# -- the controller -------------------------------------------------------------------------


class Controller:
    """The slices seen, what nginx was last loaded with, and the loop that reloads it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.changed = threading.Event()
        self.stopping = threading.Event()
        self.slices: dict[str, dict[str, Any]] = {}
        self.wanted: list[str] = []
        self.applied: list[str] | None = None  # the list nginx runs with; None before it starts
        self.last_reload: float | None = None  # monotonic
        self.last_reload_wall: float | None = None
        self.reloads = 0
        self.nginx: subprocess.Popen[bytes] | None = None

    # what the watch reports

    def replace(self, items: list[dict[str, Any]]) -> None:
        with self.lock:
            self.slices = {item["metadata"]["name"]: item for item in items}
            self._update()

    def event(self, kind: str, item: dict[str, Any]) -> None:
        with self.lock:
            if kind == "DELETED":
                self.slices.pop(item["metadata"]["name"], None)
            else:
                self.slices[item["metadata"]["name"]] = item
            self._update()

    def _update(self) -> None:
        wanted = ready_servers(self.slices.values(), self.args.port_name)
        if wanted != self.wanted:
            print(f"{time.time():.3f} ready {','.join(wanted) or '-'}", flush=True)
            self.wanted = wanted
            self.changed.set()

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                "servers": list(self.applied or []),
                "ready": list(self.wanted),
                "reloads": self.reloads,
                "last_reload": self.last_reload_wall,
                "nginx_pid": self.nginx.pid if self.nginx else None,
                "min_interval": self.args.min_interval,
            }

    # nginx

    def write(self, servers: list[str]) -> None:
        path = self.args.servers
        with open(f"{path}.tmp", "w") as f:
            f.write(render_servers(servers))
        os.replace(f"{path}.tmp", path)

    def nginx_command(self, *extra: str) -> list[str]:
        return [self.args.nginx, "-e", "stderr", "-c", self.args.config, *extra]

    def start(self, listing: dict[str, Any] | None) -> None:
        if listing is not None:
            self.replace(listing["items"])
        with self.lock:
            servers = list(self.wanted)
        self.write(servers)
        self.nginx = subprocess.Popen(self.nginx_command())
        with self.lock:
            self.applied = servers
            self.last_reload, self.last_reload_wall = time.monotonic(), time.time()
        print(f"{time.time():.3f} started nginx (pid {self.nginx.pid}) with {','.join(servers) or '-'}", flush=True)

    def reload(self, servers: list[str]) -> None:
        assert self.nginx is not None
        previous = self.applied or []
        self.write(servers)
        test = subprocess.run(self.nginx_command("-t", "-q"), capture_output=True, text=True, check=False)
        now, wall = time.monotonic(), time.time()
        if test.returncode != 0:
            print(f"{wall:.3f} nginx -t failed, keeping the previous list: {test.stderr.strip()}", flush=True)
            self.write(previous)
            servers = previous
        else:
            self.nginx.send_signal(signal.SIGHUP)
        with self.lock:
            self.applied = servers
            self.last_reload, self.last_reload_wall = now, wall
            self.reloads += 1
            count = self.reloads
        print(f"{wall:.3f} reload {count} {','.join(servers) or '-'}", flush=True)

    def run(self) -> int:
        """Reload when the ready set differs from the applied one, at most once per min_interval."""
        assert self.nginx is not None
        while not self.stopping.is_set():
            code = self.nginx.poll()
            if code is not None:
                print(f"{time.time():.3f} nginx exited ({code})", flush=True)
                return code
            with self.lock:
                wanted, applied, last = list(self.wanted), self.applied, self.last_reload
                self.changed.clear()
            delay = reload_delay(time.monotonic(), last, wanted != applied, self.args.min_interval)
            if delay is None:
                self.changed.wait(1.0)  # also wakes to see whether nginx is still running
            elif delay > 0:
                self.stopping.wait(delay)
            else:
                self.reload(wanted)
        return self.stop_nginx()

    def stop_nginx(self) -> int:
        if self.nginx is None:
            return 0
        if self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGQUIT)  # graceful: workers finish their requests
        return self.nginx.wait()


def serve_status(controller: Controller, port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/upstreams":
                body, code = json.dumps(controller.status()).encode(), 200
            elif self.path == "/healthz":
                running = controller.nginx is not None and controller.nginx.poll() is None
                body, code = (b"ok\n", 200) if running else (b"nginx not running\n", 503)
            else:
                body, code = b"not found\n", 404
            self.send_response(code)
            self.send_header("Content-Type", "application/json" if self.path == "/upstreams" else "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the benchmark polls several times a second

    server = ThreadingHTTPServer(("", port), Handler)
    threading.Thread(target=server.serve_forever, name="status", daemon=True).start()


def first_listing(namespace: str, service: str) -> dict[str, Any] | None:
    """The slices before nginx starts, so it starts with them; None if the API does not answer."""
    query = urllib.parse.urlencode({"labelSelector": f"{SERVICE_LABEL}={service}"})
    try:
        with api_get(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices?{query}", 10) as response:
            listing: dict[str, Any] = json.load(response)
            return listing
    except Exception as err:
        print(f"{time.time():.3f} first list: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--service", required=True)
    parser.add_argument("--port-name", default="http", help="the Service port's name in the slices ('' if unnamed)")
    parser.add_argument("--servers", required=True, help="the file nginx's upstream block includes")
    parser.add_argument("--config", required=True, help="nginx's main configuration")
    parser.add_argument("--nginx", default="nginx")
    parser.add_argument("--namespace", default=None)
    parser.add_argument("--min-interval", type=float, default=3.0, help="seconds between two reloads, at least")
    parser.add_argument("--status-port", type=int, default=8405)
    args = parser.parse_args()
    if not args.namespace:
        with open(f"{SA}/namespace") as f:
            args.namespace = f.read().strip()
    controller = Controller(args)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: controller.stopping.set())
    listing = first_listing(args.namespace, args.service)
    controller.start(listing)
    serve_status(controller, args.status_port)
    threading.Thread(
        target=watch_slices,
        args=(args.namespace, args.service, controller.replace, controller.event, listing),
        name="watch",
        daemon=True,
    ).start()
    return controller.run()


if __name__ == "__main__":
    sys.exit(main())
