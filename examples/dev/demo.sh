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
grpc=127.0.0.1:${TOKENAGENT_DEMO_GRPC_PORT:-19191}
http=127.0.0.1:${TOKENAGENT_DEMO_HTTP_PORT:-19192}

echo "==> building tokenagent"
go build -o "$bin" ./agent/cmd/tokenagent

echo "==> starting: tokenagent serve --config $config --grpc-addr $grpc --http-addr $http"
"$bin" serve --config "$config" --grpc-addr "$grpc" --http-addr "$http" --log-level warn &
agent=$!
trap 'kill $agent 2>/dev/null; wait $agent 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://$http/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
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

if [[ "${1:-}" == "--keep" ]]; then
  echo
  echo "==> tokenagent is serving ext_authz on $grpc and /metrics on http://$http (Ctrl-C stops it)"
  wait $agent
fi
