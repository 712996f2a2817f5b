package agent

import (
	"time"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
)

// Revocations is the fleet's revocation list as the pipeline reads it (SPEC §9): a local copy,
// no network call per check. package agent/fleet implements it over Redis.
type Revocations interface {
	// Revoked reports whether site's list refuses the verified identity or one of the
	// credentials as presented (their exact text).
	Revoked(site string, id *token.Identity, credentials [2]string) bool
	// Stale reports whether the list was last confirmed in sync more than max_stale before now.
	Stale(now time.Time) bool
}

// checkRevoked applies the revocation list to a verified credential (an anonymous request has
// none to revoke): revoked is 401 revoked; a stale list with on_stale: deny is 503
// keys_unavailable. It runs after every verification, so a JWT served from the verified-token
// cache is checked as often as one verified afresh.
func (a *Agent) checkRevoked(c *call, id *token.Identity) *reason.Error {
	rv := a.rt.revoked
	if rv == nil || c.kind == token.KindAnonymous {
		return nil
	}
	if a.denyStale && rv.Stale(c.start) {
		return reason.Newf(reason.KeysUnavailable, "the revocation list is not in sync (revocation.on_stale: deny)")
	}
	if rv.Revoked(c.site.ID, id, c.creds.presented()) {
		return reason.New(reason.Revoked)
	}
	return nil
}

// presented are the credentials the request presents as their exact text: the one its kind
// names, and the Auth Token that may come with a Browser API Token.
func (c *credentials) presented() [2]string {
	p := [2]string{c.primary()}
	if c.deki.present && c.auth.present {
		p[1] = c.auth.value
	}
	return p
}
