"""The sidecar's idle footprint, and how soon a hold starts asking the API.

Runs the sidecar as its image does (`lameduck-sidecar`, that is `lameduck_sidecar.app.main`), a
process of its own, beside a fake API server (HTTPS, in this process) that answers the sidecar's
Pod with a deletionTimestamp and notes when each request arrives. Each run:

  start       VmRSS (and RssAnon, RssFile, VmHWM) of the sidecar once /healthz answers
  probes      after --probes readiness probes (/healthz and /readyz, a connection each, as kubelet)
  scrapes     after --scrapes /metrics scrapes (one keep-alive connection, as Prometheus)
  idle API    the API requests the sidecar made so far (should be none)
  hold        GET /hold/app, the preStop call: the time from the call to the first API request
              (the Pod read), to the list of EndpointSlices and to their watch; the watch shows
              the pod not ready at once and the hold ends after its 0.1 s propagation delay
  after hold  VmRSS once the hold answered; then SIGTERM, and the report is posted

Variants (--variant LABEL=PYTHON[,CHECKOUT]) run CHECKOUT/sidecar (PYTHONPATH) on PYTHON,
interleaved: every round runs each variant once, in a shuffled order. A checkout of the base
commit and a venv with only what that commit's image installs is "before".

Once per variant, what each import costs (in a fresh interpreter: VmRSS and -X importtime),
and the idle sidecar's live Python allocations by package (tracemalloc, in a separate run:
tracing slows it and costs memory of its own).

    python -m bench.sidecar_idle [--variant before=/tmp/venv-before/bin/python,/tmp/checkout-before] \
        [--variant after=/tmp/venv-after/bin/python,.] [--runs 5] [--probes 50] [--scrapes 50]

Runs in a network namespace of its own (unshare --net; root or user namespaces, and ip(8)), as
a pod has, so that the hold counts only the run's own connections as new work; --host-netns runs
in this machine's, where any other connection lengthens the hold by a quiet period. Prints the
tables and writes bench/results/sidecar_idle.json. No cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.provenance import write_result
from harness.certificates import self_signed

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "sidecar_idle.json"
NAMESPACE, POD = "shop", "web-1"
STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
# What each import costs in a fresh interpreter, alone or after another (a module a variant lacks
# is "absent").
MARK = "-- measured from here --"
IMPORTS: tuple[tuple[str, str | None], ...] = (
    ("asyncio", None),
    ("ssl", None),
    ("h11", None),
    ("prometheus_client", None),
    ("aiohttp", None),
    ("aiohttp.web", None),
    ("lameduck_sidecar.app", None),
    ("lameduck_sidecar.holder", None),
    # what the first call to the hold loads, where the sidecar defers it (absent before it did)
    ("lameduck_sidecar.serving", "lameduck_sidecar.app"),
)
# The hold's settings: short, so a run ends within a second of the call.
HOLD_ENV = {
    "LAMEDUCK_PROPAGATION_DELAY": "100ms",
    "LAMEDUCK_QUIET_PERIOD": "100ms",
    "LAMEDUCK_MAX_HOLD": "5s",
    "LAMEDUCK_API_TIMEOUT": "3s",
}


@dataclass(frozen=True)
class Variant:
    label: str
    python: str
    checkout: Path

    @classmethod
    def parse(cls, text: str) -> Variant:
        """LABEL=PYTHON[,CHECKOUT]; the checkout defaults to this one."""
        label, _, rest = text.partition("=")
        python, _, checkout = rest.partition(",")
        if not label or not python:
            raise argparse.ArgumentTypeError(f"LABEL=PYTHON[,CHECKOUT], got {text!r}")
        return cls(label, python, Path(checkout or REPO).resolve())


# ---- pure parts -------------------------------------------------------------------------


def status_kib(text: str) -> dict[str, int]:
    """STATUS_FIELDS of /proc/<pid>/status, KiB."""
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in STATUS_FIELDS:
            found[name] = int(value.split()[0])
    return found


def import_times(stderr: str) -> dict[str, float]:
    """`-X importtime`'s cumulative milliseconds of each top-level import (not nested in another)."""
    found: dict[str, float] = {}
    for line in stderr.splitlines():
        match = re.fullmatch(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)", line)
        if match and not match.group(3):
            found[match.group(4)] = round(int(match.group(2)) / 1000, 1)
    return found


def package_of(filename: str) -> str:
    """Where an allocation's code lives: a lameduck_sidecar module, a distribution's top-level
    package (site-packages), a standard library module, or the import machinery."""
    if filename.startswith("<"):
        return filename
    parts = Path(filename).parts
    if "lameduck_sidecar" in parts:
        return "lameduck_sidecar." + Path(filename).stem
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return Path(parts[parts.index(anchor) + 1]).stem
    for i, part in enumerate(parts):
        if re.fullmatch(r"python3\.\d+", part) and i + 1 < len(parts):
            return Path(parts[i + 1]).stem
    return filename


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1), "max": round(max(values), 1)}


# ---- the fake API server ------------------------------------------------------------------


@dataclass
class FakeApi:
    """Answers the sidecar's requests as a cluster would for a pod being deleted, and notes when
    each arrives (time.monotonic, the clock the calls are timed by)."""

    arrivals: list[tuple[str, float]] = field(default_factory=list)
    events: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        base = f"/api/v1/namespaces/{NAMESPACE}"
        app.router.add_get(f"{base}/pods/{POD}", self.pod)
        app.router.add_get(f"{base}/configmaps/lameduck-learned", self.learned)
        app.router.add_get(f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices", self.slices)
        app.router.add_post(f"{base}/events", self.event)
        return app

    def note(self, what: str) -> None:
        self.arrivals.append((what, time.monotonic()))

    async def pod(self, _: web.Request) -> web.Response:
        self.note("pod")
        metadata = {
            "name": POD,
            "namespace": NAMESPACE,
            "labels": {"app": "web", "pod-template-hash": "7d9f8c"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d9f8c", "controller": True}],
            "deletionTimestamp": "2026-01-01T00:00:00Z",
            "deletionGracePeriodSeconds": 30,
        }
        return web.json_response({"metadata": metadata})

    async def learned(self, _: web.Request) -> web.Response:
        self.note("learned")
        return web.json_response({"kind": "Status", "code": 404}, status=404)

    async def slices(self, request: web.Request) -> web.StreamResponse:
        watching = "watch" in request.query
        self.note("watch" if watching else "list")
        if not watching:
            return web.json_response({"metadata": {"resourceVersion": "7"}, "items": [endpoint_slice(ready=True)]})
        response = web.StreamResponse()
        await response.prepare(request)
        event = {"type": "MODIFIED", "object": endpoint_slice(ready=False)}
        await response.write(json.dumps(event).encode() + b"\n")
        deadline = time.monotonic() + 30
        while request.transport is not None and not request.transport.is_closing() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # until the sidecar closes the watch with stage 1
        return response

    async def event(self, request: web.Request) -> web.Response:
        self.note("event")
        self.events += 1
        return web.json_response(await request.json(), status=201)


def endpoint_slice(*, ready: bool) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-abcde", "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": "web"}},
        "endpoints": [
            {
                "addresses": ["10.1.0.7"],
                "conditions": {"ready": ready, "serving": ready, "terminating": not ready},
                "targetRef": {"kind": "Pod", "name": POD, "uid": "uid-1"},
            }
        ],
    }


# ---- one run --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sidecar_env(variant: Variant, port: int, api_url: str, files: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(variant.checkout / "sidecar"),
        "LAMEDUCK_POD_NAME": POD,
        "LAMEDUCK_POD_NAMESPACE": NAMESPACE,
        "LAMEDUCK_POD_UID": "uid-1",
        "LAMEDUCK_POD_IP": "10.1.0.7",
        "LAMEDUCK_PORT": str(port),
        "LAMEDUCK_API_URL": api_url,
        "LAMEDUCK_API_TOKEN_FILE": str(files / "token"),
        "LAMEDUCK_API_CA_FILE": str(files / "tls.crt"),
        **HOLD_ENV,
    }


# The image's entry point, `lameduck-sidecar`; with tracemalloc, a SIGUSR1 writes the live
# allocations by the file that made them to $BENCH_TRACE_OUT.<n>.
ENTRY = "import sys\nfrom lameduck_sidecar.app import main\nsys.exit(main())\n"
TRACED_ENTRY = textwrap.dedent(
    """
    import tracemalloc
    tracemalloc.start(25)
    import json, os, signal, sys

    def _dump(*_):
        snapshot = tracemalloc.take_snapshot()
        by_file = {}
        for trace in snapshot.traces:  # a traceback runs from the oldest frame to the newest
            frames = reversed(trace.traceback)
            where = next((f.filename for f in frames if not f.filename.startswith("<frozen")), None)
            where = where or trace.traceback[-1].filename
            by_file[where] = by_file.get(where, 0) + trace.size
        _dump.n += 1
        path = f"{os.environ['BENCH_TRACE_OUT']}.{_dump.n}"
        with open(path + ".tmp", "w") as out:
            json.dump({"traced": tracemalloc.get_traced_memory()[0], "by_file": by_file}, out)
        os.rename(path + ".tmp", path)

    _dump.n = 0
    signal.signal(signal.SIGUSR1, _dump)
    from lameduck_sidecar.app import main
    sys.exit(main())
    """
)


def read_status(pid: int) -> dict[str, int]:
    return status_kib(Path(f"/proc/{pid}/status").read_text())


async def until_ready(session: aiohttp.ClientSession, base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the sidecar exited with {process.returncode}")
        try:
            async with session.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.005)
    raise RuntimeError("the sidecar never answered /healthz")


async def probe(base: str, path: str) -> None:
    """One readiness probe as kubelet sends it: a connection of its own, closed after."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector, headers={"User-Agent": "kube-probe/1.34"}) as session,
        session.get(f"{base}{path}") as response,
    ):
        await response.read()
        assert response.status == 200, f"{path}: HTTP {response.status}"


async def run_once(
    variant: Variant, api: FakeApi, api_url: str, files: Path, args: argparse.Namespace
) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = sidecar_env(variant, port, api_url, files)
    began = time.monotonic()
    process = subprocess.Popen(
        [variant.python, "-c", ENTRY], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/"
    )
    result: dict[str, Any] = {"variant": variant.label}
    try:
        async with aiohttp.ClientSession() as session:
            await until_ready(session, base, process)
            result["ready_seconds"] = round(time.monotonic() - began, 3)
            result["start"] = read_status(process.pid)
            for i in range(args.probes):
                await probe(base, "/healthz" if i % 2 == 0 else "/readyz")
            result["probes"] = read_status(process.pid)
            for _ in range(args.scrapes):
                async with session.get(f"{base}/metrics") as response:
                    await response.read()
                    assert response.status == 200
            result["scrapes"] = read_status(process.pid)
            result["idle_api_requests"] = len(api.arrivals)
            called = time.monotonic()
            async with session.get(f"{base}/hold/app", timeout=aiohttp.ClientTimeout(total=10)) as response:
                answer = await response.json()
            answered = time.monotonic()
            result["after_hold"] = read_status(process.pid)
        result["hold"] = {
            "outcome": answer["outcome"],
            "answered_ms": round((answered - called) * 1000, 1),
            **{f"to_{what}_ms": round((at - called) * 1000, 1) for what, at in first_arrivals(api.arrivals).items()},
        }
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 10)
        result["exit_code"] = process.returncode
        result["report_posted"] = api.events == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stderr = process.stderr.read().decode() if process.stderr else ""
        if process.returncode not in (0, None) or "Traceback" in stderr:
            result["stderr"] = stderr[-2000:]
        loaded = logged(process.stdout.read().decode() if process.stdout else "", "holds_served", "loaded_seconds")
        if loaded is not None:  # the sidecar's own time from the hold call read to its machinery serving
            result["loaded_ms"] = round(loaded * 1000, 1)
    return result


def logged(stdout: str, event: str, key: str) -> Any:
    """A field of the sidecar's first JSON log line of that event; None without one."""
    for line in stdout.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            return record.get(key)
    return None


def first_arrivals(arrivals: list[tuple[str, float]]) -> dict[str, float]:
    found: dict[str, float] = {}
    for what, at in arrivals:
        found.setdefault(what, at)
    return found


# ---- once per variant: imports and allocations --------------------------------------------


def import_costs(variant: Variant) -> dict[str, Any]:
    """Each of IMPORTS in a fresh interpreter, after what it names (if any): VmRSS it adds, and its
    own cumulative time (-X importtime); median of three."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(variant.checkout / "sidecar")}
    rss = "int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"

    def once(module: str, after: str | None) -> tuple[int, float] | None:
        code = (
            f"import sys\n{f'import {after}' if after else ''}\nbase = {rss}\nsys.stderr.write('{MARK}\\n')\n"
            f"import {module}\nprint(base, {rss})\n"
        )
        done = subprocess.run(
            [variant.python, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            return None
        base, then = (int(n) for n in done.stdout.split())
        # every top-level import the statement made (a package's parent and itself, say)
        return then - base, round(sum(import_times(done.stderr.partition(MARK)[2]).values()), 1)

    found: dict[str, Any] = {}
    for module, after in IMPORTS:
        measured = [r for r in (once(module, after) for _ in range(3)) if r is not None]
        label = f"{module} after {after}" if after else module
        if not measured:
            found[label] = "absent"
            continue
        found[label] = {
            "rss_kib": int(statistics.median(r[0] for r in measured)),
            "import_ms": round(statistics.median(r[1] for r in measured), 1),
        }
    return found


async def traced(variant: Variant, api: FakeApi, api_url: str, files: Path) -> dict[str, Any]:
    """The idle sidecar's live Python allocations by package (tracemalloc), after start and a
    few probes and scrapes, then after a hold."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    out = files / f"trace-{variant.label}"
    env = sidecar_env(variant, port, api_url, files) | {"BENCH_TRACE_OUT": str(out)}
    process = subprocess.Popen([variant.python, "-c", TRACED_ENTRY], env=env, stdout=subprocess.DEVNULL, cwd="/")
    snapshots: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession() as session:
            await until_ready(session, base, process)
            for path in ("/healthz", "/readyz", "/metrics") * 3:
                async with session.get(f"{base}{path}") as response:
                    await response.read()
            for n, moment in enumerate(("idle", "after_hold"), start=1):
                if moment == "after_hold":
                    async with session.get(f"{base}/hold/app", timeout=aiohttp.ClientTimeout(total=10)) as response:
                        await response.read()
                process.send_signal(signal.SIGUSR1)
                dump = Path(f"{out}.{n}")
                deadline = time.monotonic() + 120
                while not dump.exists() and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                data = json.loads(dump.read_text())
                by_package: dict[str, int] = {}
                for filename, size in data["by_file"].items():
                    by_package[package_of(filename)] = by_package.get(package_of(filename), 0) + size
                top = sorted(by_package.items(), key=lambda kv: -kv[1])
                snapshots[moment] = {
                    "traced_kib": round(data["traced"] / 1024),
                    "by_package_kib": {name: round(size / 1024) for name, size in top if size >= 32 * 1024},
                }
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return snapshots


def describe(variant: Variant) -> dict[str, Any]:
    """What the variant runs: its interpreter, the commit of its checkout, the distributions its
    venv holds."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=variant.checkout, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    listing = subprocess.run(
        [
            variant.python,
            "-c",
            "import importlib.metadata as m, platform, lameduck_sidecar; "
            "print(platform.python_version()); print(lameduck_sidecar.__file__); "
            "print(*sorted({f'{d.name}=={d.version}' for d in m.distributions()}))",
        ],
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(variant.checkout / "sidecar")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return {
        "python": variant.python,
        "python_version": listing[0],
        "checkout": str(variant.checkout),
        "commit": git("rev-parse", "HEAD"),
        "sidecar_changed_files": git("status", "--porcelain", "sidecar"),
        "sidecar_imported_from": listing[1],  # the checkout's, ahead of any installed copy
        "distributions": listing[2].split() if len(listing) > 2 else [],
    }


# ---- the whole benchmark ----------------------------------------------------------------------


def table(runs: list[dict[str, Any]], labels: list[str]) -> str:
    columns = (
        ("start MiB", lambda r: r["start"]["VmRSS"] / 1024),
        ("probes MiB", lambda r: r["probes"]["VmRSS"] / 1024),
        ("scrapes MiB", lambda r: r["scrapes"]["VmRSS"] / 1024),
        ("anon MiB", lambda r: r["scrapes"]["RssAnon"] / 1024),
        ("file MiB", lambda r: r["scrapes"]["RssFile"] / 1024),
        ("idle API", lambda r: r["idle_api_requests"]),
        ("ready s", lambda r: r["ready_seconds"]),
        ("to pod ms", lambda r: r["hold"]["to_pod_ms"]),
        ("to list ms", lambda r: r["hold"]["to_list_ms"]),
        ("to watch ms", lambda r: r["hold"]["to_watch_ms"]),
        ("answered ms", lambda r: r["hold"]["answered_ms"]),
        ("hold MiB", lambda r: r["after_hold"]["VmRSS"] / 1024),
    )
    lines = [f"{'variant':<10}" + "".join(f" {name:>17}" for name, _ in columns)]
    for label in labels:
        mine = [r for r in runs if r["variant"] == label]
        cells = []
        for _, value in columns:
            s = summary([float(value(r)) for r in mine])
            cells.append(f" {s['median']:>7.1f} ({s['min']:g}-{s['max']:g})".rjust(18))
        lines.append(f"{label:<10}" + "".join(cells))
    return "\n".join(lines) + "\n(median (min-max) of the runs)"


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    variants: list[Variant] = args.variant or [Variant("current", sys.executable, REPO)]
    for variant in variants:  # compiled once, as pip compiles an image's packages
        subprocess.run([variant.python, "-m", "compileall", "-q", str(variant.checkout / "sidecar")], check=True)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="sidecar-idle-") as folder:
        files = Path(folder)
        cert, key = self_signed(files, "127.0.0.1", "IP:127.0.0.1")
        (files / "token").write_text("t0ken\n")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        api = FakeApi()
        runner = web.AppRunner(api.app(), access_log=None)
        await runner.setup()
        api_port = free_port()
        site = web.TCPSite(runner, "127.0.0.1", api_port, ssl_context=context)
        await site.start()
        api_url = f"https://127.0.0.1:{api_port}"
        runs: list[dict[str, Any]] = []
        orders = []
        try:
            for round_ in range(args.runs):
                order = rng.sample(variants, len(variants))
                orders.append([v.label for v in order])
                for variant in order:
                    api.arrivals.clear()
                    api.events = 0
                    result = await run_once(variant, api, api_url, files, args) | {"round": round_}
                    runs.append(result)
                    print(f"round {round_} {variant.label}: {json.dumps(result)}", flush=True)
            breakdown = {}
            for variant in variants:
                api.arrivals.clear()
                api.events = 0
                breakdown[variant.label] = {
                    "imports": import_costs(variant),
                    "tracemalloc": await traced(variant, api, api_url, files),
                }
        finally:
            await runner.cleanup()
    labels = [v.label for v in variants]
    return {
        "command": " ".join(["python -m bench.sidecar_idle", *args.argv]),
        "settings": {"runs": args.runs, "probes": args.probes, "scrapes": args.scrapes, "seed": args.seed}
        | {"hold_env": HOLD_ENV, "network_namespace": "host" if args.host_netns else "private"},
        "variants": {v.label: describe(v) for v in variants},
        "orders": orders,
        "summary": {
            label: {
                "idle_rss_mib": summary([r["scrapes"]["VmRSS"] / 1024 for r in runs if r["variant"] == label]),
                "start_rss_mib": summary([r["start"]["VmRSS"] / 1024 for r in runs if r["variant"] == label]),
                "idle_api_requests": max(r["idle_api_requests"] for r in runs if r["variant"] == label),
                "to_pod_ms": summary([r["hold"]["to_pod_ms"] for r in runs if r["variant"] == label]),
                "to_watch_ms": summary([r["hold"]["to_watch_ms"] for r in runs if r["variant"] == label]),
                "after_hold_rss_mib": summary([r["after_hold"]["VmRSS"] / 1024 for r in runs if r["variant"] == label]),
            }
            for label in labels
        },
        "table": table(runs, labels),
        "runs": runs,
        "breakdown": breakdown,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--variant", action="append", type=Variant.parse, help="LABEL=PYTHON[,CHECKOUT]")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--host-netns",
        action="store_true",
        help="run in this machine's network namespace, whose other connections count as new work and lengthen holds",
    )
    parser.add_argument("--role", choices=("outer", "inner"), default="outer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.argv = [a for a in sys.argv[1:] if a not in ("--role", "inner")]
    if args.role == "outer" and not args.host_netns:
        # A network namespace of its own, as a pod has: the hold sees only the run's connections.
        unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--net", "--map-root-user"]
        inner = [sys.executable, "-m", "bench.sidecar_idle", *sys.argv[1:], "--role", "inner"]
        return subprocess.run([*unshare, "--", *inner], cwd=REPO, check=False).returncode
    if args.role == "inner":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    result = asyncio.run(bench(args))
    print(result["table"])
    for label, found in result["breakdown"].items():
        print(f"\n{label}: imports (RSS KiB each adds, its import ms)")
        for module, cost in found["imports"].items():
            print(f"  {module:<26} {cost}")
        for moment, snapshot in found["tracemalloc"].items():
            print(f"{label}: tracemalloc {moment}: {snapshot['traced_kib']} KiB traced; by package (KiB):")
            print("  " + ", ".join(f"{name} {size}" for name, size in snapshot["by_package_kib"].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
