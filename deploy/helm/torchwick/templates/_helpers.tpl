{{- define "torchwick.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "torchwick.fullname" -}}
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

{{- define "torchwick.selectorLabels" -}}
app.kubernetes.io/name: {{ include "torchwick.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "torchwick.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 }}
{{ include "torchwick.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "torchwick.secretName" -}}
{{- default (printf "%s-tokens" (include "torchwick.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "torchwick.claimName" -}}
{{- default (printf "%s-model-store" (include "torchwick.fullname" .)) .Values.modelStore.persistentVolumeClaim.claimName -}}
{{- end -}}

{{/* One HTTP probe on the inference port; argument: (list $ctx $path $settings). */}}
{{- define "torchwick.probe" -}}
httpGet:
  path: {{ index . 1 }}
  port: inference
periodSeconds: {{ (index . 2).periodSeconds }}
failureThreshold: {{ (index . 2).failureThreshold }}
timeoutSeconds: {{ (index . 2).timeoutSeconds }}
{{- end -}}
