{{- define "smart-auth.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "smart-auth.instanceLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The server's pods: what the Service, the PodDisruptionBudget and the Deployment select (not the Job's). */}}
{{- define "smart-auth.selectorLabels" -}}
{{ include "smart-auth.instanceLabels" . }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "smart-auth.labels" -}}
{{ include "smart-auth.instanceLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "smart-auth.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The server's environment, shared by the Deployment and the migration Job. */}}
{{- define "smart-auth.env" -}}
- name: ISSUER
  value: {{ required "issuer is required" .Values.issuer | quote }}
- name: FHIR_BASE_URLS
  value: {{ required "fhirBaseUrls is required" .Values.fhirBaseUrls | quote }}
- name: SANDBOX
  value: "false"
- name: SEED_DEMO
  value: "false"
- name: HOST
  value: "0.0.0.0"
- name: PORT
  value: {{ .Values.containerPort | quote }}
- name: SHUTDOWN_TIMEOUT_SECONDS
  value: {{ .Values.shutdownTimeoutSeconds | quote }}
{{- if .Values.metrics.enabled }}
- name: METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}
