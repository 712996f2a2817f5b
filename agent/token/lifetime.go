package token

import (
	"encoding/json"
	"strings"
	"time"
)

// ValidUntil reads from a credential's text when it stops being valid at the latest, without
// verifying it: an Auth Token's issue time plus the site's authtoken_ttl, a Server API Token's
// epoch plus the site's window (either form), an Impersonation Auth Token's epoch plus its window, an OAuth
// JWT's exp claim (as written, unverified); each plus the clock skew the verifiers allow. ok
// is false for a credential whose lifetime is not in its text (a Browser API Token, the Site
// API Key) and for one that does not parse. A revocation entry for the credential can be
// dropped after it (SPEC §9).
func ValidUntil(credential string, site *SiteSettings) (time.Time, bool) {
	switch {
	case strings.HasPrefix(credential, ServerTokenPrefix):
		if p, ok := parseServerToken(credential[len(ServerTokenPrefix):]); ok {
			return time.Unix(p.epoch, 0).Add(windowOf(site) + ClockSkew), true
		}
	case strings.HasPrefix(credential, ImpersonationPrefix):
		if p, ok := parseImpersonationToken(credential); ok {
			return time.Unix(p.epoch, 0).Add(ImpersonationWindow + ClockSkew), true
		}
	case strings.Count(credential, ".") == 2:
		if jws, err := parseJWS(credential, accessTokenKind); err == nil {
			var c struct {
				Exp json.Number `json:"exp"`
			}
			if json.Unmarshal(jws.payload, &c) == nil {
				if exp, err := c.Exp.Float64(); err == nil && exp > 0 && exp < 1<<40 {
					return time.Unix(int64(exp), 0).Add(OAuthLeeway), true
				}
			}
		}
	default:
		if p, ok := parseAuthToken(credential); ok {
			ttl := site.AuthTokenTTL
			if ttl <= 0 {
				ttl = DefaultAuthTokenTTL
			}
			return p.issued.Add(ttl + ClockSkew), true
		}
		if p, ok := parseServerToken(credential); ok { // the legacy unprefixed form
			return time.Unix(p.epoch, 0).Add(windowOf(site) + ClockSkew), true
		}
	}
	return time.Time{}, false
}

func windowOf(site *SiteSettings) time.Duration {
	if site.ServerTokenWindow > 0 {
		return site.ServerTokenWindow
	}
	return DefaultServerTokenWindow
}
