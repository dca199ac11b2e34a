"""A Prometheus on this machine that scrapes the operator in the cluster: Debian's binary
(hack/prometheus.sh unpacks it), each operator pod scraped through the API server's pod
proxy with the kubeconfig's credentials. Used by the observability e2e test and `make demo`.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes import config as kube_config

from harness import REPO
from harness.install import OPERATOR_NAMESPACE, Operator
from harness.kube import Kube, wait_until
from harness.tools import find_tool, harness_prometheus_dir

PORT = 19090


def prometheus_binary() -> str:
    """$LAMEDUCK_PROMETHEUS, prometheus on the PATH, or the one hack/prometheus.sh unpacks (run
    here when it is missing)."""
    given = find_tool("prometheus", "LAMEDUCK_PROMETHEUS", harness_prometheus_dir() / "prometheus")
    if given:
        return given
    done = subprocess.run(
        ["bash", str(REPO / "hack" / "prometheus.sh")], check=True, capture_output=True, text=True, timeout=600
    )
    return str(Path(done.stdout.strip()) / "prometheus")


def scrape_config(kubeconfig: str, targets: Path, rules: Path | None, scrape_seconds: float) -> dict[str, Any]:
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
        "global": {"scrape_interval": f"{scrape_seconds:g}s", "evaluation_interval": f"{scrape_seconds:g}s"},
        "rule_files": [str(rules)] if rules else [],
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


def operator_targets(operator: Operator, api_server: str) -> list[dict[str, Any]]:
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

    def _get(self, path: str, **params: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}?" + urllib.parse.urlencode(params), timeout=10) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._get("/api/v1/query", query=expr)
        return result

    def values(self, expr: str) -> list[float]:
        return [float(sample["value"][1]) for sample in self.query(expr)]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._get(
            "/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}"
        )
        return result

    def targets_up(self) -> int:
        try:
            return sum(1 for value in self.values('up{job="lameduck"}') if value == 1)
        except OSError:
            return 0


@contextmanager
def running_prometheus(
    kube: Kube, operator: Operator, workdir: Path, *, scrape_seconds: float, rules: Path | None = None
) -> Iterator[Prometheus]:
    """Prometheus on 127.0.0.1, scraping every serving operator pod, until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    config, targets = workdir / "prometheus.yml", workdir / "targets.json"
    server = kube.run("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout.strip()
    targets.write_text(json.dumps(operator_targets(operator, server)))
    config.write_text(yaml.safe_dump(scrape_config(kube.kubeconfig, targets, rules, scrape_seconds)))
    with (workdir / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{PORT}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        running = Prometheus(f"http://127.0.0.1:{PORT}")
        try:
            wait_until(
                lambda: running.targets_up() >= len(operator.serving()) > 0,
                60,
                f"Prometheus scrapes every operator replica (log: {workdir / 'prometheus.log'})",
                1,
            )
            yield running
        finally:
            process.terminate()
            process.wait(timeout=30)
