package agent

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
)

func blImp(key, user string, at time.Time) string {
	return token.MintImpersonationToken(vault.NewSecret([]byte(key)), user, at)
}

func TestLegacyCredentials(t *testing.T) {
	f := newBLAgent(t)
	q := url.QueryEscape
	imp := blImp(blLegacyAPIKey, "=jdoe", blNow)
	tests := []struct {
		name, host, path string
		headers          map[string]string
		want             reason.Reason
		status           int
		kind             token.Kind
		user             string
		elevated         bool
	}{
		// Impersonation Auth Token, in every place an Auth Token goes.
		{name: "impersonation cookie", host: "legacy.example.com", path: "/admin",
			headers: map[string]string{"cookie": "authtoken=" + imp}, kind: token.KindImpersonation, user: "=jdoe"},
		{name: "impersonation header", host: "legacy.example.com", path: "/",
			headers: map[string]string{"x-authtoken": imp}, kind: token.KindImpersonation, user: "=jdoe"},
		{name: "impersonation query", host: "legacy.example.com", path: "/?authtoken=" + q(imp),
			kind: token.KindImpersonation, user: "=jdoe"},
		{name: "impersonation user id", host: "legacy.example.com", path: "/",
			headers: map[string]string{"x-authtoken": blImp(blLegacyAPIKey, "42", blNow.Add(-60*time.Second))},
			kind:    token.KindImpersonation, user: "42"},
		{name: "impersonation expired", host: "legacy.example.com", path: "/",
			headers: map[string]string{"x-authtoken": blImp(blLegacyAPIKey, "42", blNow.Add(-61*time.Second))},
			want:    reason.TokenExpired, status: http.StatusUnauthorized},
		{name: "impersonation ahead", host: "legacy.example.com", path: "/",
			headers: map[string]string{"x-authtoken": blImp(blLegacyAPIKey, "42", blNow.Add(61*time.Second))},
			want:    reason.TokenNotYetValid, status: http.StatusUnauthorized},
		{name: "impersonation wrong key", host: "legacy.example.com", path: "/",
			headers: map[string]string{"x-authtoken": blImp(blDocsAPIKey, "42", blNow)},
			want:    reason.BadSignature, status: http.StatusUnauthorized},
		{name: "impersonation malformed", host: "legacy.example.com", path: "/",
			headers: map[string]string{"x-authtoken": "imp_1_2_3"},
			want:    reason.MalformedToken, status: http.StatusUnauthorized},
		{name: "impersonation off", host: "docs.example.com", path: "/",
			headers: map[string]string{"x-authtoken": blImp(blDocsAPIKey, "42", blNow)},
			want:    reason.LegacyTokenDisabled, status: http.StatusUnauthorized},

		// Site API Key.
		{name: "api key alone", host: "legacy.example.com", path: "/auth?apikey=" + q(blLegacyAPIKey),
			kind: token.KindAPIKey, elevated: true},
		{name: "api key as user", host: "legacy.example.com", path: "/admin?x=1&apikey=" + q(blLegacyAPIKey) + "&impersonateuserid=42",
			kind: token.KindAPIKey, user: "42", elevated: true},
		{name: "api key alone, route requires a user", host: "legacy.example.com", path: "/admin?apikey=" + q(blLegacyAPIKey),
			want: reason.UserTokenRequired, status: http.StatusForbidden},
		{name: "api key wrong", host: "legacy.example.com", path: "/?apikey=wrong",
			want: reason.InvalidAPIKey, status: http.StatusUnauthorized},
		{name: "api key of another site", host: "legacy.example.com", path: "/?apikey=" + q(blDocsAPIKey),
			want: reason.InvalidAPIKey, status: http.StatusUnauthorized},
		{name: "api key empty", host: "legacy.example.com", path: "/?apikey=",
			want: reason.MalformedToken, status: http.StatusUnauthorized},
		{name: "api key bad user", host: "legacy.example.com", path: "/?apikey=" + q(blLegacyAPIKey) + "&impersonateuserid=%3Djdoe",
			want: reason.MalformedToken, status: http.StatusUnauthorized},
		{name: "api key empty user", host: "legacy.example.com", path: "/?apikey=" + q(blLegacyAPIKey) + "&impersonateuserid=",
			want: reason.MalformedToken, status: http.StatusUnauthorized},
		{name: "api key off", host: "docs.example.com", path: "/?apikey=" + q(blDocsAPIKey),
			want: reason.LegacyTokenDisabled, status: http.StatusUnauthorized},
		{name: "api key off, wrong key", host: "docs.example.com", path: "/?apikey=wrong",
			want: reason.LegacyTokenDisabled, status: http.StatusUnauthorized},
		{name: "api key with auth token", host: "legacy.example.com", path: "/?apikey=" + q(blLegacyAPIKey),
			headers: map[string]string{"x-authtoken": imp},
			want:    reason.MultipleCredentials, status: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{"x-auth-elevated": "true", "x-auth-user": "1"} // spoofed
			for k, v := range tt.headers {
				h[k] = v
			}
			d := f.check("GET", tt.host, tt.path, h)
			if tt.want != "" {
				blWantDenial(t, d, tt.want, tt.status)
				for _, s := range []string{blLegacyAPIKey, blDocsAPIKey, imp} {
					if strings.Contains(string(d.Body), s) {
						t.Fatalf("the denial echoes a secret: %s", d.Body)
					}
				}
				return
			}
			blWantAllowed(t, d, tt.kind, tt.user)
			v, ok := blHeader(d.UpstreamHeaders, HeaderElevated)
			if tt.elevated != ok || (ok && v != "true") {
				t.Fatalf("x-auth-elevated %q (set %v), want set %v", v, ok, tt.elevated)
			}
			if !tt.elevated {
				found := false
				for _, r := range d.RemoveHeaders {
					found = found || r == HeaderElevated
				}
				if !found {
					t.Fatalf("a spoofed x-auth-elevated is not removed: %v", d.RemoveHeaders)
				}
			}
		})
	}
}

func TestLegacyAuditThroughAgent(t *testing.T) {
	f := newBLAgent(t)
	imp := blImp(blLegacyAPIKey, "42", blNow)
	for range 2 {
		if d := f.check("GET", "legacy.example.com", "/", map[string]string{"x-authtoken": imp}); !d.Allowed {
			t.Fatalf("denied %q", d.Reason)
		}
	}
	if d := f.check("GET", "legacy.example.com", "/?apikey="+url.QueryEscape(blLegacyAPIKey), nil); !d.Allowed {
		t.Fatalf("denied %q", d.Reason)
	}
	f.check("GET", "legacy.example.com", "/?apikey=wrong", nil) // refused: not counted

	counts := f.legacyCounts(t)
	if counts["legacy/impersonation"] != 2 || counts["legacy/apikey"] != 1 || len(counts) != 2 {
		t.Fatalf("legacy counter %v, want legacy/impersonation 2 and legacy/apikey 1", counts)
	}
	logs := f.logs.String()
	if strings.Count(logs, "legacy credential used") != 3 {
		t.Fatalf("want 3 legacy warnings:\n%s", logs)
	}
	if strings.Contains(logs, blLegacyAPIKey) || strings.Contains(logs, imp) {
		t.Fatalf("the log holds a secret:\n%s", logs)
	}
	if !strings.Contains(logs, token.CredentialFingerprint(imp)) {
		t.Fatalf("the log lacks the token's fingerprint:\n%s", logs)
	}

	// A config reload builds a second agent over the same runtime: its legacy credentials
	// count into the same counter (before the redesign, a reload's counter was registered
	// nowhere and the count stopped).
	cfg, _ := config.Parse([]byte(blConfig), t.TempDir())
	b, err := New(f.a.rt, cfg)
	if err != nil {
		t.Fatalf("second agent: %v", err)
	}
	if d := b.Check(context.Background(), &Request{Method: "GET", Host: "legacy.example.com",
		Path: "/?apikey=" + url.QueryEscape(blLegacyAPIKey), Headers: map[string]string{}}); !d.Allowed {
		t.Fatalf("api key after the reload: %s", d.Reason)
	}
	if got := f.legacyCounts(t)["legacy/apikey"]; got != 2 {
		t.Fatalf("tokenagent_legacy_credentials_total{kind=apikey} after a reload = %v, want 2", got)
	}
}

// legacyCounts reads tokenagent_legacy_credentials_total by "site/kind".
func (f *blFixture) legacyCounts(t *testing.T) map[string]float64 {
	t.Helper()
	counts := map[string]float64{}
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != token.LegacyMetricName {
			continue
		}
		for _, m := range mf.GetMetric() {
			var site, kind string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "site":
					site = l.GetValue()
				case "kind":
					kind = l.GetValue()
				}
			}
			counts[site+"/"+kind] = m.GetCounter().GetValue()
		}
	}
	return counts
}
