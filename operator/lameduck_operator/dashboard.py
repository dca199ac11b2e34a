"""The Grafana dashboard of the operator's metrics (metrics.py), built with grafana-foundation-sdk.

Only `make dashboards` runs this module (`python -m lameduck_operator.dashboard --out
charts/lameduck/dashboards/lameduck.json`); the operator never imports it, and the SDK is a
`test` extra, not a dependency of the operator image. A unit test fails when the committed
JSON differs from what this module generates.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as builder
from grafana_foundation_sdk.builders import prometheus, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

UID = "lameduck"
TITLE = "lameduck"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Label filters: the shutdown metrics carry namespace and policy, the fleet gauges policy only.
SHUTDOWN = 'namespace=~"$namespace", policy=~"$policy"'
POLICY = 'policy=~"$policy"'
# Restricts a process_* series (every scraped target has them) to lameduck operator replicas.
OPERATOR_TARGETS = "and on (job, instance) lameduck_leader"
RED = "red"
ORANGE = "orange"

Panel = builder.Panel | timeseries.Panel | table.Panel


# --- small builders ---------------------------------------------------------------


def _query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def _table_query(expr: str, ref: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).format(PromQueryFormat.TABLE).instant().ref_id(ref).datasource(DATASOURCE)


def _rate(metric: str, labels: str = "", by: str = "") -> str:
    selector = f"{metric}{{{labels}}}" if labels else metric
    inner = f"rate({selector}[$__rate_interval])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def _max_rate(metric: str, by: str = "") -> str:
    """A counter every replica keeps whole (not only the leader's share): the replicas' highest rate."""
    inner = f"rate({metric}[$__rate_interval])"
    return f"max by ({by}) ({inner})" if by else f"max({inner})"


def _quantile(q: float, histogram: str, labels: str = "") -> str:
    """The q-quantile of a histogram (its base name, without _bucket) over the rate interval."""
    return f"histogram_quantile({q}, {_rate(f'{histogram}_bucket', labels, by='le')})"


def _p50_p99(histogram: str, labels: str = "") -> list[prometheus.Dataquery]:
    return [
        _query(_quantile(0.5, histogram, labels), "p50", "A"),
        _query(_quantile(0.99, histogram, labels), "p99", "B"),
    ]


def _fixed_color(color: str) -> list[model.DynamicConfigValue]:
    return [model.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})]


def _graph(
    title: str,
    description: str,
    targets: list[prometheus.Dataquery],
    *,
    unit: str = "short",
    width: int = 12,
    colors: dict[str, str] | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .span(width)
        .height(8)
        .fill_opacity(10)
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(
            common_builder.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)
        )
        .targets(list(targets))
    )
    for name, color in (colors or {}).items():
        panel = panel.override_by_name(name, _fixed_color(color))
    return panel


# --- panel groups, one per row ------------------------------------------------------------


def fleet_panels() -> list[Panel]:
    return [
        _graph(
            "Fleet state per policy",
            "Deployments each policy governs, by state (lameduck_managed_deployments); Pending or "
            "Conflict for long deserves a look at the policy's status.",
            [_query(f"sum by (policy, state) (lameduck_managed_deployments{{{POLICY}}})", "{{policy}} {{state}}")],
        ),
        _graph(
            "Rollouts in progress",
            "Deployments of each policy currently rolling out (lameduck_rollouts_in_flight).",
            [_query(f"sum by (policy) (lameduck_rollouts_in_flight{{{POLICY}}})", "{{policy}}")],
        ),
        _graph(
            "Where the next maxHold comes from",
            "Deployments of each policy with hold.learnedBudget, by where the maxHold their holds take comes "
            "from (lameduck_learned_budget_deployments): Reports (learned), L7Backend (no history behind an "
            "L7 hop: the starting budget), Default (no history: maxHold).",
            [
                _query(
                    f"sum by (policy, learned_from) (lameduck_learned_budget_deployments{{{POLICY}}})",
                    "{{policy}} {{learned_from}}",
                )
            ],
            width=24,
        ),
    ]


def hold_panels() -> list[Panel]:
    return [
        _graph(
            "Hold duration",
            "The whole preStop hold of managed pods, p50 and p99 (lameduck_hold_duration_seconds); "
            "close to maxHold means holds end by timeout.",
            _p50_p99("lameduck_hold_duration_seconds", SHUTDOWN),
            unit="s",
            width=8,
        ),
        _graph(
            "Observed slice propagation (stage 1)",
            "From the hold's start until no EndpointSlice showed the pod ready, p50 and p99 "
            "(lameduck_hold_slice_propagation_seconds).",
            _p50_p99("lameduck_hold_slice_propagation_seconds", SHUTDOWN),
            unit="s",
            width=8,
        ),
        _graph(
            "Observed data-plane propagation (stage 2)",
            "From stage 1's end until no new work reached the pod for the quiet period, p50 and p99 "
            "(lameduck_hold_dataplane_propagation_seconds).",
            _p50_p99("lameduck_hold_dataplane_propagation_seconds", SHUTDOWN),
            unit="s",
            width=8,
        ),
        _graph(
            "Hold outcomes",
            "Holds ended per second by outcome (lameduck_holds_total): quiet and not_in_any_slice are "
            "normal; timeout ran to maxHold, fallback could not watch the API.",
            [_query(_rate("lameduck_holds_total", SHUTDOWN, by="outcome"), "{{outcome}}")],
            unit="short",
            colors={"timeout": RED, "fallback": ORANGE},
        ),
        _graph(
            "Hold reports read",
            "Hold reports (Events the sidecars post at the end of a hold) the operator read, per second "
            "by result (lameduck_hold_reports_total): recorded, malformed, or untrusted (not consistent with "
            "what the operator observed: forged, or about a pod it did not see deleted), and the untrusted "
            "by reason (lameduck_hold_reports_untrusted_total); the reports that never came, by namespace "
            "(lameduck_hold_reports_missing_total: a pod deleted with the Sidecar hold and gone for 2 minutes "
            "without one), those that came after that (lameduck_hold_reports_late_total), and pods the "
            "operator stopped waiting for to stay within its bound (lameduck_hold_reports_forgotten_total); "
            "these three are counted by every replica, so the highest replica's rate is shown.",
            [
                _query(_rate("lameduck_hold_reports_total", by="result"), "{{result}}"),
                _query(_rate("lameduck_hold_reports_untrusted_total", by="reason"), "untrusted: {{reason}}", "B"),
                _query(_max_rate("lameduck_hold_reports_missing_total", "namespace"), "missing: {{namespace}}", "C"),
                _query(_max_rate("lameduck_hold_reports_late_total", "namespace"), "late: {{namespace}}", "D"),
                _query(_max_rate("lameduck_hold_reports_forgotten_total"), "forgotten", "E"),
            ],
            colors={"malformed": RED, "untrusted": ORANGE, "forgotten": ORANGE},
        ),
    ]


def termination_panels() -> list[Panel]:
    return [
        _graph(
            "Termination outcomes",
            "Terminations of managed pods per second by how the app containers ended "
            "(lameduck_terminations_total); killed means SIGKILL at the end of the grace period, split by "
            "its likely cause (lameduck_pods_killed_total): sigterm_likely_lost (deleted within seconds of "
            "starting, before the app handled SIGTERM) or over_budget.",
            [
                _query(_rate("lameduck_terminations_total", SHUTDOWN, by="outcome"), "{{outcome}}"),
                _query(_rate("lameduck_pods_killed_total", SHUTDOWN, by="cause"), "killed: {{cause}}"),
            ],
            width=8,
            colors={"killed": RED, "error": ORANGE},
        ),
        _graph(
            "Termination time against budget",
            "Termination duration as a fraction of the grace period, p50 and p99 "
            "(lameduck_termination_budget_ratio); at 1 the pod used its whole budget.",
            _p50_p99("lameduck_termination_budget_ratio", SHUTDOWN),
            unit="percentunit",
            width=8,
        ),
        _graph(
            "Termination duration",
            "From the pod's deletion until its last app container exited, p50 and p99 "
            "(lameduck_termination_duration_seconds).",
            _p50_p99("lameduck_termination_duration_seconds", SHUTDOWN),
            unit="s",
            width=8,
        ),
    ]


LATE_TRAFFIC_COLUMNS = {
    "Value #A": "late traffic p50 (s)",
    "Value #B": "late traffic p99 (s)",
    "Value #C": "late traffic max (s)",
    "Value #D": "maxHold (s)",
    "Value #E": "recommended maxHold (s)",
    "Value #F": "lost after release",
    "Value #G": "learned delay (s)",
    "Value #H": "learned maxHold (s)",
}


def late_traffic_panels() -> list[Panel]:
    by = "max by (namespace, deployment, policy)"

    def late(quantile: str, ref: str) -> prometheus.Dataquery:
        return _table_query(
            f'{by} (lameduck_deployment_late_traffic_seconds{{{SHUTDOWN}, quantile="{quantile}"}})', ref
        )

    targets = [
        late("0.5", "A"),
        late("0.99", "B"),
        late("1", "C"),
        _table_query(f"{by} (lameduck_deployment_max_hold_seconds{{{SHUTDOWN}}})", "D"),
        _table_query(f"{by} (lameduck_deployment_recommended_max_hold_seconds{{{SHUTDOWN}}})", "E"),
        _table_query(f"{by} (lameduck_deployment_requests_lost_after_release{{{SHUTDOWN}}})", "F"),
        _table_query(f"{by} (lameduck_deployment_learned_delay_seconds{{{SHUTDOWN}}})", "G"),
        _table_query(f"{by} (lameduck_deployment_learned_max_hold_seconds{{{SHUTDOWN}}})", "H"),
    ]
    order = ["namespace", "deployment", "policy", *LATE_TRAFFIC_COLUMNS.values()]
    organize = {
        "excludeByName": {"Time": True},
        "renameByName": LATE_TRAFFIC_COLUMNS,
        "indexByName": {name: i for i, name in enumerate(order)},
    }
    return [
        table.Panel()
        .title("Late traffic per Deployment")
        .description(
            "How long after the hold's start the last new connection or request reached a Deployment's "
            "recent terminating pods, beside its maxHold and the maxHold that traffic calls for, the "
            "requests its recent holds lost after release and the pooled delay learned for its next holds."
        )
        .datasource(DATASOURCE)
        .span(24)
        .height(9)
        # The two options Grafana's table requires; without them the SDK writes `"options": null`.
        .show_header(True)
        .frame_index(0)
        .targets(list(targets))
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(model.DataTransformerConfig(id_val="organize", options=organize)),
        _graph(
            "Late traffic (all pods)",
            "From the hold's start until the last new connection or request reached the pod, p50 and p99 "
            "(lameduck_hold_late_traffic_seconds; 0 when none came).",
            _p50_p99("lameduck_hold_late_traffic_seconds", SHUTDOWN),
            unit="s",
            width=24,
        ),
    ]


def loss_panels() -> list[Panel]:
    per_deployment = "max by (namespace, deployment)"
    return [
        _graph(
            "Requests lost after release",
            "Connection attempts refused and connections reset on terminating pods after their holds "
            "released, per namespace and policy (lameduck_requests_lost_after_release_total): what the "
            "holds could not save; 0 is the goal.",
            [
                _query(
                    "sum by (namespace, policy) "
                    f"(increase(lameduck_requests_lost_after_release_total{{{SHUTDOWN}}}[$__rate_interval]))",
                    "{{namespace}} {{policy}}",
                )
            ],
            width=8,
        ),
        _graph(
            "Requests lost after release per Deployment",
            "Over each Deployment's recent holds (lameduck_deployment_requests_lost_after_release); a "
            "loss raises its learned delay.",
            [
                _query(
                    f"{per_deployment} (lameduck_deployment_requests_lost_after_release{{{SHUTDOWN}}})",
                    "{{namespace}}/{{deployment}}",
                )
            ],
            width=8,
        ),
        _graph(
            "Learned delay per Deployment",
            "How long after stage 1 each Deployment's next holds wait for busy reused connections "
            "(lameduck_deployment_learned_delay_seconds; 0: taken as pinned after propagationDelay).",
            [
                _query(
                    f"{per_deployment} (lameduck_deployment_learned_delay_seconds{{{SHUTDOWN}}})",
                    "{{namespace}}/{{deployment}}",
                )
            ],
            unit="s",
            width=8,
        ),
    ]


def operator_panels() -> list[Panel]:
    return [
        _graph(
            "Reconcile errors",
            'Reconciles that failed (lameduck_reconciles_total{result="error"}) and failed API requests '
            "by operation (lameduck_api_errors_total), per second.",
            [
                _query(_rate("lameduck_reconciles_total", 'result="error"'), "reconcile errors", "A"),
                _query(_rate("lameduck_api_errors_total", by="operation"), "API errors: {{operation}}", "B"),
            ],
            width=8,
        ),
        _graph(
            "Reconcile latency",
            "Time to decide and apply for one Deployment, p50 and p99 (lameduck_reconcile_duration_seconds).",
            _p50_p99("lameduck_reconcile_duration_seconds"),
            unit="s",
            width=8,
        ),
        _graph(
            "Reconcile queue",
            "Deployments waiting to be reconciled (lameduck_queue_depth); it should drain to 0.",
            [_query("sum(lameduck_queue_depth)", "waiting")],
            width=8,
        ),
        _graph(
            "Webhook requests",
            "Admission reviews per second by result (lameduck_webhook_requests_total); error and invalid "
            "ones are admitted unchanged.",
            [_query(_rate("lameduck_webhook_requests_total", by="result"), "{{result}}")],
            width=8,
            colors={"error": RED, "invalid": ORANGE},
        ),
        _graph(
            "Webhook latency",
            "Time to answer one admission review inside the operator, p50 and p99 (lameduck_webhook_duration_seconds).",
            _p50_p99("lameduck_webhook_duration_seconds"),
            unit="s",
            width=8,
        ),
        _graph(
            "Operator replicas and leader",
            "Replicas scraped (count of lameduck_leader) and replicas leading (its sum): one leader "
            "is normal, none means nothing reconciles.",
            [
                _query("count(lameduck_leader)", "replicas", "A"),
                _query("sum(lameduck_leader)", "leaders", "B"),
            ],
            width=8,
        ),
        _graph(
            "Readiness condition writes",
            "Writes of the pod condition lameduck.dev/endpoints-ready per second, by status and reason "
            "(lameduck_readiness_condition_writes_total).",
            [_query(_rate("lameduck_readiness_condition_writes_total", by="status, reason"), "{{status}} {{reason}}")],
        ),
        _graph(
            "Event loop lag",
            "How late the operator's event loop ran a timer due every 0.1 s, p99 (lameduck_event_loop_lag_seconds), "
            "and the longest stall since start (lameduck_event_loop_lag_max_seconds): a stall delays watches, "
            "webhook answers and probes.",
            [
                _query(_quantile(0.99, "lameduck_event_loop_lag_seconds"), "p99", "A"),
                _query("max(lameduck_event_loop_lag_max_seconds)", "longest since start", "B"),
                _query("max(lameduck_gc_pause_max_seconds)", "longest garbage collection since start", "C"),
            ],
            unit="s",
            width=8,
        ),
        _graph(
            "Event loop stalls by cause",
            "Stalls of 1 s or more (lameduck_event_loop_stalls_total) by what held the loop: gc, loop_busy "
            "(code that did not yield; the operator logs its stack), other_threads, not_scheduled (no CPU "
            "for the process); and the share of time in the garbage collector (lameduck_gc_seconds_total).",
            [
                _query(
                    "sum by (cause) (increase(lameduck_event_loop_stalls_total[$__rate_interval]))", "{{cause}}", "A"
                ),
                _query(_rate("lameduck_gc_seconds_total"), "time in garbage collection (s/s)", "B"),
            ],
            width=8,
        ),
        _graph(
            "Operator memory",
            "Resident memory of each operator replica (process_resident_memory_bytes of the targets "
            "that export lameduck_leader).",
            [_query(f"process_resident_memory_bytes {OPERATOR_TARGETS}", "{{instance}}")],
            unit="bytes",
        ),
    ]


ROWS = [
    ("Fleet", fleet_panels),
    ("Holds", hold_panels),
    ("Terminations", termination_panels),
    ("Late traffic", late_traffic_panels),
    ("Lost after release and learned delays", loss_panels),
    ("Operator", operator_panels),
]


def _variables() -> list[builder.DatasourceVariable | builder.QueryVariable]:
    def labels(name: str, query: str) -> builder.QueryVariable:
        return (
            builder.QueryVariable(name)
            .label(name)
            .datasource(DATASOURCE)
            .query(query)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )

    return [
        builder.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        labels("namespace", "label_values(lameduck_terminations_total, namespace)"),
        labels("policy", "label_values(lameduck_managed_deployments, policy)"),
    ]


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    dash = (
        builder.Dashboard(TITLE)
        .uid(UID)
        .description(
            "lameduck: the fleet its policies govern, pod shutdowns (holds, terminations, late traffic) "
            "and the operator itself."
        )
        .tags(["lameduck", "kubernetes"])
        .editable()
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
    )
    for variable in _variables():
        dash = dash.with_variable(variable)
    # Grafana's schema wants each panel's id, rows' too, unique within the dashboard; the SDK
    # leaves a panel's unset and writes 0 for every row.
    ids = itertools.count(1)
    for title, panels in ROWS:
        dash = dash.with_row(builder.Row(title).id(next(ids)))
        for panel in panels():
            dash = dash.with_panel(panel.id(next(ids)))
    encoded: dict[str, Any] = json.loads(json.dumps(dash.build(), cls=JSONEncoder))
    return encoded


def render() -> str:
    """The dashboard as the committed file holds it."""
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def _panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def expressions(dash: dict[str, Any] | None = None) -> list[str]:
    """Every PromQL expression of the dashboard: each target's expr, and each query variable's
    label_values() query as the series selector it reads."""
    dash = build() if dash is None else dash
    found = [target["expr"] for panel in _panels(dash) for target in panel.get("targets", []) if "expr" in target]
    for variable in dash.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query" and isinstance(query, str) and query.startswith("label_values("):
            found.append(query.removeprefix("label_values(").rsplit(",", 1)[0])
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the dashboard JSON here (default: stdout)")
    args = parser.parse_args(argv)
    text = render()
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
