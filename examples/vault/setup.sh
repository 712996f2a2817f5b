#!/bin/sh
# Prepares a Vault server for tokenagent (SPEC §6 layout) and seeds a demo site:
#
#   - KV version 2 at "secret" (enabled, or upgraded from version 1, when needed);
#   - the least-privilege policy "tokenagent" from tokenagent-policy.hcl beside this script;
#   - an AppRole "tokenagent" with that policy, role id "tokenagent-demo"; its role id and a new
#     secret id are written to $TOKENAGENT_SECRETS_DIR (default: .secrets/ beside this script,
#     mode 0600), where tokenagent.yaml reads them;
#   - the demo site "demo": an Auth Token key, a Server API Token key "k1" and a Browser API
#     Token "pub1" (records that already exist are left alone, so a re-run rotates nothing).
#
# Usage (with a dev server: vault server -dev -dev-root-token-id=root):
#
#   VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=root examples/vault/setup.sh
#
# The vault CLI is $VAULT_BIN, else `vault` on PATH, else the binary vault/devserver/build.sh
# builds (${TOKENAGENT_VAULT_BIN:-$HOME/.cache/tokenagent/vault-1.21.1}). No secret is printed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
: "${VAULT_ADDR:?set VAULT_ADDR to the Vault server, for example http://127.0.0.1:8200}"
: "${VAULT_TOKEN:?set VAULT_TOKEN to a token allowed to manage mounts, policies and auth methods}"
export VAULT_ADDR VAULT_TOKEN
secrets=${TOKENAGENT_SECRETS_DIR:-$here/.secrets}
role_id=${TOKENAGENT_ROLE_ID:-tokenagent-demo}

if [ -n "${VAULT_BIN:-}" ]; then
	vault=$VAULT_BIN
elif command -v vault >/dev/null 2>&1; then
	vault=$(command -v vault)
else
	vault=${TOKENAGENT_VAULT_BIN:-${HOME:-}/.cache/tokenagent/vault-1.21.1}
fi
if [ ! -x "$vault" ]; then
	echo "setup.sh: no vault CLI found (set VAULT_BIN, put vault on PATH, or run vault/devserver/build.sh)" >&2
	exit 1
fi

say() { echo "setup.sh: $*"; }
random() { head -c "$1" /dev/urandom | base64 | tr -d '\n'; }

# KV version 2 at secret/.
mount_json=$("$vault" read -format=json sys/mounts/secret 2>/dev/null || true)
if [ -z "$mount_json" ]; then
	say "enabling KV version 2 at secret/"
	"$vault" secrets enable -path=secret -version=2 kv >/dev/null
elif ! printf '%s' "$mount_json" | tr -d ' \n' | grep -q '"version":"2"'; then
	say "upgrading secret/ to KV version 2"
	"$vault" kv enable-versioning secret >/dev/null
	sleep 1 # the upgrade runs in the background
else
	say "secret/ is already KV version 2"
fi

say "writing policy tokenagent from $here/tokenagent-policy.hcl"
"$vault" policy write tokenagent "$here/tokenagent-policy.hcl" >/dev/null

if ! "$vault" auth list -format=json | tr -d ' \n' | grep -q '"approle/":'; then
	say "enabling the AppRole auth method"
	"$vault" auth enable approle >/dev/null
fi
say "writing AppRole tokenagent (role id $role_id)"
"$vault" write auth/approle/role/tokenagent \
	token_policies=tokenagent token_ttl=1h token_max_ttl=24h secret_id_ttl=0 >/dev/null
"$vault" write auth/approle/role/tokenagent/role-id role_id="$role_id" >/dev/null

mkdir -p "$secrets"
chmod 700 "$secrets"
umask 077
"$vault" read -field=role_id auth/approle/role/tokenagent/role-id >"$secrets/role-id"
"$vault" write -f -field=secret_id auth/approle/role/tokenagent/secret-id >"$secrets/secret-id"
say "wrote $secrets/role-id and $secrets/secret-id"

# put_new PATH JSON: writes the record (check-and-set 0) unless it exists.
put_new() {
	if "$vault" kv metadata get -mount=secret "tokenagent/$1" >/dev/null 2>&1; then
		say "kept secret/tokenagent/$1 (exists)"
		return 0
	fi
	printf '%s' "$2" | "$vault" kv put -mount=secret -cas=0 "tokenagent/$1" - >/dev/null
	say "wrote secret/tokenagent/$1"
}

put_new sites/demo/authtoken "{\"key\":\"$(random 32)\"}"
put_new sites/demo/server-tokens/k1 "{\"secret\":\"$(random 24 | tr -dc 'A-Za-z0-9')\",\"restricted_user\":\"\",\"disabled\":false}"
put_new sites/demo/browser-tokens/pub1 '{"origins":["localhost","http://localhost:3000","http://127.0.0.1:3000"]}'

say "done. Start the agent with:"
say "  go run ./agent/cmd/tokenagent serve --config $here/tokenagent.yaml"
say "The server token secret is in Vault: $vault kv get -mount=secret -field=secret tokenagent/sites/demo/server-tokens/k1"
