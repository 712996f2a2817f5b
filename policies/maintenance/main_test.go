package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/plugins"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
)

const testFlags = "-X 'main.windows=22:00-02:00,2026-12-24T00:00:00Z/2026-12-27T00:00:00Z' -X main.exempt=1,=ops"

// The policy built with a test configuration and run by the real host.
func TestPolicy(t *testing.T) {
	e := plugintest.NewEngine(t)
	m := plugintest.Load(t, e, plugintest.BuildGo(t, ".", testFlags), plugins.ModuleOptions{Deadline: time.Second})
	day := func(hhmm string) time.Time {
		v, err := time.Parse(time.RFC3339, "2026-11-21T"+hhmm+":00Z")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name           string
		method, user   string
		at             time.Time
		wantAllow      bool
		wantRetryAfter string
	}{
		{name: "write outside the window", method: "POST", user: "7", at: day("21:59"), wantAllow: true},
		{name: "write in the daily window", method: "POST", user: "7", at: day("22:00"), wantRetryAfter: "14400"},
		{name: "write after midnight", method: "PUT", user: "7", at: day("01:59"), wantRetryAfter: "60"},
		{name: "write at the window's end", method: "DELETE", user: "7", at: day("02:00"), wantAllow: true},
		{name: "anonymous write", method: "PATCH", at: day("23:00"), wantRetryAfter: "10800"},
		{name: "read in the window", method: "GET", user: "7", at: day("23:00"), wantAllow: true},
		{name: "HEAD in the window", method: "HEAD", at: day("23:00"), wantAllow: true},
		{name: "OPTIONS in the window", method: "OPTIONS", at: day("23:00"), wantAllow: true},
		{name: "exempt id", method: "POST", user: "1", at: day("23:00"), wantAllow: true},
		{name: "exempt username", method: "POST", user: "=ops", at: day("23:00"), wantAllow: true},
		{name: "not exempt: similar id", method: "POST", user: "11", at: day("23:00"), wantRetryAfter: "10800"},
		// The one-off window ends 2026-12-27 00:00, inside the daily 22:00-02:00: 38 h to go.
		{name: "one-off window", method: "POST", user: "7",
			at: time.Date(2026, 12, 25, 12, 0, 0, 0, time.UTC), wantRetryAfter: "136800"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := m.Evaluate(context.Background(), &plugins.Input{Site: "docs", Kind: "authtoken",
				User: tt.user, Method: tt.method, Path: "/@api/deki/pages/1", Time: tt.at})
			if err != nil {
				t.Fatal(err)
			}
			if out.Allow != tt.wantAllow {
				t.Fatalf("Allow = %v (%d %q), want %v", out.Allow, out.Status, out.Reason, tt.wantAllow)
			}
			if out.Allow {
				return
			}
			if out.Status != 503 || !strings.Contains(out.Reason, "maintenance until") {
				t.Errorf("denial = %d %q", out.Status, out.Reason)
			}
			if got := out.ResponseHeaders["retry-after"]; got != tt.wantRetryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.wantRetryAfter)
			}
		})
	}
}

// A configuration that does not parse stops the module in _initialize: Load refuses it and
// the error carries the reason.
func TestBadConfigurationFailsLoad(t *testing.T) {
	e := plugintest.NewEngine(t)
	_, err := e.Load(context.Background(), plugintest.BuildGo(t, ".", "-X main.windows=25:00-02:00"),
		plugins.ModuleOptions{InitTimeout: time.Minute}) // a loaded machine must not turn the panic into a timeout
	if err == nil || !strings.Contains(err.Error(), "maintenance: bad configuration") || !strings.Contains(err.Error(), "25:00") {
		t.Fatalf("Load = %v, want the configuration error", err)
	}
	if errors.Is(err, plugins.ErrABI) {
		t.Error("a configuration error is reported as an ABI error")
	}
}
