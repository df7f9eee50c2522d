{{/* vim: set filetype=mustache: */}}

{{/*
Names. Every resource is "<fullname>-<component>", gateways "<fullname>-gw-<insurer id>", all
truncated to the 63 characters of a DNS label (validateValues refuses names that would collide).
*/}}
{{- define "osago.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "osago.fullname" -}}
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

{{/* "<fullname>-<component>"; call with (dict "ctx" $ "component" "aggregator"). */}}
{{- define "osago.componentName" -}}
{{- printf "%s-%s" (include "osago.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A gateway's Deployment name; call with (dict "ctx" $ "id" "alfa"). */}}
{{- define "osago.gatewayName" -}}
{{- printf "%s-gw-%s" (include "osago.fullname" .ctx) .id | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The headless Service of a gateway (its DNS name lists every ready replica). */}}
{{- define "osago.gatewayHeadlessName" -}}
{{- printf "%s-gw-%s-headless" (include "osago.fullname" .ctx) .id | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The callback Service of a gateway whose insurer calls back (every replica behind it). */}}
{{- define "osago.gatewayCallbacksName" -}}
{{- printf "%s-gw-%s-callbacks" (include "osago.fullname" .ctx) .id | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The base URL an insurer that calls back is given (OSAGO_GATEWAY_CALLBACK_BASE_URL):
callbacks.publicBaseUrl, else the in-cluster callback Service (only the demo simulator reaches
it); (dict "ctx" $ "id" "sovcom").
*/}}
{{- define "osago.callbackBaseUrl" -}}
{{- if .ctx.Values.callbacks.publicBaseUrl -}}
{{- .ctx.Values.callbacks.publicBaseUrl -}}
{{- else -}}
{{- $service := include "osago.gatewayCallbacksName" . -}}
{{- printf "http://%s:%v" (include "osago.serviceFqdn" (dict "ctx" .ctx "service" $service)) .ctx.Values.callbacks.service.port -}}
{{- end -}}
{{- end -}}

{{/* The simulator's variable holding one insurer's callback secret: OSAGO_SIM_CALLBACK_SECRET_<ID>. */}}
{{- define "osago.simCallbackSecretVariable" -}}
{{- printf "OSAGO_SIM_CALLBACK_SECRET_%s" (regexReplaceAll "[^A-Z0-9]" (upper .) "_") -}}
{{- end -}}

{{/* The fully qualified DNS name of a Service of this release; (dict "ctx" $ "service" NAME). */}}
{{- define "osago.serviceFqdn" -}}
{{- printf "%s.%s.svc.%s" .service .ctx.Release.Namespace .ctx.Values.clusterDomain -}}
{{- end -}}

{{- define "osago.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "osago.labels" -}}
helm.sh/chart: {{ include "osago.chart" . }}
app.kubernetes.io/name: {{ include "osago.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: osago
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component; (dict "ctx" $ "component" "aggregator"). */}}
{{- define "osago.selectorLabels" -}}
app.kubernetes.io/name: {{ include "osago.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Selector labels of one insurer's gateway pods; (dict "ctx" $ "id" "alfa"). */}}
{{- define "osago.gatewaySelectorLabels" -}}
{{ include "osago.selectorLabels" (dict "ctx" .ctx "component" "gateway") }}
osago/insurer: {{ .id }}
{{- end -}}

{{/* metadata.annotations of every resource, when commonAnnotations has any. */}}
{{- define "osago.annotations" -}}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The image of the osago services. */}}
{{- define "osago.image" -}}
{{- include "osago.imageRef" (dict "image" .Values.image "tag" .Chart.AppVersion) -}}
{{- end -}}

{{- define "osago.envoyImage" -}}
{{- include "osago.imageRef" (dict "image" .Values.envoy.image "tag" "") -}}
{{- end -}}

{{/* registry/repository:tag@digest from an image block; (dict "image" IMAGE "tag" DEFAULT_TAG). */}}
{{- define "osago.imageRef" -}}
{{- $repository := .image.repository -}}
{{- if .image.registry -}}
{{- $repository = printf "%s/%s" .image.registry .image.repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (toString (default .tag .image.tag)) -}}
{{- end -}}
{{- end -}}

{{- define "osago.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "osago.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Pod spec lines shared by every osago pod: service account, pull secrets, no service links (they
would inject variables such as OSAGO_SIM_PORT=tcp://… for a Service named osago-sim), the pod
security context.
*/}}
{{- define "osago.podCommon" -}}
serviceAccountName: {{ include "osago.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{/*
Scheduling of one component: nodeSelector, tolerations, affinity, priority class, and the
topology spread (the component's own list, else the chart's soft spread over zones and nodes).
Call with (dict "ctx" $ "values" .Values.aggregator "selector" SELECTOR_LABELS_YAML).
*/}}
{{- define "osago.scheduling" -}}
{{- $v := .values -}}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml $v.topologySpreadConstraints | nindent 2 }}
{{- else if .ctx.Values.topologySpread.enabled }}
topologySpreadConstraints:
  {{- range .ctx.Values.topologySpread.topologyKeys }}
  - maxSkew: {{ $.ctx.Values.topologySpread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $.ctx.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- $.selector | nindent 8 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
A probe from its values ({enabled, initialDelaySeconds, periodSeconds, timeoutSeconds,
failureThreshold, successThreshold}) and its handler; (dict "probe" VALUES "handler" DICT).
*/}}
{{- define "osago.probe" -}}
{{- toYaml .handler }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
successThreshold: {{ .probe.successThreshold }}
{{- end -}}

{{/* The writable /tmp of every osago container (the root filesystem is read-only). */}}
{{- define "osago.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "osago.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{/*
Environment every osago service reads: the metrics endpoint (none without the variable), the log format, and the standard
OpenTelemetry variables when traces are exported. Call with
(dict "ctx" $ "service" "osago-aggregator" "attributes" (dict "osago.insurer" "alfa")).
*/}}
{{- define "osago.commonEnv" -}}
{{- $v := .ctx.Values -}}
{{- if $v.metrics.enabled }}
- name: OSAGO_METRICS_PORT
  value: {{ $v.metrics.port | quote }}
- name: OSAGO_METRICS_HOST
  value: "0.0.0.0"
{{- end }}
- name: OSAGO_LOG_FORMAT
  value: {{ $v.observability.logFormat | quote }}
- name: OSAGO_LOG_LEVEL
  value: {{ $v.observability.logLevel | quote }}
{{- if $v.observability.otlpEndpoint }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $v.observability.otlpEndpoint | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ .service | quote }}
{{- $attributes := list "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.pod.name=$(POD_NAME)" "service.instance.id=$(POD_NAME)" (printf "service.namespace=%s" .ctx.Release.Name) }}
{{- $extra := merge (dict) (default (dict) .attributes) $v.observability.resourceAttributes }}
{{- range $key := keys $extra | sortAlpha }}
{{- $attributes = append $attributes (printf "%s=%s" $key (toString (get $extra $key))) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attributes | quote }}
{{- end }}
{{- end -}}

{{/* OSAGO_REDIS_URL from the existing Secret, when one is named. */}}
{{- define "osago.redisEnv" -}}
{{- if .Values.redis.existingSecret }}
- name: OSAGO_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- end }}
{{- end -}}

{{- define "osago.postgresEnv" -}}
{{- if .Values.postgres.existingSecret }}
- name: OSAGO_POSTGRES_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.postgres.existingSecret }}
      key: {{ .Values.postgres.existingSecretKey }}
{{- end }}
{{- end -}}

{{/*
metadata.annotations of a pod template: Prometheus's scrape annotations (the common convention)
when enabled, then the component's own; (dict "ctx" $ "extra" .Values.aggregator.podAnnotations).
*/}}
{{- define "osago.podAnnotations" -}}
{{- $annotations := dict -}}
{{- if and .ctx.Values.metrics.enabled .ctx.Values.metrics.scrapeAnnotations -}}
{{- $_ := set $annotations "prometheus.io/scrape" "true" -}}
{{- $_ := set $annotations "prometheus.io/port" (toString .ctx.Values.metrics.port) -}}
{{- $_ := set $annotations "prometheus.io/path" "/metrics" -}}
{{- end -}}
{{- $annotations = mergeOverwrite $annotations (default (dict) .extra) -}}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
One insurer's settings: gateway.defaults overlaid with the insurer's own entry. Returns YAML; use
with fromYaml.
*/}}
{{- define "osago.insurerConfig" -}}
{{- include "osago.overlay" (dict "base" .ctx.Values.gateway.defaults "over" .insurer) -}}
{{- end -}}

{{/*
`over` laid on `base`: maps merge key by key, anything else in `over` wins, zero and empty values
included (sprig's mergeOverwrite would keep the base's value for a 0, "" or []). Returns YAML.
*/}}
{{- define "osago.overlay" -}}
{{- $out := deepCopy .base -}}
{{- range $key, $value := .over -}}
{{- $current := get $out $key -}}
{{- if and (kindIs "map" $value) (kindIs "map" $current) -}}
{{- $_ := set $out $key (include "osago.overlay" (dict "base" $current "over" $value) | fromYaml) -}}
{{- else -}}
{{- $_ := set $out $key $value -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* The insurer's API base URL: its own, else the in-cluster simulator's page for it. */}}
{{- define "osago.insurerBaseUrl" -}}
{{- if .insurer.baseUrl -}}
{{- .insurer.baseUrl -}}
{{- else -}}
{{- $sim := include "osago.componentName" (dict "ctx" .ctx "component" "sim") -}}
{{- printf "http://%s:%v/insurers/%s" (include "osago.serviceFqdn" (dict "ctx" .ctx "service" $sim)) .ctx.Values.sim.port .insurer.id -}}
{{- end -}}
{{- end -}}

{{/* Ids of the insurers the simulator plays: those without a base URL. */}}
{{- define "osago.simulatedInsurers" -}}
{{- $ids := list -}}
{{- range .Values.insurers -}}
{{- if not .baseUrl -}}
{{- $ids = append $ids .id -}}
{{- end -}}
{{- end -}}
{{- join "," $ids -}}
{{- end -}}

{{/*
OSAGO_GATEWAYS: "id:Display Name=dns:///<gateway headless Service>:<port>" for every insurer, in
the order of the values list. The dns:/// target resolves to every ready replica of the gateway.
*/}}
{{- define "osago.gatewaysEnv" -}}
{{- $items := list -}}
{{- range .Values.insurers -}}
{{- $service := include "osago.gatewayHeadlessName" (dict "ctx" $ "id" .id) -}}
{{- $fqdn := include "osago.serviceFqdn" (dict "ctx" $ "service" $service) -}}
{{- $items = append $items (printf "%s:%s=dns:///%s:%v" .id .name $fqdn $.Values.gateway.grpcPort) -}}
{{- end -}}
{{- join "," $items -}}
{{- end -}}

{{/* The aggregator's headless Service as a gRPC target: every ready aggregator pod. */}}
{{- define "osago.aggregatorHeadlessTarget" -}}
{{- $service := printf "%s-headless" (include "osago.componentName" (dict "ctx" . "component" "aggregator")) -}}
{{- printf "dns:///%s:%v" (include "osago.serviceFqdn" (dict "ctx" . "service" $service)) .Values.aggregator.grpcPort -}}
{{- end -}}

{{/*
envoy.yaml for this release: files/envoy.yaml (a copy of the repository's envoy/envoy.yaml, kept
equal by `make test`) with its `# @slot` lines filled the way osago's own renderer fills them:
the value on the line is replaced by its JSON. Every slot must get a value and every value must
have exactly one slot, so a new slot in envoy.yaml fails the chart instead of shipping a default.
*/}}
{{- define "osago.envoyConfig" -}}
{{- $v := .Values -}}
{{- $aggregator := printf "%s-headless" (include "osago.componentName" (dict "ctx" . "component" "aggregator")) -}}
{{- $bridge := include "osago.componentName" (dict "ctx" . "component" "web-bridge") -}}
{{- $origins := list -}}
{{- range $v.envoy.allowedOrigins -}}
{{- $origins = append $origins (dict "exact" .) -}}
{{- end -}}
{{- range $v.envoy.allowedOriginRegexes -}}
{{- $origins = append $origins (dict "safe_regex" (dict "regex" .)) -}}
{{- end -}}
{{- /* `index` of a missing key is nil, which the slot renders as JSON null: plaintext. */ -}}
{{- $listenerTls := index (dict) "none" -}}
{{- if $v.envoy.tls.existingSecret -}}
{{- $listenerTls = include "osago.envoyListenerTls" . | fromJson -}}
{{- end -}}
{{- $aggregatorTls := index (dict) "none" -}}
{{- if $v.tls.enabled -}}
{{- $aggregatorTls = include "osago.envoyAggregatorTls" . | fromJson -}}
{{- end -}}
{{- $slots := dict
  "admin_port" (int $v.envoy.adminPort)
  "listen_host" "0.0.0.0"
  "listen_port" (int $v.envoy.containerPort)
  "aggregator_endpoints" (list (dict "endpoint" (dict "address" (dict "socket_address" (dict "address" (include "osago.serviceFqdn" (dict "ctx" . "service" $aggregator)) "port_value" (int $v.aggregator.grpcPort))))))
  "web_bridge_host" (include "osago.serviceFqdn" (dict "ctx" . "service" $bridge))
  "web_bridge_port" (int $v.webBridge.port)
  "allowed_origins" $origins
  "ratelimit_max_tokens" (int $v.envoy.rateLimit.maxTokens)
  "ratelimit_tokens_per_fill" (int $v.envoy.rateLimit.tokensPerFill)
  "ratelimit_fill_interval" (printf "%.3fs" (float64 $v.envoy.rateLimit.fillIntervalSeconds))
  "listener_tls" $listenerTls
  "aggregator_tls" $aggregatorTls
-}}
{{- $text := .Files.Get "files/envoy.yaml" -}}
{{- range $found := regexFindAll "(?m)[ \\t]+#[ \\t]*@[a-z_]+[ \\t]*$" $text -1 -}}
{{- $name := regexReplaceAll "^[ \\t]+#[ \\t]*@([a-z_]+)[ \\t]*$" $found "${1}" -}}
{{- if not (hasKey $slots $name) -}}
{{- fail (printf "files/envoy.yaml has a slot @%s the chart does not fill" $name) -}}
{{- end -}}
{{- end -}}
{{- range $name := keys $slots | sortAlpha -}}
{{- $pattern := printf "(?m)^([^#\\n]*?:[ \\t]+)[^\\n]*?([ \\t]+#[ \\t]*@%s[ \\t]*)$" $name -}}
{{- if ne (len (regexFindAll $pattern $text -1)) 1 -}}
{{- fail (printf "files/envoy.yaml must have exactly one slot @%s" $name) -}}
{{- end -}}
{{- $json := get $slots $name | toJson | replace "$" "$$" -}}
{{- $text = regexReplaceAll $pattern $text (printf "${1}%s${2}" $json) -}}
{{- end -}}
{{- $text -}}
{{- end -}}

{{/* Envoy's HTTPS for browsers (envoy.tls.existingSecret), as JSON. */}}
{{- define "osago.envoyListenerTls" -}}
{{- $files := dict "certificate_chain" (dict "filename" "/etc/envoy-tls/public/tls.crt") "private_key" (dict "filename" "/etc/envoy-tls/public/tls.key") -}}
{{- $context := dict "alpn_protocols" (list "h2" "http/1.1") "tls_params" (dict "tls_minimum_protocol_version" "TLSv1_2") "tls_certificates" (list $files) -}}
{{- dict "name" "envoy.transport_sockets.tls" "typed_config" (dict "@type" "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext" "common_tls_context" $context) | toJson -}}
{{- end -}}

{{/* Envoy's mTLS toward the aggregators (tls.enabled), as JSON. */}}
{{- define "osago.envoyAggregatorTls" -}}
{{- $files := dict "certificate_chain" (dict "filename" "/etc/envoy-tls/upstream/tls.crt") "private_key" (dict "filename" "/etc/envoy-tls/upstream/tls.key") -}}
{{- $context := dict "alpn_protocols" (list "h2") "tls_certificates" (list $files) "validation_context" (dict "trusted_ca" (dict "filename" "/etc/envoy-tls/upstream/ca.crt")) -}}
{{- dict "name" "envoy.transport_sockets.tls" "typed_config" (dict "@type" "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext" "common_tls_context" $context "sni" .Values.tls.aggregatorServerName) | toJson -}}
{{- end -}}

{{/* Refuses values that would render a broken mesh, each with the value to fix. */}}
{{- define "osago.validateValues" -}}
{{- $messages := list -}}
{{- $v := .Values -}}
{{- $store := and $v.postgres.existingSecret $v.redis.existingSecret -}}
{{- if and (or $v.postgres.existingSecret $v.redis.existingSecret) (not $store) -}}
{{- $messages = append $messages "postgres.existingSecret and redis.existingSecret: the aggregator needs both (shared sessions in Postgres, their events in Redis) or neither (one replica keeping sessions in memory)" -}}
{{- end -}}
{{- if and (not $store) (or (gt (int $v.aggregator.replicaCount) 1) $v.aggregator.autoscaling.enabled) -}}
{{- $messages = append $messages "aggregator.replicaCount > 1 or aggregator.autoscaling.enabled: several aggregators share sessions through Postgres and Redis; set postgres.existingSecret and redis.existingSecret" -}}
{{- end -}}
{{- if and $v.aggregator.autoscaling.enabled (not (dig "requests" "cpu" "" $v.aggregator.resources)) -}}
{{- $messages = append $messages "aggregator.autoscaling.enabled: the HPA scales on CPU utilisation, which needs aggregator.resources.requests.cpu" -}}
{{- end -}}
{{- if le (float64 $v.aggregator.terminationGracePeriodSeconds) (float64 $v.aggregator.drainGraceSeconds) -}}
{{- $messages = append $messages (printf "aggregator.terminationGracePeriodSeconds (%v) must exceed aggregator.drainGraceSeconds (%v), or a draining aggregator is killed mid-session" $v.aggregator.terminationGracePeriodSeconds $v.aggregator.drainGraceSeconds) -}}
{{- end -}}
{{- if lt (float64 $v.aggregator.drainGraceSeconds) (float64 $v.aggregator.sessionLimitSeconds) -}}
{{- $messages = append $messages (printf "aggregator.drainGraceSeconds (%v) must be at least aggregator.sessionLimitSeconds (%v): a lone aggregator finishes its sessions before it exits" $v.aggregator.drainGraceSeconds $v.aggregator.sessionLimitSeconds) -}}
{{- end -}}
{{- $headless := printf "%s-aggregator-headless" (include "osago.fullname" .) -}}
{{- if gt (len $headless) 63 -}}
{{- $messages = append $messages (printf "the Service name %s is longer than 63 characters; use a shorter release name or fullnameOverride" $headless) -}}
{{- end -}}
{{- if not $v.insurers -}}
{{- $messages = append $messages "insurers: list at least one insurer" -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $i, $insurer := $v.insurers -}}
{{- $cfg := include "osago.insurerConfig" (dict "ctx" $ "insurer" $insurer) | fromYaml -}}
{{- if hasKey $seen $insurer.id -}}
{{- $messages = append $messages (printf "insurers[%d].id: %q is listed twice" $i $insurer.id) -}}
{{- end -}}
{{- $_ := set $seen $insurer.id true -}}
{{- if not (has $cfg.dialect (list "rest" "calc" "push")) -}}
{{- $messages = append $messages (printf "insurers[%d].dialect: %q is not a dialect the gateway speaks (rest, calc, push)" $i $cfg.dialect) -}}
{{- end -}}
{{- if eq $cfg.dialect "push" -}}
{{- if not $v.callbacks.existingSecret -}}
{{- $messages = append $messages (printf "callbacks.existingSecret: %q calls back (dialect push); name the Secret holding its callback secret under the key %q" $insurer.id $insurer.id) -}}
{{- end -}}
{{- if and $insurer.baseUrl (not $v.callbacks.publicBaseUrl) -}}
{{- $messages = append $messages (printf "callbacks.publicBaseUrl: %q calls back (dialect push) from outside the cluster; set the public URL it reaches the gateways at" $insurer.id) -}}
{{- end -}}
{{- $callbacks := printf "%s-gw-%s-callbacks" (include "osago.fullname" $) $insurer.id -}}
{{- if gt (len $callbacks) 63 -}}
{{- $messages = append $messages (printf "insurers[%d].id: %q makes the Service name %s longer than 63 characters; use a shorter id or fullnameOverride" $i $insurer.id $callbacks) -}}
{{- end -}}
{{- end -}}
{{- $long := printf "%s-gw-%s-headless" (include "osago.fullname" $) $insurer.id -}}
{{- if gt (len $long) 63 -}}
{{- $messages = append $messages (printf "insurers[%d].id: %q makes the Service name %s longer than 63 characters; use a shorter id or fullnameOverride" $i $insurer.id $long) -}}
{{- end -}}
{{- if and (not $insurer.baseUrl) (not $v.sim.enabled) -}}
{{- $messages = append $messages (printf "insurers[%d].baseUrl: required for %q (only the demo simulator, sim.enabled, answers for insurers without one)" $i $insurer.id) -}}
{{- end -}}
{{- if and $insurer.baseUrl $v.networkPolicy.enabled (not $cfg.egress.cidrs) -}}
{{- $messages = append $messages (printf "insurers[%d].egress.cidrs: with networkPolicy.enabled the gateway of %q reaches only these address ranges of its insurer's API; list them" $i $insurer.id) -}}
{{- end -}}
{{- if and (gt (int $cfg.replicas) 1) (not $v.redis.existingSecret) -}}
{{- $messages = append $messages (printf "insurers[%d].replicas > 1: the replicas of %q share the insurer's quota through Redis; set redis.existingSecret (each replica would otherwise allow the whole quota)" $i $insurer.id) -}}
{{- end -}}
{{- end -}}
{{- if and $v.envoy.enabled (not (or $v.envoy.allowedOrigins $v.envoy.allowedOriginRegexes)) -}}
{{- $messages = append $messages "envoy.allowedOrigins / envoy.allowedOriginRegexes: list at least one browser origin" -}}
{{- end -}}
{{- if and $v.tls.enabled (not $v.accessTokens.existingSecret) -}}
{{- $messages = append $messages "accessTokens.existingSecret: with tls.enabled every aggregator needs the same access-token keys (OSAGO_ACCESS_TOKEN_KEYS) from a Secret" -}}
{{- end -}}
{{- if and $v.tls.enabled (not (and $v.tls.caSecret $v.tls.secrets.aggregator $v.tls.secrets.gateway $v.tls.secrets.webBridge $v.tls.secrets.envoy)) -}}
{{- $messages = append $messages "tls.caSecret and tls.secrets.*: with tls.enabled every service needs its certificate Secret and the CA" -}}
{{- end -}}
{{- if and $v.jwt.enabled (not $v.jwt.jwksSecret) -}}
{{- $messages = append $messages "jwt.jwksSecret: the JWT port needs the JWKS of the signing keys" -}}
{{- end -}}
{{- if and $v.jwt.enabled (not $v.tls.enabled) -}}
{{- $messages = append $messages "jwt.enabled: bearer tokens travel only over TLS; set tls.enabled" -}}
{{- end -}}
{{- if and $v.metrics.podMonitor.enabled (not $v.metrics.enabled) -}}
{{- $messages = append $messages "metrics.podMonitor.enabled: needs metrics.enabled (the services serve no metrics port otherwise)" -}}
{{- end -}}
{{- if $messages -}}
{{- printf "\nVALUES VALIDATION:\n  - %s" (join "\n  - " $messages) | fail -}}
{{- end -}}
{{- end -}}

{{/*
A PodDisruptionBudget; (dict "ctx" $ "name" NAME "component" COMPONENT "selector" LABELS_YAML
"pdb" {minAvailable, maxUnavailable}).
*/}}
{{- define "osago.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "osago.labels" .ctx | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
  {{- include "osago.annotations" .ctx | nindent 2 }}
spec:
  {{- if ne (toString .pdb.minAvailable) "" }}
  minAvailable: {{ .pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- .selector | nindent 6 }}
{{- end -}}

{{/* NetworkPolicy pieces. A peer: this release's pods of one component; (dict "ctx" $ "component" C). */}}
{{- define "osago.np.componentPeer" -}}
- podSelector:
    matchLabels:
      {{- include "osago.selectorLabels" . | nindent 6 }}
{{- end -}}

{{/* Egress to DNS (UDP and TCP 53). */}}
{{- define "osago.np.dnsEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
  {{- with .Values.networkPolicy.dns.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* Egress to a TCP port of some peers (none listed: any address); (dict "to" PEERS "port" PORT). */}}
{{- define "osago.np.portEgress" -}}
- ports:
    - port: {{ .port }}
      protocol: TCP
  {{- with .to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* Egress to the OTLP collector, when traces are exported. */}}
{{- define "osago.np.otlpEgress" -}}
{{- if .Values.observability.otlpEndpoint }}
{{ include "osago.np.portEgress" .Values.networkPolicy.otlp }}
{{- end }}
{{- end -}}

{{/* Ingress to the metrics port, from networkPolicy.metricsFrom (none listed: anyone). */}}
{{- define "osago.np.metricsIngress" -}}
{{- if .Values.metrics.enabled }}
- ports:
    - port: metrics
      protocol: TCP
  {{- with .Values.networkPolicy.metricsFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
TLS of one osago service (osago_common.tls): its certificate from its kubernetes.io/tls Secret and
the CA, mounted at /etc/osago/tls; or, with tls.enabled false, the loud dev mode.
(dict "ctx" $ "secret" .Values.tls.secrets.aggregator).
*/}}
{{- define "osago.tlsEnv" -}}
{{- if .ctx.Values.tls.enabled }}
- name: OSAGO_TLS_CERT
  value: /etc/osago/tls/tls.crt
- name: OSAGO_TLS_KEY
  value: /etc/osago/tls/tls.key
- name: OSAGO_TLS_CA
  value: /etc/osago/tls/ca.crt
{{- else }}
- name: OSAGO_DEV_INSECURE
  value: "true"
{{- end }}
{{- end -}}

{{- define "osago.tlsVolumeMount" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/osago/tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* The service's certificate and key and the CA, in one directory: (dict "ctx" $ "secret" name). */}}
{{- define "osago.tlsVolume" -}}
{{- if .ctx.Values.tls.enabled }}
- name: tls
  projected:
    defaultMode: 0440
    sources:
      - secret:
          name: {{ .secret }}
          items:
            - key: tls.crt
              path: tls.crt
            - key: tls.key
              path: tls.key
      - secret:
          name: {{ .ctx.Values.tls.caSecret }}
          items:
            - key: {{ .ctx.Values.tls.caSecretKey }}
              path: ca.crt
{{- end }}
{{- end -}}

{{/* The port kubelet's gRPC probes use: the plaintext health port under TLS, else the service's. */}}
{{- define "osago.probePort" -}}
{{- ternary .ctx.Values.tls.healthPort .port .ctx.Values.tls.enabled -}}
{{- end -}}
