{{/*
Names and labels. Every object's labels come from "brl.labels" and every selector from
"brl.selectorLabels", so `kubectl get all -l app.kubernetes.io/instance=<release>` finds everything.
*/}}

{{- define "brl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped prefix of every object name; 40 characters leave room for "-worker-<pool>-<ordinal>". */}}
{{- define "brl.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "brl.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades (never include the version). Call with (dict "ctx" $ "component" "x"). */}}
{{- define "brl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "brl.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The one place labels are written. Call with (dict "ctx" $ "component" "x"). */}}
{{- define "brl.labels" -}}
helm.sh/chart: {{ include "brl.chart" .ctx }}
{{ include "brl.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: brl
{{- end }}

{{/* Image reference: repository:tag, tag defaulting to the chart's appVersion. Call with (dict "spec" .Values.x "ctx" $). */}}
{{- define "brl.image" -}}
{{- printf "%s:%s" .spec.repository (default .ctx.Chart.AppVersion (toString .spec.tag)) }}
{{- end }}

{{- define "brl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "brl.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{- define "brl.coordinatorName" -}}
{{- printf "%s-coordinator" (include "brl.fullname" .) }}
{{- end }}

{{- define "brl.plannerName" -}}
{{- printf "%s-planner" (include "brl.fullname" .) }}
{{- end }}

{{- define "brl.simulatorName" -}}
{{- printf "%s-simulator" (include "brl.fullname" .) }}
{{- end }}

{{/* Worker StatefulSet (and headless Service) of one pool. Call with (dict "ctx" $ "pool" $pool). */}}
{{- define "brl.workerName" -}}
{{- printf "%s-worker-%s" (include "brl.fullname" .ctx) .pool.name }}
{{- end }}

{{- define "brl.modelPvcName" -}}
{{- $pvc := .Values.servingEngineSpec.modelSource.pvc }}
{{- if $pvc.existingClaim }}{{ $pvc.existingClaim }}{{ else }}{{ printf "%s-models" (include "brl.fullname" .) }}{{ end }}
{{- end }}

{{/* The coordinator's gRPC address that workers register with: with replicas, every replica pod, by the
headless Service's name (dns:NAME:PORT, looked up again as replicas come and go). */}}
{{- define "brl.coordinatorGrpcAddress" -}}
{{- if gt (int .Values.routerSpec.replicaCount) 1 }}
{{- printf "dns:%s.%s.svc:%v" (include "brl.coordinatorReplicasName" .) .Release.Namespace .Values.routerSpec.grpcPort }}
{{- else }}
{{- printf "%s.%s.svc:%v" (include "brl.coordinatorName" .) .Release.Namespace .Values.routerSpec.grpcPort }}
{{- end }}
{{- end }}

{{- define "brl.coordinatorReplicasName" -}}
{{- printf "%s-coordinator-replicas" (include "brl.fullname" .) }}
{{- end }}

{{/* The region the coordinator runs in: set explicitly, else the first pool's region, else "default". */}}
{{- define "brl.coordinatorRegion" -}}
{{- $first := first .Values.servingEngineSpec.gpuPools | default dict }}
{{- .Values.fleet.coordinatorRegion | default $first.region | default "default" }}
{{- end }}

{{/* Volumes/mounts for the three ConfigMaps, shared by every control-plane pod. */}}
{{- define "brl.configVolumes" -}}
- name: fleet
  configMap:
    name: {{ include "brl.fullname" . }}-fleet
- name: model
  configMap:
    name: {{ include "brl.fullname" . }}-model
{{- if .Values.plan.enabled }}
- name: plan
  configMap:
    name: {{ include "brl.fullname" . }}-plan
{{- end }}
- name: tmp
  emptyDir: {}
{{- end }}

{{- define "brl.configMounts" -}}
- name: fleet
  mountPath: /etc/brl/fleet
  readOnly: true
- name: model
  mountPath: /etc/brl/model
  readOnly: true
{{- if .Values.plan.enabled }}
- name: plan
  mountPath: /etc/brl/plan
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* A probe from a values block: the handler is given by the template, timings come from values. */}}
{{- define "brl.probeTimings" -}}
{{- $out := list }}
{{- range $k := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "failureThreshold" "successThreshold" }}
{{- if hasKey $ $k }}
{{- $out = append $out (printf "%s: %v" $k (get $ $k)) }}
{{- end }}
{{- end }}
{{- join "\n" $out }}
{{- end }}

{{/* Pod placement (nodeSelector / affinity / tolerations). nodeSelectorTerms becomes a required node
affinity unless an explicit affinity is given, as in vLLM production-stack. */}}
{{- define "brl.placement" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .affinity }}
affinity:
  {{- toYaml .affinity | nindent 2 }}
{{- else if .nodeSelectorTerms }}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        {{- toYaml .nodeSelectorTerms | nindent 8 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The Secret every API key is read from (apiKeys.existingSecret, or the one the chart creates). */}}
{{- define "brl.apiKeysSecretName" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "brl.fullname" .)) }}
{{- end }}

{{/* secretKeyRef body of API key `key` (inference | admin | planner | simulator), or nothing when that key
is not configured: no inference key leaves the OpenAI API open, no admin key turns /v1/admin/* off. The
planner and simulator keys always exist (the chart draws random ones), so those services are never open.
In an existing Secret the inference and admin keys are optional, the others required: a pod missing its
own key does not start rather than start open. Call with (dict "ctx" $ "key" "admin"). */}}
{{- define "brl.apiKeyRef" -}}
{{- $keys := .ctx.Values.apiKeys }}
{{- $router := .ctx.Values.routerSpec.vllmApiKey }}
{{- $optional := has .key (list "inference" "admin") }}
{{- if and (eq .key "inference") $router.secretName }}
{{- if $keys.inference }}
{{- fail "the inference key is set twice: use routerSpec.vllmApiKey or apiKeys.inference, not both" }}
{{- end }}
name: {{ $router.secretName }}
key: {{ $router.secretKey | default "api-key" }}
{{- else if $keys.existingSecret }}
name: {{ $keys.existingSecret }}
key: {{ get $keys.secretKeys .key }}
{{- if $optional }}
optional: true
{{- end }}
{{- else if or (not $optional) (get $keys .key) }}
name: {{ include "brl.apiKeysSecretName" .ctx }}
key: {{ get $keys.secretKeys .key }}
{{- end }}
{{- end }}

{{/* One env entry taking variable `env` from API key `key` (see brl.apiKeyRef); nothing when the key is not
configured. Call with (dict "ctx" $ "key" "planner" "env" "BRL_PLANNER_API_KEY"). */}}
{{- define "brl.apiKeyEnv" -}}
{{- with include "brl.apiKeyRef" . | trim -}}
- name: {{ $.env }}
  valueFrom:
    secretKeyRef:
      {{- . | nindent 6 }}
{{- end }}
{{- end }}

{{/* Extra env entries from values, refusing a key given as a plain value (it would sit in the pod spec for
anyone who can read it). Call with (dict "env" $spec.env "where" "plannerSpec.env"). */}}
{{- define "brl.extraEnv" -}}
{{- range .env }}
{{- if and (hasSuffix "API_KEY" (upper .name)) (hasKey . "value") }}
{{- fail (printf "%s: %s is a key; set it in apiKeys (a Secret), not as a plain env value" $.where .name) }}
{{- end }}
{{- end }}
{{- with .env }}
{{- toYaml . }}
{{- end }}
{{- end }}
