"""A minimal cluster DNS for headless Services, for clusters that have none (the local harness
runs no CoreDNS). It answers A queries for <service>.<namespace>.svc.<domain> with the
addresses of the Service's ready endpoints, from a watch of the namespace's EndpointSlices,
as CoreDNS's kubernetes plugin does (ready endpoints only, as for publishNotReadyAddresses:
false; TTL 5 s, CoreDNS's default). Other names: NXDOMAIN; other types: no data.

It runs next to HAProxy in its pod and listens on 127.0.0.1:53 (UDP; the pod allows
unprivileged ports from 53, and its resolv.conf names 127.0.0.1); standard library only.

    python3 k8sdns.py [--port 53] [--namespace NS] [--domain cluster.local] [--ttl 5]

Each change of a Service's answer is logged to stdout with a wall-clock time, so a
benchmark can tell when DNS started giving out a new set of endpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

SA = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_LABEL = "kubernetes.io/service-name"


class Endpoints:
    """Service name -> ready IPv4 addresses, kept from EndpointSlices."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.slices: dict[str, tuple[str, list[str]]] = {}  # slice name -> (service, addresses)
        self.answers: dict[str, list[str]] = {}

    def replace(self, items: list[dict[str, Any]]) -> None:
        with self.lock:
            self.slices = {}
            for item in items:
                self._put(item)
            self._refresh()

    def event(self, kind: str, item: dict[str, Any]) -> None:
        with self.lock:
            if kind == "DELETED":
                self.slices.pop(item["metadata"]["name"], None)
            else:
                self._put(item)
            self._refresh()

    def get(self, service: str) -> list[str] | None:
        with self.lock:
            return self.answers.get(service)

    def _put(self, item: dict[str, Any]) -> None:
        service = (item["metadata"].get("labels") or {}).get(SERVICE_LABEL)
        if not service or item.get("addressType") != "IPv4":
            return
        ready = [
            address
            for endpoint in item.get("endpoints") or []
            if (endpoint.get("conditions") or {}).get("ready") is not False
            for address in endpoint.get("addresses") or []
        ]
        self.slices[item["metadata"]["name"]] = (service, ready)

    def _refresh(self) -> None:
        answers: dict[str, list[str]] = {}
        for service, addresses in self.slices.values():
            answers.setdefault(service, []).extend(addresses)
        for service in sorted(set(answers) | set(self.answers)):
            new, old = sorted(answers.get(service, [])), sorted(self.answers.get(service, []))
            if new != old:
                print(f"{time.time():.3f} {service} {','.join(new) or '-'}", flush=True)
        self.answers = answers


def api_get(path: str, timeout: float | None) -> Any:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    with open(f"{SA}/token") as f:
        token = f.read().strip()
    context = ssl.create_default_context(cafile=f"{SA}/ca.crt")
    request = urllib.request.Request(f"https://{host}:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    return urllib.request.urlopen(request, context=context, timeout=timeout)


def watch_forever(namespace: str, endpoints: Endpoints) -> None:
    base = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    while True:
        try:
            with api_get(base, timeout=10) as response:
                listing = json.load(response)
            endpoints.replace(listing["items"])
            query = urllib.parse.urlencode(
                {"watch": "1", "resourceVersion": listing["metadata"]["resourceVersion"], "timeoutSeconds": "300"}
            )
            with api_get(f"{base}?{query}", timeout=330) as stream:
                for line in stream:
                    event = json.loads(line)
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        endpoints.event(event["type"], event["object"])
                    elif event["type"] == "ERROR":
                        break
        except Exception as err:  # relist on anything, as an informer does
            print(f"{time.time():.3f} watch: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            time.sleep(0.5)


def parse_question(packet: bytes) -> tuple[int, int, str, int, int] | None:
    """(id, flags, name, qtype, end of the question) of a query, or None if malformed."""
    if len(packet) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if qdcount != 1:
        return None
    labels, offset = [], 12
    while offset < len(packet) and packet[offset]:
        length = packet[offset]
        labels.append(packet[offset + 1 : offset + 1 + length].decode("ascii", "replace").lower())
        offset += 1 + length
    offset += 1
    if offset + 4 > len(packet):
        return None
    qtype, _qclass = struct.unpack("!HH", packet[offset : offset + 4])
    return ident, flags, ".".join(labels), qtype, offset + 4


def answer(packet: bytes, endpoints: Endpoints, namespace: str, domain: str, ttl: int) -> bytes | None:
    question = parse_question(packet)
    if question is None:
        return None
    ident, flags, name, qtype, end = question
    suffix = f".{namespace}.svc.{domain}"
    addresses: list[str] | None = None
    if name.endswith(suffix) and "." not in name[: -len(suffix)]:
        addresses = endpoints.get(name[: -len(suffix)])
    rcode = 3 if addresses is None else 0  # NXDOMAIN for names we do not serve
    records = addresses if qtype == 1 and addresses else []
    header = struct.pack("!HHHHHH", ident, 0x8400 | (flags & 0x0100) | rcode, 1, len(records), 0, 0)
    body = packet[12:end]
    for address in records:
        body += struct.pack("!HHHIH", 0xC00C, 1, 1, ttl, 4) + socket.inet_aton(address)
    return header + body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--namespace", default=None)
    parser.add_argument("--domain", default="cluster.local")
    parser.add_argument("--ttl", type=int, default=5)
    args = parser.parse_args()
    namespace = args.namespace
    if not namespace:
        with open(f"{SA}/namespace") as f:
            namespace = f.read().strip()
    endpoints = Endpoints()
    threading.Thread(target=watch_forever, args=(namespace, endpoints), daemon=True).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.bind, args.port))
    print(f"{time.time():.3f} serving *.{namespace}.svc.{args.domain} on {args.bind}:{args.port}/udp", flush=True)
    while True:
        packet, peer = sock.recvfrom(4096)
        reply = answer(packet, endpoints, namespace, args.domain, args.ttl)
        if reply is not None:
            sock.sendto(reply, peer)


if __name__ == "__main__":
    main()
