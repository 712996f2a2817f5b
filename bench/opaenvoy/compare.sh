#!/bin/bash
# tokenagent and OPA-Envoy side by side: the same ghz client, byte-identical CheckRequests,
# equivalent policies, alternating runs, each server's CPU and peak RSS from /proc. tokenagent
# runs on its own transport over TCP (tokenagent, and with GOMAXPROCS=1: tokenagent-p1) and over
# a Unix socket (tokenagent-uds), and on gRPC-Go's server (tokenagent-grpcgo, grpc_transport:
# grpc-go) for the before and after.
#
#   bench/opaenvoy/compare.sh                 # about 20 minutes; DUR=10s REPS=2 by default
#   OUT=/tmp/cmp DUR=5s REPS=1 bench/opaenvoy/compare.sh
#
# Builds OPA-Envoy v1.14.1-envoy and ghz v0.120.0 (build.sh), tokenagent and the load tool;
# writes keys, requests and Rego policies (load setup, load ghz: one token per kind, the policies
# hold the setup's secret and public key), then for each row starts the servers fresh (OPA-Envoy
# and tokenagent, each with Go's default GOMAXPROCS and with GOMAXPROCS=1: "-p1"; tokenagent also
# over a Unix socket and on gRPC-Go's server), warms them up, and runs ghz against each in turn,
# REPS times, each time also the load tool's own generator (Envoy's client: static windows, no
# BDP pings, two connections) against tokenagent over TCP, over the socket and on gRPC-Go's
# server. Prints the table (load ghz-report) and writes latency.svg.
# Not run by CI (it builds OPA-Envoy); bench/cmd/load's TestGHZRequestsAllowedByBoth checks
# that both servers allow every request it sends, with the policies as written.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$root/bench/results/opaenvoy-$(date -u +%Y%m%dT%H%M%SZ)}
DUR=${DUR:-10s}
REPS=${REPS:-2}
WARM=${WARM:-3000}
cache=$HOME/.cache/tokenagent
opaenvoy=${TOKENAGENT_OPA_ENVOY_BIN:-$cache/opa-envoy-1.14.1}
ghz=${TOKENAGENT_GHZ_BIN:-$cache/ghz-0.120.0}
TA_ADDR=127.0.0.1:9291
TA1_ADDR=127.0.0.1:9293
TAGO_ADDR=127.0.0.1:9295
OPA_ADDR=127.0.0.1:9391
OPA1_ADDR=127.0.0.1:9393
call=envoy.service.auth.v3.Authorization/Check

"$root/bench/opaenvoy/build.sh"
mkdir -p "$out/bin" "$out/runs"
(cd "$root" && go build -o "$out/bin/tokenagent" ./agent/cmd/tokenagent && go build -o "$out/bin/load" ./bench/cmd/load)
load=$out/bin/load
"$load" setup --dir "$out/keys" --grpc-addr $TA_ADDR --http-addr 127.0.0.1:9292 --force >/dev/null
echo "grpc_reflection: true" >>"$out/keys/tokenagent.yaml" # ghz without proto files
"$load" ghz --keys "$out/keys" --out "$out/ghz" --opa-addr $OPA_ADDR

{
	echo "date: $(date -u +%FT%TZ)"
	echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(uname -sr)"
	echo "go: $(go version | cut -d' ' -f3)"
	echo "tokenagent: $(cd "$root" && git describe --always --dirty 2>/dev/null || echo '?')"
	echo "opa-envoy: $("$opaenvoy" version | head -1)"
	echo "ghz: v0.120.0 (go install; the binary calls itself $("$ghz" --version 2>&1))"
	echo "runs: DUR=$DUR REPS=$REPS WARM=$WARM"
} | tee "$out/env.txt"

# id, request, load, request kind, OPA-Envoy policy ("-": tokenagent only), ghz flags, load flags
rows=(
	"anon-c1|allow-all vs anonymous|concurrency 1|anonymous|allow|-c 1|--concurrency 1"
	"anon-c16|allow-all vs anonymous|concurrency 16|anonymous|allow|-c 16|--concurrency 16"
	"authtoken-c16|Auth Token cookie|concurrency 16|authtoken|-|-c 16|--concurrency 16"
	"hs256-c16|HS256 JWT|concurrency 16|hs256|hs256|-c 16|--concurrency 16"
	"rs256-c1|RS256 JWT (same token)|concurrency 1|rs256|rs256|-c 1|--concurrency 1"
	"rs256-c16|RS256 JWT (same token)|concurrency 16|rs256|rs256|-c 16|--concurrency 16"
	"anon-o2k|allow-all vs anonymous|open loop 2,000/s|anonymous|allow|--rps 2000 -c 64|--rate 2000 --concurrency 64"
	"rs256-o2k|RS256 JWT (same token)|open loop 2,000/s|rs256|rs256|--rps 2000 -c 64|--rate 2000 --concurrency 64"
	"anon-o5k|allow-all vs anonymous|open loop 5,000/s|anonymous|allow|--rps 5000 -c 64|--rate 5000 --concurrency 64"
)
: >"$out/rows.tsv"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
peakkib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

wait_ready() { # addr
	for _ in $(seq 100); do
		"$ghz" --insecure --call $call -D "$out/ghz/anonymous.json" -n 1 "$1" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "compare.sh: no server on $1" >&2
	return 1
}

# slim drops ghz's per-call details (megabytes per run) when jq is there; the report ignores them.
slim() { if command -v jq >/dev/null; then jq -c 'del(.details)'; else cat; fi; }

# ghz_run ID SERVER N PID ADDR KIND FLAGS
ghz_run() {
	local base=$out/runs/$1.$2.$3 before after
	before=$(cputicks "$4")
	# shellcheck disable=SC2086
	"$ghz" --insecure --call $call -D "$out/ghz/$6.json" -z "$DUR" $7 -O json "$5" | slim >"$base.json"
	after=$(cputicks "$4")
	echo "$(awk -v a="$after" -v b="$before" -v hz="$hz" 'BEGIN {printf "%.3f", (a - b) / hz}') $(peakkib "$4")" >"$base.proc"
}

# The servers of a row: each with Go's default GOMAXPROCS (the CPUs) and with GOMAXPROCS=1
# (suffix -p1), on their own ports; all of a row's servers run at once, idle but for the one
# under load.
sed -e "s/$TA_ADDR/$TA1_ADDR/" -e "s/127.0.0.1:9292/127.0.0.1:9294/" "$out/keys/tokenagent.yaml" >"$out/keys/tokenagent-p1.yaml"
sock=$(mktemp -d /tmp/ta-cmp-XXXXXX)/ext_authz.sock # a short path: a socket's is at most 107 bytes
TAUDS_ADDR=unix://$sock
sed -e "s|$TA_ADDR|$TAUDS_ADDR|" -e "s/127.0.0.1:9292/127.0.0.1:9296/" "$out/keys/tokenagent.yaml" >"$out/keys/tokenagent-uds.yaml"
{ sed -e "s/$TA_ADDR/$TAGO_ADDR/" -e "s/127.0.0.1:9292/127.0.0.1:9298/" "$out/keys/tokenagent.yaml"; echo "grpc_transport: grpc-go"; } >"$out/keys/tokenagent-grpcgo.yaml"
sed -e "s/$OPA_ADDR/$OPA1_ADDR/" "$out/ghz/opa-config.yaml" >"$out/ghz/opa-config-p1.yaml"

start_opa() { # SUFFIX PORT ENV...: OPA-Envoy with the row's policy; its diagnostics on PORT+1
	env "${@:3}" "$opaenvoy" run --server --addr "127.0.0.1:$2" --diagnostic-addr "127.0.0.1:$(($2 + 1))" --log-level error \
		--config-file "$out/ghz/opa-config$1.yaml" "$out/ghz/opa-$policy.rego" 2>>"$out/opa-envoy.log" &
}

for row in "${rows[@]}"; do
	IFS='|' read -r id request loadname kind policy ghzflags loadflags <<<"$row"
	printf '%s\t%s\t%s\n' "$id" "$request" "$loadname" >>"$out/rows.tsv"
	echo "== $id: $request, $loadname"
	pids=()
	servers=() # name pid addr
	if [ "$policy" != - ]; then
		start_opa "" 9381 GOMAXPROCS="$(nproc)"
		pids+=($!)
		servers+=("opa-envoy $! $OPA_ADDR")
		start_opa -p1 9383 GOMAXPROCS=1
		pids+=($!)
		servers+=("opa-envoy-p1 $! $OPA1_ADDR")
	fi
	loads=() # name pid addr: the servers the load tool measures too
	for ta in "tokenagent tokenagent.yaml $TA_ADDR" "tokenagent-p1 tokenagent-p1.yaml $TA1_ADDR" \
		"tokenagent-uds tokenagent-uds.yaml $TAUDS_ADDR" "tokenagent-grpcgo tokenagent-grpcgo.yaml $TAGO_ADDR"; do
		read -r name file addr <<<"$ta"
		procs=$(nproc)
		[ "$name" = tokenagent-p1 ] && procs=1
		GOMAXPROCS=$procs "$out/bin/tokenagent" serve --config "$out/keys/$file" 2>>"$out/tokenagent.log" &
		pids+=($!)
		servers+=("$name $! $addr")
		[ "$name" = tokenagent-p1 ] || loads+=("$name $! $addr")
	done
	for s in "${servers[@]}"; do
		read -r name pid addr <<<"$s"
		wait_ready "$addr"
		# shellcheck disable=SC2086
		"$ghz" --insecure --call $call -D "$out/ghz/$kind.json" -n "$WARM" $ghzflags "$addr" >/dev/null
	done
	for n in $(seq "$REPS"); do
		for s in "${servers[@]}"; do
			read -r name pid addr <<<"$s"
			ghz_run "$id" "$name" "$n" "$pid" "$addr" "$kind" "$ghzflags"
		done
		for l in "${loads[@]}"; do
			read -r name pid addr <<<"$l"
			# shellcheck disable=SC2086
			"$load" run --keys "$out/keys" --addr "$addr" --pid "$pid" --duration "$DUR" --warmup 1s --quiet \
				--mix "$kind=1" --invalid 0 --tokens 1 $loadflags --out "$out/runs/tmp" >/dev/null
			mv "$out/runs/tmp/result.json" "$out/runs/$id.$name+load.$n.result.json"
			rm -rf "$out/runs/tmp"
		done
	done
	cleanup
	wait 2>/dev/null || true
done
trap - EXIT

"$load" ghz-report --dir "$out" --svg "$out/latency.svg" --plot anon-c16,rs256-c16,anon-o2k \
	--plot-servers "opa-envoy,tokenagent-grpcgo (ghz),tokenagent (ghz),tokenagent (load),tokenagent-uds (load)" \
	--title "ext_authz Check latency by percentile, tokenagent and OPA-Envoy, $(nproc) shared cores" | tee "$out/table.md"
echo "compare.sh: wrote $out/{env.txt,table.md,latency.svg,runs/}"
