{{/* NetworkPolicy pieces (networkpolicy.yaml). */}}

{{/* Peers: the monitoring pods of networkPolicy.monitoring. */}}
{{- define "llmfleet.np.monitoring" -}}
- namespaceSelector:
    {{- toYaml .Values.networkPolicy.monitoring.namespaceSelector | nindent 4 }}
  podSelector:
    {{- toYaml .Values.networkPolicy.monitoring.podSelector | nindent 4 }}
{{- end }}

{{/* A peer in the release namespace: call with (dict "root" $ "selector" "llmfleet.gatewaySelector"). */}}
{{- define "llmfleet.np.system" -}}
- namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: {{ .root.Release.Namespace }}}
  podSelector:
    matchLabels:
      {{- include .selector .root | nindent 6 }}
{{- end }}

{{/* Egress every workload of the chart needs: the API server and DNS. */}}
{{- define "llmfleet.np.baseEgress" -}}
- to:
    {{- range .Values.networkPolicy.apiServer.cidrs }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  ports:
    {{- range .Values.networkPolicy.apiServer.ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
# Names (peers, a Redis, a Prometheus): the cluster's DNS, wherever it answers.
- ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end }}

{{/* Egress to the engines' serving port, in the engines' namespaces (or any). Call with
(dict "root" $ "namespaces" $list). */}}
{{- define "llmfleet.np.toEngines" -}}
- to:
    - namespaceSelector:
        {{- if .namespaces }}
        matchExpressions:
          - key: kubernetes.io/metadata.name
            operator: In
            values: {{ toJson .namespaces }}
        {{- else }}
        {}
        {{- end }}
      podSelector:
        matchLabels:
          {{- include "llmfleet.engineSelector" .root | nindent 10 }}
  ports:
    - {protocol: TCP, port: 8000}
{{- end }}
