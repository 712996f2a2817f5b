package agent

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
)

// policyAgent builds an agent whose site "docs" runs the module at docsPolicy and site "other"
// runs otherPolicy, over a shared registry like the daemon's.
func policyAgent(t *testing.T, docsPolicy, otherPolicy string) (*Agent, *Runtime) {
	t.Helper()
	// A generous deadline: these tests are about decisions, and a loaded machine under the race
	// detector can take longer than the 5 ms default (the deadline has tests of its own).
	doc := "keys: {source: file, file: keys.yaml}\npolicies: {deadline: 5s}\nsites:\n" +
		"  - {id: docs, hosts: [docs.example.com], policy: " + docsPolicy + ", routes: [{path: /admin, require: user}]}\n" +
		"  - {id: other, hosts: [other.example.com], policy: " + otherPolicy + "}\n"
	cfg, err := config.Parse([]byte(doc), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clock := func() time.Time { return testNow }
	log := slog.New(slog.DiscardHandler)
	store := filetest.Store(t, testKeysYAML(), vault.StoreOptions{Now: clock, Logger: log})
	rt := newRuntime(t, RuntimeOptions{Keys: store, Now: clock, Logger: log})
	a, err := New(rt, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a, rt
}

func TestPolicyDecidesLast(t *testing.T) {
	readonly := plugintest.BuildGo(t, "../policies/readonly-anonymous")
	role := plugintest.BuildGo(t, "../policies/role-header")
	a, _ := policyAgent(t, readonly, role)
	if p := a.Problems(); len(p) != 0 {
		t.Fatalf("problems: %v", p)
	}
	srv := map[string]string{"x-deki-token": serverToken("s3cret", "42", testNow)}
	tests := []struct {
		name, method, host, path string
		headers                  map[string]string
		status                   int
		reason                   reason.Reason
		upstream                 string // "name: value" expected upstream, "" for none
	}{
		{"anonymous read", "GET", "docs.example.com", "/page", nil, 200, "", ""},
		{"anonymous write refused by the policy", "POST", "docs.example.com", "/page", nil, 401, reason.PolicyDenied, ""},
		{"anonymous site API refused by the policy", "GET", "docs.example.com", "/@api/deki/site/x", nil, 401, reason.PolicyDenied, ""},
		{"route rules run before the policy", "GET", "docs.example.com", "/admin", nil, 401, reason.AuthenticationRequired, ""},
		{"server token write allowed", "POST", "docs.example.com", "/page", srv, 200, "", ""},
		{"policy adds an upstream header", "GET", "other.example.com", "/", nil, 200, "", "x-site-role: anonymous"},
		{"a client's x-site-role is replaced", "GET", "other.example.com", "/", map[string]string{"x-site-role": "admin"}, 200, "", "x-site-role: anonymous"},
		{"a user's role", "GET", "other.example.com", "/", map[string]string{"x-deki-token": token.MintServerToken("k1", newSecret("other-secret"), "5", testNow)}, 200, "", "x-site-role: member"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := check(t, a, tc.method, tc.host, tc.path, tc.headers)
			if d.Status != tc.status || d.Reason != tc.reason {
				t.Fatalf("status %d %q, want %d %q (body %s)", d.Status, d.Reason, tc.status, tc.reason, d.Body)
			}
			if tc.reason == reason.PolicyDenied && !strings.Contains(string(d.Body), "anonymous users") {
				t.Errorf("the policy's reason is not in the body: %s", d.Body)
			}
			if tc.upstream != "" {
				name, want, _ := strings.Cut(tc.upstream, ": ")
				if v, ok := header(d.UpstreamHeaders, name); !ok || v != want {
					t.Errorf("upstream %s = %q (present %v), want %q", name, v, ok, want)
				}
			}
		})
	}
}

func TestPolicyFailuresFailClosed(t *testing.T) {
	trap := plugintest.WAT(t, "trap", hostileTrapWAT)
	a, _ := policyAgent(t, trap, filepath.Join(t.TempDir(), "missing.wasm"))
	d := check(t, a, "GET", "docs.example.com", "/", nil)
	if d.Allowed || d.Reason != reason.PolicyError || d.Status != 403 {
		t.Fatalf("trapping module: %v %d %s", d.Allowed, d.Status, d.Reason)
	}
	d = check(t, a, "GET", "other.example.com", "/", nil)
	if d.Allowed || d.Reason != reason.PolicyError {
		t.Fatalf("module that never loaded: %v %s", d.Allowed, d.Reason)
	}
	p := strings.Join(a.Problems(), "\n")
	if !strings.Contains(p, "missing.wasm") || !strings.Contains(p, "other") {
		t.Fatalf("problems %q do not name the module that did not load", p)
	}
}

// A module that loads later (the file appears) is picked up by the retry.
func TestPolicyLoadsWhenTheFileAppears(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the background retry (5 s); run without -short")
	}
	dir := t.TempDir()
	late := filepath.Join(dir, "late.wasm")
	role := plugintest.BuildGo(t, "../policies/role-header")
	a, _ := policyAgent(t, role, late)
	if d := check(t, a, "GET", "other.example.com", "/", nil); d.Reason != reason.PolicyError {
		t.Fatalf("before the file exists: %s", d.Reason)
	}
	b, err := os.ReadFile(role)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(late, b, 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(a.Problems()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("never loaded: %v", a.Problems())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if d := check(t, a, "GET", "other.example.com", "/", nil); !d.Allowed {
		t.Fatalf("after the file appeared: %s", d.Reason)
	}
}

// hostileTrapWAT is a module that implements ABI v1 and traps on every evaluation.
const hostileTrapWAT = `(module
  (memory (export "memory") 1)
  (func (export "tokenagent_abi_v1"))
  (func (export "tokenagent_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "tokenagent_evaluate") (param i32 i32) (result i64) unreachable))`
