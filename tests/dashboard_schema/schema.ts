// The type the chart's dashboard (charts/lameduck/dashboards/lameduck.json) must have, made of the
// types Grafana publishes: @grafana/schema's Dashboard, its panel plugins' Options and FieldConfig
// (timeseries, table), its DataQuery, and the Prometheus query of the foundation SDK (a query's
// fields are not in @grafana/schema). tests/unit/test_dashboard_schema.py writes the dashboard as
// `const dashboard: LameduckDashboard = <its JSON>` and runs tsc over it, so an object literal
// gets TypeScript's excess-property and literal-type checks.
//
// Narrowed where Grafana's Dashboard leaves a field open (a panel's options, custom field config
// and targets are `Record<string, unknown>` there): each panel type the dashboard uses gets its
// plugin's types; any other panel type fails, and must be added here to be checked.

import type {
  DataQuery,
  DataSourceRef,
  Dashboard,
  FieldConfig as DashboardFieldConfig,
  FieldConfigSource,
  Panel,
  RowPanel,
  VariableModel,
} from '@grafana/schema';
import type {
  FieldConfig as TableFieldConfig,
  Options as TableOptions,
} from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type {
  FieldConfig as TimeSeriesFieldConfig,
  Options as TimeSeriesOptions,
} from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';
import type { Dataquery as PrometheusDataquery } from '@grafana/grafana-foundation-sdk/prometheus';

// JSON carries a string enum as its value ("table"), which TypeScript does not accept for the
// enum type itself: Wire<T> is T with every string enum replaced by the union of its values.
// Numeric enums stay (a number literal of one of their values is accepted as it is).
export type Wire<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Wire<U>>
      : T extends object
        ? { [K in keyof T]: Wire<T[K]> }
        : T;

// A Prometheus target: Grafana's DataQuery (refId required) and the Prometheus query's fields;
// its datasource a dashboard's DataSourceRef, not DataQuery's `unknown`.
type Target = Omit<DataQuery, 'datasource'> &
  Omit<PrometheusDataquery, '_implementsDataqueryVariant' | 'datasource' | keyof DataQuery> & {
    datasource?: DataSourceRef;
  };

// The dashboard's FieldConfigSource with the plugin's custom field config in place of
// `Record<string, unknown>` (the veneer's `custom` also admits any other key).
type PluginFieldConfigSource<Custom> = Omit<FieldConfigSource, 'defaults'> & {
  defaults: Omit<DashboardFieldConfig, 'custom'> & { custom?: Custom };
};

type PluginPanel<Type extends string, Options, Custom> = Omit<Panel, 'type' | 'options' | 'fieldConfig' | 'targets'> & {
  type: Type;
  options?: Options;
  fieldConfig?: PluginFieldConfigSource<Custom>;
  targets?: Array<Target>;
};

type TimeSeriesPanel = PluginPanel<'timeseries', TimeSeriesOptions, TimeSeriesFieldConfig>;
// The table's panel-wide footer of earlier versions (now a per-field option, `custom.footer`),
// which the foundation SDK writes on every table (`show: false`), is admitted as it was typed.
type LegacyTableFooter = { show: boolean; reducer: string[]; fields?: string[]; countRows?: boolean; enablePagination?: boolean };
type TablePanel = PluginPanel<'table', TableOptions & { footer?: LegacyTableFooter }, TableFieldConfig>;
type ChartPanel = TimeSeriesPanel | TablePanel;
type Row = Omit<RowPanel, 'panels'> & { panels: Array<ChartPanel> };

// The dashboard declares schemaVersion 36 (what the foundation SDK writes); Grafana migrates it to
// the current version on load. These fields of version 36, which the current types dropped, are
// admitted, typed as version 36 had them: the dashboard's `style`, and a variable's `id` and the
// interval variable's `auto`, `auto_count`, `auto_min`, which the SDK writes on every variable.
type Variable = VariableModel & { id?: string; auto?: boolean; auto_count?: number; auto_min?: string };

export type LameduckDashboard = Wire<
  Omit<Dashboard, 'panels' | 'templating'> & {
    style?: 'light' | 'dark';
    panels: Array<ChartPanel | Row>;
    templating?: { list?: Array<Variable> };
  }
>;
