{{/*
Labels of the PrometheusRule and the ServiceMonitor beyond the chart's own: `release` from
metrics.prometheusRelease (kube-prometheus-stack selects by it), then the object's extra
labels, which win. Call with (dict "root" $ "labels" <extra labels>).
*/}}
{{- define "lameduck.monitoringLabels" -}}
{{- $labels := dict -}}
{{- with .root.Values.metrics.prometheusRelease -}}
{{- $_ := set $labels "release" . -}}
{{- end -}}
{{- $labels = merge (deepCopy (.labels | default dict)) $labels -}}
{{- with $labels -}}
{{ toYaml . }}
{{- end -}}
{{- end -}}
