package nolegacy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/plugins"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
)

// The WAT policy, assembled with wat2wasm (the test fails, not skips, without it) and run by
// the real host.
func TestPolicy(t *testing.T) {
	m := plugintest.Load(t, plugintest.NewEngine(t), plugintest.BuildWAT(t, "policy.wat"),
		plugins.ModuleOptions{Deadline: time.Second})
	long := strings.Repeat("s", 63)
	tests := []struct {
		name, site, kind string
		wantAllow        bool
	}{
		{name: "api key", site: "docs", kind: "apikey"},
		{name: "impersonation", site: "docs", kind: "impersonation"},
		{name: "auth token", site: "docs", kind: "authtoken", wantAllow: true},
		{name: "server token", site: "docs", kind: "server", wantAllow: true},
		{name: "anonymous", site: "docs", kind: "anonymous", wantAllow: true},
		{name: "a kind that starts like one", site: "docs", kind: "apikeys", wantAllow: true},
		{name: "a kind of the same length", site: "docs", kind: "apikez", wantAllow: true},
		{name: "empty kind", site: "docs", kind: "", wantAllow: true},
		{name: "long site id", site: long, kind: "oauth", wantAllow: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := m.Evaluate(context.Background(), &plugins.Input{Site: tt.site, Kind: tt.kind, User: "7",
				Method: "GET", Path: "/@api/deki/pages/1", Headers: [][2]string{{"accept", "*/*"}}})
			if err != nil {
				t.Fatal(err)
			}
			if out.Allow != tt.wantAllow {
				t.Fatalf("Allow = %v (%+v), want %v", out.Allow, out, tt.wantAllow)
			}
			if out.Allow && (out.Headers["x-site-id"] != tt.site || len(out.Headers) != 1) {
				t.Errorf("headers = %v, want x-site-id: %s", out.Headers, tt.site)
			}
			if !out.Allow && (out.Status != 403 || out.Reason != "legacy credentials are disabled on this site") {
				t.Errorf("denial = %d %q", out.Status, out.Reason)
			}
		})
	}
}
