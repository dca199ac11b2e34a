"""A picture of the main panels of the dashboard the chart ships, drawn with matplotlib from
the dashboard's own queries (charts/lameduck/dashboards/lameduck.json, variables set to
"All") against a Prometheus that scraped the operator: what Grafana would show. `make demo`
writes it (bench/results/dashboard.png, with the data drawn in dashboard.json).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from harness.prometheus import Prometheus

DASHBOARD = Path(__file__).resolve().parents[1] / "charts" / "lameduck" / "dashboards" / "lameduck.json"
# The panels drawn, by title, in this order (two rows of three).
MAIN_PANELS = (
    "Hold duration",
    "Observed slice propagation (stage 1)",
    "Observed data-plane propagation (stage 2)",
    "Hold outcomes",
    "Termination outcomes",
    "Late traffic (all pods)",
)


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels") or []:
        yield panel
        yield from _panels(panel)


def panel_queries(dashboard: dict[str, Any], title: str) -> list[tuple[str, str]]:
    """The panel's queries with their legends."""
    for panel in _panels(dashboard):
        if panel.get("title") == title:
            return [(t["expr"], t.get("legendFormat") or "") for t in panel.get("targets") or []]
    raise KeyError(f"no panel titled {title!r} in the dashboard")


def filled(expr: str, rate_interval: str) -> str:
    """The query as Grafana sends it with "All" selected for every variable."""
    return expr.replace('"$namespace"', '".*"').replace('"$policy"', '".*"').replace("$__rate_interval", rate_interval)


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) or json.dumps(labels)


def collect(
    prometheus: Prometheus, start: float, end: float, step: float = 10.0, rate_interval: str = "1m"
) -> dict[str, Any]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels: dict[str, Any] = {}
    for title in MAIN_PANELS:
        series = []
        for expr, template in panel_queries(dashboard, title):
            query = filled(expr, rate_interval)
            for result in prometheus.query_range(query, start, end, step):
                points = [(float(t) - start, float(v)) for t, v in result["values"] if not math.isnan(float(v))]
                series.append({"query": query, "legend": legend(template, result["metric"]), "points": points})
        panels[title] = series
    return {"start": start, "end": end, "step": step, "rate_interval": rate_interval, "panels": panels}


def draw(data: dict[str, Any], path: Path) -> None:
    figure = Figure(figsize=(15, 7.5))
    axes = figure.subplots(2, 3)
    for axis, (title, series) in zip(axes.flat, data["panels"].items(), strict=True):
        for line in series:
            if line["points"]:
                xs, ys = zip(*line["points"], strict=True)
                axis.plot(xs, ys, label=line["legend"][:40])
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("seconds since the first rollout", fontsize=8)
        axis.tick_params(labelsize=8)
        if any(line["points"] for line in series):
            axis.legend(fontsize=7, loc="upper left")
        else:
            axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
    figure.suptitle("lameduck dashboard (main panels), from its own queries against Prometheus", fontsize=12)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
