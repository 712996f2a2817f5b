#!/bin/sh
# Builds the OPA 1.22.4 command line that tokenagent's Rego tests use (opa build -t wasm, opa
# eval): plugins/opatest finds it. Idempotent: it builds only when the binary is missing, and
# concurrent runs wait for each other.
#
#   policies/opabin/build.sh      # -> ${TOKENAGENT_OPA_BIN:-$HOME/.cache/tokenagent/opa-1.22.4}
#
# About 3 minutes on 2 cores the first time; needs the Go module proxy. Never committed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
bin=${TOKENAGENT_OPA_BIN:-${HOME:?HOME is not set}/.cache/tokenagent/opa-1.22.4}

if [ -x "$bin" ]; then
	echo "build.sh: OPA binary already present: $bin"
	exit 0
fi
dir=$(dirname "$bin")
mkdir -p "$dir" || { echo "build.sh: cannot create $dir" >&2; exit 1; }
if command -v flock >/dev/null 2>&1; then
	exec 9>"$bin.lock"
	if ! flock -n 9; then
		echo "build.sh: another build of $bin is running; waiting for it"
		flock 9
	fi
	if [ -x "$bin" ]; then
		echo "build.sh: OPA binary built by the other run: $bin"
		exit 0
	fi
fi
tmp="$bin.tmp.$$"
trap 'rm -f "$tmp"' EXIT INT TERM
echo "build.sh: building OPA 1.22.4 from $here into $bin (a few minutes on 2 cores)"
start=$(date +%s)
if ! (cd "$here" && GOWORK=off GOFLAGS=-mod=readonly go build -trimpath -ldflags='-s -w' -o "$tmp" .); then
	echo "build.sh: go build failed; see the output above" >&2
	exit 1
fi
mv -f "$tmp" "$bin"
trap - EXIT INT TERM
echo "build.sh: built $bin in $(( $(date +%s) - start ))s: $("$bin" version 2>/dev/null | head -1 || echo '?')"
