package token

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokenagent/tokenagent/agent/internal/clock"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
)

// ServerTokenPrefix starts every Server API Token.
const ServerTokenPrefix = "tkn_"

// decoySecret is the key a verification of an unknown server key is computed with, so that an
// unknown key and a bad signature take the same path and time.
var decoySecret = vault.NewSecret([]byte("tokenagent-decoy-secret-for-unknown-keys"))

// ServerTokenVerifier verifies the HMAC-signed Server API Token
// `tkn_{key}_{epoch}_{user}_{sig}` (SPEC §3.2), and the legacy unprefixed form
// `{key}_{epoch}_{user}_{sig}` when the site allows it.
//
// # Notes
//
//   - Safe for concurrent use; a verification of a valid token allocates nothing unless the
//     site asks for single use (one small entry in the replay cache).
//   - An unknown key is checked against a decoy secret, so timing does not tell unknown keys
//     from known keys with bad signatures; both answers still differ in their reason.
type ServerTokenVerifier struct {
	// Keys looks up the token's key (required).
	Keys ServerKeys
	// Replay remembers single-use tokens; required when any site sets server_token_single_use.
	Replay ReplayStore
	Now    func() time.Time
}

// serverTokenParts are the fields of a Server API Token, as substrings of it.
type serverTokenParts struct {
	key, epochStr, user, sig string
	epoch                    int64
}

// parseServerToken splits a Server API Token (without its "tkn_" prefix): key and epoch from
// the left, sig from the right, so a username may hold '_'.
func parseServerToken(body string) (serverTokenParts, bool) {
	i := strings.IndexByte(body, '_')
	if i < 1 || i > 64 {
		return serverTokenParts{}, false
	}
	key, rest := body[:i], body[i+1:]
	j := strings.IndexByte(rest, '_')
	if j < 1 {
		return serverTokenParts{}, false
	}
	epochStr, rest := rest[:j], rest[j+1:]
	k := strings.LastIndexByte(rest, '_')
	if k < 1 {
		return serverTokenParts{}, false
	}
	user, sig := rest[:k], rest[k+1:]
	epoch, ok := parseUint(epochStr)
	if !ok || !isAlnum(key) || !validUser(user) || !isHex64(sig) {
		return serverTokenParts{}, false
	}
	return serverTokenParts{key: key, epochStr: epochStr, user: user, sig: sig, epoch: epoch}, true
}

// Verify checks a Server API Token (with its "tkn_" prefix) for site. Reasons:
// malformed_token, unknown_key, bad_signature, revoked_key, token_expired,
// token_not_yet_valid, user_restricted (403), replayed_token, keys_unavailable.
func (v *ServerTokenVerifier) Verify(ctx context.Context, site *SiteSettings, tok string) (Identity, error) {
	if len(tok) > MaxTokenLen || !strings.HasPrefix(tok, ServerTokenPrefix) {
		return Identity{}, reason.New(reason.MalformedToken)
	}
	p, ok := parseServerToken(tok[len(ServerTokenPrefix):])
	if !ok {
		return Identity{}, reason.New(reason.MalformedToken)
	}
	return v.verify(ctx, site, p, false)
}

// VerifyUnprefixed checks the legacy form `{key}_{epoch}_{user}_{sig}` whose signature covers
// key, epoch and user with no separators. The caller checks the site's switch.
func (v *ServerTokenVerifier) VerifyUnprefixed(ctx context.Context, site *SiteSettings, tok string) (Identity, error) {
	if len(tok) > MaxTokenLen {
		return Identity{}, reason.New(reason.MalformedToken)
	}
	p, ok := parseServerToken(tok)
	if !ok {
		return Identity{}, reason.New(reason.MalformedToken)
	}
	return v.verify(ctx, site, p, true)
}

func (v *ServerTokenVerifier) verify(ctx context.Context, site *SiteSettings, p serverTokenParts, unprefixed bool) (Identity, error) {
	rec, err := v.Keys.ServerKey(ctx, site.ID, p.key)
	secret, known, rerr := secretOrDecoy(rec, err, func(k *vault.ServerKey) *vault.Secret { return k.Secret }, decoySecret)
	if rerr != nil {
		return Identity{}, rerr
	}
	var good bool
	if unprefixed {
		good = secret.VerifyHex(p.sig, p.key, p.epochStr, p.user)
	} else {
		good = secret.VerifyHex(p.sig, p.key, "_", p.epochStr, "_", p.user)
	}
	switch {
	case !known:
		return Identity{}, reason.New(reason.UnknownKey)
	case !good:
		return Identity{}, reason.New(reason.BadSignature)
	case rec.Disabled:
		return Identity{}, reason.New(reason.RevokedKey)
	}
	now := clock.Now(v.Now)
	issued := time.Unix(p.epoch, 0)
	window := site.ServerTokenWindow
	switch {
	case now.Sub(issued) > window:
		return Identity{}, reason.New(reason.TokenExpired)
	case issued.Sub(now) > window:
		return Identity{}, reason.New(reason.TokenNotYetValid)
	}
	if rec.RestrictedUser != "" && !sameUser(rec.RestrictedUser, p.user) {
		return Identity{}, reason.Newf(reason.UserRestricted, "the key may only act as its restricted user")
	}
	if site.ServerTokenSingleUse {
		if v.Replay == nil {
			return Identity{}, reason.From(errors.New("server_token_single_use is on but no replay cache is configured"))
		}
		first, err := v.Replay.FirstUse(ctx, site.ID, p.key, p.sig, issued.Add(window))
		if err != nil {
			return Identity{}, reason.From(err) // keys_unavailable: the memory cannot be asked (fail closed)
		}
		if !first {
			return Identity{}, reason.New(reason.ReplayedToken)
		}
	}
	return Identity{Kind: KindServer, User: p.user, Expires: issued.Add(window), IssuedAt: issued}, nil
}

// sameUser reports whether a key's restricted_user names the token's user. restricted may be a
// decimal id ("12"), "=" plus a username (encoded or not), or a bare username; usernames are
// compared decoded.
func sameUser(restricted, tokenUser string) bool {
	if allDigits(restricted) {
		return restricted == tokenUser
	}
	if tokenUser == "" || tokenUser[0] != '=' {
		return false
	}
	want := strings.TrimPrefix(restricted, "=")
	if w, err := url.QueryUnescape(want); err == nil {
		want = w
	}
	got, err := url.QueryUnescape(tokenUser[1:])
	if err != nil {
		return false
	}
	return got == want
}

// MintServerToken returns a Server API Token for key (with its secret) acting as user (a
// decimal id, or "=" and a username, which is URL-encoded here) made at t.
func MintServerToken(key string, secret *vault.Secret, user string, t time.Time) string {
	user = encodeUser(user)
	epoch := strconv.FormatInt(t.Unix(), 10)
	return ServerTokenPrefix + key + "_" + epoch + "_" + user + "_" + secret.HexMAC(key, "_", epoch, "_", user)
}

// MintUnprefixedServerToken returns the legacy unprefixed form of a Server API Token.
func MintUnprefixedServerToken(key string, secret *vault.Secret, user string, t time.Time) string {
	user = encodeUser(user)
	epoch := strconv.FormatInt(t.Unix(), 10)
	return key + "_" + epoch + "_" + user + "_" + secret.HexMAC(key, epoch, user)
}

func encodeUser(user string) string {
	if strings.HasPrefix(user, "=") {
		return "=" + url.QueryEscape(user[1:])
	}
	return user
}
