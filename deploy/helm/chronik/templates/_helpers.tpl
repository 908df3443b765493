{{/* The release's base name: every object is called after it. */}}
{{- define "chronik.fullname" -}}
{{ .Release.Name }}
{{- end }}

{{/* The labels every object carries. */}}
{{- define "chronik.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels selectors match on (the component label is added beside them). */}}
{{- define "chronik.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
