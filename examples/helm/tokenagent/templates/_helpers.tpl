{{/* The release's name for its objects: the release name, unless it already says tokenagent. */}}
{{- define "tokenagent.fullname" -}}
{{- if contains "tokenagent" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-tokenagent" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tokenagent.selectorLabels" -}}
app.kubernetes.io/name: tokenagent
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tokenagent.labels" -}}
{{ include "tokenagent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tokenagent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tokenagent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the agent's pair (and ca.crt for mutual TLS). */}}
{{- define "tokenagent.tlsSecret" -}}
{{- default (printf "%s-tls" (include "tokenagent.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{/* The names the agent's certificate holds: its Service, in every form a client may use. */}}
{{- define "tokenagent.dnsNames" -}}
{{- $svc := include "tokenagent.fullname" . -}}
{{- $ns := .Release.Namespace -}}
- {{ $svc }}
- {{ $svc }}.{{ $ns }}
- {{ $svc }}.{{ $ns }}.svc
- {{ $svc }}.{{ $ns }}.svc.cluster.local
{{- end -}}

{{- define "tokenagent.checkValues" -}}
{{- if not (has .Values.kind (list "DaemonSet" "Deployment")) -}}
{{- fail (printf "kind: %q is not DaemonSet or Deployment" .Values.kind) -}}
{{- end -}}
{{- if and .Values.socket.enabled (ne .Values.kind "DaemonSet") -}}
{{- fail "socket.enabled: a Unix socket on the node serves that node's Envoys: kind must be DaemonSet" -}}
{{- end -}}
{{- if and .Values.socket.enabled .Values.tls.enabled (not .Values.tls.http) -}}
{{- fail "socket.enabled: the socket carries no TLS (its file mode is the access control); set tls.enabled: false, or tls.http: true to keep TLS on the HTTP listener only" -}}
{{- end -}}
{{- if and .Values.tls.enabled .Values.tls.mutual .Values.tls.http -}}
{{- /* allowed: mutual TLS is on the gRPC listener only; the HTTP listener's TLS has no client CA, so the kubelet can probe it */ -}}
{{- end -}}
{{- end -}}

{{/* The Unix socket the agent serves on with socket.enabled, inside the container. */}}
{{- define "tokenagent.socketPath" -}}/run/tokenagent/ext_authz.sock{{- end -}}

{{/* tokenagent.yaml (SPEC §7, §8), built from the values. */}}
{{- define "tokenagent.config" -}}
{{- $v := .Values -}}
{{- $auth := dict "method" "kubernetes" "role" $v.keys.vault.role "token_file" "/var/run/secrets/tokenagent/vault/token" -}}
{{- $vault := dict "address" $v.keys.vault.address "mount" $v.keys.vault.mount "prefix" $v.keys.vault.prefix "timeout" $v.keys.vault.timeout "auth" $auth -}}
{{- $c := dict
    "grpc_addr" (printf "0.0.0.0:%v" $v.service.grpcPort)
    "http_addr" (printf "0.0.0.0:%v" $v.service.httpPort)
    "keys" (dict "source" "vault" "refresh" $v.keys.refresh "max_stale" $v.keys.maxStale "vault" $vault)
    "policies" (dict "cache_dir" "/var/cache/tokenagent")
    "sites" $v.sites -}}
{{- if $v.socket.enabled -}}
{{- $_ := set $c "grpc_addr" (printf "unix://%s" (include "tokenagent.socketPath" .)) -}}
{{- $_ := set $c "grpc_socket_mode" $v.socket.mode -}}
{{- end -}}
{{- if $v.tls.enabled -}}
{{- $tls := dict "cert_file" "/etc/tokenagent/tls/tls.crt" "key_file" "/etc/tokenagent/tls/tls.key" -}}
{{- if $v.tls.http -}}
{{- $_ := set $c "http_tls" (deepCopy $tls) -}}
{{- end -}}
{{- if $v.tls.mutual -}}
{{- $_ := set $tls "client_ca_file" "/etc/tokenagent/tls/ca.crt" -}}
{{- end -}}
{{- if not $v.socket.enabled -}}
{{- $_ := set $c "grpc_tls" $tls -}}
{{- end -}}
{{- end -}}
{{- if $v.grpcReflection -}}
{{- $_ := set $c "grpc_reflection" true -}}
{{- end -}}
{{- if $v.tracing.enabled -}}
{{- $_ := set $c "tracing" (dict "otlp_endpoint" $v.tracing.otlpEndpoint "insecure" $v.tracing.insecure "sample_ratio" $v.tracing.sampleRatio) -}}
{{- end -}}
{{- $c = mergeOverwrite $c (deepCopy $v.config) -}}
{{- toYaml $c -}}
{{- end -}}
