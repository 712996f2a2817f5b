package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokenagent/tokenagent/agent/config"
)

var checkHelp = helpPage{
	name: "tokenagent check — ask a running agent about one request, as Envoy would",
	synopsis: `tokenagent check [--addr ADDR] [--host HOST] [--method M] [--path PATH] [-H 'Name: value']...
                 [--cookie C] [--body B] [--scheme S] [--json] [--timeout D]
                 [--cacert FILE [--cert FILE --key FILE] [--server-name NAME]]`,
	description: `Sends one ext_authz v3 CheckRequest over gRPC to a running agent and prints the decision: ALLOW
with the headers set upstream (and those removed), or DENY / ANSWER with the status, headers and
body the client would get. --json prints the whole CheckResponse, including the dynamic
metadata (site, kind, user, decision_id).`,
	exitStatus: `0   allowed, or answered by the agent itself (CORS preflight, token exchange).
1   denied.
2   usage error, or the agent could not be reached.`,
	environment: `check reads no environment variables: it talks to the agent, never to Vault, so VAULT_ADDR,
VAULT_TOKEN and VAULT_NAMESPACE do not matter here (they do to serve and mint).`,
	examples: `Example 1 — a Server API Token write, as Envoy would ask:
    tokenagent check --host localhost --method POST --path /@api/deki/pages/home \
        -H "X-Deki-Token: $(tokenagent mint server --config examples/dev/tokenagent.yaml --site demo --key k1 --user 42)"

Example 2 — an anonymous write (denied: 401 authentication_required, exit status 1):
    tokenagent check --host localhost --method POST --path /@api/deki/pages/home

Example 3 — an Auth Token cookie, the answer as JSON:
    tokenagent check --host localhost --cookie "authtoken=$tok" --json

Example 4 — an agent serving mutual TLS (grpc_tls with client_ca_file):
    tokenagent check --addr agent.example.internal:9191 --cacert ca.crt --cert envoy.crt --key envoy.key`,
}

// cmdCheck sends one CheckRequest and prints the decision. Exit code: 0 allowed or answered
// by the agent, 1 denied.
func cmdCheck(args []string, stdout, stderr io.Writer) (int, error) {
	fs := newFlags("check", checkHelp, stderr)
	addr := fs.String("addr", config.DefaultGRPCAddr, "the agent's gRPC address")
	host := fs.String("host", "localhost", "the request's host (:authority)")
	method := fs.String("method", "GET", "the request's method")
	path := fs.String("path", "/", "the request's path, with its query")
	scheme := fs.String("scheme", "https", "the request's scheme")
	headers := fs.StringArrayP("header", "H", nil, "a request header 'Name: value' (repeatable)")
	cookie := fs.String("cookie", "", "the Cookie header")
	body := fs.String("body", "", "the request body (for the token exchange)")
	asJSON := fs.Bool("json", false, "print the CheckResponse as JSON")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	cacert := fs.String("cacert", "", "connect with TLS, trusting the CAs of this PEM file (the agent's grpc_tls)")
	cert := fs.String("cert", "", "the client certificate (PEM) for mutual TLS; needs --key and --cacert")
	key := fs.String("key", "", "the client certificate's private key (PEM)")
	serverName := fs.String("server-name", "", "the name the agent's certificate must hold (default: the host of --addr)")
	if err := parseFlags(fs, args, stderr); err != nil {
		return 2, err
	}
	creds, err := clientCredentials(*cacert, *cert, *key, *serverName)
	if err != nil {
		fmt.Fprintf(stderr, "tokenagent check: %v\n", err)
		return 2, errUsage
	}
	h := map[string]string{}
	for _, hv := range *headers {
		k, v, ok := strings.Cut(hv, ":")
		if !ok {
			fmt.Fprintf(stderr, "tokenagent check: --header %q: want 'Name: value'\n", hv)
			return 2, errUsage
		}
		h[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	if *cookie != "" {
		h["cookie"] = *cookie
	}
	h[":authority"], h[":method"], h[":path"] = *host, *method, *path
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return 2, fmt.Errorf("--addr %s: %v", *addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: *method, Host: *host, Path: *path,
			Scheme: *scheme, Headers: h, Body: *body, Size: int64(len(*body)), Protocol: "HTTP/1.1"}}}}
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
	if err != nil {
		return 2, fmt.Errorf("check %s: %v", *addr, err)
	}
	if *asJSON {
		b, _ := json.MarshalIndent(resp, "", "  ")
		fmt.Fprintln(stdout, string(b))
	} else {
		printDecision(stdout, resp)
	}
	if resp.GetOkResponse() != nil {
		return 0, nil
	}
	if d := resp.GetDeniedResponse(); d != nil {
		if c := d.GetStatus().GetCode(); c == 200 || c == 204 {
			return 0, nil
		}
	}
	return 1, nil
}

func printDecision(w io.Writer, r *authv3.CheckResponse) {
	if ok := r.GetOkResponse(); ok != nil {
		fmt.Fprintln(w, "ALLOW")
		if why := r.GetDynamicMetadata().GetFields()["shadow_reason"].GetStringValue(); why != "" {
			fmt.Fprintf(w, "  shadow mode: enforce would deny (%s); let through without identity\n", why)
		}
		for _, h := range ok.GetHeaders() {
			fmt.Fprintf(w, "  upstream header  %s: %s\n", h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		for _, h := range ok.GetHeadersToRemove() {
			fmt.Fprintf(w, "  removed header   %s\n", h)
		}
		for _, h := range ok.GetResponseHeadersToAdd() {
			fmt.Fprintf(w, "  response header  %s: %s\n", h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		return
	}
	d := r.GetDeniedResponse()
	verdict := "DENY"
	if c := d.GetStatus().GetCode(); c == 200 || c == 204 {
		verdict = "ANSWER"
	}
	fmt.Fprintf(w, "%s %d (gRPC %s)\n", verdict, d.GetStatus().GetCode(), grpcCodeName(r.GetStatus().GetCode()))
	for _, h := range d.GetHeaders() {
		fmt.Fprintf(w, "  header  %s: %s\n", h.GetHeader().GetKey(), h.GetHeader().GetValue())
	}
	if d.GetBody() != "" {
		fmt.Fprintf(w, "  body    %s\n", d.GetBody())
	}
}

func grpcCodeName(c int32) string {
	names := map[int32]string{0: "OK", 3: "INVALID_ARGUMENT", 5: "NOT_FOUND", 7: "PERMISSION_DENIED",
		14: "UNAVAILABLE", 16: "UNAUTHENTICATED"}
	if n, ok := names[c]; ok {
		return n
	}
	return strconv.Itoa(int(c))
}

// clientCredentials are plaintext without --cacert, TLS (at least 1.2) trusting its CAs with
// it, and mutual TLS with --cert and --key as well.
func clientCredentials(cacert, cert, key, serverName string) (credentials.TransportCredentials, error) {
	if cacert == "" {
		if cert != "" || key != "" {
			return nil, errors.New("--cert and --key need --cacert (the agent's CA)")
		}
		return insecure.NewCredentials(), nil
	}
	pem, err := os.ReadFile(cacert)
	if err != nil {
		return nil, fmt.Errorf("--cacert: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--cacert %s: no PEM certificate in it", cacert)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: serverName}
	switch {
	case cert != "" && key != "":
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("--cert/--key: %v", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	case cert != "" || key != "":
		return nil, errors.New("--cert and --key go together")
	}
	return credentials.NewTLS(tc), nil
}
