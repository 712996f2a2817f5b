// Package examples_test keeps the examples honest: the Envoy bootstrap loads into Envoy's own
// config types and passes its validation rules, the Kubernetes manifests parse into the real
// Kubernetes types, the nginx config runs in a real nginx in front of a real tokenagent, and
// the client snippets mint tokens a real agent accepts.
package examples_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/exchange"
)

func TestEnvoyBootstrap(t *testing.T) {
	src, err := os.ReadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b := mustLoadBootstrap(t, "envoy.yaml", src)
	p := edgeParts(t, b)
	addr := checkEdge(t, p, exchange.Path).GetSocketAddress()

	// Where the agent is: the default grpc_addr of its config (SPEC §7).
	if got := addr.GetAddress() + ":" + strconv.FormatUint(uint64(addr.GetPortValue()), 10); got != config.DefaultGRPCAddr {
		t.Errorf("tokenagent cluster endpoint = %s, want the agent's default grpc_addr %s", got, config.DefaultGRPCAddr)
	}
	if to := p.extAuthz.GetGrpcService().GetTimeout().AsDuration(); to.Milliseconds() != 250 {
		t.Errorf("ext_authz timeout = %v, want 250ms", to)
	}
	if code := p.extAuthz.GetStatusOnError().GetCode(); code != 503 {
		t.Errorf("status_on_error = %v, want 503 (the agent could not be asked)", code)
	}
	if !p.hcm.GetNormalizePath().GetValue() || !p.hcm.GetMergeSlashes() {
		t.Error("the connection manager must normalise paths and merge slashes, as the agent does")
	}
	// Underscore header names are refused: CGI/WSGI/Rack/PHP upstreams read X_Auth_User as
	// X-Auth-User (SPEC §2a).
	if a := p.hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction(); a != corev3.HttpProtocolOptions_REJECT_REQUEST {
		t.Errorf("headers_with_underscores_action = %v, want REJECT_REQUEST", a)
	}
	if a := b.GetAdmin().GetAddress().GetSocketAddress().GetAddress(); a != "127.0.0.1" {
		t.Errorf("admin listens on %s; keep it on the loopback", a)
	}
}

// TestEnvoyUnixSocket: envoy-socket.yaml is envoy.yaml with the agent's cluster on the node's
// Unix socket (a pipe address, no TLS); an agent serving grpc_addr unix://… answers a check made
// as that cluster says Envoy would.
func TestEnvoyUnixSocket(t *testing.T) {
	src, err := os.ReadFile("envoy-socket.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := edgeParts(t, mustLoadBootstrap(t, "envoy-socket.yaml", src))
	pipe := checkEdge(t, p, exchange.Path).GetPipe()
	if pipe.GetPath() != SocketPath {
		t.Fatalf("the agent's cluster is at %v, want pipe %s", pipe, SocketPath)
	}
	if ts := p.clusters["tokenagent"].GetTransportSocket(); ts != nil {
		t.Errorf("the socket cluster has a transport socket (%s): the socket file's mode is the access control", ts.GetName())
	}
	dev, err := config.Load("dev/tokenagent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "ta-envoy-") // a short path: a socket's is at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	dev.GRPCAddr = "unix://" + filepath.Join(dir, filepath.Base(SocketPath))
	dev.HTTPAddr = "127.0.0.1:0"
	e := daemontest.StartConfig(t, dev, daemontest.Options{KeepAddrs: true})
	resp, err := checkOver(t, e.D.GRPCAddr(), nil) // plaintext h2, as the cluster speaks
	if err != nil || daemontest.Reason(resp) != "allowed" {
		t.Fatalf("a check over the socket: %v %v", daemontest.Reason(resp), err)
	}
}

// SocketPath is where the examples put the agent's Unix socket (envoy-socket.yaml, the Helm
// chart's socket option).
const SocketPath = "/run/tokenagent/ext_authz.sock"

// TestEnvoyLoaderIsStrict proves the loader above catches the mistakes it is there for, so a
// rotting envoy.yaml cannot pass by accident.
func TestEnvoyLoaderIsStrict(t *testing.T) {
	src, err := os.ReadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, old, new, want string }{
		{"misspelt field", "failure_mode_allow: false", "failure_mode_alow: false", "failure_mode_alow"},
		{"unknown extension type", "extensions.filters.http.router.v3.Router", "extensions.filters.http.router.v3.Routr", "Routr"},
		{"invalid inside an Any", "max_request_bytes: 16384", "max_request_bytes: 0", "MaxRequestBytes"},
		{"invalid port", "port_value: 9191", "port_value: 70000", "PortValue"},
		{"duplicate key", "      connect_timeout: 0.25s\n", "      connect_timeout: 0.25s\n      connect_timeout: 1s\n", "already defined"},
		{"wrong enum", "transport_api_version: V3", "transport_api_version: V4", "V4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Count(string(src), tc.old) != 1 {
				t.Fatalf("envoy.yaml should hold %q exactly once", tc.old)
			}
			_, err := loadBootstrap([]byte(strings.Replace(string(src), tc.old, tc.new, 1)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("loading with %q: %v, want an error about %q", tc.new, err, tc.want)
			}
		})
	}
}

// TestEnvoyExchangeBody sends the agent the CheckRequests Envoy makes for the exchange route
// with the route's own buffer settings (read from envoy.yaml): the body cut at
// max_request_bytes, in raw_body when pack_as_bytes, size holding the bytes received and the
// x-envoy-auth-partial-body header. An oversized body is answered 413 body_too_large, a small
// bad one 401, both by the agent itself (never allowed upstream).
func TestEnvoyExchangeBody(t *testing.T) {
	src, err := os.ReadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := edgeParts(t, mustLoadBootstrap(t, "envoy.yaml", src))
	var wb *extauthzv3.BufferSettings
	for _, r := range p.routes {
		if r.GetMatch().GetPath() == exchange.Path {
			var per extauthzv3.ExtAuthzPerRoute
			unpack(t, r.GetTypedPerFilterConfig()[extAuthzName], &per)
			wb = per.GetCheckSettings().GetWithRequestBody()
		}
	}
	if wb == nil {
		t.Fatal("no body settings on the exchange route")
	}
	ag := startAgent(t, docsSiteConfig(t))
	for _, tc := range []struct {
		name   string
		size   int
		status int
		reason string
	}{
		{"over 16 KiB", 20 << 10, 413, "body_too_large"},
		{"one byte over", 16<<10 + 1, 413, "body_too_large"},
		{"not an id_token", 9, 401, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(strings.Repeat("a", tc.size))
			sent := body[:min(len(body), int(wb.GetMaxRequestBytes()))]
			req := daemontest.CheckRequest("POST", docsHost, exchange.Path, map[string]string{
				"content-type": "text/plain", "content-length": strconv.Itoa(len(body)),
				"x-envoy-auth-partial-body": strconv.FormatBool(len(sent) != len(body))})
			h := req.GetAttributes().GetRequest().GetHttp()
			h.Size = int64(len(body))
			if wb.GetPackAsBytes() {
				h.RawBody = sent
			} else {
				h.Body = string(sent)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := ag.Client.Check(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			d := resp.GetDeniedResponse()
			if d == nil {
				t.Fatalf("the exchange was allowed upstream: %v", resp)
			}
			if int(d.GetStatus().GetCode()) != tc.status || !strings.Contains(d.GetBody(), `"error":"`+tc.reason) {
				t.Errorf("status %d body %s, want %d %s", d.GetStatus().GetCode(), d.GetBody(), tc.status, tc.reason)
			}
		})
	}
}
