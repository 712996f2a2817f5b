package faulttest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/token"
)

// TestJWKSDownAndStalled puts a fault injector between the agent and an external issuer's
// jwks_uri (a real HTTP server on 127.0.0.1) while OAuth tokens are checked under load:
//   - stalled: a token with an unknown kid makes the agent refetch the set, and that fetch is
//     held; meanwhile checks of tokens signed with the cached key keep being answered; once
//     the stall ends the unknown kid is 401 unknown_key;
//   - down (connections refused): cached keys keep working, an unknown kid is 401
//     unknown_key, and an issuer whose set could never be fetched is 503 keys_unavailable
//     with Retry-After; /readyz names the failing jwks_uri as a warning.
func TestJWKSDownAndStalled(t *testing.T) {
	keyA, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyB, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &keyA.PublicKey, KeyID: "a", Algorithm: "ES256", Use: "sig"}}})
	var fetches atomic.Int64
	issuer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(set)
	}))
	t.Cleanup(issuer.Close)
	p, err := NewProxy(strings.TrimPrefix(issuer.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	never, err := NewProxy(strings.TrimPrefix(issuer.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	never.Down() // this issuer's endpoint never answers
	t.Cleanup(never.Close)

	// The agent's clock runs ahead on command, so the test need not wait out the 30 s between
	// two fetches of one key set.
	var ahead atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	skip := func() { ahead.Add(int64(31 * time.Second)) }
	a := startDaemon(t, `
grpc_addr: 127.0.0.1:0
http_addr: 127.0.0.1:0
keys: {source: file, file: keys.yaml, refresh: 300ms}
sites:
  - id: docs
    hosts: [docs.example.com]
    routes:
      - {path: "/private/*", require: authenticated}
`, map[string]string{"keys.yaml": `
sites:
  docs:
    issuers:
      cxone: {issuer: "https://cxone.example.com", audience: "docs", jwks_uri: "` + p.URL() + `/jwks"}
      never: {issuer: "https://never.example.com", audience: "docs", jwks_uri: "` + never.URL() + `/jwks"}
`}, clock)
	daemontest.Eventually(t, "ready (the key sets prefetched)", func() bool { code, _ := a.Readyz(t); return code == 200 })

	var jti atomic.Int64
	jwt := func(key *ecdsa.PrivateKey, kid, iss string) *authv3.CheckRequest {
		tok, err := token.MintJWT(jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: "ES256"}, map[string]any{
			"iss": iss, "aud": "docs", "sub": "user-1", "client_id": "app", "exp": time.Now().Add(time.Hour).Unix(),
			"iat": time.Now().Unix(), "jti": fmt.Sprint(jti.Add(1)), // a new token each time: no verified-token cache hit
		})
		if err != nil {
			t.Error(err)
		}
		return daemontest.CheckRequest("GET", "docs.example.com", "/private/x", map[string]string{"authorization": "Bearer " + tok})
	}
	cached := func(_, _ int) *authv3.CheckRequest { return jwt(keyA, "a", "https://cxone.example.com") }
	l := startLoad(t, a.Client, 4, cached, mustAllow)
	l.setPhase(t, "jwks up", 200)

	// Stalled: an unknown kid's refetch is held while cached-key checks go on.
	skip()
	p.Stall()
	unknown := make(chan result, 1)
	go func() { unknown <- check(context.Background(), a.Client, jwt(keyB, "b", "https://cxone.example.com")) }()
	<-p.Holding()
	l.setPhase(t, "jwks stalled", 300)
	if p.Abandoned() != 0 {
		t.Fatal("the stalled refetch was given up before the cached-key checks were answered")
	}
	select {
	case r := <-unknown:
		t.Fatalf("the unknown kid was answered while its refetch was still held: %v", r)
	default:
	}
	p.Release()
	if r := <-unknown; r.code != codes.Unauthenticated || r.reason != "unknown_key" {
		t.Fatalf("unknown kid after the stalled refetch: %v, want 401 unknown_key", r)
	}

	// Down: connections refused; each round is past the refetch limit, so the agent does try.
	p.Down()
	l.setPhase(t, "jwks down", 300)
	for i := 0; i < 3; i++ {
		skip()
		if r := check(context.Background(), a.Client, jwt(keyB, fmt.Sprint("c", i), "https://cxone.example.com")); r.code != codes.Unauthenticated || r.reason != "unknown_key" {
			t.Fatalf("unknown kid while the jwks_uri is down: %v, want 401 unknown_key", r)
		}
		r := check(context.Background(), a.Client, jwt(keyA, "a", "https://never.example.com"))
		requireUnavailable(t, r, "an issuer whose keys were never fetched")
	}
	_, body := a.Readyz(t)
	if !strings.Contains(strings.Join(body.Warnings, "\n"), never.URL()) {
		t.Errorf("/readyz warnings do not name the never-fetched jwks_uri: %v", body.Warnings)
	}
	if err := p.Up(); err != nil {
		t.Fatal(err)
	}
	l.setPhase(t, "jwks back", 200)
	counts := l.finish(t)
	if t.Failed() {
		return
	}
	t.Logf("RESULT jwks-down-stall: %d OAuth checks with cached keys, 0 refused; unknown kid 401 unknown_key (stalled and down); never-fetched issuer 503; %d fetches served",
		sum(counts), fetches.Load())
}
