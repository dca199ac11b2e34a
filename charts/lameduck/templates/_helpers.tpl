{{/*
The name prefix of every object: the release name when it contains the chart name, else
"<release>-<chart>", or fullnameOverride. Truncated to 45 characters so that the longest
suffix ("-leader-election") still gives a valid name and Service names stay DNS labels.
*/}}
{{- define "lameduck.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "lameduck.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 45 | trimSuffix "-" -}}
{{- end -}}

{{/* The operator's Deployment, ServiceAccount, ClusterRole and Lease. */}}
{{- define "lameduck.operatorName" -}}
{{- printf "%s-operator" (include "lameduck.fullname" .) -}}
{{- end -}}

{{- define "lameduck.webhookServiceName" -}}
{{- printf "%s-webhook" (include "lameduck.fullname" .) -}}
{{- end -}}

{{- define "lameduck.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "lameduck.fullname" .) -}}
{{- end -}}

{{/* The serving certificate's names: the webhook Service, however it is addressed. */}}
{{- define "lameduck.webhookDNSNames" -}}
{{- $svc := include "lameduck.webhookServiceName" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson -}}
{{- end -}}

{{- define "lameduck.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lameduck.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "lameduck.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "lameduck.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lameduck
{{- end -}}


{{/*
An image reference from {repository, tag, digest}: by digest when one is given (the tag is then
left out: the digest alone names what runs), else repository:tag, the tag defaulting to the
chart's appVersion. Call with (list .Values.image .Chart.AppVersion).
*/}}
{{- define "lameduck.image" -}}
{{- $image := index . 0 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository ($image.tag | default (index . 1)) -}}
{{- end -}}
{{- end -}}
