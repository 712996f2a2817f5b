package daemon_test

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
)

// A site is switched between enforce and shadow mode by a config reload. In shadow mode a
// would-be denial reaches Envoy as an allowed answer without identity, with the would-be
// reason in the dynamic metadata (shadow_reason), the decision log and the counter (SPEC §8).
func TestShadowModeByReload(t *testing.T) {
	withMode := func(mode string) string {
		return strings.Replace(configYAML, "  - id: docs\n", "  - id: docs\n    mode: "+mode+"\n", 1)
	}
	logs := &daemontest.Buffer{}
	e := daemontest.Start(t, withMode("enforce"), daemontest.Options{Files: map[string]string{"keys.yaml": keysYAML()},
		Daemon: daemon.Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))}})
	forged := map[string]string{"x-deki-token": serverToken("guessed", "42"), "x-auth-user": "1", "x-auth-kind": "server"}
	write := func() string {
		return daemontest.Reason(e.Check(t, "POST", "docs.example.com", "/@api/deki/pages/home", forged))
	}
	if got := write(); got != "bad_signature" {
		t.Fatalf("enforce: %s, want bad_signature", got)
	}

	daemontest.WriteFile(t, e.ConfigPath, withMode("shadow"))
	if err := e.D.Reload(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	resp := e.Check(t, "POST", "docs.example.com", "/@api/deki/pages/home", forged)
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("shadow: denied %s", daemontest.Reason(resp))
	}
	if k := daemontest.UpstreamHeader(resp, "x-auth-kind"); k != "anonymous" {
		t.Errorf("x-auth-kind upstream = %q, want anonymous", k)
	}
	if u := daemontest.UpstreamHeader(resp, "x-auth-user"); u != "" {
		t.Errorf("x-auth-user upstream = %q, want none", u)
	}
	if !slices.Contains(ok.GetHeadersToRemove(), "x-auth-user") {
		t.Errorf("the client's x-auth-user is not removed: %v", ok.GetHeadersToRemove())
	}
	md := resp.GetDynamicMetadata().GetFields()
	if r := md["shadow_reason"].GetStringValue(); r != "bad_signature" {
		t.Errorf("metadata shadow_reason = %q, want bad_signature", r)
	}
	if _, has := md["reason"]; has {
		t.Error("an allowed answer carries reason")
	}
	if n := e.Counter(t, "tokenagent_shadow_denials_total", map[string]string{"site": "docs", "reason": "bad_signature"}); n != 1 {
		t.Errorf("tokenagent_shadow_denials_total = %v, want 1", n)
	}
	if n := e.Counter(t, "tokenagent_decisions_total", map[string]string{"site": "docs", "decision": "shadow", "reason": "bad_signature"}); n != 1 {
		t.Errorf("tokenagent_decisions_total{decision=shadow} = %v, want 1", n)
	}
	found := false
	for _, rec := range logs.Records(t) {
		if rec["msg"] == "shadow_denied" && rec["reason"] == "bad_signature" && rec["site"] == "docs" {
			found = true
		}
	}
	if !found {
		t.Errorf("no shadow_denied decision log line:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), forged["x-deki-token"]) {
		t.Error("the token is in the log")
	}

	daemontest.WriteFile(t, e.ConfigPath, withMode("enforce"))
	if err := e.D.Reload(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	if got := write(); got != "bad_signature" {
		t.Fatalf("back to enforce: %s, want bad_signature", got)
	}
}
