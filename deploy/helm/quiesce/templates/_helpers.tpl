{{/* The chart name, or nameOverride. */}}
{{- define "quiesce.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* RELEASE-quiesce, or RELEASE when it already contains the name, or fullnameOverride. */}}
{{- define "quiesce.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the drainer's pods. */}}
{{- define "quiesce.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quiesce.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: drainer
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "quiesce.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "quiesce.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The ServiceAccount's name. */}}
{{- define "quiesce.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "quiesce.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* drainer.surge as one of annotated, all, never (true is all, false is never). */}}
{{- define "quiesce.surge" -}}
{{- $surge := toString .Values.drainer.surge -}}
{{- if or (eq $surge "true") (eq $surge "all") -}}
all
{{- else if or (eq $surge "false") (eq $surge "never") -}}
never
{{- else if eq $surge "annotated" -}}
annotated
{{- else -}}
{{- fail (printf "drainer.surge must be annotated, all or never (or true/false), not %q" $surge) -}}
{{- end -}}
{{- end -}}
