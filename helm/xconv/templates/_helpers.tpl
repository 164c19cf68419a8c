{{/*
Expand the name of the chart.
*/}}
{{- define "xconv.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name, truncated at 63 chars (DNS label limit).
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "xconv.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version as used by the chart label.
*/}}
{{- define "xconv.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "xconv.labels" -}}
helm.sh/chart: {{ include "xconv.chart" . }}
{{ include "xconv.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: consumer
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels (immutable on a Deployment: keep them minimal).
*/}}
{{- define "xconv.selectorLabels" -}}
app.kubernetes.io/name: {{ include "xconv.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the service account to use.
*/}}
{{- define "xconv.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "xconv.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image reference: a digest wins over a tag; the tag defaults to appVersion.
*/}}
{{- define "xconv.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret whose keys become environment variables: the user's existing
Secret, else the one this chart creates (empty when there is none).
*/}}
{{- define "xconv.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else if and .Values.secret.create .Values.secret.data }}
{{- include "xconv.fullname" . }}
{{- end }}
{{- end }}

{{/*
True ("true") when the chart itself renders the Secret.
*/}}
{{- define "xconv.createSecret" -}}
{{- if and (not .Values.existingSecret) .Values.secret.create .Values.secret.data }}true{{ end }}
{{- end }}

{{/*
The xconv config file as TOML. Helm reads every YAML number as a float64, which toToml
writes as 500.0 or 4e+06: a deep copy of config has its whole numbers turned into
integers first (xconv takes an integer wherever it takes a float).
*/}}
{{- define "xconv.configToml" -}}
{{- $config := deepCopy .Values.config }}
{{- include "xconv.intify" $config }}
{{- toToml $config }}
{{- end }}

{{/*
Turns whole float64 values of a map (nested maps and lists included) into int64, in place.
*/}}
{{- define "xconv.intify" -}}
{{- $map := . }}
{{- range $key, $value := $map }}
{{- if and (kindIs "float64" $value) (eq (floor $value) $value) }}
{{- $_ := set $map $key (int64 $value) }}
{{- else if kindIs "map" $value }}
{{- include "xconv.intify" $value }}
{{- else if kindIs "slice" $value }}
{{- $items := list }}
{{- range $item := $value }}
{{- if and (kindIs "float64" $item) (eq (floor $item) $item) }}
{{- $items = append $items (int64 $item) }}
{{- else }}
{{- if kindIs "map" $item }}{{ include "xconv.intify" $item }}{{ end }}
{{- $items = append $items $item }}
{{- end }}
{{- end }}
{{- $_ := set $map $key $items }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Port of /metrics, /healthz and /readyz: observability.http_port of the config.
*/}}
{{- define "xconv.metricsPort" -}}
{{- dig "observability" "http_port" 9464 .Values.config | int }}
{{- end }}

{{/*
delivery.drain_timeout_s of the config (xconv's default is 30).
*/}}
{{- define "xconv.drainTimeoutSeconds" -}}
{{- dig "delivery" "drain_timeout_s" 30 .Values.config | float64 }}
{{- end }}

{{/*
Grace period between SIGTERM and SIGKILL. It must stay strictly above the drain
timeout, or in-flight batches are killed mid-drain and re-delivered on restart:
computed as ceil(drain) + gracePeriodMarginSeconds when unset, refused when set too low.
*/}}
{{- define "xconv.terminationGracePeriodSeconds" -}}
{{- $drain := include "xconv.drainTimeoutSeconds" . | float64 }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (ceil $drain | int) (.Values.gracePeriodMarginSeconds | int) }}
{{- else }}
{{- $grace := .Values.terminationGracePeriodSeconds | float64 }}
{{- if le $grace $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be greater than config.delivery.drain_timeout_s (%v): raise it or leave it null to compute it" .Values.terminationGracePeriodSeconds $drain) }}
{{- end }}
{{- .Values.terminationGracePeriodSeconds | int }}
{{- end }}
{{- end }}

{{/*
Checks across values that the schema cannot express.
*/}}
{{- define "xconv.validateValues" -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled (HPA) and keda.enabled (ScaledObject) are mutually exclusive: KEDA creates and owns its own HPA. Enable only one." }}
{{- end }}
{{- end }}
