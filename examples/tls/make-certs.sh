#!/usr/bin/env bash
# Makes the certificates of mutual TLS between Envoy and tokenagent on one machine, with
# openssl: a CA, the agent's serving certificate (for localhost and 127.0.0.1) and Envoy's client
# certificate, all ECDSA P-256, valid for 30 days.
#
#   bash examples/tls/make-certs.sh            # writes examples/tls/certs/
#   bash examples/tls/make-certs.sh DIR        # writes DIR/
#
# Files: ca.crt (both sides trust it), agent.crt/agent.key (tokenagent's grpc_tls, see
# examples/tls/tokenagent.yaml), envoy.crt/envoy.key (the client certificate of the tokenagent
# cluster in examples/envoy.yaml). In Kubernetes, cert-manager makes and renews them instead
# (examples/k8s/certificates.yaml, the Helm chart).
set -euo pipefail
dir=${1:-"$(dirname "$0")/certs"}
mkdir -p "$dir"
cd "$dir"
days=30
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

key ca.key
openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=tokenagent example CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.crt 2>/dev/null

issue() { # name subject extensions
  key "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days "$days" \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue agent "/CN=localhost" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1"
issue envoy "/CN=envoy" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
rm -f ca.srl
echo "wrote $(pwd): ca.crt agent.crt agent.key envoy.crt envoy.key (ca.key: keep it or delete it)"
