{{/* The operator's rules on namespaced objects: one ClusterRole (rbac.scope Cluster) or a
Role in each watched namespace (Namespace). */}}
{{- define "llmfleet.operatorRules" }}
- apiGroups: ["llmfleet.io"]
  resources: ["llmdeployments"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["llmfleet.io"]
  resources: ["llmdeployments/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["leaderworkerset.x-k8s.io"]
  resources: ["leaderworkersets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Pods are read for status (scheduling failures, crash loops).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Before a scale-down the autoscaler sets pods' pod-deletion-cost (an annotation), so
# the replicas with the fewest requests in flight go first. The ValidatingAdmissionPolicy
# in operator-pod-guard.yaml refuses any other change the operator makes to a pod.
# A spot replica whose node got a preemption notice is drained: its pod is deleted (the
# same policy lets the operator delete only the pods of spot workloads).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["patch", "delete"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
{{/* Its rules on cluster-scoped objects, read-only, in both scopes. */}}
{{- define "llmfleet.operatorClusterRules" }}
# kopf discovers the resources it watches through the CRDs.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- if .Values.rbac.readNodes }}
# Nodes for GPU capacity: whether a serving group fits, whether new replicas can.
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- end }}
