package examples_test

import (
	"os"
	"path/filepath"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/config"
)

// startAgent runs the daemon for cfg on free loopback ports (daemontest) until the test ends,
// and waits until it is ready.
func startAgent(t *testing.T, cfg *config.Config) *daemontest.Env {
	t.Helper()
	return daemontest.StartConfig(t, cfg, daemontest.Options{WaitReady: true})
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
