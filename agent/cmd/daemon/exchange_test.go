package daemon_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/exchange"
	"github.com/tokenagent/tokenagent/agent/token/idtokentest"
)

// startExchange runs a real daemon whose site docs trusts the identity provider p (record
// idps/corp in the key file) and returns it with the config's folder.
func startExchange(t *testing.T, p *idtokentest.Provider) (*daemontest.Env, string) {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "tokenagent.yaml")
	daemontest.WriteFile(t, cfgPath, configYAML)
	daemontest.WriteFile(t, filepath.Join(dir, "keys.yaml"), `
sites:
  docs:
    authtoken:
      - {key: "`+base64.StdEncoding.EncodeToString(authKey)+`", created: "2026-01-01T00:00:00Z"}
    idps:
      corp: `+p.RecordYAML(t, 0)+`
`)
	return daemontest.StartFile(t, cfgPath, daemontest.Options{Daemon: daemon.Options{Logger: slog.New(slog.DiscardHandler)}}), dir
}

// exchangeRequest is the CheckRequest Envoy sends for the exchange with body: as raw_body
// (pack_as_bytes) or as body.
func exchangeRequest(host, contentType, body string, raw bool) *authv3.CheckRequest {
	req := daemontest.CheckRequest("POST", host, exchange.Path, map[string]string{"content-type": contentType,
		"content-length": strconv.Itoa(len(body))})
	h := req.Attributes.Request.Http
	h.Size = int64(len(body))
	if raw {
		h.RawBody = []byte(body)
	} else {
		h.Body = body
	}
	return req
}

func deniedHeaders(r *authv3.CheckResponse) map[string]string {
	hs := map[string]string{}
	for _, h := range r.GetDeniedResponse().GetHeaders() {
		hs[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return hs
}

var sessionCookie = regexp.MustCompile(`^authtoken=([0-9]+_[0-9]{18}_[0-9a-f]{64}); Path=/; Max-Age=561600; HttpOnly; Secure; SameSite=Lax$`)

// TestExchangeOverGRPC: the exchange end to end through the real daemon as Envoy calls it —
// answered by the agent (PERMISSION_DENIED carrying 200), the user provisioned in the users
// file beside the keys, and the cookie then accepted on a Check as that user; refusals with
// their statuses; the exchange counted in /metrics.
func TestExchangeOverGRPC(t *testing.T) {
	p := idtokentest.NewProvider(t, "https://idp.example.com", "docs-app")
	e, dir := startExchange(t, p)
	ctx := context.Background()
	var id, session string
	for i, raw := range []bool{true, false} { // raw_body, then body: one user, one id
		tok := p.Mint(t, p.Claims(time.Now(), "alice@example.com", map[string]any{"given_name": "Alice", "family_name": "Liddell", "email": "alice@example.com"}))
		resp, err := e.Client.Check(ctx, exchangeRequest("docs.example.com", "application/x-www-form-urlencoded", "id_token="+tok, raw))
		if err != nil {
			t.Fatal(err)
		}
		if c := codes.Code(resp.GetStatus().GetCode()); c != codes.PermissionDenied || resp.GetDeniedResponse() == nil {
			t.Fatalf("exchange answer: %v", resp)
		}
		dr := resp.GetDeniedResponse()
		if dr.GetStatus().GetCode() != 200 {
			t.Fatalf("exchange status %d: %s", dr.GetStatus().GetCode(), dr.GetBody())
		}
		hs := deniedHeaders(resp)
		if hs["content-type"] != "application/json" {
			t.Errorf("content-type %q", hs["content-type"])
		}
		m := sessionCookie.FindStringSubmatch(hs["set-cookie"])
		if m == nil {
			t.Fatalf("set-cookie %q", hs["set-cookie"])
		}
		var u map[string]string
		if err := json.Unmarshal([]byte(dr.GetBody()), &u); err != nil {
			t.Fatal(err)
		}
		want := `{"@id":"` + u["@id"] + `","@anonymous":"false","username":"alice@example.com","fullname":"Alice Liddell","email":"alice@example.com"}`
		if dr.GetBody() != want {
			t.Errorf("body %s\nwant %s", dr.GetBody(), want)
		}
		if i == 0 {
			id, session = u["@id"], m[1]
		} else if u["@id"] != id {
			t.Errorf("the second exchange gave id %s, the first %s", u["@id"], id)
		}
	}

	// The cookie is a session: a write that needs a user is allowed, as that user.
	resp := e.Check(t, "POST", "docs.example.com", "/@api/deki/pages/home", map[string]string{"cookie": "authtoken=" + session})
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("the exchanged session was refused: %v", resp)
	}
	got := map[string]string{}
	for _, h := range ok.GetHeaders() {
		got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	if got["x-auth-user"] != id || got["x-auth-kind"] != "authtoken" {
		t.Errorf("upstream headers %v, want user %s", got, id)
	}
	b, err := os.ReadFile(filepath.Join(dir, "users.yaml"))
	if err != nil || !strings.Contains(string(b), "alice@example.com") || !strings.Contains(string(b), `id: "`+id+`"`) {
		t.Errorf("users.yaml beside the keys: %v\n%s", err, b)
	}

	// Refusals keep their statuses over the wire.
	for _, tc := range []struct {
		name   string
		body   string
		code   codes.Code
		status int32
		reason string
	}{
		{"expired", p.Mint(t, p.Claims(time.Now().Add(-10*time.Minute), "bob", map[string]any{"exp": time.Now().Add(-2 * time.Minute).Unix()})), codes.Unauthenticated, 401, "token_expired"},
		{"wrong audience", p.Mint(t, p.Claims(time.Now(), "bob", map[string]any{"aud": "elsewhere"})), codes.Unauthenticated, 401, "invalid_id_token"},
		{"oversized", strings.Repeat("a", exchange.MaxBody+1), codes.InvalidArgument, 413, "body_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.Client.Check(ctx, exchangeRequest("docs.example.com", "text/plain", tc.body, true))
			if err != nil {
				t.Fatal(err)
			}
			if c := codes.Code(resp.GetStatus().GetCode()); c != tc.code || int32(resp.GetDeniedResponse().GetStatus().GetCode()) != tc.status {
				t.Fatalf("got %v %d, want %v %d", c, resp.GetDeniedResponse().GetStatus().GetCode(), tc.code, tc.status)
			}
			if hs := deniedHeaders(resp); hs["x-auth-reason"] != tc.reason || hs["set-cookie"] != "" {
				t.Errorf("headers %v", hs)
			}
		})
	}
	// A body Envoy cut at its buffer limit (size larger than what it sent) is refused too.
	req := exchangeRequest("docs.example.com", "text/plain", p.Mint(t, p.Claims(time.Now(), "bob", nil)), true)
	req.Attributes.Request.Http.Size = 1 << 20
	if resp, err := e.Client.Check(ctx, req); err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 413 {
		t.Errorf("a truncated body: %v %v", resp, err)
	}

	_, metrics := get(t, e.HTTP+"/metrics")
	for _, want := range []string{
		`tokenagent_exchanges_total{outcome="created",provider="corp",site="docs"} 1`,
		`tokenagent_exchanges_total{outcome="existing",provider="corp",site="docs"} 1`,
		`tokenagent_exchanges_total{outcome="token_expired",provider="corp",site="docs"} 1`,
		`tokenagent_exchanges_total{outcome="body_too_large",provider="unknown",site="docs"} 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
