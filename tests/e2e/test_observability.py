"""What users watch in Grafana, against a real Prometheus: Debian's prometheus binary on this
machine scrapes every operator replica through the API server's pod proxy (found with its
Kubernetes service discovery, authenticated as the kubeconfig is), and evaluates the
chart's alert rules. After a policy and two rollouts under load, every query of the
dashboard the chart ships returns data; an app that ignores SIGTERM is SIGKILLed at the end
of its grace period, and the SIGKILL alert's expression fires. The sidecars' hold reports
(Events on the pods) and the policy status's lateTraffic and overBudget are checked on the
way.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes import config as kube_config

from lameduck_operator.dashboard import expressions
from tests.e2e.support import (
    OPERATOR_NAMESPACE,
    REPO,
    Kube,
    Operator,
    start_guarded_demo,
    wait_until,
)
from tests.e2e.test_stop_modes import load_during

ALERTS = REPO / "charts" / "lameduck" / "files" / "alerts.yaml"
DASHBOARD = REPO / "charts" / "lameduck" / "dashboards" / "lameduck.json"
SCRAPE_SECONDS = 5
# Queries that only show failures: empty when nothing failed, which is what a healthy run is.
FAILURES_ONLY = ('result="error"', "lameduck_api_errors_total")
# The dashboard's variables as Grafana would fill them with "All" selected.
VARIABLES = {'"$namespace"': '".*"', '"$policy"': '".*"', "$__rate_interval": "5m"}


def prometheus_binary() -> str:
    given = os.environ.get("LAMEDUCK_PROMETHEUS") or shutil.which("prometheus")
    if given:
        return given
    done = subprocess.run(
        ["bash", str(REPO / "hack" / "prometheus.sh")], check=True, capture_output=True, text=True, timeout=600
    )
    return str(Path(done.stdout.strip()) / "prometheus")


def scrape_config(kubeconfig: str, targets: Path, rules: Path) -> dict[str, Any]:
    """Prometheus scrapes each operator pod through the API server's pod proxy, with the
    kubeconfig's credentials; the pods are listed in `targets` (file discovery: Debian's
    Prometheus is built without Kubernetes discovery)."""
    configuration = client.Configuration()
    kube_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    api = urllib.parse.urlparse(configuration.host)
    tls: dict[str, Any] = {"insecure_skip_verify": not configuration.verify_ssl}
    if configuration.ssl_ca_cert:
        tls["ca_file"] = configuration.ssl_ca_cert
    if configuration.cert_file:
        tls |= {"cert_file": configuration.cert_file, "key_file": configuration.key_file}
    auth: dict[str, Any] = {}
    token = (configuration.api_key or {}).get("authorization", "")
    if token:
        auth = {"authorization": {"type": "Bearer", "credentials": token.removeprefix("Bearer ")}}
    return {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": "lameduck",
                "scheme": api.scheme,
                "tls_config": tls,
                **auth,
                "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "5s"}],
            }
        ],
    }


def operator_targets(kube: Kube, operator: Operator, api_server: str) -> list[dict[str, Any]]:
    """One target per serving operator pod: the API server, with the pod proxy's path."""
    address = urllib.parse.urlparse(api_server).netloc
    return [
        {
            "targets": [address],
            "labels": {
                "__metrics_path__": f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods/{pod}:8080/proxy/metrics",
                "pod": pod,
            },
        }
        for pod in sorted(operator.serving())
    ]


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(address, timeout=10) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def values(self, expr: str) -> list[float]:
        return [float(sample["value"][1]) for sample in self.query(expr)]


@pytest.fixture
def prometheus(kube: Kube, operator: Operator, tmp_path: Path) -> Iterator[Prometheus]:
    config, targets = tmp_path / "prometheus.yml", tmp_path / "targets.json"
    server = kube.run("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout.strip()
    targets.write_text(json.dumps(operator_targets(kube, operator, server)))
    config.write_text(yaml.safe_dump(scrape_config(kube.kubeconfig, targets, ALERTS)))
    port = 19090
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    running = Prometheus(f"http://127.0.0.1:{port}")
    try:
        wait_until(
            lambda: _up(running) >= len(operator.serving()) > 0,
            60,
            "Prometheus scrapes every operator replica",
            1,
        )
        yield running
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _up(prometheus: Prometheus) -> int:
    try:
        return sum(1 for value in prometheus.values('up{job="lameduck"}') if value == 1)
    except OSError:
        return 0


def filled(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def hold_reports(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    return [
        json.loads(event["message"])
        for event in kube.items("events", namespace, "lameduck.dev/report=hold")
        if event["involvedObject"]["kind"] == "Pod"
    ]


def test_every_dashboard_query_returns_data_and_a_sigkilled_pod_fires_the_alert(
    kube: Kube, operator: Operator, prometheus: Prometheus, namespace: str
) -> None:
    # A policy over the demo app (with the readiness gate, whose writes a panel shows), two
    # rollouts under load: holds, terminations, late traffic.
    start_guarded_demo(kube, namespace, readinessGate={"enabled": True})
    for _ in range(2):
        old = {p["metadata"]["name"] for p in kube.items("pods", namespace, "app=demo")}

        def restart(old: set[str] = old) -> None:
            kube.run("rollout", "restart", "deployment/demo", "-n", namespace)
            kube.run("rollout", "status", "deployment/demo", "-n", namespace, "--timeout=120s")
            wait_until(
                lambda: not old & {p["metadata"]["name"] for p in kube.items("pods", namespace, "app=demo")},
                120,
                "the old pods are gone",
                0.5,
            )

        load_during(kube, namespace, restart)

    def six_reports() -> list[dict[str, Any]] | None:
        found = hold_reports(kube, namespace)
        return found if len(found) >= 6 else None

    reports = wait_until(six_reports, 30, "6 hold reports")
    assert {r["outcome"] for r in reports} == {"quiet"}, reports
    assert any(r["lateTrafficSeconds"] > 0 for r in reports), "the load reached pods after their deletion"

    # Every termination is counted once, whatever the scrape interval: the counters only grow.
    # The 6 pods rolled out, and the 3 the policy replaced when it injected the sidecar.
    selector = f'namespace="{namespace}"'
    counted = operator.metric("lameduck_terminations_total", selector)
    assert counted == 9, operator.metrics_text()
    terminated = f"sum(lameduck_terminations_total{{{selector}}})"
    wait_until(lambda: prometheus.values(terminated) == [counted], 60, f"{counted} terminations in Prometheus", 1)
    assert prometheus.values(f'sum(lameduck_holds_total{{{selector},outcome="quiet"}})') == [6.0]
    status = kube.get("gracefulpolicy", "guard", namespace)["status"]
    (late,) = status["lateTraffic"]
    assert (late["name"], late["holds"]) == ("demo", 6)
    assert late["maxSeconds"] > 0
    assert status["overBudget"] == []

    # Every query of the dashboard returns data (with "All" selected). rate() needs two
    # scrapes after an increase: poll until each has data or the deadline passes.
    queries = sorted(set(expressions(json.loads(DASHBOARD.read_text()))))
    assert len(queries) >= 15

    def missing() -> list[str]:
        empty = []
        for expr in queries:
            values = prometheus.values(filled(expr))
            if not any(not math.isnan(v) for v in values) and not any(f in expr for f in FAILURES_ONLY):
                empty.append(expr)
        return empty

    try:
        wait_until(lambda: not missing(), 90, "every dashboard query returns data", 2)
    except AssertionError as err:
        raise AssertionError(f"{err}: {missing()}") from err

    # An app that ignores SIGTERM is SIGKILLed at the end of its grace period: 12 s, set on the
    # template (lameduck never lowers it), enough for maxHold 3 s + drainTimeout 2 s + 5 s.
    stubborn = f"{namespace}-stubborn"
    kube.run("create", "namespace", stubborn)
    try:
        start_guarded_demo(
            kube,
            stubborn,
            replicas=1,
            app_env={"IGNORE_SIGTERM": "true"},
            grace_period=12,
            hold={"maxHold": "3s"},
            drainTimeout="2s",
        )
        kube.run("rollout", "restart", "deployment/demo", "-n", stubborn)
        kube.run("rollout", "status", "deployment/demo", "-n", stubborn, "--timeout=120s")
        killed_alert = next(
            rule["expr"]
            for group in yaml.safe_load(ALERTS.read_text())["groups"]
            for rule in group["rules"]
            if rule.get("alert") == "LameduckPodsKilled"
        )
        fired = wait_until(
            lambda: [s for s in prometheus.query(killed_alert) if s["metric"].get("namespace") == stubborn],
            90,
            "the SIGKILL alert's expression fires",
            1,
        )
        assert fired
        over = wait_until(
            lambda: kube.get("gracefulpolicy", "guard", stubborn).get("status", {}).get("overBudget"),
            30,
            "the policy lists the Deployment as over its budget",
        )
        assert over == [{"namespace": stubborn, "name": "demo", "terminations": 1, "killed": 1}]
        told = [e for e in kube.items("events", stubborn) if e["reason"] == "PodsKilled"]
        assert told
        assert told[0]["involvedObject"]["kind"] == "Deployment"
        assert told[0]["type"] == "Warning"
    finally:
        kube.run("delete", "namespace", stubborn, "--wait=false", check=False)
    print(json.dumps({"test": "observability", "queries": len(queries), "late_traffic": late, "alert": fired}))


def test_a_termination_reaches_the_operators_metrics_within_seconds_of_the_pods_exit(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    """The figure behind "every termination appears in the operator's metrics within 10 s of
    the pod's exit": from the app container's exit (its finishedAt, whole seconds) until the
    leader's terminations counter counted it, both read every 0.2 s or so. Printed, not
    asserted against a time: the test asserts that it is counted, and after the exit."""
    start_guarded_demo(kube, namespace, replicas=1)
    (pod,) = kube.items("pods", namespace, "app=demo")
    name, selector = pod["metadata"]["name"], f'namespace="{namespace}"'
    before = operator.metric("lameduck_terminations_total", selector)
    kube.run("delete", "pod", name, "-n", namespace, "--wait=false")
    exits: list[float] = []

    def counted() -> float | None:
        if not exits:
            exits.extend(_finished_at(kube, namespace, name))
        return time.time() if operator.metric("lameduck_terminations_total", selector) > before else None

    at = wait_until(counted, 90, "the termination is counted", 0.2)
    assert exits, "the app container's exit was seen before the termination was counted"
    assert at >= exits[0]
    print(json.dumps({"test": "termination_visible", "seconds_after_exit": round(at - exits[0], 2)}))


def _finished_at(kube: Kube, namespace: str, name: str) -> list[float]:
    """When the pod's app container ended, while the pod still exists; [] before that."""
    done = kube.run("get", "pod", name, "-n", namespace, "-o", "json", check=False)
    if done.returncode != 0:
        return []
    for status in json.loads(done.stdout)["status"].get("containerStatuses") or []:
        finished = ((status.get("state") or {}).get("terminated") or {}).get("finishedAt")
        if status["name"] != "lameduck" and finished:
            return [datetime.fromisoformat(finished.replace("Z", "+00:00")).timestamp()]
    return []
