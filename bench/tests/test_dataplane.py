"""The data-plane samplers' parsers (bench/dataplane.py) on text captured from the local
cluster, the L7 proxy's objects (bench/l7proxy.py) and its in-pod DNS (bench/l7proxy/k8sdns.py)."""

from __future__ import annotations

import importlib.util
import json
import socket
import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bench import l7proxy
from bench.dataplane import (
    Sample,
    Sampler,
    View,
    fallback_to_terminating,
    first_time,
    haproxy_in_rotation,
    haproxy_servers,
    kube_proxy_endpoints,
    slice_endpoints,
    slice_view,
)

DATA = Path(__file__).parent / "data" / "dataplane"
# captured with 3 demo pods behind l7-try/demo (10.215.189.166:80) and HAProxy in front
NAT = (DATA / "iptables-nat.txt").read_text()
STATS = (DATA / "haproxy-stats.csv").read_text()
# captured 2.3 s after `kubectl rollout restart`: one old pod terminating, one new pod ready
SLICES: list[dict[str, Any]] = json.loads((DATA / "endpointslices-rollout.json").read_text())
DEMO = ("10.214.0.64:8080", "10.214.0.66:8080", "10.214.0.67:8080")


def test_kube_proxy_endpoints_of_a_service_port() -> None:
    assert kube_proxy_endpoints(NAT, "10.215.189.166", 80) == DEMO
    # one ClusterIP, two ports, each its own KUBE-SVC chain
    assert kube_proxy_endpoints(NAT, "10.215.67.226", 80) == ("10.214.0.65:8080",)
    assert kube_proxy_endpoints(NAT, "10.215.67.226", 8404) == ("10.214.0.65:8404",)
    assert kube_proxy_endpoints(NAT, "10.215.0.1", 443) == ("10.213.0.1:6443",)


def test_kube_proxy_endpoints_none_programmed() -> None:
    assert kube_proxy_endpoints(NAT, "10.215.189.166", 81) == ()
    assert kube_proxy_endpoints(NAT, "10.215.189.16", 80) == ()  # a prefix of another ClusterIP
    assert kube_proxy_endpoints(NAT, "10.215.189.166", 80, protocol="udp") == ()
    assert kube_proxy_endpoints("", "10.215.189.166", 80) == ()


def test_kube_proxy_endpoints_through_a_local_policy_chain() -> None:
    text = "\n".join(
        [
            '-A KUBE-SERVICES -d 10.0.0.9/32 -p tcp -m comment --comment "ns/web cluster IP" -m tcp --dport 80 '
            "-j KUBE-SVL-AAAA",
            '-A KUBE-SVL-AAAA -m comment --comment "ns/web -> 10.1.0.5:8080" -j KUBE-SEP-BBBB',
            "-A KUBE-SEP-BBBB -s 10.1.0.5/32 -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-BBBB -p tcp -m tcp -j DNAT --to-destination 10.1.0.5:8080",
        ]
    )
    assert kube_proxy_endpoints(text, "10.0.0.9", 80) == ("10.1.0.5:8080",)


def test_haproxy_servers_from_the_stats_csv() -> None:
    servers = haproxy_servers(STATS)
    assert [s.name for s in servers] == [f"pod{i}" for i in range(1, 11)]
    assert [(s.status, s.address, s.in_rotation) for s in servers[:4]] == [
        ("no check", "10.214.0.66:8080", True),
        ("no check", "10.214.0.67:8080", True),
        ("no check", "10.214.0.64:8080", True),
        ("MAINT (resolution)", "", False),
    ]
    assert haproxy_in_rotation(STATS) == DEMO
    assert haproxy_servers(STATS, backend="other") == []


@pytest.mark.parametrize(
    ("status", "address", "in_rotation"),
    [
        ("UP", "10.0.0.1:80", True),
        ("UP 1/3", "10.0.0.1:80", True),
        ("no check", "10.0.0.1:80", True),
        ("DOWN", "10.0.0.1:80", False),
        ("MAINT", "10.0.0.1:80", False),
        ("DRAIN", "10.0.0.1:80", False),
        ("no check", "", False),
        ("UP", "0.0.0.0:8080", False),
    ],
)
def test_haproxy_in_rotation(status: str, address: str, in_rotation: bool) -> None:
    text = f"# pxname,svname,status,addr\napp,pod1,{status},{address}\napp,BACKEND,UP,\n"
    assert haproxy_in_rotation(text) == ((address,) if in_rotation else ())


def test_slice_endpoints_and_view() -> None:
    endpoints = {e.address: e for e in slice_endpoints(SLICES)}
    assert set(endpoints) == {"10.214.0.66:8080", "10.214.0.67:8080", "10.214.0.64:8080", "10.214.0.91:8080"}
    old = endpoints["10.214.0.64:8080"]
    assert (old.ready, old.serving, old.terminating) == (False, True, True)
    view = slice_view(SLICES)
    assert view.addresses == ("10.214.0.66:8080", "10.214.0.67:8080", "10.214.0.91:8080")
    assert view.serving_terminating == ("10.214.0.64:8080",)


def test_slice_conditions_unset_mean_ready_serving_not_terminating() -> None:
    item = {
        "ports": [{"name": "metrics", "port": 9090}, {"name": "http", "port": 8080}],
        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"], "conditions": {"ready": False}}],
    }
    found = slice_endpoints([item], port_name="http")
    assert [(e.address, e.ready, e.serving, e.terminating) for e in found] == [
        ("10.0.0.1:8080", True, True, False),
        ("10.0.0.2:8080", False, False, False),
    ]
    assert slice_view([{"endpoints": None}]).addresses == ()


def test_fallback_to_terminating() -> None:
    during = slice_view(SLICES)
    assert fallback_to_terminating(("10.214.0.64:8080",), during) is True
    assert fallback_to_terminating(("10.214.0.64:8080", "10.214.0.66:8080"), during) is False
    assert fallback_to_terminating((), during) is False
    assert fallback_to_terminating(("10.214.0.64:8080",), None) is None


def test_sampler_series_changes_and_failures() -> None:
    reads: list[View | Exception | None] = [
        View(("a",)),
        View(("a",)),
        RuntimeError("refused"),
        None,
        View(("a", "b")),
        View(("b",)),
    ]

    def read() -> View | None:
        item = reads.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    sampler = Sampler("test", read)
    samples = [sampler.sample_once() for _ in range(6)]
    assert [s.count for s in samples] == [1, 1, None, None, 2, 1]
    assert samples[2].error == "RuntimeError: refused"
    assert samples[3].error == "not visible from here"
    assert [c for _, c in sampler.counts()] == [1, 1, 2, 1]
    assert [s.addresses for s in sampler.changes()] == [("a",), ("a", "b"), ("b",)]
    assert sampler.latest_view() == View(("b",))
    assert first_time(samples, lambda s: "b" in s.addresses) == samples[4].t
    assert first_time(samples, lambda s: "c" in s.addresses) is None
    assert Sample(1.23456, 1, ("a",)).as_dict() == {"t": 1.235, "count": 1, "addresses": ["a"]}


def test_sampler_thread_stops() -> None:
    sampler = Sampler("test", lambda: View(("a",)), interval=0.01)
    with sampler:
        while len(sampler.samples) < 3:
            pass
    count = len(sampler.samples)
    assert count >= 3
    assert len(sampler.samples) == count  # no sample after stop()


# -- the L7 proxy's objects ---------------------------------------------------------------


def test_l7proxy_rbac_is_get_list_and_watch_of_endpointslices_in_its_namespace() -> None:
    account, role, binding = l7proxy.rbac("bench")
    assert role["kind"] == "Role"  # not a ClusterRole: its own namespace only
    assert role["metadata"]["namespace"] == "bench"
    assert role["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "bench"}
    ]


def test_l7proxy_objects() -> None:
    objects = l7proxy.objects("bench", "demo-none")
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds == [
        ("Service", "demo-none-headless"),
        ("ServiceAccount", "l7proxy"),
        ("Role", "l7proxy"),
        ("RoleBinding", "l7proxy"),
        ("ConfigMap", "demo-none-l7proxy"),
        ("Deployment", "demo-none-l7proxy"),
        ("Service", "demo-none-l7proxy"),
    ]
    assert all(o["metadata"]["namespace"] == "bench" for o in objects)
    headless = objects[0]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is False
    assert headless["selector"] == {"app": "demo-none"}
    pod = objects[5]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["dnsConfig"]["nameservers"] == ["127.0.0.1"]
    assert [c["name"] for c in pod["containers"]] == ["haproxy", "dns"]
    # the proxy's pods are not the app's: app=demo-none must not select them
    assert objects[5]["spec"]["template"]["metadata"]["labels"]["app"] == "demo-none-l7proxy"
    assert objects[6]["spec"]["selector"] == {"app": "demo-none-l7proxy"}


def test_l7proxy_with_cluster_dns() -> None:
    settings = l7proxy.ProxySettings(cluster_dns=True, resolve_interval=2.5)
    objects = l7proxy.objects("bench", "demo", settings)
    assert [o["kind"] for o in objects] == ["Service", "ConfigMap", "Deployment", "Service"]
    pod = objects[2]["spec"]["template"]["spec"]
    assert "dnsConfig" not in pod
    assert [c["name"] for c in pod["containers"]] == ["haproxy"]
    config = objects[1]["data"]["haproxy.cfg"]
    assert "timeout resolve 2500ms" in config
    assert "hold valid 2500ms" in config


def test_haproxy_config() -> None:
    config = l7proxy.haproxy_config("bench", "demo-headless")
    lines = {line.strip() for line in config.splitlines()}
    assert "parse-resolv-conf" in lines
    assert "server-template pod 1-10 demo-headless.bench.svc.cluster.local:8080 resolvers cluster" in config
    assert {"retries 0", "no option redispatch", "http-reuse always", "option http-keep-alive"} <= lines
    assert {"timeout connect 2s", "timeout client 30s", "timeout server 30s", "balance roundrobin"} <= lines
    assert {"timeout resolve 5000ms", "hold valid 5000ms", "hold obsolete 0s"} <= lines
    assert not any(line.startswith("server") and " check" in line for line in lines)


# -- the in-pod DNS -----------------------------------------------------------------------


def _k8sdns() -> ModuleType:
    path = Path(__file__).parents[2] / "bench" / "l7proxy" / "k8sdns.py"
    spec = importlib.util.spec_from_file_location("k8sdns", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _query(name: str, qtype: int = 1) -> bytes:
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", qtype, 1)


def _answers(reply: bytes) -> tuple[int, list[str]]:
    ident, flags, _qd, ancount, _ns, _ar = struct.unpack("!HHHHHH", reply[:12])
    assert ident == 0x1234
    assert flags & 0x8000  # a response
    records = reply[len(reply) - 16 * ancount :]  # each: name pointer, type, class, TTL, length, IPv4
    return flags & 0xF, [socket.inet_ntoa(records[i + 12 : i + 16]) for i in range(0, len(records), 16)]


def test_k8sdns_answers_ready_endpoints_of_a_headless_service() -> None:
    dns = _k8sdns()
    endpoints = dns.Endpoints()
    headless = json.loads(json.dumps(SLICES[0]))
    headless["metadata"]["name"] = "demo-headless-abcde"
    headless["metadata"]["labels"]["kubernetes.io/service-name"] = "demo-headless"
    endpoints.replace([headless])
    name = "demo-headless.l7-try.svc.cluster.local"
    rcode, addresses = _answers(dns.answer(_query(name), endpoints, "l7-try", "cluster.local", 5))
    assert rcode == 0
    assert sorted(addresses) == ["10.214.0.66", "10.214.0.67", "10.214.0.91"]
    assert _answers(dns.answer(_query(name, qtype=28), endpoints, "l7-try", "cluster.local", 5)) == (0, [])
    other = _query("other.l7-try.svc.cluster.local")
    assert _answers(dns.answer(other, endpoints, "l7-try", "cluster.local", 5))[0] == 3
    endpoints.event("DELETED", headless)
    assert _answers(dns.answer(_query(name), endpoints, "l7-try", "cluster.local", 5))[0] == 3
    assert dns.answer(b"\0\1", endpoints, "l7-try", "cluster.local", 5) is None
