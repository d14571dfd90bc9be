{{- define "rolecall.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rolecall.fullname" -}}
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

{{- define "rolecall.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "rolecall.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rolecall
{{- end -}}

{{- define "rolecall.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rolecall.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rolecall.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rolecall.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "rolecall.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}

{{/*
Refuses credentials in values: a URL with "user:password@" in the config,
the connection URLs or a plain extraEnv value, plain ROLECALL_SECRET_* env
values; and extra volumes named like the chart's own.
*/}}
{{- define "rolecall.validate" -}}
{{- $userinfo := "[a-zA-Z][a-zA-Z0-9+.-]*://[^/@\\s:]*:[^/@\\s]+@" -}}
{{- if regexMatch $userinfo (tpl .Values.config .) -}}
{{- fail "config: a URL with a password (user:password@host) is inline in values.config; put it in a Secret and use connection.amqp.existingSecret / connection.redis.existingSecret (see the chart README, \"Credentials\")" -}}
{{- end -}}
{{- range $k := list "amqp" "redis" -}}
{{- $c := index $.Values.connection $k -}}
{{- if and $c.url (regexMatch $userinfo $c.url) -}}
{{- fail (printf "connection.%s.url: holds a password (user:password@host); put the URL in an existing Secret and set connection.%s.existingSecret instead" $k $k) -}}
{{- end -}}
{{- if and $c.url $c.existingSecret -}}
{{- fail (printf "connection.%s: set url or existingSecret, not both" $k) -}}
{{- end -}}
{{- end -}}
{{- range .Values.extraEnv -}}
{{- if and (hasPrefix "ROLECALL_SECRET_" .name) (hasKey . "value") -}}
{{- fail (printf "extraEnv: %s is a credential given inline; use valueFrom.secretKeyRef or credentials.existingSecrets" .name) -}}
{{- end -}}
{{- if and (hasKey . "value") (regexMatch $userinfo (toString .value)) -}}
{{- fail (printf "extraEnv: %s holds a URL with a password (user:password@host); take it from a Secret with valueFrom.secretKeyRef (e.g. ROLECALL__AMQP__URLS, see the chart README)" .name) -}}
{{- end -}}
{{- end -}}
{{- if and (or .Values.credentials.existingSecrets .Values.credentials.vault.enabled) (regexMatch "(?m)^\\s*\\[credentials(\\.vault)?\\]" (tpl .Values.config .)) -}}
{{- fail "config: has a [credentials] table while credentials.existingSecrets or credentials.vault are set; the chart writes that table: keep credentials settings in values.credentials only" -}}
{{- end -}}
{{- $extraVolumes := dict "scheduler.extraVolumes" .Values.scheduler.extraVolumes "notifier.extraVolumes" .Values.notifier.extraVolumes "workers.extraVolumes" .Values.workers.extraVolumes -}}
{{- range .Values.workers.groups -}}
{{- $_ := set $extraVolumes (printf "workers.groups[%s].extraVolumes" .name) .extraVolumes -}}
{{- end -}}
{{- range $key, $volumes := $extraVolumes -}}
{{- range $volumes -}}
{{- if has .name (list "config" "tmp" "credentials" "vault-token") -}}
{{- fail (printf "%s: the volume name %q is the chart's own (config, tmp, credentials, vault-token); pick another" $key .name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.credentials.vault.enabled (not .Values.credentials.vault.address) -}}
{{- fail "credentials.vault.address is required when credentials.vault.enabled is true" -}}
{{- end -}}
{{- end -}}

{{/* Config TOML: the values' config plus the Vault table when enabled. */}}
{{- define "rolecall.configToml" -}}
{{ tpl .Values.config . }}
{{- with .Values.credentials }}
{{- if or .existingSecrets .vault.enabled }}

# Added by the chart (credentials.*).
[credentials]
{{- if .existingSecrets }}
dir = {{ .mountPath | quote }}
{{- end }}
{{- if .vault.enabled }}

[credentials.vault]
address = {{ .vault.address | quote }}
mount = {{ .vault.mount | quote }}
path_prefix = {{ .vault.pathPrefix | quote }}
{{- if .vault.tokenSecret }}
token_file = "/var/run/secrets/rolecall-vault/token"
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes shared by every pod. */}}
{{- define "rolecall.volumes" -}}
- name: config
  configMap:
    name: {{ include "rolecall.fullname" . }}-config
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.credentials.existingSecrets }}
- name: credentials
  projected:
    defaultMode: 0440
    sources:
    {{- range .Values.credentials.existingSecrets }}
      - secret:
          name: {{ . }}
    {{- end }}
{{- end }}
{{- if and .Values.credentials.vault.enabled .Values.credentials.vault.tokenSecret }}
- name: vault-token
  secret:
    secretName: {{ .Values.credentials.vault.tokenSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.credentials.vault.tokenSecretKey }}
        path: token
{{- end }}
{{- end -}}

{{- define "rolecall.volumeMounts" -}}
- name: config
  mountPath: /etc/rolecall
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.credentials.existingSecrets }}
- name: credentials
  mountPath: {{ .Values.credentials.mountPath }}
  readOnly: true
{{- end }}
{{- if and .Values.credentials.vault.enabled .Values.credentials.vault.tokenSecret }}
- name: vault-token
  mountPath: /var/run/secrets/rolecall-vault
  readOnly: true
{{- end }}
{{- end -}}

{{/*
The container environment shared by every Deployment. The Downward API
variables come first: OTEL_RESOURCE_ATTRIBUTES (and any extraEnv entry)
refers to them as $(VAR), which Kubernetes expands only for variables
defined earlier in the list. The processes merge OTEL_RESOURCE_ATTRIBUTES
into their OpenTelemetry resource, so every pod's spans and metrics carry
its own k8s.pod.name and service.instance.id. An OTEL_RESOURCE_ATTRIBUTES
in extraEnv replaces the chart's (it may use the same $(K8S_*) variables).
*/}}
{{- define "rolecall.env" -}}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: K8S_NAMESPACE_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: K8S_NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- if not (include "rolecall.extraEnvHas" (dict "root" . "name" "OTEL_RESOURCE_ATTRIBUTES")) }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: "k8s.pod.name=$(K8S_POD_NAME),k8s.namespace.name=$(K8S_NAMESPACE_NAME),k8s.node.name=$(K8S_NODE_NAME),service.instance.id=$(K8S_POD_NAME)"
{{- end }}
- name: ROLECALL_CONFIG
  value: /etc/rolecall/rolecall.toml
- name: ROLECALL__TELEMETRY__HTTP_LISTEN
  value: {{ printf "0.0.0.0:%d" (int .Values.opsPort) | quote }}
{{- range $k := list "amqp" "redis" }}
{{- $c := index $.Values.connection $k }}
{{- if $c.existingSecret }}
- name: ROLECALL__{{ upper $k }}__URL
  valueFrom:
    secretKeyRef:
      name: {{ $c.existingSecret }}
      key: {{ $c.secretKey }}
{{- else if $c.url }}
- name: ROLECALL__{{ upper $k }}__URL
  value: {{ $c.url | quote }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* "true" when extraEnv defines the variable "name", else "". Takes (dict "root" $ "name" NAME). */}}
{{- define "rolecall.extraEnvHas" -}}
{{- $name := .name -}}
{{- range .root.Values.extraEnv -}}
{{- if eq .name $name }}true{{ end -}}
{{- end -}}
{{- end -}}

{{/*
A component's extra volumes or mounts: its own list, and for a worker group
the workers' list first. Takes (dict "lists" (list $a $b ...)); prints YAML
or nothing.
*/}}
{{- define "rolecall.extraList" -}}
{{- $all := list -}}
{{- range .lists -}}
{{- $all = concat $all (. | default list) -}}
{{- end -}}
{{- with $all -}}
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{- define "rolecall.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: ops
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: ops
  {{- toYaml .Values.probes.readiness | nindent 2 }}
{{- end -}}

{{/* Pod-level settings shared by every Deployment. Takes (dict "root" $ "extra" $group). */}}
{{- define "rolecall.podSpecCommon" -}}
{{- $root := .root -}}
{{- $extra := .extra | default dict -}}
serviceAccountName: {{ include "rolecall.serviceAccountName" $root }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with (default $root.Values.nodeSelector $extra.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $root.Values.tolerations $extra.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $root.Values.affinity $extra.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
The scheduler's affinity (as JSON): scheduler.affinity, else the top-level
affinity, plus a pod anti-affinity between scheduler pods per
scheduler.podAntiAffinity ("soft": prefer other nodes, "hard": require
them, "": none) unless that affinity has its own podAntiAffinity.
*/}}
{{- define "rolecall.schedulerAffinity" -}}
{{- $s := .Values.scheduler -}}
{{- $affinity := deepCopy (default .Values.affinity $s.affinity | default dict) -}}
{{- if and $s.podAntiAffinity (not (hasKey $affinity "podAntiAffinity")) -}}
{{- $labels := include "rolecall.selectorLabels" . | fromYaml -}}
{{- $_ := set $labels "app.kubernetes.io/component" "scheduler" -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" $labels) -}}
{{- if eq $s.podAntiAffinity "hard" -}}
{{- $_ := set $affinity "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) -}}
{{- else -}}
{{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) -}}
{{- end -}}
{{- end -}}
{{- toJson $affinity -}}
{{- end -}}

{{/*
The most pods a worker group runs: its autoscaler's maximum (after the
vendor cap) when autoscaled, else its replicas (default 2). Takes the group.
*/}}
{{- define "rolecall.workerMostPods" -}}
{{- $a := include "rolecall.groupAutoscaling" . | fromJson -}}
{{- if or $a.keda.enabled $a.hpa.enabled -}}
{{- include "rolecall.workerMax" . -}}
{{- else -}}
{{- hasKey . "replicas" | ternary .replicas 2 -}}
{{- end -}}
{{- end -}}

{{/*
Checkov checks skipped on every workload, each with its reason.
*/}}
{{- define "rolecall.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_35=Only the broker/Redis URLs come from secretKeyRef env (the binaries read them from ROLECALL__AMQP__URL/ROLECALL__REDIS__URL); vendor credentials are mounted files
checkov.io/skip2: CKV_K8S_43=The image digest is a value (image.digest); tags are allowed for trials
checkov.io/skip3: CKV_K8S_15=pullPolicy is a value; IfNotPresent is right for immutable release tags and digests
{{- if not .Values.networkPolicy.enabled }}
checkov.io/skip4: CKV2_K8S_6=networkPolicy.enabled is off by default since egress destinations (broker, Redis, vendors) differ per cluster; the full example enables it
{{- end }}
{{- end -}}

{{- define "rolecall.queuePrefix" -}}
{{- $ns := "" -}}
{{- $m := regexFind "(?m)^\\s*namespace\\s*=\\s*\"[^\"]*\"" (tpl .Values.config .) -}}
{{- if $m -}}{{- $ns = regexReplaceAll "(?s)^[^\"]*\"([^\"]*)\".*$" $m "${1}" -}}{{- end -}}
{{- if $ns -}}{{ $ns }}.{{- end -}}
{{- end -}}

{{/* Worker replica cap: ceil(quota x latency / concurrency), bounded by maxReplicas. */}}
{{- define "rolecall.workerMax" -}}
{{- $a := include "rolecall.groupAutoscaling" . | fromJson -}}
{{- $max := int $a.maxReplicas -}}
{{- if gt (float64 $a.vendorQuotaPerSecond) 0.0 -}}
{{- $cap := int (ceil (divf (mulf $a.vendorQuotaPerSecond $a.latencySeconds) $a.perPodConcurrency)) -}}
{{- if lt $cap 1 }}{{ $cap = 1 }}{{ end -}}
{{- if lt $cap $max }}{{ $max = $cap }}{{ end -}}
{{- end -}}
{{- if lt $max (int $a.minReplicas) }}{{ $max = int $a.minReplicas }}{{ end -}}
{{- $max -}}
{{- end -}}

{{/* A worker group's autoscaling settings with the defaults filled in (as JSON). */}}
{{- define "rolecall.groupAutoscaling" -}}
{{- $d := dict "minReplicas" 1 "maxReplicas" 10 "vendorQuotaPerSecond" 0 "latencySeconds" 0.5 "perPodConcurrency" 20 -}}
{{- $_ := set $d "keda" (dict "enabled" false "messagesPerReplica" 100 "pollingInterval" 15 "cooldownPeriod" 300 "queues" (list) "triggerAuthentication" "") -}}
{{- $_ := set $d "hpa" (dict "enabled" false "targetCPUUtilizationPercentage" 70) -}}
{{- toJson (mergeOverwrite $d (deepCopy (.autoscaling | default dict))) -}}
{{- end -}}
