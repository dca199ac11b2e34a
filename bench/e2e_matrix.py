"""The e2e suite on each Kubernetes version lameduck supports, on the local cluster, one after
the other: `make e2e-matrix` (bench/results/e2e-matrix.json).

    python -m bench.e2e_matrix                        # the oldest and the newest of hack/versions.env
    python -m bench.e2e_matrix --versions 1.37.2      # any versions hack/build-k8s.sh can build

For each version: the local cluster is taken down, brought up at that version (hack/cluster.sh
builds the binaries once per version), the same suite runs on it with KUBECONFIG set (as
`make e2e` does), and its JUnit report gives the counts and the failed tests. The cluster is
taken down at the end, pass or fail. The result file records the versions each run reported
(the API server's own), the counts, durations and the names of failed tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.provenance import REPO, write_result
from harness.kube import Kube

RESULT = REPO / "bench" / "results" / "e2e-matrix.json"
CLUSTER = ["bash", str(REPO / "hack" / "cluster.sh")]


@dataclass
class SuiteRun:
    """One run of the e2e suite on one version."""

    requested_version: str
    server_version: str = ""
    cluster_up_seconds: float = 0.0
    suite_seconds: float = 0.0
    tests: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    pytest_exit_code: int | None = None
    problem: str = ""


def versions_file() -> dict[str, str]:
    """The defaults hack/versions.env gives (`NAME="${NAME:-value}"` lines)."""
    found: dict[str, str] = {}
    for line in (REPO / "hack" / "versions.env").read_text().splitlines():
        if "=" in line and line[:1].isupper() and ":-" in line:
            name, _, rest = line.partition("=")
            found[name] = rest.split(":-", 1)[1].split("}", 1)[0]
    return found


def junit_counts(report: Path, run: SuiteRun) -> None:
    """Fill `run` from pytest's JUnit XML: totals from each testsuite, failed tests by id."""
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for suite in suites:
        run.tests += int(suite.get("tests", 0))
        run.failed += int(suite.get("failures", 0))
        run.errors += int(suite.get("errors", 0))
        run.skipped += int(suite.get("skipped", 0))
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                run.failures.append(f"{case.get('classname')}::{case.get('name')}")
    run.passed = run.tests - run.failed - run.errors - run.skipped


def run_version(version: str, pytest_args: list[str]) -> SuiteRun:
    run = SuiteRun(requested_version=version)
    env = dict(os.environ, K8S_VERSION=version)
    env.pop("KUBECONFIG", None)
    subprocess.run([*CLUSTER, "down"], check=False, env=env)
    started = time.monotonic()
    up = subprocess.run([*CLUSTER, "up"], check=False, env=env)
    run.cluster_up_seconds = round(time.monotonic() - started, 1)
    if up.returncode != 0:
        run.problem = f"hack/cluster.sh up exited {up.returncode} (its log: /var/lib/lameduck-cluster/logs)"
        return run
    kubeconfig = subprocess.run(
        [*CLUSTER, "kubeconfig"], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()
    env["KUBECONFIG"] = kubeconfig
    reported = Kube(kubeconfig).run("version", "-o", "json", check=False)
    if reported.returncode == 0:
        run.server_version = json.loads(reported.stdout).get("serverVersion", {}).get("gitVersion", "")
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "junit.xml"
        started = time.monotonic()
        suite = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/e2e", "-m", "e2e", "-q", f"--junitxml={report}", *pytest_args],
            cwd=REPO,
            env=env,
            check=False,
        )
        run.suite_seconds = round(time.monotonic() - started, 1)
        run.pytest_exit_code = suite.returncode
        if report.exists():
            junit_counts(report, run)
        else:
            run.problem = "pytest wrote no JUnit report"
    return run


def main(argv: list[str] | None = None) -> int:
    defaults = versions_file()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--versions",
        default=f"{defaults['K8S_OLDEST_VERSION']},{defaults['K8S_VERSION']}",
        help="comma-separated Kubernetes versions (default: K8S_OLDEST_VERSION and K8S_VERSION of hack/versions.env)",
    )
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest after --")
    args = parser.parse_args(argv)
    runs: list[SuiteRun] = []
    try:
        for version in [v.strip() for v in args.versions.split(",") if v.strip()]:
            runs.append(run_version(version, args.pytest_args))
            print(table(runs), flush=True)
    finally:
        subprocess.run([*CLUSTER, "down"], check=False)
    write_result(args.out, {"benchmark": "e2e-matrix", "runs": [asdict(r) for r in runs]})
    print(f"wrote {args.out}")
    return 0 if runs and all(r.pytest_exit_code == 0 and not r.problem for r in runs) else 1


def table(runs: list[SuiteRun]) -> str:
    head = "| version | API server | passed | failed | errors | skipped | cluster up | suite |"
    lines = [head, "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        lines.append(
            f"| {r.requested_version} | {r.server_version or '-'} | {r.passed} | {r.failed} | {r.errors} "
            f"| {r.skipped} | {r.cluster_up_seconds:.0f} s | {r.suite_seconds:.0f} s |"
            + (f" {r.problem}" if r.problem else "")
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
