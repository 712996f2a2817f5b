package main

import (
	"context"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/plugins"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
)

// The policy, built to WebAssembly and run by the real host.
func TestPolicy(t *testing.T) {
	m := plugintest.Load(t, plugintest.NewEngine(t), plugintest.BuildGo(t, "."),
		plugins.ModuleOptions{Deadline: time.Second})
	tests := []struct {
		name       string
		kind, user string
		clientID   string
		scopes     []string
		want       string
	}{
		{name: "oauth admin", kind: "oauth", user: "sub1", scopes: []string{"read", "admin"}, want: "admin"},
		{name: "oauth write", kind: "oauth", user: "sub1", scopes: []string{"read", "write"}, want: "editor"},
		{name: "oauth read", kind: "oauth", user: "sub1", scopes: []string{"read"}, want: "viewer"},
		{name: "oauth application with read", kind: "oauth", clientID: "app", scopes: []string{"read"}, want: "viewer"},
		{name: "oauth application without scopes", kind: "oauth", clientID: "app", want: "application"},
		{name: "oauth user, other scopes", kind: "oauth", user: "sub1", scopes: []string{"profile"}, want: "restricted"},
		{name: "scopes on other kinds do not count", kind: "authtoken", user: "7", scopes: []string{"admin"}, want: "member"},
		{name: "auth token", kind: "authtoken", user: "7", want: "member"},
		{name: "server token", kind: "server", user: "=svc", want: "member"},
		{name: "impersonation", kind: "impersonation", user: "7", want: "member"},
		{name: "browser with auth token", kind: "browser", user: "7", want: "member"},
		{name: "browser alone", kind: "browser", want: "anonymous"},
		{name: "anonymous", kind: "anonymous", want: "anonymous"},
		{name: "api key", kind: "apikey", want: "admin"},
		{name: "api key impersonating", kind: "apikey", user: "7", want: "admin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := m.Evaluate(context.Background(), &plugins.Input{Site: "docs", Kind: tt.kind, User: tt.user,
				ClientID: tt.clientID, Scopes: tt.scopes, Method: "GET", Path: "/",
				Headers: [][2]string{{"x-site-role", "admin"}}}) // a spoofing client
			if err != nil {
				t.Fatal(err)
			}
			if !out.Allow || out.Headers["x-site-role"] != tt.want || len(out.Headers) != 1 {
				t.Errorf("Evaluate = %+v, want allowed with x-site-role: %s", out, tt.want)
			}
		})
	}
}
