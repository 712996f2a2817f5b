package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
)

// The decision log tests' site trusts every credential kind: Auth Token, server tokens (both
// forms), a browser key, its own OAuth issuer, and both legacy credentials.
const dlConfig = `
keys: {source: file, file: keys.yaml}
log: {allow_sample: %SAMPLE%}
sites:
  - id: docs
    hosts: [docs.example.com]
    legacy: {impersonation: true, apikey: true, unprefixed_server_tokens: true}
    routes:
      - {path: "/admin", require: user}
  - id: other
    hosts: [other.example.com]
`

const (
	dlServerSecret = "decision-log-server-secret-0001"
	dlAPIKey       = "decision-log-site-api-key-0002"
)

var (
	dlAuthKey  = []byte("decision-log-auth-token-key-32by")
	dlOtherKey = []byte("decision-log-other-site-key-32by")
)

type dlFixture struct {
	a    *Agent
	logs *syncBuffer
	ec   *ecdsa.PrivateKey
}

func newDLAgent(t *testing.T, sample string) *dlFixture {
	t.Helper()
	f := &dlFixture{logs: &syncBuffer{}}
	var err error
	if f.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	jwk, err := (&jose.JSONWebKey{Key: &f.ec.PublicKey, KeyID: "docs-1"}).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	keys := `
sites:
  docs:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(dlAuthKey) + `", created: "2026-11-01T00:00:00Z"}
    server-tokens:
      k1: {secret: "` + dlServerSecret + `"}
    browser-tokens:
      pub1: {origins: ["https://app.example.org"]}
    oauth: {issuer: "https://docs.example.com", audience: docs, jwks: {keys: [` + string(jwk) + `]}}
    legacy: {apikey: "` + dlAPIKey + `"}
  other:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(dlOtherKey) + `", created: "2026-11-01T00:00:00Z"}
`
	cfg, err := config.Parse([]byte(strings.Replace(dlConfig, "%SAMPLE%", sample, 1)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clock := func() time.Time { return testNow }
	store := filetest.Store(t, keys, vault.StoreOptions{Now: clock, Logger: slog.New(slog.DiscardHandler)})
	log := slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if f.a, err = New(newRuntime(t, RuntimeOptions{Keys: store, Now: clock, Logger: log}), cfg); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *dlFixture) jwt(t *testing.T, aud string) string {
	t.Helper()
	tok, err := token.MintJWT(jose.JSONWebKey{Key: f.ec, KeyID: "docs-1"}, map[string]any{
		"iss": "https://docs.example.com", "aud": aud, "sub": "user-1", "client_id": "app-1", "scope": "read",
		"iat": testNow.Unix(), "exp": testNow.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *dlFixture) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(f.logs.String()), "\n") {
		if l == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("a log line is not JSON: %q", l)
		}
		out = append(out, rec)
	}
	return out
}

// secretParts are the strings of a credential that must never be logged: the whole token, its
// URL-encoded form, and its signature (a token's secret part, which alone could be replayed
// with the rest guessed).
func secretParts(tok string) []string {
	parts := []string{tok, url.QueryEscape(tok)}
	if i := strings.LastIndexAny(tok, "_."); i >= 0 && len(tok)-i > 16 {
		parts = append(parts, tok[i+1:])
	}
	return parts
}

// TestDecisionLogRedaction feeds real tokens of every kind through Check, allowed and denied,
// with every decision logged, and checks that no log line holds a token, a signature or a key.
func TestDecisionLogRedaction(t *testing.T) {
	f := newDLAgent(t, "1")
	at := testNow
	auth := token.MintAuthToken(vault.NewSecret(dlAuthKey), "42", at)
	otherAuth := token.MintAuthToken(vault.NewSecret(dlOtherKey), "42", at)
	expiredAuth := token.MintAuthToken(vault.NewSecret(dlAuthKey), "42", at.Add(-30*24*time.Hour))
	server := token.MintServerToken("k1", vault.NewSecret([]byte(dlServerSecret)), "=jane_doe@x", at)
	forged := token.MintServerToken("k1", vault.NewSecret([]byte("guess")), "1", at)
	unprefixed := token.MintUnprefixedServerToken("k1", vault.NewSecret([]byte(dlServerSecret)), "7", at)
	imp := token.MintImpersonationToken(vault.NewSecret([]byte(dlAPIKey)), "=jdoe", at)
	oauth := f.jwt(t, "docs")
	oauthWrongAud := f.jwt(t, "elsewhere")

	tests := []struct {
		name    string
		host    string
		path    string
		headers map[string]string
		allowed bool
		creds   []string // credentials on the request, each to be fingerprinted, never logged
	}{
		{"auth token cookie", "docs.example.com", "/admin", map[string]string{"cookie": "authtoken=" + auth}, true, []string{auth}},
		{"auth token header", "docs.example.com", "/", map[string]string{"x-authtoken": auth}, true, []string{auth}},
		{"auth token query", "docs.example.com", "/?authtoken=" + url.QueryEscape(auth), nil, true, []string{auth}},
		{"auth token of another site", "other.example.com", "/", map[string]string{"x-authtoken": auth}, false, []string{auth}},
		{"auth token of the other site at docs", "docs.example.com", "/", map[string]string{"x-authtoken": otherAuth}, false, []string{otherAuth}},
		{"expired auth token", "docs.example.com", "/", map[string]string{"x-authtoken": expiredAuth}, false, []string{expiredAuth}},
		{"server token", "docs.example.com", "/admin", map[string]string{"x-deki-token": server}, true, []string{server}},
		{"forged server token", "docs.example.com", "/", map[string]string{"x-deki-token": forged}, false, []string{forged}},
		{"unprefixed server token", "docs.example.com", "/", map[string]string{"x-deki-token": unprefixed}, true, []string{unprefixed}},
		{"browser key with auth token", "docs.example.com", "/admin", map[string]string{"x-deki-token": "pub1",
			"cookie": "authtoken=" + auth, "origin": "https://app.example.org"}, true, []string{"pub1"}},
		{"browser key, bad origin", "docs.example.com", "/", map[string]string{"x-deki-token": "pub1",
			"cookie": "authtoken=" + auth, "origin": "https://evil.example.net"}, false, []string{"pub1"}},
		{"oauth", "docs.example.com", "/", map[string]string{"authorization": "Bearer " + oauth}, true, []string{oauth}},
		{"oauth wrong audience", "docs.example.com", "/", map[string]string{"authorization": "Bearer " + oauthWrongAud}, false, []string{oauthWrongAud}},
		{"impersonation", "docs.example.com", "/admin", map[string]string{"x-authtoken": imp}, true, []string{imp}},
		{"api key", "docs.example.com", "/?apikey=" + url.QueryEscape(dlAPIKey) + "&impersonateuserid=5", nil, true, []string{dlAPIKey}},
		{"wrong api key", "docs.example.com", "/?apikey=" + url.QueryEscape(dlAPIKey+"x"), nil, false, []string{dlAPIKey + "x"}},
		{"two credentials", "docs.example.com", "/?authtoken=" + url.QueryEscape(auth), map[string]string{"x-deki-token": server}, false, []string{server}},
		{"anonymous on a user route", "docs.example.com", "/admin", nil, false, nil},
	}
	never := []string{dlServerSecret, dlAPIKey, string(dlAuthKey), string(dlOtherKey),
		base64.StdEncoding.EncodeToString(dlAuthKey), base64.StdEncoding.EncodeToString(dlOtherKey)}
	ids := map[string]string{} // decision id -> case
	for _, tc := range tests {
		d := f.a.Check(context.Background(), &Request{Method: "GET", Scheme: "https", Host: tc.host, Path: tc.path, Headers: orEmpty(tc.headers)})
		if d.Allowed != tc.allowed {
			t.Fatalf("%s: allowed = %v (%s), want %v", tc.name, d.Allowed, d.Reason, tc.allowed)
		}
		ids[d.ID.String()] = tc.name
		for _, c := range tc.creds {
			never = append(never, secretParts(c)...)
		}
	}
	never = append(never, secretParts(auth)...) // also sent alongside other credentials

	lines := f.lines(t)
	logged := map[string]map[string]any{}
	for _, rec := range lines {
		if id, ok := rec["decision_id"].(string); ok {
			logged[id] = rec
		}
	}
	raw := f.logs.String()
	for _, s := range never {
		if s != "" && strings.Contains(raw, s) {
			t.Errorf("the log holds a secret or credential %.12q…", s)
		}
	}
	for id, name := range ids {
		rec, ok := logged[id]
		if !ok {
			t.Errorf("%s: no log line for decision %s", name, id)
			continue
		}
		for _, tc := range tests {
			if tc.name != name || len(tc.creds) == 0 {
				continue
			}
			if rec["credential_sha256"] != token.CredentialFingerprint(tc.creds[0]) {
				t.Errorf("%s: credential_sha256 = %v, want the fingerprint of the credential", name, rec["credential_sha256"])
			}
		}
		for _, field := range []string{"site", "kind", "method", "host", "path", "status", "duration_seconds"} {
			if _, ok := rec[field]; !ok {
				t.Errorf("%s: log line lacks %s: %v", name, field, rec)
			}
		}
		if strings.Contains(rec["path"].(string), "?") {
			t.Errorf("%s: the logged path holds the query: %v", name, rec["path"])
		}
	}
}

func orEmpty(h map[string]string) map[string]string {
	if h == nil {
		return map[string]string{}
	}
	return h
}

func TestDecisionLogSampling(t *testing.T) {
	tests := []struct {
		sample        string
		allowed, want int
	}{
		{"0", 9, 0},
		{"1", 9, 9},
		{"3", 9, 3},
	}
	for _, tc := range tests {
		t.Run("allow_sample "+tc.sample, func(t *testing.T) {
			f := newDLAgent(t, tc.sample)
			for range tc.allowed {
				if d := check(t, f.a, "GET", "docs.example.com", "/", nil); !d.Allowed {
					t.Fatal("denied")
				}
			}
			for range 2 {
				check(t, f.a, "GET", "docs.example.com", "/admin", nil) // denied: always logged
			}
			counts := map[string]int{}
			for _, rec := range f.lines(t) {
				counts[rec["msg"].(string)]++
				if rec["msg"] == LogAllowed && (rec["kind"] != "anonymous" || rec["status"] != float64(200)) {
					t.Errorf("allowed line %v", rec)
				}
				if rec["msg"] == LogDenied && rec["reason"] != "authentication_required" {
					t.Errorf("denied line %v", rec)
				}
			}
			if counts[LogAllowed] != tc.want || counts[LogDenied] != 2 {
				t.Errorf("lines %v, want %d allowed and 2 denied", counts, tc.want)
			}
		})
	}
}

func TestDecisionID(t *testing.T) {
	if DecisionID(0).String() != "" {
		t.Error("the zero id is not empty")
	}
	if got := DecisionID(0xab).String(); got != "00000000000000ab" {
		t.Errorf("String = %q", got)
	}
	seen := map[DecisionID]bool{}
	for range 10000 {
		id := NewDecisionID()
		if id == 0 || seen[id] {
			t.Fatalf("id %v is zero or repeated", id)
		}
		seen[id] = true
		back, err := ParseDecisionID(id.String())
		if err != nil || back != id {
			t.Fatalf("ParseDecisionID(%q) = %v, %v", id.String(), back, err)
		}
	}
	for _, bad := range []string{"", "abc", "zzzzzzzzzzzzzzzz", "00000000000000abc"} {
		if _, err := ParseDecisionID(bad); err == nil {
			t.Errorf("ParseDecisionID(%q) accepted", bad)
		}
	}
	// Every decision of Check has its own id.
	a := newTestAgent(t)
	d1, d2 := check(t, a, "GET", "docs.example.com", "/", nil), check(t, a, "GET", "nowhere.example.com", "/", nil)
	if d1.ID == 0 || d2.ID == 0 || d1.ID == d2.ID {
		t.Errorf("ids %v and %v", d1.ID, d2.ID)
	}
}

func TestClip(t *testing.T) {
	long := strings.Repeat("é", 200) // 400 bytes
	c := clip(long)
	if len(c) > maxLogValue+len("…") || !strings.HasSuffix(c, "…") || !strings.HasPrefix(long, strings.TrimSuffix(c, "…")) {
		t.Errorf("clip cut %d bytes badly", len(c))
	}
	if clip("short") != "short" {
		t.Error("clip changed a short value")
	}
}
