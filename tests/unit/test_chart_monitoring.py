"""The chart's monitoring objects (values `metrics.*`): the Grafana dashboard's ConfigMap (on by
default), the PrometheusRule and the ServiceMonitor (off by default), with the release label
kube-prometheus-stack selects by."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.unit.test_chart import (  # each_helm: the fixture runs_helm names
    CHART,
    NAMESPACE,
    RELEASE,
    Doc,
    ci,
    each_helm,  # noqa: F401
    helm,
    kinds,
    only,
    render,
    values_file,
)

# Every test here renders or lints the chart, once with Helm 4 and once with Helm 3.
pytestmark = pytest.mark.usefixtures("each_helm")

DASHBOARD_JSON = CHART / "dashboards" / "lameduck.json"
ALERTS = CHART / "files" / "alerts.yaml"
MONITORING_KINDS = {"PrometheusRule", "ServiceMonitor"}
EVERYTHING = (
    "metrics.prometheusRule.enabled=true",
    "metrics.serviceMonitor.enabled=true",
    "metrics.prometheusRelease=kube-prometheus-stack",
)


def labels(doc: Doc) -> dict[str, str]:
    found: dict[str, str] = doc["metadata"].get("labels") or {}
    return found


# --- defaults ---------------------------------------------------------------


def test_by_default_only_the_dashboard_configmap_is_rendered_in_the_release_namespace() -> None:
    docs = render(ci("defaults"))
    assert not MONITORING_KINDS & kinds(docs), "the PrometheusRule and ServiceMonitor need CRDs: off by default"
    config = only(docs, "ConfigMap", "lameduck-dashboard")
    assert config["metadata"]["namespace"] == NAMESPACE
    assert labels(config)["grafana_dashboard"] == "1"
    assert labels(config)["app.kubernetes.io/instance"] == RELEASE
    assert "annotations" not in config["metadata"]


@pytest.mark.parametrize("values", sorted((CHART / "ci").glob("*.yaml")), ids=lambda p: p.name)
def test_the_configmap_holds_the_committed_dashboard_byte_for_byte(values: Path) -> None:
    config = only(render(values), "ConfigMap", "lameduck-dashboard")
    assert list(config["data"]) == ["lameduck.json"]
    assert config["data"]["lameduck.json"] == DASHBOARD_JSON.read_text()


def test_the_dashboard_configmap_can_be_turned_off() -> None:
    docs = render(sets=("metrics.dashboard.enabled=false",))
    assert "ConfigMap" not in kinds(docs)


def test_the_dashboard_configmap_follows_its_values(tmp_path: Path) -> None:
    values = {
        "metrics": {
            "dashboard": {
                "namespace": "monitoring",
                "labelKey": "grafana.example/dashboard",
                "labelValue": "lameduck",
                "labels": {"team": "platform"},
                "annotations": {"grafana_folder": "Kubernetes"},
            }
        }
    }
    config = only(render(values_file(tmp_path, values), release="prod"), "ConfigMap", "prod-lameduck-dashboard")
    assert config["metadata"]["namespace"] == "monitoring"
    assert labels(config)["grafana.example/dashboard"] == "lameduck"
    assert labels(config)["team"] == "platform"
    assert "grafana_dashboard" not in labels(config)
    assert config["metadata"]["annotations"] == {"grafana_folder": "Kubernetes"}


# --- the PrometheusRule ---------------------------------------------------------------


def test_the_prometheus_rule_holds_the_alerts_file_with_the_release_label() -> None:
    rule = only(render(sets=EVERYTHING), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == "lameduck"
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert labels(rule)["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())


def test_without_a_prometheus_release_there_is_no_release_label_and_extra_labels_win() -> None:
    rule = only(render(sets=("metrics.prometheusRule.enabled=true",)), "PrometheusRule")
    assert "release" not in labels(rule)
    rule = only(
        render(
            sets=(
                "metrics.prometheusRule.enabled=true",
                "metrics.prometheusRelease=kps",
                "metrics.prometheusRule.labels.release=other",
                "metrics.prometheusRule.labels.team=platform",
            )
        ),
        "PrometheusRule",
    )
    assert labels(rule)["release"] == "other"
    assert labels(rule)["team"] == "platform"


# --- the ServiceMonitor ---------------------------------------------------------------


def test_the_service_monitor_scrapes_the_metrics_service_port_only_with_the_release_label() -> None:
    docs = render(sets=EVERYTHING)
    monitor = only(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert labels(monitor)["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = spec["endpoints"]
    assert endpoint == {"port": "http-metrics", "path": "/metrics", "interval": "30s", "honorLabels": True}
    selected = [
        s for s in docs if s["kind"] == "Service" and spec["selector"]["matchLabels"].items() <= labels(s).items()
    ]
    with_port = [s["metadata"]["name"] for s in selected if "http-metrics" in {p["name"] for p in s["spec"]["ports"]}]
    assert with_port == ["lameduck-metrics"]


def test_the_service_monitor_interval_and_timeout_follow_the_values() -> None:
    docs = render(
        sets=(
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.interval=15s",
            "metrics.serviceMonitor.scrapeTimeout=10s",
            "metrics.serviceMonitor.labels.team=platform",
        ),
        release="prod",
    )
    monitor = only(docs, "ServiceMonitor", "prod-lameduck")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "10s")
    assert labels(monitor)["team"] == "platform"
    assert "release" not in labels(monitor)
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "prod"


# --- lint and schema ---------------------------------------------------------------


def test_the_chart_lints_with_every_monitoring_object_enabled() -> None:
    args: list[str] = []
    for item in EVERYTHING:
        args += ["--set", item]
    result = helm("lint", str(CHART), "--strict", "-n", NAMESPACE, "-f", str(ci("defaults")), *args)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        pytest.param("metrics.dashbaord.enabled=true", "'dashbaord'", id="a typo under metrics"),
        pytest.param("metrics.serviceMonitor.enable=true", "'enable'", id="a typo under serviceMonitor"),
        pytest.param("metrics.prometheusRule.release=kps", "'release'", id="release in the wrong place"),
        pytest.param("metrics.serviceMonitor.interval=often", "/metrics/serviceMonitor/interval", id="a bad interval"),
        pytest.param("metrics.dashboard.enabled=yes", "/metrics/dashboard/enabled", id="enabled as a string"),
        pytest.param(
            "metrics.dashboard.namespace=Not_A_Namespace", "/metrics/dashboard/namespace", id="a bad namespace"
        ),
    ],
)
def test_the_schema_rejects_a_bad_monitoring_value_naming_it(setting: str, key: str) -> None:
    result = helm("template", RELEASE, str(CHART), "--set", setting)
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert key in result.stderr, result.stderr


def test_a_dashboard_label_value_that_is_not_a_string_is_rejected(tmp_path: Path) -> None:
    path = values_file(tmp_path, {"metrics": {"dashboard": {"labelValue": 1}}})
    result = helm("template", RELEASE, str(CHART), "-f", str(path))
    assert result.returncode != 0
    assert "/metrics/dashboard/labelValue" in result.stderr, result.stderr
