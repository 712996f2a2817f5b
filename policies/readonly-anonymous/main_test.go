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
		method     string
		path       string
		wantAllow  bool
	}{
		{name: "anonymous GET", kind: "anonymous", method: "GET", path: "/@api/deki/pages/1/contents", wantAllow: true},
		{name: "anonymous HEAD", kind: "anonymous", method: "HEAD", path: "/", wantAllow: true},
		{name: "anonymous POST", kind: "anonymous", method: "POST", path: "/@api/deki/pages/1/contents"},
		{name: "anonymous PUT", kind: "anonymous", method: "PUT", path: "/x"},
		{name: "anonymous DELETE", kind: "anonymous", method: "DELETE", path: "/x"},
		{name: "anonymous OPTIONS", kind: "anonymous", method: "OPTIONS", path: "/x"},
		{name: "anonymous site API", kind: "anonymous", method: "GET", path: "/@api/deki/site/settings"},
		{name: "anonymous site API root", kind: "anonymous", method: "GET", path: "/@api/deki/site"},
		{name: "anonymous site API trailing slash", kind: "anonymous", method: "GET", path: "/@api/deki/site/"},
		{name: "anonymous site API encoded", kind: "anonymous", method: "GET", path: "/%40api/deki/%73ite/settings"},
		{name: "anonymous site API dot segments", kind: "anonymous", method: "GET", path: "/@api/deki/pages/../site/settings"},
		{name: "anonymous site API double slash", kind: "anonymous", method: "GET", path: "/@api//deki/site/x"},
		{name: "anonymous site API case", kind: "anonymous", method: "GET", path: "/@API/Deki/Site/x"},
		{name: "anonymous bad escape", kind: "anonymous", method: "GET", path: "/@api/deki/%zz"},
		{name: "anonymous sitemap is not the site API", kind: "anonymous", method: "GET", path: "/@api/deki/sitemap", wantAllow: true},
		{name: "browser token without user", kind: "browser", method: "POST", path: "/x"},
		{name: "browser token with user", kind: "browser", user: "7", method: "POST", path: "/x", wantAllow: true},
		{name: "auth token writes", kind: "authtoken", user: "7", method: "POST", path: "/@api/deki/pages/1", wantAllow: true},
		{name: "auth token site API", kind: "authtoken", user: "7", method: "GET", path: "/@api/deki/site/settings", wantAllow: true},
		{name: "oauth application", kind: "oauth", method: "DELETE", path: "/x", wantAllow: true},
		{name: "api key without user", kind: "apikey", method: "PUT", path: "/@api/deki/site/settings", wantAllow: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := m.Evaluate(context.Background(), &plugins.Input{Site: "docs", Kind: tt.kind, User: tt.user,
				Method: tt.method, Path: tt.path, Host: "docs.example.com"})
			if err != nil {
				t.Fatal(err)
			}
			if out.Allow != tt.wantAllow {
				t.Fatalf("Allow = %v (%d %q), want %v", out.Allow, out.Status, out.Reason, tt.wantAllow)
			}
			if !out.Allow && (out.Status != 401 || out.Reason == "") {
				t.Errorf("denial = %d %q, want 401 with a reason", out.Status, out.Reason)
			}
			if len(out.Headers) != 0 {
				t.Errorf("headers = %v, want none", out.Headers)
			}
		})
	}
}

// The path check, natively, on the spellings a client might try.
func TestUnderSiteAPI(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"/@api/deki/site", true},
		{"/@api/deki/site/", true},
		{"/@api/deki/site/settings", true},
		{"/@API/DEKI/SITE/settings", true},
		{"/%40api/deki/site/x", true},
		{"/%40api%2Fdeki%2Fsite", true},
		{"/@api/deki/%73%69%74%65/x", true},
		{"/@api/deki//site/x", true},
		{"//@api/deki/site", true},
		{"/@api/deki/./site", true},
		{"/@api/deki/pages/../site/x", true},
		{"/x/../@api/deki/site", true},
		{"/@api/deki/pages/%2E%2E/site", true},
		{"/@api\\deki\\site", true},
		{"/@api/deki/%zz", true},
		{"/@api/deki/site%", true},
		{"/@api/deki/%2573ite", false}, // decoded once: "%73ite", not the site API
		{"/@api/deki/%2e/site", true},
		{"/@api/deki/site%5Cx", true},
		{"/@api/deki/pages/=Guides%252FInstall/=a%25", false},
		{"/@api/deki/sitemap", false},
		{"/@api/deki/site-x", false},
		{"/@api/deki/sites/x", false},
		{"/@api/deki/pages/1/contents", false},
		{"/@api/deki/pages/=Guides%252FInstall/contents", false},
		{"/@apI/deki/sitf", false},
		{"/`api/deki/site", false},
		{"/", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := underSiteAPI(tt.path); got != tt.want {
			t.Errorf("underSiteAPI(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}
