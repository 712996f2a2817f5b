package daemon_test

import (
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
)

// TestPolicyOverGRPC: a site's WebAssembly policy decides over real gRPC, a reload switches
// it, and a module that cannot load makes the agent not ready and its site fail closed.
func TestPolicyOverGRPC(t *testing.T) {
	readonly := plugintest.BuildGo(t, "../../../policies/readonly-anonymous")
	role := plugintest.BuildGo(t, "../../../policies/role-header")
	e := start(t)
	withPolicy := func(p string) string {
		return strings.Replace(configYAML, "    hosts: [docs.example.com, \"*.docs.example.com\"]\n",
			"    hosts: [docs.example.com, \"*.docs.example.com\"]\n    policy: "+p+"\n    policy_deadline: 5s\n", 1)
	}
	// A reload hands the module to the registry, which compiles it in the background: wait
	// until the agent is ready (its problems list the modules not loaded yet).
	reload := func(cfg string) {
		t.Helper()
		daemontest.WriteFile(t, e.ConfigPath, cfg)
		if err := e.D.Reload(e.ConfigPath); err != nil {
			t.Fatal(err)
		}
		daemontest.Eventually(t, "the policy loaded", func() bool { return e.D.Ready().Ready })
	}
	reload(withPolicy(readonly))
	resp := e.Check(t, "PUT", "docs.example.com", "/page", nil)
	if codes.Code(resp.GetStatus().GetCode()) != codes.Unauthenticated || daemontest.DeniedHeader(resp, "x-auth-reason") != "policy_denied" {
		t.Fatalf("anonymous write under readonly-anonymous: %v", resp)
	}

	reload(withPolicy(role))
	resp = e.Check(t, "PUT", "docs.example.com", "/page", nil)
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("role-header allows: %v", resp)
	}
	var siteRole string
	for _, h := range ok.GetHeaders() {
		if h.GetHeader().GetKey() == "x-site-role" {
			siteRole = h.GetHeader().GetValue()
		}
	}
	if siteRole != "anonymous" {
		t.Fatalf("x-site-role = %q", siteRole)
	}

	missing := filepath.Join(t.TempDir(), "missing.wasm")
	daemontest.WriteFile(t, e.ConfigPath, withPolicy(missing))
	if err := e.D.Reload(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	if r := e.D.Ready(); r.Ready || !strings.Contains(strings.Join(r.Problems, " "), "missing.wasm") {
		t.Fatalf("readiness with a module that cannot load: %+v", r)
	}
	resp = e.Check(t, "GET", "docs.example.com", "/", nil)
	if daemontest.DeniedHeader(resp, "x-auth-reason") != "policy_error" {
		t.Fatalf("a site whose module did not load: %v", resp)
	}
}
