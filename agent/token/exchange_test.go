package token_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/agent/token/idtokentest"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
	"github.com/tokenagent/tokenagent/vault/jwks"
)

// TestIDTokenVerifierRotation: a provider that rotates its keys at its jwks_uri is followed
// (one refetch on the unknown kid), the result names the provider and the claims, and a
// refusal after the provider was found still names it.
func TestIDTokenVerifierRotation(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	clock := atomic.Int64{}
	clock.Store(now.UnixNano())
	nowFn := func() time.Time { return time.Unix(0, clock.Load()).UTC() }

	old := idtokentest.NewProvider(t, "https://idp.example.com", "docs-app")
	rotated := idtokentest.NewProvider(t, "https://idp.example.com", "docs-app")
	rotated.RS256 = idtokentest.Key{KID: "rsa-2", Alg: "RS256", Private: idtokentest.NewRSAKey(t)}
	var current atomic.Pointer[idtokentest.Provider]
	current.Store(old)
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		_, _ = w.Write([]byte(current.Load().JWKS(t, false)))
	}))
	defer srv.Close()
	store := filetest.Store(t, `
sites:
  docs:
    idps:
      corp: {issuer: "https://idp.example.com", client_id: docs-app, max_age: 300, jwks_uri: "`+srv.URL+`"}
`, vault.StoreOptions{Now: nowFn, Logger: slog.New(slog.DiscardHandler)})
	v := &token.IDTokenVerifier{Keys: store, JWKS: jwks.NewCache(jwks.Options{Now: nowFn}), Now: nowFn}
	site := &token.SiteSettings{ID: "docs"}
	ctx := context.Background()

	v.Prefetch(ctx, "docs")
	if fetches.Load() != 1 {
		t.Fatalf("prefetch fetched %d times", fetches.Load())
	}
	idt, err := v.Verify(ctx, site, old.Mint(t, old.Claims(now, "alice", map[string]any{"given_name": "Alice", "family_name": "Liddell"})))
	if err != nil {
		t.Fatal(err)
	}
	want := token.IDToken{Provider: "corp", Issuer: "https://idp.example.com", Subject: "alice", GivenName: "Alice",
		FamilyName: "Liddell", Email: "alice@example.com", IssuedAt: now, Expires: now.Add(5 * time.Minute)}
	if !idt.IssuedAt.Equal(want.IssuedAt) || !idt.Expires.Equal(want.Expires) {
		t.Errorf("times %v %v", idt.IssuedAt, idt.Expires)
	}
	idt.IssuedAt, idt.Expires = want.IssuedAt, want.Expires
	if idt != want {
		t.Errorf("got %+v\nwant %+v", idt, want)
	}

	// The provider rotates; a token under the new kid triggers one refetch.
	current.Store(rotated)
	clock.Add(int64(time.Minute))
	if _, err := v.Verify(ctx, site, rotated.Mint(t, rotated.Claims(nowFn(), "bob", nil))); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if fetches.Load() != 2 {
		t.Errorf("%d fetches, want 2", fetches.Load())
	}
	// Another unknown kid within 30 s: no new fetch, refused, and the provider is named.
	forged := idtokentest.Key{KID: "rsa-3", Alg: "RS256", Private: rotated.RS256.Private}
	idt, err = v.Verify(ctx, site, idtokentest.Sign(t, forged, rotated.Claims(nowFn(), "eve", nil), nil))
	var re *reason.Error
	if !errors.As(err, &re) || re.Reason != reason.InvalidIDToken || idt.Provider != "corp" || idt.Subject != "" {
		t.Errorf("unknown kid: %+v %v", idt, err)
	}
	if fetches.Load() != 2 {
		t.Errorf("%d fetches, want still 2", fetches.Load())
	}
	// max_age from the record: 300 s.
	_, err = v.Verify(ctx, site, rotated.Mint(t, rotated.Claims(nowFn().Add(-6*time.Minute-time.Second), "old", map[string]any{"exp": nowFn().Add(time.Minute).Unix()})))
	if !errors.As(err, &re) || re.Reason != reason.InvalidIDToken {
		t.Errorf("older than max_age: %v", err)
	}
}

// TestIDTokenVerifierSizes: the length limits hold before parsing.
func TestIDTokenVerifierSizes(t *testing.T) {
	v := &token.IDTokenVerifier{}
	for _, tok := range []string{"", string(make([]byte, token.MaxJWTLen+1))} {
		_, err := v.Verify(context.Background(), &token.SiteSettings{ID: "docs"}, tok)
		var re *reason.Error
		if !errors.As(err, &re) || re.Reason != reason.InvalidIDToken {
			t.Errorf("len %d: %v", len(tok), err)
		}
	}
}
