#!/usr/bin/env bash
# Runs tokenagent on the development config (embedded key file, no Vault), then asks it about
# a few requests the way Envoy would, and stops it. Needs only Go.
#
#   bash examples/dev/demo.sh          # show the agent answering, then stop it
#   bash examples/dev/demo.sh --keep   # leave it running (Ctrl-C to stop)
set -euo pipefail
cd "$(dirname "$0")/../.."
config=examples/dev/tokenagent.yaml
bin=${TMPDIR:-/tmp}/tokenagent-demo
log=$(mktemp)

echo "==> building tokenagent"
go build -o "$bin" ./agent/cmd/tokenagent

# Free ports chosen by the system (:0); the agent logs the addresses it bound.
echo "==> starting: tokenagent serve --config $config --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0"
"$bin" serve --config "$config" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 2>"$log" &
agent=$!
trap 'kill $agent 2>/dev/null; wait $agent 2>/dev/null || true; rm -f "$log"' EXIT
grpc="" http=""
for _ in $(seq 1 200); do
  if ! kill -0 $agent 2>/dev/null; then
    echo "tokenagent did not start:"; cat "$log"; exit 1
  fi
  line=$(grep -m1 '"msg":"tokenagent serving"' "$log" || true)
  if [ -n "$line" ]; then
    grpc=$(printf '%s' "$line" | sed -E 's/.*"grpc":"([^"]+)".*/\1/')
    http=$(printf '%s' "$line" | sed -E 's/.*"http":"([^"]+)".*/\1/')
    break
  fi
  sleep 0.05
done
[ -n "$grpc" ] || { echo "tokenagent did not say where it listens:"; cat "$log"; exit 1; }
echo "==> serving ext_authz on $grpc, /healthz /readyz /metrics on http://$http"
echo "==> /readyz: $(curl -fsS "http://$http/readyz")"

show() { # show TITLE ARGS...: run one check (host localhost unless HOST is set) and print it
  local title=$1 host=${HOST:-localhost}; shift
  echo
  echo "==> $title"
  echo "    tokenagent check --host $host $*" | sed -E 's/(tkn_|[0-9]+_)[^ ]*/\1…/g'
  "$bin" check --addr "$grpc" --host "$host" "$@" | sed 's/^/    /' || true
}

server=$("$bin" mint server --config "$config" --site demo --key k1 --user =alice)
auth=$("$bin" mint authtoken --config "$config" --site demo --user 42)
forged="tkn_k1_$(date +%s)_=alice_$(printf '0%.0s' $(seq 1 64))"

show "anonymous read of an open page: allowed" --path /@api/deki/pages/home
show "Server API Token writing a page: allowed as =alice" --method POST --path /@api/deki/pages/home -H "X-Deki-Token: $server"
show "Auth Token cookie: allowed as user 42 (a spoofed x-auth-user is overwritten, x-auth-admin removed)" \
  --path /@api/deki/site/settings --cookie "authtoken=$auth" -H "x-auth-user: 1" -H "x-auth-admin: true"
show "anonymous write: denied 401 authentication_required" --method POST --path /@api/deki/pages/home
show "forged Server API Token: denied 401 bad_signature" -H "X-Deki-Token: $forged" --path /
HOST=nowhere.example show "unknown host: denied 404 unknown_site" --path /
HOST=trial.localhost show "site in shadow mode: an anonymous write is let through, without identity (enforce would deny it)" \
  --method POST --path /@api/deki/pages/home -H "x-auth-user: 1"
echo
echo "==> shadow-mode would-be denials so far (/metrics):"
curl -fsS "http://$http/metrics" | grep '^tokenagent_shadow_denials_total' | sed 's/^/    /'

if [[ "${1:-}" == "--keep" ]]; then
  echo
  echo "==> tokenagent is serving ext_authz on $grpc and /metrics on http://$http (Ctrl-C stops it)"
  wait $agent
fi
