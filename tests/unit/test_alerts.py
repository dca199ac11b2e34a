"""The Prometheus alert rules the chart ships (charts/lameduck/files/alerts.yaml), checked and
unit-tested with promtool against tests/unit/data/alerts_test.yaml.

promtool is $LAMEDUCK_PROMTOOL, promtool on the PATH, or the one hack/prometheus.sh unpacks
(`make unit` runs it). Without one the tests skip, except under CI=true, where they fail: a
skipped check must never count as a passed one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.tools import ToolUnusable, find_tool, harness_prometheus_dir
from tests.unit.repo_data import REPO

ALERTS = REPO / "charts" / "lameduck" / "files" / "alerts.yaml"
ALERTS_TEST = REPO / "tests" / "unit" / "data" / "alerts_test.yaml"
HINT = "run `bash hack/prometheus.sh` (or `make prometheus`), or point LAMEDUCK_PROMTOOL at a promtool binary"
EXPECTED_ALERTS = [
    "LameduckHoldTimeouts",
    "LameduckHoldFallbacks",
    "LameduckPodsKilled",
    "LameduckMaxHoldBelowLateTraffic",
    "LameduckRequestsLostAfterRelease",
    "LameduckHoldReportsMissing",
    "LameduckOperatorDown",
    "LameduckWebhookErrors",
    "LameduckWebhookCertificateNotLoaded",
]


def promtool_binary() -> str:
    cached = harness_prometheus_dir() / "promtool"
    try:
        found = find_tool("promtool", "LAMEDUCK_PROMTOOL", cached)
    except ToolUnusable as err:
        pytest.fail(f"{err}; {HINT}")
    if found is not None:
        return found
    message = f"promtool is not installed (not on PATH, not at {cached}): {HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool_binary(), *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


def rules() -> list[dict[str, Any]]:
    (group,) = yaml.safe_load(ALERTS.read_text())["groups"]
    assert group["name"] == "lameduck"
    found: list[dict[str, Any]] = group["rules"]
    return found


def alert_tests() -> list[dict[str, Any]]:
    return [case for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for case in test["alert_rule_test"]]


# --- promtool ---------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout, result.stdout


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    result = promtool("test", "rules", ALERTS_TEST.name, cwd=ALERTS_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_promtool_fails_an_alert_test_that_expects_the_wrong_alert(tmp_path: Path) -> None:
    """The unit tests above can fail: a case expecting a label the alert lacks is reported."""
    test = yaml.safe_load(ALERTS_TEST.read_text())
    test["rule_files"] = [str(ALERTS)]
    case = next(c for t in test["tests"] for c in t["alert_rule_test"] if c["exp_alerts"])
    case["exp_alerts"][0]["exp_labels"]["severity"] = "page"
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(test))
    result = promtool("test", "rules", "wrong.yaml", cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    assert "FAILED" in result.stdout + result.stderr


# --- what the rules and their tests hold ---------------------------------------------------


def test_the_rules_are_the_expected_alerts_each_with_severity_summary_and_description() -> None:
    assert [rule["alert"] for rule in rules()] == EXPECTED_ALERTS
    for rule in rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        assert len(rule["annotations"]["description"]) > 200, f"{rule['alert']}: say what to do"


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing = {case["alertname"] for case in alert_tests() if case["exp_alerts"]}
    quiet = {case["alertname"] for case in alert_tests() if not case["exp_alerts"]}
    assert firing == set(EXPECTED_ALERTS)
    assert quiet == set(EXPECTED_ALERTS)


def test_a_single_killed_pod_fires_without_waiting() -> None:
    (killed,) = [rule for rule in rules() if rule["alert"] == "LameduckPodsKilled"]
    assert killed.get("for", "0m") in {"0m", "0s"}
    assert 'outcome="killed"' in killed["expr"]
