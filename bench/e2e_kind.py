"""The e2e suite on a kind cluster built on this machine: `make e2e-kind`
(bench/results/e2e-kind.json).

    python -m bench.e2e_kind                 # the whole suite
    python -m bench.e2e_kind -- -k sidecar   # pytest arguments after --
    KIND_K8S_VERSION=1.37.2 python -m bench.e2e_kind --out bench/results/e2e-kind-1.37.2.json

hack/kind.sh does each step: our own dockerd (started unless one answers on its socket), kind and
the node image (built once, cached by version), the test images (the harness's buildah builds,
as archives only), the cluster from tests/e2e/kind.yaml with the images loaded and the pod and
service subnets routed from the host. The same suite as on the local harness then runs with
KUBECONFIG pointing at kind (and the API server's audit log, which the node writes on the host).
The cluster is deleted at the end, pass or fail, and the dockerd stopped if this run started it.
The result file records each step's duration, the versions the cluster reported, the counts and
the failed tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.e2e_matrix import SuiteRun, junit_counts, versions_file
from bench.provenance import REPO, write_result
from harness.kube import Kube

RESULT = REPO / "bench" / "results" / "e2e-kind.json"
KIND = ["bash", str(REPO / "hack" / "kind.sh")]


@dataclass
class KindRun:
    """One `make e2e-kind`: what was built and run, how long each step took, what the suite said."""

    kind_version: str
    suite: SuiteRun
    started_dockerd: bool = False
    docker_server_version: str = ""
    node_os: str = ""
    node_container_runtime: str = ""
    step_seconds: dict[str, float] = field(default_factory=dict)
    # where the build step found or put its caches (a first build: empty ones)
    caches: dict[str, str] = field(default_factory=dict)


def step(run: KindRun, name: str, *args: str) -> str:
    """Run `hack/kind.sh <args>`, timing it; its stdout, or an error naming the step."""
    started = time.monotonic()
    done = subprocess.run([*KIND, *args], check=False, stdout=subprocess.PIPE, text=True)
    run.step_seconds[name] = round(time.monotonic() - started, 1)
    if done.returncode != 0:
        raise RuntimeError(f"hack/kind.sh {' '.join(args)} exited {done.returncode}")
    return done.stdout.strip()


def parse_env(out: str, path: str) -> dict[str, str]:
    """`export A=1 B=2 PATH=/x:$PATH` (no spaces in values) as a dict, `$PATH` given as `path`."""
    env: dict[str, str] = {}
    for word in out.split():
        if word != "export":
            name, _, value = word.partition("=")
            env[name] = value.replace("$PATH", path)
    return env


def environment() -> dict[str, str]:
    """`hack/kind.sh env`: KUBECONFIG, the audit log, DOCKER_HOST and a PATH with docker's CLI."""
    out = subprocess.run([*KIND, "env"], check=True, capture_output=True, text=True).stdout
    return parse_env(out, os.environ.get("PATH", ""))


def describe_cluster(run: KindRun, kubeconfig: str) -> None:
    kube = Kube(kubeconfig)
    reported = kube.run("version", "-o", "json", check=False)
    if reported.returncode == 0:
        run.suite.server_version = json.loads(reported.stdout).get("serverVersion", {}).get("gitVersion", "")
    nodes = kube.run("get", "nodes", "-o", "json", check=False)
    if nodes.returncode == 0:
        info = json.loads(nodes.stdout)["items"][0]["status"]["nodeInfo"]
        run.node_os, run.node_container_runtime = info["osImage"], info["containerRuntimeVersion"]


def run_suite(run: KindRun, env: dict[str, str], pytest_args: list[str]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "junit.xml"
        started = time.monotonic()
        pytest = [sys.executable, "-m", "pytest", "tests/e2e", "-m", "e2e", "-q", f"--junitxml={report}"]
        suite = subprocess.run(
            ["nice", "-n", "10", *pytest, *pytest_args],
            cwd=REPO,
            env=dict(os.environ, **env),
            check=False,
        )
        run.suite.suite_seconds = round(time.monotonic() - started, 1)
        run.step_seconds["suite"] = run.suite.suite_seconds
        run.suite.pytest_exit_code = suite.returncode
        if report.exists():
            junit_counts(report, run.suite)
        else:
            run.suite.problem = "pytest wrote no JUnit report"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest after --")
    args = parser.parse_args(argv)
    versions = versions_file()
    run = KindRun(
        kind_version=versions["KIND_VERSION"],
        suite=SuiteRun(requested_version=os.environ.get("KIND_K8S_VERSION") or versions["KIND_K8S_VERSION"]),
    )
    run.caches = {
        name: os.environ.get(name, "(default)")
        for name in ("LAMEDUCK_CACHE", "LAMEDUCK_KIND_CACHE", "GOCACHE", "GOMODCACHE")
    }
    try:
        run.started_dockerd = step(run, "dockerd", "dockerd") == "started"
        env = environment()
        docker = subprocess.run(
            ["docker", "version", "-f", "{{.Server.Version}}"],
            env=dict(os.environ, **env),
            capture_output=True,
            text=True,
            check=False,
        )
        run.docker_server_version = docker.stdout.strip()
        step(run, "build", "build")
        step(run, "test_images", "test-images")
        step(run, "up", "up")
        run.suite.cluster_up_seconds = run.step_seconds["up"]
        describe_cluster(run, env["KUBECONFIG"])
        run_suite(run, env, args.pytest_args)
    except RuntimeError as failed:
        run.suite.problem = str(failed)
    finally:
        step(run, "down", "down")
        if run.started_dockerd:
            step(run, "dockerd_stop", "dockerd-stop")
    write_result(args.out, {"benchmark": "e2e-kind", "run": asdict(run)})
    s = run.suite
    print(
        f"e2e on kind {run.kind_version}, Kubernetes {s.server_version or s.requested_version}: "
        f"{s.passed} passed, {s.failed} failed, {s.errors} errors, {s.skipped} skipped; "
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in run.step_seconds.items())
        + (f"; {s.problem}" if s.problem else "")
    )
    print(f"wrote {args.out}")
    return 0 if s.pytest_exit_code == 0 and not s.problem else 1


if __name__ == "__main__":
    raise SystemExit(main())
