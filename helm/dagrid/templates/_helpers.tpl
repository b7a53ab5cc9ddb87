{{/* Chart name, truncated to a DNS label. */}}
{{- define "dagrid.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name prefix of every resource. */}}
{{- define "dagrid.fullname" -}}
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

{{/* Labels of every resource. */}}
{{- define "dagrid.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "dagrid.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels; add app.kubernetes.io/component per workload. */}}
{{- define "dagrid.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dagrid.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dagrid.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dagrid.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "dagrid.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret and key holding the Redis URL. */}}
{{- define "dagrid.redisSecretName" -}}
{{- if .Values.redis.bundled.enabled -}}
{{- printf "%s-redis" (include "dagrid.fullname" .) -}}
{{- else if .Values.redis.external.url -}}
{{- printf "%s-redis-url" (include "dagrid.fullname" .) -}}
{{- else -}}
{{- required "redis.external.existingSecret (a Secret holding the Redis URL) is needed unless redis.bundled.enabled or redis.external.url" .Values.redis.external.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "dagrid.redisSecretKey" -}}
{{- if or .Values.redis.bundled.enabled .Values.redis.external.url -}}
url
{{- else -}}
{{- .Values.redis.external.existingSecretKey -}}
{{- end -}}
{{- end -}}

{{- define "dagrid.authSecretName" -}}
{{- default (printf "%s-auth" (include "dagrid.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "dagrid.dagsConfigMapName" -}}
{{- default (printf "%s-dags" (include "dagrid.fullname" .)) .Values.dags.existingConfigMap -}}
{{- end -}}

{{/* The worker's terminationGracePeriodSeconds: given, or the shutdown grace plus the step
cleanup plus 15 s for reports and leaving the consumer group. */}}
{{- define "dagrid.workerTerminationGrace" -}}
{{- $drain := add .Values.worker.shutdownGraceSeconds .Values.worker.stepCleanupSeconds -}}
{{- if kindIs "invalid" .Values.worker.terminationGracePeriodSeconds -}}
{{- add $drain 15 -}}
{{- else if le (int .Values.worker.terminationGracePeriodSeconds) (int $drain) -}}
{{- fail (printf "worker.terminationGracePeriodSeconds (%v) must be above worker.shutdownGraceSeconds + worker.stepCleanupSeconds (%v), or Kubernetes kills steps before the worker hands them back" .Values.worker.terminationGracePeriodSeconds $drain) -}}
{{- else -}}
{{- .Values.worker.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by the coordinators and the workers: Redis (from a Secret), namespace,
logs. */}}
{{- define "dagrid.commonEnv" -}}
- name: DAGRID_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "dagrid.redisSecretName" . }}
      key: {{ include "dagrid.redisSecretKey" . }}
- name: DAGRID_NAMESPACE
  value: {{ .Values.namespace | quote }}
- name: DAGRID_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- if .Values.redis.external.caSecret }}
- name: SSL_CERT_FILE
  value: /etc/dagrid/redis-ca/ca.pem
{{- end }}
{{- end -}}

{{- define "dagrid.caVolume" -}}
{{- if .Values.redis.external.caSecret }}
- name: redis-ca
  secret:
    secretName: {{ .Values.redis.external.caSecret }}
    items:
      - key: {{ .Values.redis.external.caSecretKey }}
        path: ca.pem
{{- end }}
{{- end -}}

{{- define "dagrid.caVolumeMount" -}}
{{- if .Values.redis.external.caSecret }}
- name: redis-ca
  mountPath: /etc/dagrid/redis-ca
  readOnly: true
{{- end }}
{{- end -}}
