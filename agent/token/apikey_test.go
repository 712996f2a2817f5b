package token

import (
	"context"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent/reason"
)

func TestAPIKeyVerify(t *testing.T) {
	f := newLegacyFixture(t)
	v := &APIKeyVerifier{Keys: f.store, Audit: f.audit}
	tests := []struct {
		name, key, imp string
		site           *SiteSettings
		want           reason.Reason
	}{
		{name: "key alone", key: blAPIKey},
		{name: "key with user", key: blAPIKey, imp: "42"},
		{name: "key with long user id", key: blAPIKey, imp: strings.Repeat("9", 19)},
		{name: "wrong key", key: "wrong", want: reason.InvalidAPIKey},
		{name: "key prefix", key: blAPIKey[:len(blAPIKey)-1], want: reason.InvalidAPIKey},
		{name: "key plus one", key: blAPIKey + "x", want: reason.InvalidAPIKey},
		{name: "key other case", key: strings.ToUpper(blAPIKey), want: reason.InvalidAPIKey},
		{name: "wrong key with user", key: "wrong", imp: "42", want: reason.InvalidAPIKey},
		{name: "no legacy record", key: blAPIKey, site: &SiteSettings{ID: "nolegacy", LegacyAPIKey: true}, want: reason.InvalidAPIKey},
		{name: "switch off", key: blAPIKey, site: &SiteSettings{ID: "docs", LegacyImpersonation: true}, want: reason.LegacyTokenDisabled},
		{name: "switch off wrong key", key: "wrong", site: &SiteSettings{ID: "docs"}, want: reason.LegacyTokenDisabled},
		{name: "empty key", key: "", want: reason.MalformedToken},
		{name: "key too long", key: strings.Repeat("k", 256), want: reason.MalformedToken},
		{name: "user not decimal", key: blAPIKey, imp: "=jdoe", want: reason.MalformedToken},
		{name: "user negative", key: blAPIKey, imp: "-1", want: reason.MalformedToken},
		{name: "user too long", key: blAPIKey, imp: strings.Repeat("9", 20), want: reason.MalformedToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			site := tt.site
			if site == nil {
				site = blImpSite
			}
			id, err := v.Verify(context.Background(), site, tt.key, tt.imp)
			if got := blReason(err); got != tt.want || (tt.want == "" && err != nil) {
				t.Fatalf("Verify = %v, want %q", err, tt.want)
			}
			if err != nil {
				if e := reason.From(err); e.HTTPStatus() != 401 || strings.Contains(e.Error(), blAPIKey) {
					t.Fatalf("denial %v: status %d, want 401 and no secret", e, e.HTTPStatus())
				}
				return
			}
			if id.Kind != KindAPIKey || id.User != tt.imp || !id.Elevated || !id.Authenticated() {
				t.Fatalf("identity %+v, want elevated apikey acting as %q", id, tt.imp)
			}
			if tt.imp == "" && id.HasUser() {
				t.Fatal("the key alone names a user")
			}
		})
	}
	if got := f.count("docs", KindAPIKey); got != 3 {
		t.Errorf("counter %v, want 3", got)
	}
	if strings.Contains(f.logs.String(), blAPIKey) {
		t.Errorf("the log holds the API key:\n%s", f.logs.String())
	}
	if !strings.Contains(f.logs.String(), "credential_sha256="+CredentialFingerprint(blAPIKey)) {
		t.Errorf("the log lacks the key's fingerprint:\n%s", f.logs.String())
	}
}

func TestNewAPIKeyAndQuery(t *testing.T) {
	a, err := NewAPIKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewAPIKey()
	if len(a) != 64 || a == b {
		t.Fatalf("keys %q, %q", a, b)
	}
	q, err := url.ParseQuery(APIKeyQuery("k&y=1", "42"))
	if err != nil || q.Get("apikey") != "k&y=1" || q.Get("impersonateuserid") != "42" {
		t.Fatalf("query %v, %v", q, err)
	}
	if got := APIKeyQuery("k", ""); got != "apikey=k" {
		t.Fatalf("query %q", got)
	}
}

// One audit lives as long as the process (config reloads share it): a second one on the same
// registry is a programming error, reported, not a counter silently shared.
func TestLegacyAuditRegistersOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	a1, err := NewLegacyAudit(reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewLegacyAudit(reg, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("a second audit registered its counter on the same registry")
	}
	a1.Used("docs", KindAPIKey, "", "k")
	a1.Used("docs", KindAPIKey, "", "k")
	f := &legacyFixture{reg: reg}
	if got := f.count("docs", KindAPIKey); got != 2 {
		t.Fatalf("counter %v, want 2 (one shared counter)", got)
	}
	var nilAudit *LegacyAudit
	nilAudit.Used("docs", KindAPIKey, "", "k") // must not panic
}

func TestCredentialFingerprint(t *testing.T) {
	fp := CredentialFingerprint("secret")
	if len(fp) != 12 || fp != CredentialFingerprint("secret") || fp == CredentialFingerprint("secret2") {
		t.Fatalf("fingerprint %q", fp)
	}
}
