package agent

import (
	"context"
	"strings"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
)

// verify runs the verifier of the request's credential (SPEC §3): a server token by its tkn_
// prefix (or, where the site allows it, an unprefixed one), a Browser API Token with the
// request's Origin (and the Auth Token that may come with it; c.cors is set once it passes), an
// OAuth JWT, an Auth Token or Impersonation Auth Token by its imp_ prefix, or the Site API Key.
// No credential: anonymous.
func (a *Agent) verify(ctx context.Context, c *call) (token.Identity, error) {
	s, cr := &c.site.SiteSettings, &c.creds
	switch {
	case cr.deki.present:
		v := cr.deki.value
		switch {
		case strings.HasPrefix(v, token.ServerTokenPrefix):
			return a.servers.Verify(ctx, s, v)
		case strings.IndexByte(v, '_') >= 0:
			if !s.LegacyUnprefixedServerToken {
				return token.Identity{}, reason.Newf(reason.MalformedToken,
					"the X-Deki-Token is neither a browser key nor a tkn_ server token")
			}
			return a.servers.VerifyUnprefixed(ctx, s, v)
		}
		return a.verifyBrowser(ctx, c, v)
	case cr.bearer.present:
		return a.oauth.Verify(ctx, s, cr.bearer.value)
	case cr.auth.present:
		return a.verifyAuthToken(ctx, s, cr.auth.value)
	case cr.apikey.present:
		if !s.LegacyAPIKey {
			return token.Identity{}, reason.New(reason.LegacyTokenDisabled)
		}
		// A present but empty `impersonateuserid=` is not a decimal id.
		if cr.impersonate.present && cr.impersonate.value == "" {
			return token.Identity{}, reason.Newf(reason.MalformedToken, "impersonateuserid is empty")
		}
		return a.apikey.Verify(ctx, s, cr.apikey.value, cr.impersonate.value)
	}
	return token.Identity{Kind: token.KindAnonymous}, nil
}

// verifyAuthToken verifies an Auth Token or, by its prefix, an Impersonation Auth Token.
func (a *Agent) verifyAuthToken(ctx context.Context, s *token.SiteSettings, v string) (token.Identity, error) {
	if strings.HasPrefix(v, token.ImpersonationPrefix) {
		return a.impersonation.Verify(ctx, s, v)
	}
	return a.authTokens.Verify(ctx, s, v)
}

// verifyBrowser verifies a Browser API Token key against the request's Origin; once it passes,
// c.cors holds the CORS headers every answer carries from then on (so the page's script can
// read a 401), and the user is the one of the Auth Token that comes along, if any. An Origin
// header that is present but empty is refused like any malformed origin.
func (a *Agent) verifyBrowser(ctx context.Context, c *call, key string) (token.Identity, error) {
	origin, hasOrigin := c.req.Headers[headerOrigin]
	if hasOrigin && origin == "" {
		return token.Identity{}, reason.Newf(reason.OriginNotAllowed, "the Origin header is empty")
	}
	s := &c.site.SiteSettings
	id, err := a.browser.Verify(ctx, s, key, origin)
	if err != nil {
		return token.Identity{}, err
	}
	c.cors = token.CORSHeaders(origin, c.host)
	if !c.creds.auth.present {
		return id, nil
	}
	user, err := a.verifyAuthToken(ctx, s, c.creds.auth.value)
	if err != nil {
		return token.Identity{}, err
	}
	id.User, id.IssuedAt = user.User, user.IssuedAt
	if id.Expires.IsZero() || (!user.Expires.IsZero() && user.Expires.Before(id.Expires)) {
		id.Expires = user.Expires
	}
	return id, nil
}
