#!/bin/sh
# Builds the HashiCorp Vault binary that tokenagent's integration tests run as a dev server
# (see /work/shared/VAULT.md and vault/vaulttest), from this folder's module, once
# (.ci/cached-go-build.sh: idempotent, concurrent runs wait for each other).
#
#   vault/devserver/build.sh            # -> ${TOKENAGENT_VAULT_BIN:-$HOME/.cache/tokenagent/vault-1.21.1}
#
# The build takes about 4 minutes on 2 cores with a warm Go build cache (longer cold) and needs
# the Go module proxy. The binary (~345 MiB) is never committed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../../.ci/cached-go-build.sh" "Vault 1.21.1" "$here" \
	"${TOKENAGENT_VAULT_BIN:-${HOME:?HOME is not set}/.cache/tokenagent/vault-1.21.1}" "about 4 minutes on 2 cores"
