#!/bin/sh
# Builds the HashiCorp Vault binary that tokenagent's integration tests run as a dev server
# (see /work/shared/VAULT.md and vault/vaulttest). Idempotent: it builds only when the binary
# is missing, and concurrent runs wait for each other.
#
#   vault/devserver/build.sh            # -> ${TOKENAGENT_VAULT_BIN:-$HOME/.cache/tokenagent/vault-1.21.1}
#
# The build takes about 4 minutes on 2 cores with a warm Go build cache (longer cold) and needs
# the Go module proxy. The binary (~345 MiB) is never committed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
bin=${TOKENAGENT_VAULT_BIN:-${HOME:?HOME is not set}/.cache/tokenagent/vault-1.21.1}

if [ -x "$bin" ]; then
	echo "build.sh: Vault binary already present: $bin"
	exit 0
fi

dir=$(dirname "$bin")
mkdir -p "$dir" || { echo "build.sh: cannot create $dir" >&2; exit 1; }

# One build at a time: a second caller waits for the first and then finds the binary.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$bin.lock"
	if ! flock -n 9; then
		echo "build.sh: another build of $bin is running; waiting for it"
		flock 9
	fi
	if [ -x "$bin" ]; then
		echo "build.sh: Vault binary built by the other run: $bin"
		exit 0
	fi
fi

tmp="$bin.tmp.$$"
trap 'rm -f "$tmp"' EXIT INT TERM
echo "build.sh: building Vault 1.21.1 from $here into $bin (about 4 minutes on 2 cores)"
start=$(date +%s)
if ! (cd "$here" && GOWORK=off GOFLAGS=-mod=readonly go build -trimpath -ldflags='-s -w' -o "$tmp" .); then
	echo "build.sh: go build failed; see the output above" >&2
	exit 1
fi
mv -f "$tmp" "$bin"
trap - EXIT INT TERM
echo "build.sh: built $bin in $(( $(date +%s) - start ))s: $("$bin" version 2>/dev/null || echo '?')"
