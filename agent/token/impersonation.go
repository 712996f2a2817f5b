package token

import (
	"context"
	"crypto/md5" //nolint:gosec // the legacy token's format prescribes MD5 (SPEC §3.6)
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokenagent/tokenagent/agent/internal/clock"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
)

// ImpersonationPrefix starts every legacy Impersonation Auth Token.
const ImpersonationPrefix = "imp_"

// ImpersonationWindow is how far an Impersonation Auth Token's epoch may lie from now, either
// way (SPEC §3.6).
const ImpersonationWindow = 60 * time.Second

// ImpersonationVerifier verifies the legacy Impersonation Auth Token
// `imp_{epoch}_{md5}_{user}` (SPEC §3.6): md5 is the hex MD5 of
// "{user without its leading =}:{epoch}:{site api key}", with the site's legacy API key.
//
// The user part is taken exactly as it stands in the credential value the agent found (a
// cookie or header as sent, a query parameter after its one URL-decoding): it is neither
// decoded nor re-encoded before it is digested, and `x-auth-user` carries it unchanged. As
// for a Server API Token, a username is "=" followed by the URL-encoded name (no spaces or
// control characters, well-formed %XX escapes), so the digest covers the encoded form.
//
// # Notes
//
//   - Safe for concurrent use. Parsing allocates nothing; a verification allocates one copy of
//     the API key (cleared after use), which MD5 needs as bytes.
//   - The site switch `legacy.impersonation` is checked first: off, every token of this form
//     is legacy_token_disabled, whatever it holds.
//   - The digest (either case) is compared in constant time, and before the times, so a
//     forged token learns nothing of the clock.
//   - Every accepted token is logged as a warning and counted (see LegacyAudit).
type ImpersonationVerifier struct {
	// Keys looks up the site's legacy record, whose API key signs the tokens (required).
	Keys LegacyKeys
	// Audit logs and counts accepted tokens; nil logs through slog.Default() and counts
	// nothing.
	Audit *LegacyAudit
	Now   func() time.Time
}

// impersonationParts are the fields of an Impersonation Auth Token, as substrings of it.
type impersonationParts struct {
	epochStr, digest, user string
	epoch                  int64
}

// parseImpersonationToken splits `imp_{epoch}_{md5}_{user}` without allocating: epoch up to
// the first '_', then exactly 32 hex digits and '_', then the user (which may hold '_').
func parseImpersonationToken(tok string) (impersonationParts, bool) {
	if len(tok) > MaxTokenLen || !strings.HasPrefix(tok, ImpersonationPrefix) {
		return impersonationParts{}, false
	}
	rest := tok[len(ImpersonationPrefix):]
	i := strings.IndexByte(rest, '_')
	if i < 1 {
		return impersonationParts{}, false
	}
	epochStr, rest := rest[:i], rest[i+1:]
	epoch, ok := parseUint(epochStr)
	if !ok || len(rest) < 2*md5.Size+2 || rest[2*md5.Size] != '_' {
		return impersonationParts{}, false
	}
	digest, user := rest[:2*md5.Size], rest[2*md5.Size+1:]
	for j := 0; j < len(digest); j++ {
		if !isHexDigit(digest[j]) {
			return impersonationParts{}, false
		}
	}
	if !validUser(user) {
		return impersonationParts{}, false
	}
	return impersonationParts{epochStr: epochStr, digest: digest, user: user, epoch: epoch}, true
}

// Verify checks an Impersonation Auth Token (with its "imp_" prefix) for site. Reasons:
// legacy_token_disabled (the site's switch is off), malformed_token, unknown_key (the site has
// no `legacy` record), bad_signature, token_expired (epoch more than 60 s ago),
// token_not_yet_valid (epoch more than 60 s ahead), keys_unavailable.
func (v *ImpersonationVerifier) Verify(ctx context.Context, site *SiteSettings, tok string) (Identity, error) {
	if !site.LegacyImpersonation {
		return Identity{}, reason.New(reason.LegacyTokenDisabled)
	}
	p, ok := parseImpersonationToken(tok)
	if !ok {
		return Identity{}, reason.New(reason.MalformedToken)
	}
	leg, err := v.Keys.Legacy(ctx, site.ID)
	if err != nil {
		if errors.Is(err, vault.ErrNotFound) {
			return Identity{}, reason.Newf(reason.UnknownKey, "the site has no legacy API key")
		}
		return Identity{}, unavailable(err, "")
	}
	if !impersonationDigestOK(leg.APIKey, p) {
		return Identity{}, reason.New(reason.BadSignature)
	}
	now := clock.Now(v.Now).Unix()
	window := int64(ImpersonationWindow / time.Second)
	switch {
	case now-p.epoch > window:
		return Identity{}, reason.New(reason.TokenExpired)
	case p.epoch-now > window:
		return Identity{}, reason.New(reason.TokenNotYetValid)
	}
	v.Audit.Used(site.ID, KindImpersonation, p.user, tok)
	return Identity{Kind: KindImpersonation, User: p.user, Expires: time.Unix(p.epoch, 0).Add(ImpersonationWindow),
		IssuedAt: time.Unix(p.epoch, 0)}, nil
}

// impersonationDigestOK compares p's digest (hex, either case) in constant time with the MD5
// of "{user without =}:{epoch}:{api key}".
func impersonationDigestOK(apiKey *vault.Secret, p impersonationParts) bool {
	var got [md5.Size]byte
	okHex := vault.DecodeHex(got[:], p.digest)
	want := impersonationDigest(apiKey, strings.TrimPrefix(p.user, "="), p.epochStr)
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1 && okHex
}

// impersonationDigest is MD5("{name}:{epoch}:{api key}"), built in a stack buffer when it fits.
func impersonationDigest(apiKey *vault.Secret, name, epoch string) [md5.Size]byte {
	var stack [512]byte
	msg := append(stack[:0], name...)
	msg = append(msg, ':')
	msg = append(msg, epoch...)
	msg = append(msg, ':')
	msg = apiKey.AppendKey(msg)
	sum := md5.Sum(msg)
	clear(msg)
	return sum
}

// MintImpersonationToken returns an Impersonation Auth Token for user (a decimal id, or "="
// and a username, which is URL-encoded here as a Server API Token's is) made at t, digested
// with the site's legacy API key. For tests and `tokenagent mint`.
func MintImpersonationToken(apiKey *vault.Secret, user string, t time.Time) string {
	if name, ok := strings.CutPrefix(user, "="); ok {
		user = "=" + url.QueryEscape(name)
	}
	epoch := strconv.FormatInt(t.Unix(), 10)
	sum := impersonationDigest(apiKey, strings.TrimPrefix(user, "="), epoch)
	return ImpersonationPrefix + epoch + "_" + hex.EncodeToString(sum[:]) + "_" + user
}
