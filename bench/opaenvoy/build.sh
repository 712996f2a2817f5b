#!/bin/sh
# Builds what bench/opaenvoy/compare.sh runs beside tokenagent, into ~/.cache/tokenagent:
#   opa-envoy-1.14.1   OPA-Envoy v1.14.1-envoy, from this folder's module (its go.sum pins it)
#   ghz-0.120.0        the ghz gRPC load tool v0.120.0 (go install)
# Idempotent: builds only what is missing. A few minutes on 2 cores; needs the Go module proxy.
# Not run by CI.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${HOME:?HOME is not set}/.cache/tokenagent
opaenvoy=${TOKENAGENT_OPA_ENVOY_BIN:-$cache/opa-envoy-1.14.1}
ghz=${TOKENAGENT_GHZ_BIN:-$cache/ghz-0.120.0}
mkdir -p "$cache"

"$here/../../.ci/cached-go-build.sh" "OPA-Envoy v1.14.1-envoy" "$here" "$opaenvoy"
if [ ! -x "$ghz" ]; then
	echo "build.sh: building ghz v0.120.0 into $ghz"
	tmp=$(mktemp -d)
	GOBIN="$tmp" GOWORK=off GOFLAGS= go install github.com/bojand/ghz/cmd/ghz@v0.120.0
	mv -f "$tmp/ghz" "$ghz"
	rmdir "$tmp"
fi
echo "build.sh: $("$opaenvoy" version | head -1) at $opaenvoy; ghz $("$ghz" --version) at $ghz"
