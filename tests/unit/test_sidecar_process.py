"""`lameduck-sidecar` as its image runs it, a process of its own: while idle it has loaded none of
the hold's machinery (asyncio, ssl, the API client, the hold's modules), the first call to the hold
loads it and is answered by a hold, and its own SIGTERM ends it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.repo_data import REPO

# The entry point, with a SIGUSR1 that writes the names of the modules loaded so far.
ENTRY = """
import json, os, signal, sys

def modules(*_):
    path = os.environ["MODULES_OUT"]
    with open(path + ".tmp", "w") as out:
        json.dump(sorted(sys.modules), out)
    os.rename(path + ".tmp", path)

signal.signal(signal.SIGUSR1, modules)
from lameduck_sidecar.app import main
sys.exit(main())
"""
# What an idle sidecar must not have loaded: what only a hold needs, and what the sidecar's image
# no longer has.
HOLD_ONLY = {
    "asyncio",
    "ssl",
    "_ssl",
    "concurrent.futures",
    "lameduck_sidecar.serving",
    "lameduck_sidecar.holder",
    "lameduck_sidecar.k8s",
    "lameduck_sidecar.http_client",
    "lameduck_sidecar.pod_reads",
    "lameduck_sidecar.reporter",
}
NOT_IN_THE_IMAGE = {"aiohttp", "prometheus_client", "yarl", "multidict"}


class Sidecar:
    def __init__(self, tmp_path: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.out = tmp_path / "modules.json"
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(REPO / "sidecar"),
            "MODULES_OUT": str(self.out),
            "LAMEDUCK_POD_NAME": "web-1",
            "LAMEDUCK_POD_NAMESPACE": "shop",
            "LAMEDUCK_PORT": str(self.port),
            "LAMEDUCK_QUIET_PERIOD": "100ms",
            "LAMEDUCK_FALLBACK_DELAY": "200ms",
            "LAMEDUCK_MAX_HOLD": "2s",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-c", ENTRY], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
        )

    def get(self, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def until_serving(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read().decode() if self.process.stderr else ""
            try:
                if self.get("/healthz") == (200, b"ok\n"):
                    return
            except OSError:
                time.sleep(0.02)
        pytest.fail("the sidecar never served /healthz")

    def modules(self) -> set[str]:
        self.out.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not self.out.exists():
            assert time.monotonic() < deadline, "no list of modules"
            time.sleep(0.01)
        return set(json.loads(self.out.read_text()))


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Sidecar]:
    running = Sidecar(tmp_path)
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


def test_idle_it_loads_no_hold_machinery_and_the_first_call_loads_it(sidecar: Sidecar) -> None:
    sidecar.until_serving()
    assert sidecar.get("/readyz") == (200, b"ok\n")
    status, metrics = sidecar.get("/metrics")
    assert (status, b"lameduck_sidecar_api_requests_total 0.0\n" in metrics) == (200, True)
    assert sidecar.get("/hold/App") == (400, b'{"error": "invalid_container"}')
    idle = sidecar.modules()
    assert {"h11", "lameduck_sidecar.idle", "lameduck_sidecar.endpoint"} <= idle, "the list is the sidecar's"
    assert idle & (HOLD_ONLY | NOT_IN_THE_IMAGE) == set()

    status, body = sidecar.get("/hold/app")
    assert (status, json.loads(body)["outcome"]) == (200, "fallback"), "no API address: a fallback hold"
    assert HOLD_ONLY - sidecar.modules() == set(), "the call loaded the hold's machinery"
    assert sidecar.get("/healthz") == (200, b"ok\n")
    assert not sidecar.modules() & NOT_IN_THE_IMAGE

    sidecar.process.send_signal(signal.SIGTERM)
    assert sidecar.process.wait(10) == 0
    stdout = sidecar.process.stdout.read().decode() if sidecar.process.stdout else ""
    events = [json.loads(line)["event"] for line in stdout.splitlines()]
    assert events == ["start", "holds_served", "fallback", "hold"]


def test_idle_it_ends_on_its_own_sigterm(sidecar: Sidecar) -> None:
    sidecar.until_serving()
    sidecar.process.send_signal(signal.SIGTERM)
    assert sidecar.process.wait(10) == 0
    stdout = sidecar.process.stdout.read().decode() if sidecar.process.stdout else ""
    assert [json.loads(line)["event"] for line in stdout.splitlines()] == ["start"]
