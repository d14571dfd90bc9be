{{/*
Why pods of this release would not start, for NOTES.txt: a JSON list of
sentences (empty when nothing is wrong). Warnings, not `fail`: the default
values must still render (CI renders them), and the config is TOML text
read here by pattern, which can miss an unusual spelling.
*/}}
{{- define "rolecall.warnings" -}}
{{- $cfg := tpl .Values.config . -}}
{{- $envNames := list -}}
{{- range .Values.extraEnv }}{{ $envNames = append $envNames .name }}{{ end -}}
{{- $warnings := list -}}

{{- /* SaaS apps: [saas.x], [saas] with x = {...}, or saas.x = ... */ -}}
{{- $hasSaas := or (regexMatch `(?m)^\s*\[\s*"?saas"?\s*[.\]]` $cfg) (regexMatch `(?m)^\s*saas\s*\.\s*\S` $cfg) -}}
{{- if not $hasSaas -}}
{{- $warnings = append $warnings `values.config has no [saas.<app>] table: every worker exits at start ("saas: no SaaS app is configured for this worker"). Add the SaaS apps (connector, base_url, credential, rate; see deploy/config/rolecall.example.toml).` -}}
{{- else -}}
{{- range $g := .Values.workers.groups -}}
{{- range $app := $g.saas -}}
{{- $q := regexQuoteMeta $app -}}
{{- $table := regexMatch (printf `(?m)^\s*\[\s*"?saas"?\s*\.\s*"?%s"?\s*[.\]]` $q) $cfg -}}
{{- $dotted := regexMatch (printf `(?m)^\s*saas\s*\.\s*"?%s"?\s*[.=]` $q) $cfg -}}
{{- $inline := regexMatch (printf `(?m)^\s*"?%s"?\s*=\s*\{` $q) $cfg -}}
{{- if not (or $table $dotted $inline) -}}
{{- $warnings = append $warnings (printf "workers.groups[%s].saas lists %q, but values.config has no [saas.%s] table: that group's workers exit at start." $g.name $app $app) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* Notifier channels. */ -}}
{{- if and .Values.notifier.enabled (not (include "rolecall.notifierChannels" . | fromJsonArray)) (not (regexMatch `(?m)^\s*(notifier\s*\.\s*)?channels\s*[.=]` $cfg)) -}}
{{- $warnings = append $warnings `values.config has no [notifier.channels.<name>] (type = "webhook" or "email"): the notifier exits at start and no alert is delivered. Add a channel and [notifier.routes], or set notifier.enabled=false.` -}}
{{- end -}}

{{- /* Connections: connection.*, the config's own keys, or extraEnv. */ -}}
{{- $amqpChart := or .Values.connection.amqp.existingSecret .Values.connection.amqp.url -}}
{{- $amqpUrls := or (has "ROLECALL__AMQP__URLS" $envNames) (regexMatch `(?ms)^\s*\[\s*amqp\s*\][^\[]*^\s*urls\s*=` $cfg) (regexMatch `(?m)^\s*amqp\s*\.\s*urls\s*=` $cfg) -}}
{{- $amqpUrl := or $amqpChart (has "ROLECALL__AMQP__URL" $envNames) (regexMatch `(?ms)^\s*\[\s*amqp\s*\][^\[]*^\s*url\s*=` $cfg) (regexMatch `(?m)^\s*amqp\s*\.\s*url\s*=` $cfg) -}}
{{- if not (or $amqpUrl $amqpUrls) -}}
{{- $warnings = append $warnings `No RabbitMQ URL: set connection.amqp.existingSecret (a Secret key holding amqp[s]://user:password@host:port/vhost), or ROLECALL__AMQP__URLS in extraEnv for a cluster. Without it every process tries amqp://guest:guest@127.0.0.1:5672 and never becomes ready.` -}}
{{- end -}}
{{- if and $amqpUrl $amqpUrls -}}
{{- $warnings = append $warnings `Both amqp.url (connection.amqp, ROLECALL__AMQP__URL or [amqp] url) and amqp.urls (ROLECALL__AMQP__URLS or [amqp] urls) are set: every process refuses the configuration ("set either amqp.url (one broker) or amqp.urls (a cluster), not both"). Keep one.` -}}
{{- end -}}
{{- $redis := or .Values.connection.redis.existingSecret .Values.connection.redis.url (has "ROLECALL__REDIS__URL" $envNames) (regexMatch `(?ms)^\s*\[\s*redis\s*\][^\[]*^\s*url\s*=` $cfg) (regexMatch `(?m)^\s*redis\s*\.\s*url\s*=` $cfg) -}}
{{- if not $redis -}}
{{- $warnings = append $warnings `No Redis URL: set connection.redis.existingSecret (a Secret key holding redis[s]://:password@host:port/0). Without it every process tries redis://127.0.0.1:6379/0 and never becomes ready.` -}}
{{- end -}}

{{- /* Credentials the config names, with nowhere to read them from. */ -}}
{{- $secretEnv := false -}}
{{- range $envNames }}{{ if hasPrefix "ROLECALL_SECRET_" . }}{{ $secretEnv = true }}{{ end }}{{ end -}}
{{- $sources := or .Values.credentials.existingSecrets .Values.credentials.vault.enabled $secretEnv -}}
{{- if and (regexMatch `(?m)\b(url_|password_)?credential\s*=` $cfg) (not $sources) -}}
{{- $warnings = append $warnings `No credential source: values.config names credentials, but credentials.existingSecrets, credentials.vault and ROLECALL_SECRET_* in extraEnv are all empty: the workers and the notifier exit at start (credential not found).` -}}
{{- end -}}

{{- /* Files the config names (TLS): every process checks every path at start. */ -}}
{{- $mounts := dict -}}
{{- $common := list (dict "mountPath" "/tmp") -}}
{{- if .Values.credentials.existingSecrets }}{{ $common = append $common (dict "mountPath" .Values.credentials.mountPath) }}{{ end -}}
{{- if .Values.scheduler.enabled }}{{ $_ := set $mounts "scheduler" (concat $common (.Values.scheduler.extraVolumeMounts | default list)) }}{{ end -}}
{{- if .Values.notifier.enabled }}{{ $_ := set $mounts "notifier" (concat $common (.Values.notifier.extraVolumeMounts | default list)) }}{{ end -}}
{{- range $g := .Values.workers.groups -}}
{{- $_ := set $mounts (printf "worker-%s" $g.name) (concat $common ($.Values.workers.extraVolumeMounts | default list) ($g.extraVolumeMounts | default list)) -}}
{{- end -}}
{{- $files := list -}}
{{- range regexFindAll `\b(ca_file|client_cert_file|client_key_file)\s*=\s*"[^"]+"` $cfg -1 -}}
{{- $files = append $files (regexReplaceAll `^[^"]*"([^"]+)"$` . "${1}") -}}
{{- end -}}
{{- range $file := uniq $files -}}
{{- $missing := list -}}
{{- range $component, $list := $mounts -}}
{{- $covered := false -}}
{{- range $list -}}
{{- $dir := trimSuffix "/" .mountPath -}}
{{- if or (eq $file $dir) (hasPrefix (printf "%s/" $dir) $file) }}{{ $covered = true }}{{ end -}}
{{- end -}}
{{- if not $covered }}{{ $missing = append $missing $component }}{{ end -}}
{{- end -}}
{{- if $missing -}}
{{- $warnings = append $warnings (printf `values.config names the file %s, which no volume mount of %s provides: those pods exit at start (every process checks every file path of the config). Mount it into every component with extraVolumes / extraVolumeMounts (chart README, "TLS files").` $file (join ", " $missing)) -}}
{{- end -}}
{{- end -}}

{{- /* A budget that allows no disruption at all. */ -}}
{{- range $c := list "scheduler" "notifier" -}}
{{- $v := index $.Values $c -}}
{{- if and $v.enabled $v.pdb.enabled (gt (int $v.replicas) 1) (not (kindIs "string" $v.pdb.minAvailable)) (ge (int $v.pdb.minAvailable) (int $v.replicas)) -}}
{{- $warnings = append $warnings (printf "%s.pdb.minAvailable (%d) is not below %s.replicas (%d): its PodDisruptionBudget blocks every node drain." $c (int $v.pdb.minAvailable) $c (int $v.replicas)) -}}
{{- end -}}
{{- end -}}
{{- toJson $warnings -}}
{{- end -}}

{{/* The names of the config's [notifier.channels.<name>] tables (JSON list). */}}
{{- define "rolecall.notifierChannels" -}}
{{- $channels := list -}}
{{- range regexFindAll `(?m)^\s*\[\s*notifier\s*\.\s*channels\s*\.\s*"?[A-Za-z0-9_-]+` (tpl .Values.config .) -1 -}}
{{- $channels = append $channels (regexReplaceAll `^.*\.\s*"?` . "") -}}
{{- end -}}
{{- toJson $channels -}}
{{- end -}}
