package agent

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
)

// Request headers of the browser flow (lower case, as Request.Headers holds them).
const (
	headerOrigin         = "origin"
	headerRequestMethod  = "access-control-request-method"
	headerRequestHeaders = "access-control-request-headers"
)

// verify runs the verifier of the request's credential kind. It returns the CORS headers to
// add to every answer once a Browser API Token and its Origin have passed.
func (a *Agent) verify(ctx context.Context, s *Site, req *Request, c *credentials) (token.Identity, []Header, error) {
	switch {
	case c.deki.present:
		v := c.deki.value
		switch {
		case strings.HasPrefix(v, token.ServerTokenPrefix):
			id, err := a.servers.Verify(ctx, &s.Site, v)
			return id, nil, err
		case strings.IndexByte(v, '_') >= 0:
			if !s.LegacyUnprefixedServerToken {
				return token.Identity{}, nil, reason.Newf(reason.MalformedToken,
					"the X-Deki-Token is neither a browser key nor a tkn_ server token")
			}
			id, err := a.servers.VerifyUnprefixed(ctx, &s.Site, v)
			return id, nil, err
		}
		id, cors, err := a.verifyBrowser(ctx, s, req, v)
		if err != nil || !c.auth.present {
			return id, cors, err
		}
		// A Browser API Token with an Auth Token: the user is the Auth Token's.
		user, err := a.verifyAuth(ctx, s, c.auth.value)
		if err != nil {
			return token.Identity{}, cors, err
		}
		id.User = user.User
		if id.Expires.IsZero() || (!user.Expires.IsZero() && user.Expires.Before(id.Expires)) {
			id.Expires = user.Expires
		}
		return id, cors, nil
	case c.bearer.present:
		id, err := a.oauth.Verify(ctx, &s.Site, c.bearer.value)
		return id, nil, err
	case c.auth.present:
		id, err := a.verifyAuth(ctx, s, c.auth.value)
		return id, nil, err
	case c.apikey.present:
		id, err := a.verifyAPIKey(ctx, s, c.apikey.value, c.impersonate)
		return id, nil, err
	}
	return token.Identity{Kind: token.KindAnonymous}, nil, nil
}

// verifyAuth verifies an Auth Token or, by its prefix, an Impersonation Auth Token.
func (a *Agent) verifyAuth(ctx context.Context, s *Site, v string) (token.Identity, error) {
	if strings.HasPrefix(v, impersonationPrefix) {
		return a.impersonation.Verify(ctx, &s.Site, v)
	}
	return a.authTokens.Verify(ctx, &s.Site, v)
}

// verifyAPIKey verifies the legacy Site API Key, acting as the `impersonateuserid` parameter
// when it is there. A present but empty `impersonateuserid=` is not a decimal id:
// malformed_token.
func (a *Agent) verifyAPIKey(ctx context.Context, s *Site, key string, impersonate credential) (token.Identity, error) {
	if !s.LegacyAPIKey {
		return token.Identity{}, reason.New(reason.LegacyTokenDisabled)
	}
	if impersonate.present && impersonate.value == "" {
		return token.Identity{}, reason.Newf(reason.MalformedToken, "impersonateuserid is empty")
	}
	return a.apikey.Verify(ctx, &s.Site, key, impersonate.value)
}

// verifyBrowser verifies a Browser API Token key against the request's Origin and returns the
// CORS headers to add to the response of an allowed cross-origin request. The identity names
// no user; the pipeline sets the user of an Auth Token that comes along. An Origin header that
// is present but empty is refused like any malformed origin.
func (a *Agent) verifyBrowser(ctx context.Context, s *Site, req *Request, key string) (token.Identity, []Header, error) {
	origin, hasOrigin := req.Headers[headerOrigin]
	if hasOrigin && origin == "" {
		return token.Identity{}, nil, reason.Newf(reason.OriginNotAllowed, "the Origin header is empty")
	}
	id, err := a.browser.Verify(ctx, &s.Site, key, origin)
	if err != nil {
		return token.Identity{}, nil, err
	}
	return id, toHeaders(token.CORSHeaders(origin, req.Host)), nil
}

// preflight answers a CORS preflight request itself: 204 with the CORS headers when the site
// has a browser key and the origin is one of the site's hostnames or a trusted origin of any
// of its browser keys, 403 origin_not_allowed otherwise.
func (a *Agent) preflight(ctx context.Context, s *Site, req *Request) *Decision {
	h, err := a.browser.Preflight(ctx, &s.Site, req.Headers[headerOrigin],
		req.Headers[headerRequestMethod], req.Headers[headerRequestHeaders])
	if err != nil {
		d := a.deny(s, reason.From(err))
		d.own = true
		return d
	}
	return answer(s, http.StatusNoContent, toHeaders(h), nil)
}

// doExchange answers `POST /@app/auth/token/exchange` itself (package exchange).
func (a *Agent) doExchange(ctx context.Context, s *Site, req *Request) *Decision {
	ans, rerr := a.exchange.Exchange(ctx, &s.Site, req.Body, req.BodyTruncated)
	if rerr != nil {
		d := a.deny(s, rerr)
		d.own = true
		return d
	}
	d := answer(s, ans.Status, toHeaders(ans.Headers), ans.Body)
	d.Identity = ans.Identity
	return d
}

// toHeaders converts the verifiers' headers to the Decision's.
func toHeaders(h []token.HTTPHeader) []Header {
	if len(h) == 0 {
		return nil
	}
	out := make([]Header, len(h))
	for i, x := range h {
		out[i] = Header{Name: x.Name, Value: x.Value}
	}
	return out
}

// prefetchTimeout bounds the first Warnings call's reads and fetches.
const prefetchTimeout = 2 * time.Second

// prefetch reads every site's site-wide key records (Auth Token keys, own and external OAuth
// issuers, identity providers, browser keys, and the legacy record where a legacy switch is on)
// and fetches their remote key sets, once, on the first Warnings (the first /readyz) after the
// key source is ready, waiting up to prefetchTimeout. So the first /readyz already lists an
// invalid record and a jwks_uri that cannot be fetched, before any token needs them, and the
// first tokens find their keys cached. It runs in the caller's goroutine, not at New, so no
// goroutine of the Agent reads the key store behind the caller's back, and only once the
// source is ready, so it never marks a source that is still logging in as down. Records read
// here are cached as any other and refreshed only while checks use them.
func (a *Agent) prefetch() {
	if !a.prefetchMu.TryLock() {
		return // another /readyz is doing it
	}
	defer a.prefetchMu.Unlock()
	if a.prefetched || a.rt.keys.Ready() != nil {
		return
	}
	a.prefetched = true
	ctx, cancel := context.WithTimeout(context.Background(), prefetchTimeout)
	defer cancel()
	keys := a.rt.keys
	ids := make([]string, len(a.list))
	for i, s := range a.list {
		ids[i] = s.ID
		// Errors are the store's to report (its warnings); only the reads matter here.
		_, _ = keys.AuthTokenKeys(ctx, s.ID, s.AuthTokenRotationGrace)
		_, _ = keys.BrowserKeys(ctx, s.ID)
		if s.LegacyAPIKey || s.LegacyImpersonation {
			_, _ = keys.Legacy(ctx, s.ID)
		}
	}
	a.oauth.Prefetch(ctx, ids...)
	a.idTokens.Prefetch(ctx, ids...)
}
