package token

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/jwks"
)

// IDTokenVerifier verifies the OpenID Connect id_token of the Identity Token Exchange (SPEC
// §3.5, OpenID Connect Core §3.1.3.7) against the site's trusted identity providers
// (`idps/<name>` records).
//
//	v := &token.IDTokenVerifier{Keys: store, JWKS: jwks.NewCache(jwks.Options{})}
//	idt, err := v.Verify(ctx, site, idToken)
//
// The steps:
//
//  1. size (at most MaxJWTLen) and shape: three canonical base64url segments;
//  2. go-jose parses the JWS with only RS256, PS256, ES256, EdDSA and HS256 allowed (`none`
//     and every other alg refused); a `crit` or `b64` header, a nested JWT (`cty: JWT`) and a
//     token explicitly typed as another kind of JWT (`typ` ending in "+jwt": an access token,
//     a logout token …) are refused; `jku`, `x5u`, `jwk`, `x5c` are never used;
//  3. the unverified `iss` picks the provider (among several with that issuer, the one whose
//     client_id the token's `aud` holds);
//  4. the signature must verify with a key of that provider only (inline `jwks`, or its
//     `jwks_uri` through the shared jwks.Cache, refetched at most once per 30 s on an unknown
//     kid), whose algorithms include the header's `alg` (HS256 only for a stored symmetric key
//     with `alg: HS256`);
//  5. claims: `aud` holds the provider's client_id; `azp`, when present, is the client_id;
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
	// Keys is the key store holding the `idps/<name>` records (required).
	Keys *vault.Store
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
func (v *IDTokenVerifier) Verify(ctx context.Context, site *Site, tok string) (IDToken, error) {
	if len(tok) == 0 {
		return IDToken{}, badIDToken("no id_token was sent")
	}
	if len(tok) > MaxJWTLen {
		return IDToken{}, badIDToken("the id_token is longer than 8 KiB")
	}
	p, c, rerr := parseIDToken(tok)
	if rerr != nil {
		return IDToken{}, rerr
	}
	idps, err := v.Keys.IdPs(ctx, site.ID)
	if err != nil && !errors.Is(err, vault.ErrNotFound) {
		return IDToken{}, reason.From(err)
	}
	rec := findIdP(idps, c.iss, &c.aud)
	if rec == nil {
		return IDToken{}, badIDToken("the id_token's issuer is not an identity provider of this site")
	}
	out := IDToken{Provider: rec.Name, Issuer: c.iss}
	if err := v.checkSignature(ctx, rec, p); err != nil {
		return out, err
	}
	if rerr := checkIDClaims(c, rec, v.now()); rerr != nil {
		return out, rerr
	}
	out.Subject, out.GivenName, out.FamilyName, out.Email = c.sub, c.givenName, c.familyName, c.email
	out.IssuedAt, out.Expires = c.iat.time(), c.exp.time()
	return out, nil
}

func (v *IDTokenVerifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// Prefetch fetches the remote key sets of the given sites' identity providers now, so /readyz
// reports a jwks_uri that cannot be fetched before anyone exchanges a token. It waits at most
// until ctx ends.
func (v *IDTokenVerifier) Prefetch(ctx context.Context, sites ...string) {
	for _, s := range sites {
		idps, err := v.Keys.IdPs(ctx, s)
		if err != nil {
			continue
		}
		for _, rec := range idps {
			if rec.JWKSURI != "" {
				_, _ = v.JWKS.Remote(rec.JWKSURI).Keys(ctx)
			}
		}
	}
}

// findIdP returns the provider whose issuer is iss; among several, the first whose client_id
// the token's audience holds.
func findIdP(idps []*vault.IdP, iss string, aud *audience) *vault.IdP {
	if iss == "" {
		return nil
	}
	var first *vault.IdP
	for _, rec := range idps {
		if rec.Issuer != iss {
			continue
		}
		if aud.contains(rec.ClientID) {
			return rec
		}
		if first == nil {
			first = rec
		}
	}
	return first
}

// checkSignature verifies p with the keys of provider rec, refetching a remote set once when
// the kid is unknown or the signature fails (the provider may have rotated its keys).
func (v *IDTokenVerifier) checkSignature(ctx context.Context, rec *vault.IdP, p *parsedJWT) error {
	var set *jwks.Set
	var remote *jwks.Remote
	if rec.JWKSURI != "" {
		remote = v.JWKS.Remote(rec.JWKSURI)
		s, err := remote.Keys(ctx)
		if err != nil {
			rerr := unavailableKeys(err)
			rerr.Detail = "the identity provider's keys cannot be fetched right now; retry later"
			return rerr
		}
		set = s
	} else {
		s, err := v.JWKS.Inline(rec.JWKS)
		if err != nil {
			return &reason.Error{Reason: reason.InvalidIDToken, Detail: "the identity provider has no usable keys",
				Cause: fmt.Errorf("idps/%s: jwks: %w", rec.Name, err)}
		}
		set = s
	}
	res := tryKeys(set, p)
	if remote != nil && (res == sigUnknownKey || res == sigBad) {
		if s, err := remote.Refetch(ctx, set); err == nil && s != set {
			res = tryKeys(s, p)
		}
	}
	switch res {
	case sigOK:
		return nil
	case sigUnknownKey:
		return badIDToken("no key of the identity provider has the id_token's kid")
	case sigAlgMismatch:
		return badIDToken("the id_token's alg is not one its provider's key accepts")
	}
	return badIDToken("the id_token's signature does not verify")
}

// checkIDClaims applies OpenID Connect Core §3.1.3.7 and SPEC §3.5 to a token whose signature
// verified.
func checkIDClaims(c *idClaims, rec *vault.IdP, now time.Time) *reason.Error {
	if !c.aud.contains(rec.ClientID) {
		return badIDToken("the id_token's aud does not hold the provider's client_id")
	}
	if c.hasAzp && c.azp != rec.ClientID {
		return badIDToken("the id_token's azp is not the provider's client_id")
	}
	if !c.exp.set {
		return badIDToken("the id_token has no exp claim")
	}
	if now.After(c.exp.time().Add(IDTokenLeeway)) {
		return reason.Newf(reason.TokenExpired, "the id_token has expired")
	}
	if !c.iat.set {
		return badIDToken("the id_token has no iat claim")
	}
	iat := c.iat.time()
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
	if c.nbf.set && c.nbf.time().After(now.Add(IDTokenLeeway)) {
		return badIDToken("the id_token's nbf is in the future")
	}
	if c.events {
		return badIDToken("a logout or security event token is not an id_token")
	}
	for _, f := range []struct {
		name, val string
		max       int
	}{{"sub", c.sub, MaxSubjectLen}, {"given_name", c.givenName, maxNameLen}, {"family_name", c.familyName, maxNameLen}} {
		if strings.TrimSpace(f.val) == "" {
			return badIDToken("the id_token has no " + f.name + " claim")
		}
		if len(f.val) > f.max || !headerSafe(f.val) {
			return badIDToken("the id_token's " + f.name + " claim is too long or holds control characters")
		}
	}
	if len(c.email) > maxNameLen || !headerSafe(c.email) {
		return badIDToken("the id_token's email claim is too long or holds control characters")
	}
	return nil
}

// badIDToken is the invalid_id_token denial with a description for a person.
func badIDToken(detail string) *reason.Error { return reason.Newf(reason.InvalidIDToken, detail) }

// ---- parsing ----

// idClaims are the claims the exchange reads from an id_token.
type idClaims struct {
	iss, sub, azp, givenName, familyName, email string
	hasAzp, hasEmail                            bool
	aud                                         audience
	exp, iat, nbf                               numericDate
	events                                      bool
}

// parseIDToken splits tok, parses its header with go-jose (accepted algorithms only) and
// decodes its claims strictly. Nothing is verified yet.
func parseIDToken(tok string) (*parsedJWT, *idClaims, *reason.Error) {
	lastDot, ok := splitJWT(tok)
	if !ok {
		return nil, nil, badIDToken("the id_token is not a JWS in compact form")
	}
	jws, err := jose.ParseSignedCompact(tok, jwks.Algorithms)
	if err != nil {
		var ua *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &ua) {
			return nil, nil, badIDToken("the id_token's alg is not accepted (RS256, PS256, ES256, EdDSA, HS256)")
		}
		return nil, nil, badIDToken("the id_token's JWS header or encoding is not valid")
	}
	if len(jws.Signatures) != 1 {
		return nil, nil, badIDToken("the id_token must carry one signature")
	}
	sig := &jws.Signatures[0]
	if detail := idTokenHeaderProblem(&sig.Header); detail != "" {
		return nil, nil, badIDToken(detail)
	}
	p := &parsedJWT{alg: sig.Header.Algorithm, kid: sig.Header.KeyID, input: tok[:lastDot], sig: sig.Signature}
	c := &idClaims{}
	if !parseIDClaims(jws.UnsafePayloadWithoutVerification(), c) {
		return nil, nil, badIDToken("the id_token's claims are not a valid JSON object")
	}
	return p, c, nil
}

// idTokenHeaderProblem says why an id_token's header is refused ("" when it is not).
func idTokenHeaderProblem(h *jose.Header) string {
	for k, val := range h.ExtraHeaders {
		switch k {
		case "crit":
			return "the id_token has a crit header"
		case "b64":
			return "the id_token has a b64 header"
		case "cty":
			if s, _ := val.(string); strings.EqualFold(s, "JWT") {
				return "nested JWTs are not accepted"
			}
		case "typ":
			s, ok := val.(string)
			if !ok {
				return "the id_token's typ is not a string"
			}
			t := strings.TrimPrefix(strings.ToLower(s), "application/")
			if strings.HasSuffix(t, "+jwt") {
				return "the token is typed as another kind of JWT (" + t + "), not an id_token"
			}
		}
	}
	return ""
}

// parseIDClaims decodes an id_token payload with the same strict rules as the OAuth claims
// parser: one JSON object, members matched by exact name, a claim read here given twice
// refused, strings valid UTF-8, `aud` a string or a list of strings, dates numbers.
func parseIDClaims(b []byte, c *idClaims) bool {
	s := jsonScanner{b: b}
	return s.object(idClaimBit, func(key string) bool {
		switch key {
		case "iss":
			return s.optString(&c.iss, nil)
		case "sub":
			return s.optString(&c.sub, nil)
		case "azp":
			return s.optString(&c.azp, &c.hasAzp)
		case "given_name":
			return s.optString(&c.givenName, nil)
		case "family_name":
			return s.optString(&c.familyName, nil)
		case "email":
			return s.optString(&c.email, &c.hasEmail)
		case "aud":
			return s.stringOrList(&c.aud)
		case "exp":
			return s.date(&c.exp)
		case "iat":
			return s.date(&c.iat)
		case "nbf":
			return s.date(&c.nbf)
		case "events":
			c.events = s.peek() != 'n'
			return s.skip(0)
		default:
			return s.skip(0)
		}
	}) && utf8.Valid(b)
}

func idClaimBit(key string) uint16 {
	switch key {
	case "iss":
		return 1 << 0
	case "sub":
		return 1 << 1
	case "azp":
		return 1 << 2
	case "given_name":
		return 1 << 3
	case "family_name":
		return 1 << 4
	case "email":
		return 1 << 5
	case "aud":
		return 1 << 6
	case "exp":
		return 1 << 7
	case "iat":
		return 1 << 8
	case "nbf":
		return 1 << 9
	case "events":
		return 1 << 10
	}
	return 0
}
