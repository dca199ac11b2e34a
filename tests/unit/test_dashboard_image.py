"""The demo's picture of the dashboard draws the dashboard's own panels and queries."""

from __future__ import annotations

import json

from harness.dashboard_image import DASHBOARD, MAIN_PANELS, filled, legend, panel_queries


def test_every_panel_the_picture_draws_is_in_the_dashboard_with_its_queries() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for title in MAIN_PANELS:
        queries = panel_queries(dashboard, title)
        assert queries, title
        assert all("lameduck_" in expr for expr, _ in queries)


def test_queries_are_filled_as_grafana_sends_them_with_all_selected() -> None:
    expr = 'sum by (outcome) (rate(x_total{namespace=~"$namespace", policy=~"$policy"}[$__rate_interval]))'
    assert filled(expr, "1m") == 'sum by (outcome) (rate(x_total{namespace=~".*", policy=~".*"}[1m]))'


def test_legends_name_the_series_by_its_labels() -> None:
    assert legend("{{outcome}}", {"outcome": "quiet"}) == "quiet"
    assert legend("p99", {}) == "p99"
    assert legend("", {"outcome": "quiet"}) == '{"outcome": "quiet"}'
