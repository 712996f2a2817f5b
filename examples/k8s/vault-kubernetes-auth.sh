#!/bin/sh
# Sets Vault up for the tokenagent DaemonSet (daemonset.yaml) to log in with Kubernetes auth:
#
#   - KV version 2 at $KV_MOUNT (default secret/), enabled when missing;
#   - the least-privilege policy "tokenagent" from ../vault/tokenagent-policy.hcl;
#   - the kubernetes auth method at $AUTH_MOUNT (default kubernetes/), enabled when missing and
#     configured to check pod tokens with the cluster's API server (TokenReview);
#   - the role "tokenagent": tokens of the service account tokenagent/tokenagent, issued for
#     the audience "vault" (the DaemonSet's projected token), get the policy tokenagent.
#
# Usage, after `kubectl apply -f namespace.yaml -f rbac.yaml` (which makes the reviewer token):
#
#   VAULT_ADDR=https://vault.example.com:8200 VAULT_TOKEN=<admin token> \
#   KUBERNETES_HOST=https://api.cluster.example.com:6443 \
#   examples/k8s/vault-kubernetes-auth.sh
#
# Settings (environment):
#   KUBERNETES_HOST     the API server's URL as Vault reaches it (required)
#   TOKEN_REVIEWER_JWT  the token Vault asks TokenReview with. Default: the Secret
#                       tokenagent/vault-token-reviewer (rbac.yaml), read with kubectl. "none":
#                       Vault runs in the cluster and uses its own service account's token.
#   KUBERNETES_CA_CERT  a file holding the API server's CA. Default: the CA in that Secret when
#                       the token is read from it; none otherwise (Vault's own CA bundle).
#   DISABLE_LOCAL_CA_JWT  "true" when Vault runs in a pod but must not use its own token and CA
#   NAMESPACE, SERVICE_ACCOUNT, ROLE, AUDIENCE  default tokenagent, tokenagent, tokenagent, vault
#   KV_MOUNT, AUTH_MOUNT                        default secret, kubernetes
#   VAULT_BIN           the vault CLI (default: vault on PATH, else the binary
#                       vault/devserver/build.sh builds)
#
# Seed the keys with `vault kv put` (layout: vault/README.md), or see
# examples/vault/setup.sh for a demo site. No secret is printed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
: "${VAULT_ADDR:?set VAULT_ADDR to the Vault server}"
: "${VAULT_TOKEN:?set VAULT_TOKEN to a token allowed to manage mounts, policies and auth methods}"
: "${KUBERNETES_HOST:?set KUBERNETES_HOST to the API server URL as Vault reaches it}"
export VAULT_ADDR VAULT_TOKEN
ns=${NAMESPACE:-tokenagent}
sa=${SERVICE_ACCOUNT:-tokenagent}
role=${ROLE:-tokenagent}
audience=${AUDIENCE:-vault}
kv_mount=${KV_MOUNT:-secret}
auth_mount=${AUTH_MOUNT:-kubernetes}
policy_file=$here/../vault/tokenagent-policy.hcl

if [ -n "${VAULT_BIN:-}" ]; then
	vault=$VAULT_BIN
elif command -v vault >/dev/null 2>&1; then
	vault=$(command -v vault)
else
	vault=${TOKENAGENT_VAULT_BIN:-${HOME:-}/.cache/tokenagent/vault-1.21.1}
fi
if [ ! -x "$vault" ]; then
	echo "vault-kubernetes-auth.sh: no vault CLI found (set VAULT_BIN or put vault on PATH)" >&2
	exit 1
fi

say() { echo "vault-kubernetes-auth.sh: $*"; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 700 "$tmp"

# The reviewer token and CA, into files (never on a command line, where ps would show them).
reviewer=${TOKEN_REVIEWER_JWT:-}
ca_file=${KUBERNETES_CA_CERT:-}
if [ -z "$reviewer" ]; then
	if ! command -v kubectl >/dev/null 2>&1; then
		echo "vault-kubernetes-auth.sh: set TOKEN_REVIEWER_JWT (or \"none\"), or install kubectl to read it from the Secret $ns/vault-token-reviewer" >&2
		exit 1
	fi
	say "reading the reviewer token from the Secret $ns/vault-token-reviewer"
	kubectl -n "$ns" get secret vault-token-reviewer -o 'jsonpath={.data.token}' | base64 -d >"$tmp/reviewer"
	if [ -z "$ca_file" ]; then
		kubectl -n "$ns" get secret vault-token-reviewer -o 'jsonpath={.data.ca\.crt}' | base64 -d >"$tmp/ca.crt"
		ca_file=$tmp/ca.crt
	fi
elif [ "$reviewer" != none ]; then
	printf '%s' "$reviewer" >"$tmp/reviewer"
fi
if [ -f "$tmp/reviewer" ] && [ ! -s "$tmp/reviewer" ]; then
	echo "vault-kubernetes-auth.sh: the reviewer token is empty" >&2
	exit 1
fi

# KV version 2 at $kv_mount/.
if ! "$vault" read -format=json "sys/mounts/$kv_mount" >/dev/null 2>&1; then
	say "enabling KV version 2 at $kv_mount/"
	"$vault" secrets enable -path="$kv_mount" -version=2 kv >/dev/null
fi

say "writing policy tokenagent from $policy_file"
"$vault" policy write tokenagent "$policy_file" >/dev/null

if ! "$vault" auth list -format=json | tr -d ' \n' | grep -q "\"$auth_mount/\":"; then
	say "enabling the kubernetes auth method at $auth_mount/"
	"$vault" auth enable -path="$auth_mount" kubernetes >/dev/null
fi

say "configuring auth/$auth_mount (API server $KUBERNETES_HOST)"
set -- kubernetes_host="$KUBERNETES_HOST" disable_local_ca_jwt="${DISABLE_LOCAL_CA_JWT:-false}"
if [ -f "$tmp/reviewer" ]; then
	set -- "$@" token_reviewer_jwt=@"$tmp/reviewer"
fi
if [ -n "$ca_file" ]; then
	set -- "$@" kubernetes_ca_cert=@"$ca_file"
fi
"$vault" write "auth/$auth_mount/config" "$@" >/dev/null

say "writing role $role (service account $ns/$sa, audience $audience, policy tokenagent)"
"$vault" write "auth/$auth_mount/role/$role" \
	bound_service_account_names="$sa" \
	bound_service_account_namespaces="$ns" \
	audience="$audience" \
	token_policies=tokenagent \
	token_ttl=1h token_max_ttl=24h >/dev/null

say "done: pods of $ns/$sa log in with role $role (keys.vault.auth in configmap.yaml)"
