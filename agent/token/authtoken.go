package token

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/tokenagent/tokenagent/agent/internal/clock"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
)

// ticksAtUnixEpoch is 1970-01-01T00:00:00Z in .NET ticks (100 ns since 0001-01-01).
const ticksAtUnixEpoch = 621355968000000000

// AuthTokenVerifier verifies the signed Auth Token `{userid}_{ticks}_{sig}` (SPEC §3.1)
// against the site's key generations.
//
// # Notes
//
//   - Safe for concurrent use; a verification of a valid token allocates nothing.
//   - The signature is checked before the times, so a forged token learns nothing of the
//     key's state.
type AuthTokenVerifier struct {
	// Keys looks up the site's Auth Token key generations (required).
	Keys AuthTokenKeys
	Now  func() time.Time
}

// authTokenParts are the fields of an Auth Token, as substrings of it.
type authTokenParts struct {
	user   string
	signed string // "{userid}_{ticks}"
	sig    string
	issued time.Time
}

// parseAuthToken splits and checks the shape of an Auth Token without allocating.
func parseAuthToken(tok string) (authTokenParts, bool) {
	if len(tok) == 0 || len(tok) > MaxTokenLen {
		return authTokenParts{}, false
	}
	i := strings.IndexByte(tok, '_')
	if i < 1 {
		return authTokenParts{}, false
	}
	rest := tok[i+1:]
	j := strings.IndexByte(rest, '_')
	if j != 18 {
		return authTokenParts{}, false
	}
	user, ticks, sig := tok[:i], rest[:j], rest[j+1:]
	if !ValidUserID(user) || !isHex64(sig) {
		return authTokenParts{}, false
	}
	t, ok := parseUint(ticks)
	if !ok || t < ticksAtUnixEpoch {
		return authTokenParts{}, false
	}
	t -= ticksAtUnixEpoch
	issued := time.Unix(t/1e7, (t%1e7)*100)
	return authTokenParts{user: user, signed: tok[:i+1+j], sig: sig, issued: issued}, true
}

// Verify checks tok for site. It returns the user the token names, or a *reason.Error:
// malformed_token, bad_signature, token_expired, token_not_yet_valid, unknown_key (the site
// has no Auth Token key) or keys_unavailable.
func (v *AuthTokenVerifier) Verify(ctx context.Context, site *SiteSettings, tok string) (Identity, error) {
	p, ok := parseAuthToken(tok)
	if !ok {
		return Identity{}, reason.New(reason.MalformedToken)
	}
	now := clock.Now(v.Now)
	keys, err := v.Keys.AuthTokenKeys(ctx, site.ID, site.AuthTokenRotationGrace)
	if err != nil {
		if errors.Is(err, vault.ErrNotFound) {
			return Identity{}, reason.Newf(reason.UnknownKey, "the site has no auth token key")
		}
		return Identity{}, unavailable(err, "")
	}
	if !verifyWithGenerations(keys, site.AuthTokenRotationGrace, now, p.sig, p.signed) {
		return Identity{}, reason.New(reason.BadSignature)
	}
	switch {
	case now.Sub(p.issued) > site.AuthTokenTTL:
		return Identity{}, reason.New(reason.TokenExpired)
	case p.issued.Sub(now) > ClockSkew:
		return Identity{}, reason.New(reason.TokenNotYetValid)
	}
	return Identity{Kind: KindAuthToken, User: p.user, Expires: p.issued.Add(site.AuthTokenTTL), IssuedAt: p.issued}, nil
}

// verifyWithGenerations checks sig over msg against the current key and each older generation
// whose successor was created no longer than grace before now.
func verifyWithGenerations(keys *vault.AuthTokenKeys, grace time.Duration, now time.Time, sig, msg string) bool {
	for i, g := range keys.Generations {
		if i > 0 {
			replaced := g.Replaced
			if replaced.IsZero() {
				replaced = keys.Generations[i-1].Created
			}
			if now.Sub(replaced) > grace {
				continue // an older generation may have been replaced later: check each
			}
		}
		if g.Secret.VerifyHex(sig, msg) {
			return true
		}
	}
	return false
}

// UnixToTicks converts a time to .NET ticks.
func UnixToTicks(t time.Time) int64 {
	return t.Unix()*1e7 + int64(t.Nanosecond()/100) + ticksAtUnixEpoch
}

// MintAuthToken returns an Auth Token for userid issued at t, signed with key.
func MintAuthToken(key *vault.Secret, userid string, t time.Time) string {
	// Whole seconds, as the vendor's tokens carry: ticks = t*10^7 + epoch offset.
	ticks := t.Unix()*1e7 + ticksAtUnixEpoch
	signed := userid + "_" + strconv.FormatInt(ticks, 10)
	return signed + "_" + key.HexMAC(signed)
}
