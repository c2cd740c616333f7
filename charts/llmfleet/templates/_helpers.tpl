{{/* Labels on every object of the chart. */}}
{{- define "llmfleet.labels" -}}
app.kubernetes.io/name: llmfleet
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Name of the operator's objects. */}}
{{- define "llmfleet.operatorName" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/* Labels selecting the operator pods. */}}
{{- define "llmfleet.operatorSelector" -}}
app.kubernetes.io/name: llmfleet
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Name of the gateway's objects. */}}
{{- define "llmfleet.gatewayName" -}}
{{- printf "%s-gateway" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/* Labels selecting the gateway pods. */}}
{{- define "llmfleet.gatewaySelector" -}}
app.kubernetes.io/name: llmfleet
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{/* The same labels as a selector string, for the operator's --gateway-selector. */}}
{{- define "llmfleet.gatewaySelectorString" -}}
{{- $pairs := list -}}
{{- range $key, $value := (include "llmfleet.gatewaySelector" . | fromYaml) -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end }}

{{/* The namespaces whose LLMTenants and key Secrets the gateway reads, as a YAML list. */}}
{{- define "llmfleet.tenantNamespaces" -}}
{{- toYaml (.Values.gateway.tenants.namespaces | default (list .Release.Namespace)) -}}
{{- end -}}

{{/* Each gateway replica's share of a tenant limit: the replicas together never exceed it. */}}
{{- define "llmfleet.limitShare" -}}
{{- if .Values.gateway.tenants.limitShare -}}
{{- .Values.gateway.tenants.limitShare -}}
{{- else if .Values.gateway.autoscaling.enabled -}}
{{- divf 1 .Values.gateway.autoscaling.maxReplicas -}}
{{- else -}}
{{- divf 1 (max 1 .Values.gateway.replicas) -}}
{{- end -}}
{{- end -}}
