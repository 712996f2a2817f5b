package token

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tokenagent/tokenagent/agent/internal/clock"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/jwks"
)

// IDTokenVerifier verifies the OpenID Connect id_token of the Identity Token Exchange (SPEC
// §3.5, OpenID Connect Core §3.1.3.7) against the site's trusted identity providers
// (`idps/<name>` records).
//
//	v := &token.IDTokenVerifier{Keys: store, JWKS: keySets}
//	idt, err := v.Verify(ctx, site, idToken)
//
// The steps:
//
//  1. size (at most MaxJWTLen) and shape, the header parsed and checked as for access tokens
//     (see OAuthVerifier), except that a token explicitly typed as any kind of JWT (`typ`
//     ending in "+jwt": an access token, a logout token …) is refused;
//  2. the unverified `iss` picks the provider (among several with that issuer, the one whose
//     client_id the token's `aud` holds);
//  3. the signature must verify with a key of that provider only (inline `jwks`, or its
//     `jwks_uri` through the shared jwks.Cache, refetched at most once per 30 s on an unknown
//     kid), whose algorithms include the header's `alg` (HS256 only for a stored symmetric key
//     with `alg: HS256`);
//  4. claims: `aud` holds the provider's client_id; `azp`, when present, is the client_id;
//     `exp` is required and not past; `iat` is required, not in the future and no older than
//     the provider's max_age; `nbf`, when present, not in the future (60 s leeway on every
//     time); `sub` (at most 255 bytes), `given_name` and `family_name` are required non-empty
//     strings and `email` an optional string, none with control characters; a token with an
//     `events` claim (a logout or security event token) is refused.
//
// Every failure is a *reason.Error with reason invalid_id_token, except an expired token
// (token_expired) and a provider whose jwks_uri could never be fetched, or keys that cannot be
// read (keys_unavailable, 503 with Retry-After).
//
// # Notes
//
//   - Safe for concurrent use. Nothing is cached but the key sets: an id_token is exchanged
//     once.
//   - Errors never hold the token or a claim value.
type IDTokenVerifier struct {
	// Keys looks up the site's identity providers (required).
	Keys IdentityProviders
	// JWKS holds the providers' key sets (required; share the OAuth verifier's).
	JWKS *jwks.Cache
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// IDToken is what a verified id_token says of its user.
type IDToken struct {
	// Provider is the name of the identity provider record (`idps/<name>`) that vouched.
	Provider string
	// Issuer is the token's `iss`, Subject its `sub`.
	Issuer, Subject string
	// GivenName and FamilyName are the required name claims; Email is "" when absent.
	GivenName, FamilyName, Email string
	// IssuedAt and Expires are the token's `iat` and `exp`.
	IssuedAt, Expires time.Time
}

// IDTokenLeeway is the clock skew allowed on every time check of an id_token (SPEC §3.5).
const IDTokenLeeway = ClockSkew

// MaxSubjectLen is the longest `sub` accepted, in bytes (OpenID Connect Core §2).
const MaxSubjectLen = 255

// maxNameLen bounds the other string claims the exchange keeps, in bytes.
const maxNameLen = 1024

// Verify checks the id_token tok for site. On failure after the provider was found, the
// returned IDToken still names the Provider (for metrics).
func (v *IDTokenVerifier) Verify(ctx context.Context, site *SiteSettings, tok string) (IDToken, error) {
	if len(tok) == 0 {
		return IDToken{}, badIDToken("no id_token was sent")
	}
	if len(tok) > MaxJWTLen {
		return IDToken{}, badIDToken("the id_token is longer than 8 KiB")
	}
	p, rerr := parseJWS(tok, idTokenKind)
	if rerr != nil {
		return IDToken{}, rerr
	}
	var c idClaims
	if !decodeClaims(p.payload, &c) {
		return IDToken{}, badIDToken("the id_token's claims are not a valid JSON object")
	}
	idps, err := v.Keys.IdPs(ctx, site.ID)
	if err != nil && !errors.Is(err, vault.ErrNotFound) {
		return IDToken{}, unavailable(err, "")
	}
	rec, found := findIssuer(idps, c.Iss, &c.Aud,
		func(r *vault.IdP) string { return r.Issuer }, func(r *vault.IdP) string { return r.ClientID })
	if !found {
		return IDToken{}, badIDToken("the id_token's issuer is not an identity provider of this site")
	}
	out := IDToken{Provider: rec.Name, Issuer: c.Iss}
	keys := issuerKeys{}
	if rec.JWKSURI != "" {
		keys.remote = v.JWKS.Remote(rec.JWKSURI)
	} else if keys.inline, err = v.JWKS.Inline(rec.JWKS); err != nil {
		return out, &reason.Error{Reason: reason.InvalidIDToken, Detail: "the identity provider has no usable keys",
			Cause: fmt.Errorf("idps/%s: jwks: %w", rec.Name, err)}
	}
	if _, rerr := verifySignature(ctx, keys, p, idTokenKind); rerr != nil {
		return out, rerr
	}
	if rerr := checkIDClaims(&c, rec, clock.Now(v.Now)); rerr != nil {
		return out, rerr
	}
	out.Subject, out.GivenName, out.FamilyName, out.Email = c.Sub, c.GivenName, c.FamilyName, c.Email
	out.IssuedAt, out.Expires = c.Iat.time(), c.Exp.time()
	return out, nil
}

// Prefetch fetches the remote key sets of the given sites' identity providers now, so /readyz
// reports a jwks_uri that cannot be fetched before anyone exchanges a token. It waits at most
// until ctx ends.
func (v *IDTokenVerifier) Prefetch(ctx context.Context, sites ...string) {
	var remotes []*jwks.Remote
	for _, s := range sites {
		idps, err := v.Keys.IdPs(ctx, s)
		if err != nil {
			continue
		}
		for _, rec := range idps {
			if rec.JWKSURI != "" {
				remotes = append(remotes, v.JWKS.Remote(rec.JWKSURI))
			}
		}
	}
	fetchAll(ctx, remotes)
}

// checkIDClaims applies OpenID Connect Core §3.1.3.7 and SPEC §3.5 to a token whose signature
// verified.
func checkIDClaims(c *idClaims, rec *vault.IdP, now time.Time) *reason.Error {
	if !c.Aud.contains(rec.ClientID) {
		return badIDToken("the id_token's aud does not hold the provider's client_id")
	}
	if c.Azp != nil && *c.Azp != rec.ClientID {
		return badIDToken("the id_token's azp is not the provider's client_id")
	}
	if !c.Exp.set {
		return badIDToken("the id_token has no exp claim")
	}
	if now.After(c.Exp.time().Add(IDTokenLeeway)) {
		return reason.Newf(reason.TokenExpired, "the id_token has expired")
	}
	if !c.Iat.set {
		return badIDToken("the id_token has no iat claim")
	}
	iat := c.Iat.time()
	if iat.After(now.Add(IDTokenLeeway)) {
		return badIDToken("the id_token's iat is in the future")
	}
	maxAge := rec.MaxAge
	if maxAge <= 0 {
		maxAge = vault.DefaultIdPMaxAge
	}
	if now.Sub(iat) > maxAge+IDTokenLeeway {
		return badIDToken(fmt.Sprintf("the id_token was issued more than %s ago (the provider's max_age)", maxAge))
	}
	if c.Nbf.set && c.Nbf.time().After(now.Add(IDTokenLeeway)) {
		return badIDToken("the id_token's nbf is in the future")
	}
	if c.Events {
		return badIDToken("a logout or security event token is not an id_token")
	}
	for _, f := range []struct {
		name, val string
		max       int
	}{{"sub", c.Sub, MaxSubjectLen}, {"given_name", c.GivenName, maxNameLen}, {"family_name", c.FamilyName, maxNameLen}} {
		if strings.TrimSpace(f.val) == "" {
			return badIDToken("the id_token has no " + f.name + " claim")
		}
		if len(f.val) > f.max || !headerSafe(f.val) {
			return badIDToken("the id_token's " + f.name + " claim is too long or holds control characters")
		}
	}
	if len(c.Email) > maxNameLen || !headerSafe(c.Email) {
		return badIDToken("the id_token's email claim is too long or holds control characters")
	}
	return nil
}
