package agent

import (
	"context"
	"runtime"
	"sync"
	"time"
	"weak"

	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/jwks"
)

// oauthState is the OAuth verifier's state (SPEC §3.4): the verifier, with its
// verified-token cache, over the issuers' key sets.
//
// The key sets (fetched jwks_uri documents, their refetch limits) and the metrics belong to the
// key store rather than to one Agent, so an Agent rebuilt on a config reload keeps them and
// does not fetch every issuer again. The verified-token cache is the Agent's own and is
// released when the Agent is dropped.
type oauthState struct {
	v          *token.OAuthVerifier
	prefetchMu sync.Mutex
	prefetched bool
}

// oauthShared is what every Agent built over one key store shares.
type oauthShared struct {
	jwks    *jwks.Cache
	metrics *token.OAuthMetrics
}

// sharedOAuth maps a key store (held weakly, so a dropped store is forgotten) to its
// oauthShared.
var sharedOAuth sync.Map // weak.Pointer[vault.Store] -> *oauthShared

// prefetchTimeout bounds the first /readyz call's fetch of the issuers' key sets.
const prefetchTimeout = 2 * time.Second

func (a *Agent) initOAuth() error {
	key := weak.Make(a.keys)
	sh, ok := sharedOAuth.Load(key)
	if !ok {
		fresh := &oauthShared{
			jwks: jwks.NewCache(jwks.Options{Now: a.now, Logger: a.log,
				Metrics: jwks.NewMetrics(a.reg)}),
			metrics: token.NewOAuthMetrics(a.reg),
		}
		var loaded bool
		if sh, loaded = sharedOAuth.LoadOrStore(key, fresh); !loaded {
			runtime.AddCleanup(a.keys, func(k weak.Pointer[vault.Store]) { sharedOAuth.Delete(k) }, key)
		}
	}
	shared := sh.(*oauthShared)
	v := &token.OAuthVerifier{Keys: a.keys, JWKS: shared.jwks, Now: a.now, Metrics: shared.metrics, Logger: a.log}
	a.oauth.v = v
	// The token cache lives as long as this Agent: a reload replaces the Agent, and the old
	// cache's goroutines stop once it is collected.
	runtime.AddCleanup(a, func(v *token.OAuthVerifier) { v.Close() }, v)

	return nil
}

// verifyOAuth verifies an `Authorization: Bearer` JWT (an OAuth API Token or a long-term JWT)
// against the site's own and external issuers. Route rules (require: user refusing an
// application token, scopes) are applied by the pipeline afterwards.
func (a *Agent) verifyOAuth(ctx context.Context, s *Site, jwt string) (token.Identity, error) {
	return a.oauth.v.Verify(ctx, &s.Site, jwt)
}

// oauthWarnings lists issuers whose jwks_uri cannot be fetched and stored keys left out as
// unusable.
func (a *Agent) oauthWarnings() []string {
	a.prefetchOAuth()
	return a.oauth.v.Warnings()
}

// prefetchOAuth fetches every site's external key sets once, on the first /readyz after the
// key source is ready, waiting up to prefetchTimeout: a jwks_uri that cannot be fetched shows
// before any token needs it, and the first tokens find their keys. It runs in the caller's
// goroutine, not at New, so no goroutine of the Agent reads the key store behind the caller's
// back (a store may be closed as soon as the Agent is dropped), and only once the source is
// ready, so it never marks a source that is still logging in as down.
func (a *Agent) prefetchOAuth() {
	if !a.oauth.prefetchMu.TryLock() {
		return // another /readyz is doing it
	}
	defer a.oauth.prefetchMu.Unlock()
	if a.oauth.prefetched || a.keys.Ready() != nil {
		return
	}
	a.oauth.prefetched = true
	ids := make([]string, len(a.list))
	for i, s := range a.list {
		ids[i] = s.ID
	}
	ctx, cancel := context.WithTimeout(context.Background(), prefetchTimeout)
	defer cancel()
	a.oauth.v.Prefetch(ctx, ids...)
}
