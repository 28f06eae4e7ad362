{{/*
Names, labels and the components' configuration, shared by the templates.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "damon-k8s.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name. Truncated to 54 characters so that the longest suffix
("-operator", 9 characters) still fits the 63-character limit of label values.
*/}}
{{- define "damon-k8s.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "damon-k8s.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{- define "damon-k8s.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "damon-k8s.labels" -}}
helm.sh/chart: {{ include "damon-k8s.chart" . }}
{{ include "damon-k8s.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select this release's pods (components add app.kubernetes.io/component). */}}
{{- define "damon-k8s.selectorLabels" -}}
app.kubernetes.io/name: {{ include "damon-k8s.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "damon-k8s.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "damon-k8s.operator.fullname" -}}
{{- printf "%s-operator" (include "damon-k8s.fullname" .) }}
{{- end }}

{{- define "damon-k8s.agent.fullname" -}}
{{- printf "%s-agent" (include "damon-k8s.fullname" .) }}
{{- end }}

{{- define "damon-k8s.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "damon-k8s.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "damon-k8s.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "damon-k8s.agent.fullname" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ClusterKopfPeering object the operator's replicas share. */}}
{{- define "damon-k8s.operator.peeringName" -}}
{{- include "damon-k8s.operator.fullname" . }}
{{- end }}

{{/*
The components' settings as environment variables (the data of their ConfigMaps). The
containers' args refer to them as $(VAR), so a ConfigMap is the one place a setting
lives, and the pod templates carry its checksum: a changed setting rolls the pods.
*/}}
{{- define "damon-k8s.operator.config" -}}
DAMON_OPERATOR_HEARTBEAT_TIMEOUT: {{ .Values.operator.config.heartbeatTimeout | toString | quote }}
DAMON_OPERATOR_RESYNC: {{ .Values.operator.config.resync | toString | quote }}
DAMON_OPERATOR_TOTALS_INTERVAL: {{ .Values.operator.config.totalsInterval | toString | quote }}
DAMON_OPERATOR_LOG_FORMAT: {{ .Values.operator.config.logFormat | quote }}
DAMON_OPERATOR_PEERING_LIFETIME: {{ .Values.operator.peering.lifetime | toString | quote }}
{{- end }}

{{- define "damon-k8s.agent.config" -}}
DAMON_AGENT_BACKEND: {{ .Values.agent.config.backend | quote }}
DAMON_AGENT_TICK: {{ .Values.agent.config.tick | toString | quote }}
DAMON_AGENT_STATUS_INTERVAL: {{ .Values.agent.config.statusInterval | toString | quote }}
DAMON_AGENT_LOG_LEVEL: {{ .Values.agent.config.logLevel | quote }}
{{- end }}
