"""Every metric name in a PromQL expression the project ships (the dashboard's queries, the
alert rules) is a sample name the operator exports: a typo in a metric name makes a panel
empty or an alert silent, and PromQL never says so."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from typing import Any

import pytest
import yaml

from lameduck_operator import dashboard
from lameduck_operator.metrics import OperatorMetrics
from tests.unit.repo_data import REPO
from tests.unit.test_alerts import EXPECTED_ALERTS

DASHBOARD = REPO / "charts" / "lameduck" / "dashboards" / "lameduck.json"
ALERTS = REPO / "charts" / "lameduck" / "files" / "alerts.yaml"

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_TOKEN = re.compile(
    r"(?P<number>\d[\w.]*(?:[eE][+-]\d+)?)"  # 0.99, 1e-3, 15m, 0x1f
    r"|(?P<variable>\$\w+)"  # a Grafana variable outside a string
    r"|(?P<ident>[A-Za-z_:][\w:]*)(?P<call>\s*\()?"
)
KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"inf", "nan", "Inf", "NaN"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are no function call, keyword
    or modifier, nor a label name, a string, a duration or a number."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for token in _TOKEN.finditer(text):
        ident = token["ident"]
        if ident and not token["call"] and ident not in KEYWORDS:
            names.add(ident)
    return names


def exported_sample_names() -> set[str]:
    """The sample names the operator's registry exports, by family type."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "gauge": ("",),
        "info": ("_info",),
    }
    names = set()
    for family in OperatorMetrics().registry.collect():
        names |= {family.name + suffix for suffix in suffixes[family.type]}
    return names


def dashboard_expressions(dash: dict[str, Any] | None = None) -> list[str]:
    return dashboard.expressions(json.loads(DASHBOARD.read_text()) if dash is None else dash)


def alert_expressions() -> list[str]:
    return [rule["expr"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def unknown_names(expressions: Iterable[str]) -> dict[str, set[str]]:
    """Each expression that names a metric the operator does not export, with those names."""
    exported = exported_sample_names()
    found = {expr: metric_names(expr) - exported for expr in expressions}
    return {expr: names for expr, names in found.items() if names}


# --- the extractor ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        pytest.param("lameduck_leader", {"lameduck_leader"}, id="a bare name"),
        pytest.param(
            'histogram_quantile(0.99, sum by (le, policy) (rate(a_bucket{namespace=~"$namespace"}[$__rate_interval])))',
            {"a_bucket"},
            id="functions, a grouping, matchers, a Grafana range",
        ),
        pytest.param(
            "histogram_quantile(0.5, sum(rate(a_bucket[5m])) by (le))", {"a_bucket"}, id="a grouping after the call"
        ),
        pytest.param(
            "process_resident_memory_bytes and on (job, instance) lameduck_leader",
            {"process_resident_memory_bytes", "lameduck_leader"},
            id="a set operator with on()",
        ),
        pytest.param(
            "a > bool 1e-3 * b / ignoring(instance) group_left(foo, bar) c",
            {"a", "b", "c"},
            id="bool, an exponent, ignoring and group_left",
        ),
        pytest.param(
            "x{a=\"}{[by(\", b!~'q'} unless x offset 15m", {"x"}, id="brackets inside strings, offset and a duration"
        ),
        pytest.param('label_replace(up_total, "dst", "$1", "src", "(.*)")', {"up_total"}, id="strings holding regexes"),
        pytest.param("max_over_time(sum(y)[1h:30s]) > 0.5", {"y"}, id="a subquery"),
        pytest.param("(sum(a) < 1) or absent(b)", {"a", "b"}, id="or and absent"),
        pytest.param("sum without (instance) (rate(c_total[5m]))", {"c_total"}, id="without()"),
        pytest.param("vector(1) + time() - Inf", set(), id="no metric at all"),
    ],
)
def test_the_extractor_finds_exactly_the_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_exported_names_follow_the_family_types() -> None:
    exported = exported_sample_names()
    assert {
        "lameduck_reconciles_total",
        "lameduck_hold_duration_seconds_bucket",
        "lameduck_hold_duration_seconds_sum",
        "lameduck_hold_duration_seconds_count",
        "lameduck_leader",
        "process_resident_memory_bytes",
    } <= exported
    assert "lameduck_reconciles" not in exported
    assert "lameduck_hold_duration_seconds" not in exported


# --- the check, on what the project ships ---------------------------------------------------


def test_every_dashboard_expression_names_only_exported_metrics() -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 15
    assert all(metric_names(expr) for expr in expressions), "an expression that selects no metric"
    assert unknown_names(expressions) == {}


def test_every_alert_expression_names_only_exported_metrics() -> None:
    expressions = alert_expressions()
    assert len(expressions) == len(EXPECTED_ALERTS)
    assert all(metric_names(expr) for expr in expressions)
    assert unknown_names(expressions) == {}


def test_the_check_fails_for_a_misspelt_metric_in_the_dashboard() -> None:
    dash = json.loads(DASHBOARD.read_text())
    broken = copy.deepcopy(dash)
    target = next(
        t
        for panel in broken["panels"]
        for t in panel.get("targets", [])
        if "lameduck_hold_duration_seconds_bucket" in t["expr"]
    )
    target["expr"] = target["expr"].replace(
        "lameduck_hold_duration_seconds_bucket", "lameduck_hold_duration_second_bucket"
    )
    unknown = unknown_names(dashboard_expressions(broken))
    assert list(unknown.values()) == [{"lameduck_hold_duration_second_bucket"}]


def test_the_check_fails_for_a_histogram_used_without_its_bucket_suffix() -> None:
    assert unknown_names(["histogram_quantile(0.9, rate(lameduck_hold_duration_seconds[5m]))"]) != {}


def test_every_exported_lameduck_metric_is_on_the_dashboard_or_in_an_alert() -> None:
    """What the operator exports is shown somewhere (its _sum and _count aside)."""
    used = set().union(*(metric_names(e) for e in dashboard_expressions() + alert_expressions()))
    exported = {
        name
        for name in exported_sample_names()
        if name.startswith("lameduck_") and not name.endswith(("_sum", "_count"))
    }
    assert exported - used == set()
