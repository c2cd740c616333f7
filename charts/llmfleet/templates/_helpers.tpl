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

{{/* The gateway's model tiers file (`llmfleet gateway --aliases`, llmfleet_gateway.tiers);
its checksum on the pods rolls them when it changes. */}}
{{- define "llmfleet.gatewayAliases" -}}
{{- $names := list -}}
{{- range .Values.gateway.aliases -}}
{{- if has .name $names -}}
{{- fail (printf "gateway.aliases names %q twice" .name) -}}
{{- end -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- toYaml (dict "aliases" .Values.gateway.aliases) -}}
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

{{/* An image reference: imageRegistry (when set) replaces the repository's own registry;
a digest, when given, pins the image instead of the tag (default: the chart's appVersion).
Call with (dict "image" .Values.operator.image "root" $). */}}
{{- define "llmfleet.image" -}}
{{- $repository := .image.repository -}}
{{- with .root.Values.imageRegistry -}}
{{- $parts := splitList "/" $repository -}}
{{- $host := first $parts -}}
{{- if and (gt (len $parts) 1) (or (contains "." $host) (contains ":" $host) (eq $host "localhost")) -}}
{{- $repository = rest $parts | join "/" -}}
{{- end -}}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}
{{- end }}

{{/* rbac.scope Namespace: the operator and the gateway hold Roles in the namespaces they
watch, and are started with those namespaces. */}}
{{- define "llmfleet.namespaced" -}}
{{- if eq .Values.rbac.scope "Namespace" }}true{{ end -}}
{{- end }}

{{/* The namespaces the operator watches, as a YAML list; empty: every namespace (cluster
scope only; the namespace scope defaults to the release namespace). */}}
{{- define "llmfleet.operatorNamespaces" -}}
{{- if include "llmfleet.namespaced" . -}}
{{- toYaml (.Values.operator.watchNamespaces | default (list .Release.Namespace)) -}}
{{- else -}}
{{- toYaml .Values.operator.watchNamespaces -}}
{{- end -}}
{{- end }}

{{/* The namespaces the gateway discovers LLMDeployments in, as a YAML list; empty: every
namespace (cluster scope only; the namespace scope defaults to the release namespace). */}}
{{- define "llmfleet.gatewayNamespaces" -}}
{{- if include "llmfleet.namespaced" . -}}
{{- toYaml (.Values.gateway.watchNamespaces | default (list .Release.Namespace)) -}}
{{- else -}}
{{- toYaml .Values.gateway.watchNamespaces -}}
{{- end -}}
{{- end }}

{{/* Where engine pods run, as a YAML list: the namespaces the operator and the gateway
watch. Empty: anywhere (cluster scope without watch namespaces). */}}
{{- define "llmfleet.engineNamespaces" -}}
{{- $found := list -}}
{{- $operator := include "llmfleet.operatorNamespaces" . | fromYamlArray -}}
{{- $gateway := include "llmfleet.gatewayNamespaces" . | fromYamlArray -}}
{{- if .Values.operator.enabled -}}
{{- $found = concat $found $operator -}}
{{- end -}}
{{- if .Values.gateway.enabled -}}
{{- $found = concat $found $gateway -}}
{{- end -}}
{{- if or (and .Values.operator.enabled (not $operator)) (and .Values.gateway.enabled (not $gateway)) -}}
{{- $found = list -}}
{{- end -}}
{{- toYaml ($found | uniq | sortAlpha) -}}
{{- end }}

{{/* Scheduling, pull secrets and priority of a workload's pods: the values every workload
of the chart takes. Call with (dict "values" .Values.operator "root" $). */}}
{{- define "llmfleet.podPlacement" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with (concat .root.Values.imagePullSecrets .values.imagePullSecrets) }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Job names the monitors give their targets, so the rules and the dashboard find them
whether a ServiceMonitor or a PodMonitor scrapes. */}}
{{- define "llmfleet.engineJob" -}}llmfleet-engine{{- end }}
{{- define "llmfleet.operatorJob" -}}llmfleet-operator{{- end }}
{{- define "llmfleet.gatewayJob" -}}llmfleet-gateway{{- end }}

{{/* Labels of the engine pods the operator makes (llmfleet_contract.labels.common_labels). */}}
{{- define "llmfleet.engineSelector" -}}
app.kubernetes.io/name: llmfleet-engine
app.kubernetes.io/managed-by: llmfleet-operator
{{- end }}
