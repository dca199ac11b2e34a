"""What the data plane has programmed, sampled over time: the endpoints kube-proxy has written
into this node's iptables for a Service, the servers HAProxy has in rotation, the servers nginx
was last reloaded with, and, to compare them with, the EndpointSlices' ready endpoints.

Each sampler runs in a thread and records a time series of Sample(t, count, addresses):

    slices = Sampler("slices", SliceSampler(api, namespace, "demo").view).start()
    proxy = KubeProxySampler(cluster_ip, 80, slices=slices.latest_view)
    if proxy.available:
        kube_proxy = Sampler("kube-proxy", proxy.view).start()
    haproxy = Sampler("haproxy", ProxySampler(kube, namespace, proxy_name("demo")).view).start()
    ...  # the rollout, then .stop() each
    haproxy.counts()   # [(time.time(), servers up with an address), ...]
    haproxy.changes()  # only the samples whose set of addresses differs from the one before

Each of KubeProxySampler, ProxySampler, NginxSampler and SliceSampler has view() (the
addresses) and a method giving only the number, for a sampler of numbers: endpoints(),
servers_up() (both proxies), ready_endpoints(). KubeProxySampler is not `available` (and
gives None) where it cannot see kube-proxy's rules: not root, no iptables-save, or no
KUBE-SERVICES chain on this machine (another cluster's nodes).
The parsers (kube_proxy_endpoints, haproxy_servers, nginx_upstreams, nginx_stub_status,
slice_endpoints, fallback_to_terminating) do no I/O; bench/tests/test_dataplane.py runs them
on captured text.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from kubernetes import client

from harness.kube import Kube

# -- what a sample holds ------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """The endpoints (ip:port) one data plane would send new connections to, at one moment."""

    addresses: tuple[str, ...]
    # kube-proxy only: True when every programmed endpoint is a terminating (not ready but
    # serving) one, i.e. kube-proxy fell back to terminating endpoints; None if unknown
    terminating_fallback: bool | None = None
    # EndpointSlices only: endpoints not ready but still serving while terminating
    serving_terminating: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sample:
    t: float  # time.time() when the read started
    count: int | None  # endpoints programmed; None when the read failed
    addresses: tuple[str, ...] = ()
    terminating_fallback: bool | None = None
    serving_terminating: tuple[str, ...] = ()
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": round(self.t, 3), "count": self.count, "addresses": list(self.addresses)}
        if self.terminating_fallback is not None:
            out["terminating_fallback"] = self.terminating_fallback
        if self.serving_terminating:
            out["serving_terminating"] = list(self.serving_terminating)
        if self.error:
            out["error"] = self.error
        return out


# -- kube-proxy (iptables mode) -----------------------------------------------------------

_RULE = re.compile(r"^-A (\S+) (.*)$")
_JUMP = re.compile(r"(?:^| )-j (\S+)")
_DNAT = re.compile(r"--to-destination (\S+)")


def _nat_rules(iptables_save: str) -> dict[str, list[str]]:
    """Chain -> its rules' text (after the chain name), in order."""
    chains: dict[str, list[str]] = {}
    for line in iptables_save.splitlines():
        match = _RULE.match(line.strip())
        if match:
            chains.setdefault(match.group(1), []).append(match.group(2))
    return chains


def kube_proxy_endpoints(iptables_save: str, cluster_ip: str, port: int, protocol: str = "tcp") -> tuple[str, ...]:
    """The endpoints (ip:port, in rule order) kube-proxy has programmed for a Service's
    ClusterIP and port, from `iptables-save -t nat`: the KUBE-SEP chains that the Service's
    KUBE-SVC chain (KUBE-SVL with internalTrafficPolicy Local) jumps to, and their DNAT
    targets. Empty when KUBE-SERVICES has no rule for it: kube-proxy writes none for a
    Service without usable endpoints (it rejects its traffic in the filter table instead)."""
    chains = _nat_rules(iptables_save)
    match_ip = re.compile(rf"(?:^| )-d {re.escape(cluster_ip)}(?:/32)? ")
    match_port = re.compile(rf"(?:^| )--dport {port}(?: |$)")
    service_chain = None
    for rule in chains.get("KUBE-SERVICES", []):
        jump = _JUMP.search(rule)
        if not (jump and match_ip.search(rule) and match_port.search(rule)):
            continue
        if f"-p {protocol}" in rule and jump.group(1).startswith(("KUBE-SVC-", "KUBE-SVL-")):
            service_chain = jump.group(1)
            break
    if service_chain is None:
        return ()
    addresses: list[str] = []
    for rule in chains.get(service_chain, []):
        jump = _JUMP.search(rule)
        if jump and jump.group(1).startswith("KUBE-SEP-"):
            for sep_rule in chains.get(jump.group(1), []):
                dnat = _DNAT.search(sep_rule)
                if dnat:
                    addresses.append(dnat.group(1))
                    break
    return tuple(addresses)


def fallback_to_terminating(programmed: tuple[str, ...], slices: View | None) -> bool | None:
    """Whether kube-proxy is sending to terminating endpoints for want of ready ones: every
    programmed endpoint is one the EndpointSlices list as serving while terminating. None
    without a slice view to compare with."""
    if slices is None:
        return None
    return bool(programmed) and all(
        address in slices.serving_terminating and address not in slices.addresses for address in programmed
    )


def iptables_save_command() -> list[str] | None:
    """The iptables-save that shows kube-proxy's rules here, or None (not root, none installed,
    or no KUBE-SERVICES chain on this machine)."""
    if os.geteuid() != 0:
        return None
    for binary in ("iptables-save", "iptables-legacy-save", "iptables-nft-save"):
        path = shutil.which(binary)
        if not path:
            continue
        command = [path, "-t", "nat"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        if done.returncode == 0 and ":KUBE-SERVICES " in done.stdout:
            return command
    return None


class KubeProxySampler:
    """kube-proxy's programmed endpoints for ClusterIP:port on this node (iptables mode).
    `available` is False where they cannot be seen; then view() and endpoints() give None.
    `slices` (e.g. the latest_view of an EndpointSlice Sampler) lets it tell a fallback to
    terminating endpoints."""

    def __init__(self, cluster_ip: str, port: int, slices: Callable[[], View | None] | None = None) -> None:
        self.cluster_ip = cluster_ip
        self.port = port
        self.slices = slices
        self.command = iptables_save_command()
        self.available = self.command is not None

    def view(self) -> View | None:
        if self.command is None:
            return None
        text = subprocess.run(self.command, capture_output=True, text=True, timeout=10, check=True).stdout
        programmed = kube_proxy_endpoints(text, self.cluster_ip, self.port)
        slices = self.slices() if self.slices else None
        return View(programmed, terminating_fallback=fallback_to_terminating(programmed, slices))

    def endpoints(self) -> int | None:
        """How many endpoints kube-proxy has programmed (None: not visible from here)."""
        view = self.view()
        return None if view is None else len(view.addresses)


# -- HAProxy ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HAProxyServer:
    name: str
    status: str  # "no check" (in rotation, no health checks), "UP", "DOWN", "MAINT (resolution)", ...
    address: str  # ip:port, "" while the server has none

    @property
    def in_rotation(self) -> bool:
        """Has an address and takes traffic: UP, or "no check" (servers without health checks)."""
        return bool(self.address) and (self.status == "no check" or self.status.startswith("UP"))


def haproxy_servers(stats_csv: str, backend: str = "app") -> list[HAProxyServer]:
    """The servers of one backend from HAProxy's stats CSV (`/stats;csv` or `show stat`)."""
    text = stats_csv.lstrip()
    if text.startswith("# "):
        text = text[2:]
    servers = []
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("pxname") != backend or row.get("svname") in (None, "FRONTEND", "BACKEND"):
            continue
        address = row.get("addr") or ""
        if address.startswith("0.0.0.0:") or address == "-":
            address = ""
        servers.append(HAProxyServer(row["svname"] or "", (row.get("status") or "").strip(), address))
    return servers


def haproxy_in_rotation(stats_csv: str, backend: str = "app") -> tuple[str, ...]:
    """Addresses of the backend's servers in rotation (UP or unchecked, with an address)."""
    return tuple(sorted(s.address for s in haproxy_servers(stats_csv, backend) if s.in_rotation))


def running_pod_ip(kube: Kube, namespace: str, name: str) -> str:
    """The IP of a running (not deleting) pod labelled app=<name>: a proxy's, read once."""
    pods = kube.items("pods", namespace, f"app={name}")
    running = [p for p in pods if p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")]
    if not running:
        raise LookupError(f"no running pod app={name} in {namespace}")
    return str(running[0]["status"]["podIP"])


class ProxySampler:
    """HAProxy's servers in rotation, from the stats page of the pod labelled app=<name>
    (bench/l7proxy.py), reached at its pod IP (from the node, on the local cluster)."""

    def __init__(
        self, kube: Kube, namespace: str, name: str, *, port: int = 8404, backend: str = "app", timeout: float = 1.0
    ) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.port, self.backend, self.timeout = port, backend, timeout
        self.pod_ip: str | None = None

    def url(self) -> str:
        if self.pod_ip is None:
            self.pod_ip = running_pod_ip(self.kube, self.namespace, self.name)
        return f"http://{self.pod_ip}:{self.port}/stats;csv"

    def stats_csv(self) -> str:
        try:
            with urllib.request.urlopen(self.url(), timeout=self.timeout) as response:
                return str(response.read().decode())
        except OSError:
            self.pod_ip = None  # the pod may have been replaced: look it up again next time
            raise

    def servers(self) -> list[HAProxyServer]:
        return haproxy_servers(self.stats_csv(), self.backend)

    def view(self) -> View:
        return View(haproxy_in_rotation(self.stats_csv(), self.backend))

    def servers_up(self) -> int:
        """How many servers HAProxy has in rotation (UP or unchecked, with an address)."""
        return len(self.view().addresses)


# -- nginx (bench/nginxproxy.py) -----------------------------------------------------------


def nginx_upstreams(status_json: str) -> tuple[str, ...]:
    """The servers nginx was last loaded with, from its controller's /upstreams (sorted
    host:port, IPv6 in brackets; the placeholder that stands in for none is not listed)."""
    return tuple(sorted(json.loads(status_json)["servers"]))


_STUB_ACTIVE = re.compile(r"Active connections:\s*(\d+)")
_STUB_TOTALS = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s*$", re.MULTILINE)
_STUB_STATES = re.compile(r"Reading:\s*(\d+)\s+Writing:\s*(\d+)\s+Waiting:\s*(\d+)")


def nginx_stub_status(text: str) -> dict[str, int]:
    """nginx's stub_status page as numbers: active, accepts, handled, requests, reading,
    writing, waiting (client connections; an old worker's still count until it exits)."""
    active, totals, states = _STUB_ACTIVE.search(text), _STUB_TOTALS.search(text), _STUB_STATES.search(text)
    if not (active and totals and states):
        raise ValueError(f"not a stub_status page: {text[:80]!r}")
    names = ("accepts", "handled", "requests", "reading", "writing", "waiting")
    values = [int(v) for v in totals.groups() + states.groups()]
    return {"active": int(active.group(1)), **dict(zip(names, values, strict=True))}


class NginxSampler:
    """The servers nginx runs with, from the controller's /upstreams on the pod labelled
    app=<name> (bench/nginxproxy.py), reached at its pod IP (from the node, on the local
    cluster); and nginx's stub_status on the same pod."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        *,
        controller_port: int = 8405,
        status_port: int = 8404,
        timeout: float = 1.0,
    ) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.controller_port, self.status_port, self.timeout = controller_port, status_port, timeout
        self.pod_ip: str | None = None

    def _get(self, port: int, path: str) -> str:
        if self.pod_ip is None:
            self.pod_ip = running_pod_ip(self.kube, self.namespace, self.name)
        try:
            with urllib.request.urlopen(f"http://{self.pod_ip}:{port}{path}", timeout=self.timeout) as response:
                return str(response.read().decode())
        except OSError:
            self.pod_ip = None  # the pod may have been replaced: look it up again next time
            raise

    def view(self) -> View:
        return View(nginx_upstreams(self._get(self.controller_port, "/upstreams")))

    def servers_up(self) -> int:
        """How many servers the upstream has (the last reload's list)."""
        return len(self.view().addresses)

    def stub_status(self) -> dict[str, int]:
        return nginx_stub_status(self._get(self.status_port, "/stub_status"))


# -- EndpointSlices -----------------------------------------------------------------------


@dataclass(frozen=True)
class SliceEndpoint:
    address: str  # ip:port
    ready: bool
    serving: bool
    terminating: bool
    ip: str = ""
    port: int | None = None  # None: the slice has no such port


def slice_endpoints(slices: list[dict[str, Any]], port_name: str | None = None) -> list[SliceEndpoint]:
    """The endpoints of a Service's EndpointSlices (API JSON), with the port named port_name
    (default: each slice's first port). Conditions as the API defines them: ready and serving
    unset mean true, terminating unset means false."""
    out = []
    for item in slices:
        ports = item.get("ports") or []
        chosen = next((p for p in ports if port_name is None or p.get("name") == port_name), None)
        port = chosen.get("port") if chosen else None
        suffix = f":{port}" if port is not None else ""
        for endpoint in item.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            ready = conditions.get("ready") is not False
            serving = conditions.get("serving", ready) is not False
            terminating = conditions.get("terminating") is True
            for ip in endpoint.get("addresses") or []:
                out.append(SliceEndpoint(f"{ip}{suffix}", ready, serving, terminating, ip, port))
    return out


def slice_view(slices: list[dict[str, Any]], port_name: str | None = None) -> View:
    """Ready endpoints, and those serving while terminating."""
    endpoints = slice_endpoints(slices, port_name)
    return View(
        tuple(sorted(e.address for e in endpoints if e.ready)),
        serving_terminating=tuple(sorted(e.address for e in endpoints if e.serving and e.terminating and not e.ready)),
    )


class SliceSampler:
    """A Service's EndpointSlices through the API (one list per sample)."""

    def __init__(
        self, api: client.CoreV1Api | client.ApiClient, namespace: str, service: str, port_name: str | None = None
    ) -> None:
        api_client = api.api_client if isinstance(api, client.CoreV1Api) else api
        self.discovery = client.DiscoveryV1Api(api_client)
        self.namespace, self.service, self.port_name = namespace, service, port_name

    def items(self) -> list[dict[str, Any]]:
        # raw JSON (no model objects): the parser reads the API's own field names
        response: Any = self.discovery.list_namespaced_endpoint_slice(
            self.namespace,
            label_selector=f"kubernetes.io/service-name={self.service}",
            _preload_content=False,
            _request_timeout=5,
        )
        return list(json.loads(response.data)["items"])

    def view(self) -> View:
        return slice_view(self.items(), self.port_name)

    def ready_endpoints(self) -> int:
        """How many endpoints the slices list as ready."""
        return len(self.view().addresses)


# -- the sampling thread ------------------------------------------------------------------


@dataclass
class Sampler:
    """Calls `read` every `interval` seconds in a thread, recording a Sample each time."""

    name: str
    read: Callable[[], View | None]
    interval: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> Sampler:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"sampler-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        return self.samples

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def sample_once(self) -> Sample:
        started = time.time()
        try:
            view = self.read()
        except Exception as err:  # a failed read is a gap in the series, not the end of it
            sample = Sample(started, None, error=f"{type(err).__name__}: {err}"[:200])
        else:
            if view is None:
                sample = Sample(started, None, error="not visible from here")
                self.samples.append(sample)
                return sample
            sample = Sample(
                started, len(view.addresses), view.addresses, view.terminating_fallback, view.serving_terminating
            )
        self.samples.append(sample)
        return sample

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.sample_once()
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def latest_view(self) -> View | None:
        """The last successful sample, as a View (for kube_proxy_reader's `slices`)."""
        for sample in reversed(self.samples):
            if sample.count is not None:
                return View(sample.addresses, sample.terminating_fallback, sample.serving_terminating)
        return None

    def counts(self) -> list[tuple[float, int]]:
        """(time, endpoints programmed) for every successful sample."""
        return [(s.t, s.count) for s in self.samples if s.count is not None]

    def changes(self) -> list[Sample]:
        """The first sample and each one whose addresses (or fallback) differ from the last
        successful one before it: the compact series to keep in results."""
        out: list[Sample] = []
        last: tuple[tuple[str, ...], bool | None, tuple[str, ...]] | None = None
        for sample in self.samples:
            if sample.count is None:
                continue
            key = (sample.addresses, sample.terminating_fallback, sample.serving_terminating)
            if key != last:
                out.append(sample)
                last = key
        return out


def first_time(samples: list[Sample], predicate: Callable[[Sample], bool], after: float = 0.0) -> float | None:
    """When a series first met a condition at or after `after` (e.g. an address appeared)."""
    return next((s.t for s in samples if s.t >= after and s.count is not None and predicate(s)), None)
