package examples_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/config"
)

// runningAgent is a real tokenagent daemon in this process, on free loopback ports, with a gRPC
// client connected to it the way Envoy is.
type runningAgent struct {
	client   authv3.AuthorizationClient
	grpcAddr string
	httpBase string
}

// startAgent runs the daemon for cfg (its listen addresses are replaced by free loopback
// ports) until the test ends, and waits until /readyz answers 200.
func startAgent(t *testing.T, cfg *config.Config) *runningAgent {
	t.Helper()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	logs := &syncBuffer{}
	d, err := daemon.New(context.Background(), cfg, daemon.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Listen(); err != nil {
		d.Close()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve() }()
	conn, err := grpc.NewClient(d.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		d.Shutdown(context.Background())
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() {
			t.Logf("the agent's log:\n%s", logs.String())
		}
	})
	a := &runningAgent{client: authv3.NewAuthorizationClient(conn), grpcAddr: d.GRPCAddr(), httpBase: "http://" + d.HTTPAddr()}
	waitReady(t, a.httpBase+"/readyz")
	return a
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitReady polls url until it answers 200 (at most a minute: Vault logins retry with backoff).
func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never became ready (last answer: %s)", url, last)
}

// checkRequest builds a CheckRequest the way Envoy's ext_authz filter does.
func checkRequest(method, host, path string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":authority": host, ":method": method, ":path": path, ":scheme": "https",
		"user-agent": "examples-test", "x-request-id": "1"}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: &corev3.Address{}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: method, Headers: h, Path: path, Host: host, Scheme: "https", Protocol: "HTTP/1.1",
		}},
	}}
}

// check asks the agent over gRPC about one request.
func (a *runningAgent) check(t *testing.T, method, host, path string, headers map[string]string) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := a.client.Check(ctx, checkRequest(method, host, path, headers))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

// allowedAs returns the x-auth-user an allowed answer sets, or fails the test with the denial.
func allowedAs(t *testing.T, resp *authv3.CheckResponse) string {
	t.Helper()
	if codes.Code(resp.GetStatus().GetCode()) != codes.OK || resp.GetOkResponse() == nil {
		t.Fatalf("denied: status %d, %s", resp.GetStatus().GetCode(), resp.GetDeniedResponse().GetBody())
	}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if h.GetHeader().GetKey() == "x-auth-user" {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// writeFiles writes name → content files into dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
