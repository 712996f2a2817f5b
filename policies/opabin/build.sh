#!/bin/sh
# Builds the OPA 1.22.4 command line that tokenagent's Rego tests use (opa build -t wasm, opa
# eval; plugins/opatest finds it), from this folder's module, once (.ci/cached-go-build.sh:
# idempotent, concurrent runs wait for each other).
#
#   policies/opabin/build.sh      # -> ${TOKENAGENT_OPA_BIN:-$HOME/.cache/tokenagent/opa-1.22.4}
#
# About 3 minutes on 2 cores the first time; needs the Go module proxy. Never committed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../../.ci/cached-go-build.sh" "OPA 1.22.4" "$here" \
	"${TOKENAGENT_OPA_BIN:-${HOME:?HOME is not set}/.cache/tokenagent/opa-1.22.4}" "about 3 minutes on 2 cores"
