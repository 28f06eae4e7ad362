{{/*
Names and switches of the operator's admission webhooks (templates/webhook.yaml).
*/}}

{{/* "true" when the operator serves the webhooks. */}}
{{- define "damon-k8s.webhook.enabled" -}}
{{- if and .Values.operator.enable .Values.webhook.enable }}true{{ end }}
{{- end }}

{{/* "true" when the agents' DamonNode status writes are confined to their own node. */}}
{{- define "damon-k8s.webhook.confined" -}}
{{- if and (include "damon-k8s.webhook.enabled" .) .Values.agent.enable .Values.webhook.nodeConfinement.enable }}true{{ end }}
{{- end }}

{{/* The webhook Service: FULLNAME-webhook (at most 54 + 8 characters, a DNS label). */}}
{{- define "damon-k8s.webhook.serviceName" -}}
{{- printf "%s-webhook" (include "damon-k8s.fullname" .) }}
{{- end }}

{{/* The TLS Secret the operator serves with: the generated one, or the user's. */}}
{{- define "damon-k8s.webhook.secretName" -}}
{{- default (printf "%s-webhook-tls" (include "damon-k8s.fullname" .)) .Values.webhook.certificate.existingSecret }}
{{- end }}

{{/* Where the operator container finds tls.crt and tls.key. */}}
{{- define "damon-k8s.webhook.certDir" -}}
/etc/damon-operator/webhook-tls
{{- end }}
