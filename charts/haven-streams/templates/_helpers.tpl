{{/*
Names. Objects are named after the release, so two releases in one namespace never collide:
the operator's `<release>-operator` (fullnameOverride: exactly that; nameOverride replaces
`operator`), the gateway's `<release>-gateway` (fullnameOverride: `<fullnameOverride>-gateway`).
Release "haven" keeps the names haven-operator and haven-gateway.
*/}}
{{- define "haven.prefix" -}}{{ .Values.fullnameOverride | default .Release.Name | trunc 40 | trimSuffix "-" }}{{- end -}}

{{- define "haven.name" -}}
{{- if .Values.fullnameOverride -}}
{{ .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else -}}
{{ printf "%s-%s" .Release.Name (.Values.nameOverride | default "operator") | trunc 52 | trimSuffix "-" }}
{{- end -}}
{{- end -}}

{{- define "haven.labels" -}}
{{ include "haven.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "haven.selector" -}}
app.kubernetes.io/name: {{ printf "haven-%s" (.Values.nameOverride | default "operator") | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* An image reference: repository, then @digest if set, else :tag (default appVersion). */}}
{{- define "haven.image" -}}
{{- $image := index .root.Values.image .name -}}
{{- if $image.digest -}}
{{ $image.repository }}@{{ $image.digest }}
{{- else -}}
{{ $image.repository }}:{{ $image.tag | default .root.Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The operator's permissions: least privilege, one list for the Role and the ClusterRole. */}}
{{- define "haven.rules" -}}
# Its own resources: watch them, keep a finalizer on them, write their status.
- apiGroups: [streams.haven.dev]
  resources: [livestreams]
  verbs: [get, list, watch, patch]
# Recordings too; auto-record creates them, and retention (TTL, keepLast) deletes them.
- apiGroups: [streams.haven.dev]
  resources: [recordings]
  verbs: [list, watch, patch, create, delete]
- apiGroups: [streams.haven.dev]
  resources: [livestreams/status, recordings/status]
  verbs: [patch]
# Its children's ownerReferences set blockOwnerDeletion: clusters that enforce owner-reference
# permissions (OpenShift) require `update` on the owner's finalizers. Never called directly.
- apiGroups: [streams.haven.dev]
  resources: [livestreams/finalizers, recordings/finalizers]
  verbs: [update]
# Each LiveStream's children, written with server-side apply (a patch that creates) and
# watched, so one deleted or edited by hand is repaired. Read before every write: the operator
# never takes over an object it does not own. Only an unwanted Ingress is ever deleted.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [services, persistentvolumeclaims]
  verbs: [get, list, watch, create, patch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, list, watch, create, patch, delete]
# The control-token Secret: created once, read to call the pod. Secrets are watched (list,
# watch) so that a LiveStream's LiveKit credentials Secret, once edited, rolls its pod at once;
# the operator acts only on Secrets a LiveStream names and keeps none in memory.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create]
# Stream pods: their readiness and address, from a watch.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# kopf posts core/v1 Events (never patches them, never events.k8s.io).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* The gateway: its name, labels, the namespace its sessions live in, its token Secret. */}}
{{- define "haven.gateway.name" -}}{{ include "haven.prefix" . }}-gateway{{- end -}}

{{- define "haven.gateway.labels" -}}
{{ include "haven.gateway.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "haven.gateway.selector" -}}
app.kubernetes.io/name: haven-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "haven.gateway.namespace" -}}{{ .Values.gateway.namespace | default .Release.Namespace }}{{- end -}}

{{- define "haven.gateway.secret" -}}{{ .Values.gateway.auth.secretName | default (printf "%s-token" (include "haven.gateway.name" .)) }}{{- end -}}

{{/* The operator's ServiceAccount. */}}
{{- define "haven.serviceAccountName" -}}{{ include "haven.name" . }}{{- end -}}
