package agent

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
)

func TestCheckDecisions(t *testing.T) {
	a := newTestAgent(t)
	docs, other := "docs.example.com", "other.example.com"
	srv := serverToken("s3cret", "42", testNow)
	auth := authToken("7", testNow.Add(-time.Minute))
	tests := []struct {
		name    string
		method  string
		host    string
		path    string
		headers map[string]string
		status  int
		reason  reason.Reason
		kind    token.Kind
		user    string
	}{
		{"anonymous read", "GET", docs, "/index", nil, 200, "", token.KindAnonymous, ""},
		{"anonymous on a wildcard host", "GET", "a.docs.example.com:443", "/", nil, 200, "", token.KindAnonymous, ""},
		{"unknown site", "GET", "nope.example.com", "/", nil, 404, reason.UnknownSite, "", ""},
		{"server token", "GET", docs, "/x", map[string]string{"x-deki-token": srv}, 200, "", token.KindServer, "42"},
		{"auth token cookie", "GET", docs, "/x", map[string]string{"cookie": "authtoken=" + auth}, 200, "", token.KindAuthToken, "7"},
		{"auth token header", "GET", docs, "/x", map[string]string{"x-authtoken": auth}, 200, "", token.KindAuthToken, "7"},
		{"auth token query", "GET", docs, "/x?authtoken=" + auth, nil, 200, "", token.KindAuthToken, "7"},
		{"anonymous write", "POST", docs, "/@api/deki/pages/home", nil, 401, reason.AuthenticationRequired, "", ""},
		{"user write, no scope needed for an auth token", "POST", docs, "/@api/deki/pages/home", map[string]string{"cookie": "authtoken=" + auth}, 200, "", token.KindAuthToken, "7"},
		{"server token write", "PUT", docs, "/@api/deki/pages/home", map[string]string{"x-deki-token": srv}, 200, "", token.KindServer, "42"},
		{"anonymous read of a write-only rule", "GET", docs, "/@api/deki/pages/home", nil, 200, "", token.KindAnonymous, ""},
		{"dot segments do not escape a rule", "POST", docs, "/@api/deki/x/../pages/home", nil, 401, reason.AuthenticationRequired, "", ""},
		{"encoded dot segments do not escape a rule", "POST", docs, "/@api/deki/x/%2E%2E/pages/home", nil, 401, reason.AuthenticationRequired, "", ""},
		{"repeated slashes do not escape a rule", "POST", docs, "//@api//deki/pages/home", nil, 401, reason.AuthenticationRequired, "", ""},
		{"encoded characters do not escape a rule", "POST", docs, "/@api/deki/%70ages/home", nil, 401, reason.AuthenticationRequired, "", ""},
		{"authenticated rule, anonymous", "GET", docs, "/@api/deki/site/settings", nil, 401, reason.AuthenticationRequired, "", ""},
		{"authenticated rule, server token", "GET", docs, "/@api/deki/site/settings", map[string]string{"x-deki-token": srv}, 200, "", token.KindServer, "42"},
		{"exact rule", "GET", docs, "/admin?x=1", nil, 401, reason.AuthenticationRequired, "", ""},
		{"an invalid token never falls back to anonymous", "GET", docs, "/open", map[string]string{"x-deki-token": serverToken("guess", "42", testNow)}, 401, reason.BadSignature, "", ""},
		{"malformed auth token", "GET", docs, "/", map[string]string{"cookie": "authtoken=garbage"}, 401, reason.MalformedToken, "", ""},
		{"empty auth token", "GET", docs, "/?authtoken=", nil, 401, reason.MalformedToken, "", ""},
		{"two credentials", "GET", docs, "/", map[string]string{"x-deki-token": srv, "x-authtoken": auth}, 400, reason.MultipleCredentials, "", ""},
		{"docs server token at another site", "GET", other, "/", map[string]string{"x-deki-token": srv}, 401, reason.BadSignature, "", ""},
		{"docs auth token at another site", "GET", other, "/", map[string]string{"x-authtoken": auth}, 401, reason.BadSignature, "", ""},
		{"unprefixed server token where allowed", "GET", other, "/", map[string]string{"x-deki-token": token.MintUnprefixedServerToken("k1", secret("other-secret"), "5", testNow)}, 200, "", token.KindServer, "5"},
		{"unprefixed server token where not allowed", "GET", docs, "/", map[string]string{"x-deki-token": token.MintUnprefixedServerToken("k1", secret("s3cret"), "5", testNow)}, 401, reason.MalformedToken, "", ""},
		{"expired server token", "GET", docs, "/", map[string]string{"x-deki-token": serverToken("s3cret", "42", testNow.Add(-time.Hour))}, 401, reason.TokenExpired, "", ""},
		{"impersonation token while off", "GET", docs, "/", map[string]string{"x-authtoken": "imp_1_" + strings.Repeat("a", 32) + "_5"}, 401, reason.LegacyTokenDisabled, "", ""},
		{"api key while off", "GET", docs, "/?apikey=whatever", nil, 401, reason.LegacyTokenDisabled, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := check(t, a, tc.method, tc.host, tc.path, tc.headers)
			if d.Status != tc.status || d.Reason != tc.reason {
				t.Fatalf("status %d reason %q, want %d %q (body %s)", d.Status, d.Reason, tc.status, tc.reason, d.Body)
			}
			if d.Allowed != (tc.status == 200) {
				t.Fatalf("allowed = %v", d.Allowed)
			}
			if !d.Allowed {
				assertDenial(t, d, tc.reason)
				return
			}
			if d.Identity.Kind != tc.kind || d.Identity.User != tc.user {
				t.Fatalf("identity = %+v, want %s %q", d.Identity, tc.kind, tc.user)
			}
			if v, _ := header(d.UpstreamHeaders, HeaderKind); v != string(tc.kind) {
				t.Fatalf("x-auth-kind = %q", v)
			}
			if v, ok := header(d.UpstreamHeaders, HeaderUser); v != tc.user || ok != (tc.user != "") {
				t.Fatalf("x-auth-user = %q (present %v), want %q", v, ok, tc.user)
			}
		})
	}
}

// assertDenial checks the shape of every denial of SPEC §4.
func assertDenial(t *testing.T, d *Decision, r reason.Reason) {
	t.Helper()
	if ct, _ := header(d.Headers, "content-type"); ct != "application/json" {
		t.Errorf("content-type = %q", ct)
	}
	if xr, _ := header(d.Headers, HeaderReason); xr != string(r) {
		t.Errorf("x-auth-reason = %q, want %q", xr, r)
	}
	var body map[string]string
	if err := json.Unmarshal(d.Body, &body); err != nil {
		t.Fatalf("body %q is not JSON: %v", d.Body, err)
	}
	if body["error"] != string(r) || body["error_description"] == "" || len(body) != 2 {
		t.Errorf("body = %v", body)
	}
}

func secret(s string) *secretAlias { return newSecret(s) }

func TestCheckUpstreamHeaders(t *testing.T) {
	a := newTestAgent(t)
	srv := serverToken("s3cret", "=john_doe@x", testNow)
	d := check(t, a, "GET", "docs.example.com", "/page?q=1", map[string]string{
		"x-deki-token": srv,
		"x-auth-user":  "1",      // spoofed, and set by the agent: overwritten
		"x-auth-admin": "true",   // spoofed, not set by the agent: removed
		"X-Auth-Other": "x",      // any case
		"x-authority":  "keep",   // not an x-auth- header
		"x-auth-site":  "forged", // overwritten
	})
	if !d.Allowed {
		t.Fatalf("denied: %s", d.Body)
	}
	want := []token.Header{{Name: HeaderSite, Value: "docs"}, {Name: HeaderKind, Value: "server"}, {Name: HeaderUser, Value: "=john_doe%40x"}}
	if !slices.Equal(d.UpstreamHeaders, want) {
		t.Errorf("upstream headers = %v, want %v", d.UpstreamHeaders, want)
	}
	if !slices.Equal(d.RemoveHeaders, []string{"X-Auth-Other", "x-auth-admin"}) {
		t.Errorf("headers to remove = %v", d.RemoveHeaders)
	}
	if !slices.Equal(d.RemoveQuery, []string{"apikey", "authtoken"}) {
		t.Errorf("query parameters to remove = %v", d.RemoveQuery)
	}
}

func TestCheckAnonymousSpoofRemoved(t *testing.T) {
	a := newTestAgent(t)
	d := check(t, a, "GET", "docs.example.com", "/", map[string]string{"x-auth-user": "1", "x-auth-kind": "server"})
	if !d.Allowed {
		t.Fatalf("denied: %s", d.Body)
	}
	if _, ok := header(d.UpstreamHeaders, HeaderUser); ok {
		t.Error("anonymous request carries x-auth-user")
	}
	if !slices.Equal(d.RemoveHeaders, []string{"x-auth-user"}) {
		t.Errorf("headers to remove = %v, want the spoofed x-auth-user", d.RemoveHeaders)
	}
	if v, _ := header(d.UpstreamHeaders, HeaderKind); v != "anonymous" {
		t.Errorf("x-auth-kind = %q", v)
	}
}

func TestCheckSingleUseServerToken(t *testing.T) {
	a := newTestAgent(t)
	h := map[string]string{"x-deki-token": token.MintServerToken("k1", newSecret("other-secret"), "5", testNow)}
	if d := check(t, a, "GET", "other.example.com", "/", h); !d.Allowed {
		t.Fatalf("first use denied: %s", d.Body)
	}
	d := check(t, a, "GET", "other.example.com", "/", h)
	if d.Reason != reason.ReplayedToken || d.Status != http.StatusUnauthorized {
		t.Fatalf("replay: %d %s", d.Status, d.Reason)
	}
}

func TestCheckNeverEchoesTokens(t *testing.T) {
	a := newTestAgent(t)
	bad := serverToken("guess", "42", testNow)
	for _, h := range []map[string]string{
		{"x-deki-token": bad},
		{"x-authtoken": "42_" + strings.Repeat("1", 18) + "_" + strings.Repeat("f", 64)},
		{"x-deki-token": bad, "cookie": "authtoken=" + authToken("1", testNow)},
	} {
		d := check(t, a, "GET", "docs.example.com", "/", h)
		for _, v := range h {
			if strings.Contains(string(d.Body), v) {
				t.Fatalf("denial body %s echoes a credential", d.Body)
			}
			for _, hd := range d.Headers {
				if strings.Contains(hd.Value, v) {
					t.Fatalf("denial header %v echoes a credential", hd)
				}
			}
		}
	}
}

// TestBrowserDenialsCarryCORS: once the browser key and its Origin have passed, a denial (bad
// Auth Token, route rule) carries the CORS headers, so the page's script can read the 401; a
// denial of the origin itself does not.
func TestBrowserDenialsCarryCORS(t *testing.T) {
	f := newBLAgent(t)
	origin := "https://app.example.com"
	tests := []struct {
		name    string
		path    string
		headers map[string]string
		want    reason.Reason
		cors    bool
	}{
		{"bad auth token", "/", map[string]string{"x-deki-token": "pub1", "x-authtoken": blAuthToken(blLegacyKey, "42"), "origin": origin}, reason.BadSignature, true},
		{"route needs authentication", "/@api/deki/site/x", map[string]string{"x-deki-token": "pub1", "origin": origin}, reason.AuthenticationRequired, true},
		{"origin refused", "/", map[string]string{"x-deki-token": "pub2", "origin": origin}, reason.OriginNotAllowed, false},
		{"same origin", "/@api/deki/site/x", map[string]string{"x-deki-token": "pub2", "origin": "https://docs.example.com"}, reason.AuthenticationRequired, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := f.check("GET", "docs.example.com", tc.path, tc.headers)
			if d.Allowed || d.Reason != tc.want {
				t.Fatalf("decision %v %s, want denied %s", d.Allowed, d.Reason, tc.want)
			}
			acao, ok := header(d.Headers, "access-control-allow-origin")
			if ok != tc.cors || (ok && acao != origin) {
				t.Fatalf("Access-Control-Allow-Origin = %q (present %v), want present %v", acao, ok, tc.cors)
			}
			if cred, _ := header(d.Headers, "access-control-allow-credentials"); tc.cors && cred != "true" {
				t.Fatalf("Access-Control-Allow-Credentials = %q", cred)
			}
		})
	}
}
