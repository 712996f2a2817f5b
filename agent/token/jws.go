package token

import (
	"context"
	"errors"
	"strings"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault/jwks"
)

// One JWS parser and header policy for the two kinds of JWT tokenagent verifies: OAuth access
// tokens (Authorization: Bearer, SPEC §3.4) and OpenID Connect id_tokens (the exchange, SPEC
// §3.5). What differs between them is a jwtKind.

// jwtKind is what differs between the JWTs tokenagent reads.
type jwtKind struct {
	// name is how errors name the token: "bearer token", "id_token"; issuer names who signs
	// it: "issuer", "provider".
	name, issuer string
	// typeOK reports whether an explicit `typ` ending in "+jwt" (lower case, without
	// "application/") is this kind's own: "at+jwt" for access tokens, none for id_tokens.
	typeOK func(t string) bool
	// deny makes this kind's denial: for access tokens the reason itself with the RFC 6750
	// challenge; for id_tokens always invalid_id_token.
	deny func(r reason.Reason, detail string) *reason.Error
}

var (
	accessTokenKind = &jwtKind{name: "bearer token", issuer: "issuer", typeOK: func(t string) bool { return t == "at+jwt" }, deny: invalidToken}
	idTokenKind     = &jwtKind{name: "id_token", issuer: "provider", typeOK: func(string) bool { return false },
		deny: func(_ reason.Reason, detail string) *reason.Error { return badIDToken(detail) }}
)

// jwsToken is a JWS compact token split and decoded, not yet verified.
type jwsToken struct {
	alg, kid string
	input    string // the signing input: header "." payload, exactly as received
	sig      []byte
	payload  []byte
}

// parseJWS checks the compact shape (three canonical base64url segments), parses the header
// with go-jose (only the algorithms of jwks.Algorithms(): `none` and every other alg refused)
// and applies the header policy: a `crit` or `b64` header, a nested JWT (`cty: JWT`) and a
// token explicitly typed as another kind of JWT are refused; `jku`, `x5u`, `jwk` and `x5c`
// are never used. Nothing is verified yet.
func parseJWS(tok string, k *jwtKind) (*jwsToken, *reason.Error) {
	lastDot, ok := splitJWT(tok)
	if !ok {
		return nil, k.deny(reason.MalformedToken, "the "+k.name+" is not a JWS in compact form")
	}
	jws, err := jose.ParseSignedCompact(tok, jwks.Algorithms())
	if err != nil {
		var ua *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &ua) {
			return nil, k.deny(reason.UnsupportedAlgorithm, "the "+k.name+"'s alg is not accepted (RS256, PS256, ES256, EdDSA, HS256)")
		}
		return nil, k.deny(reason.MalformedToken, "the "+k.name+"'s JWS header or encoding is not valid")
	}
	if len(jws.Signatures) != 1 {
		return nil, k.deny(reason.MalformedToken, "the "+k.name+" must carry one signature")
	}
	sig := &jws.Signatures[0]
	if detail := headerProblem(&sig.Header, k); detail != "" {
		return nil, k.deny(reason.MalformedToken, detail)
	}
	return &jwsToken{alg: sig.Header.Algorithm, kid: sig.Header.KeyID, input: tok[:lastDot],
		sig: sig.Signature, payload: jws.UnsafePayloadWithoutVerification()}, nil
}

// headerProblem says why a JWS header is refused ("" when it is not).
func headerProblem(h *jose.Header, k *jwtKind) string {
	for name, val := range h.ExtraHeaders {
		switch name {
		case "crit":
			// RFC 7515 §4.1.11: extensions we do not understand make the JWS invalid; we
			// understand none, so any crit (even ["b64"]) is refused.
			return "the " + k.name + " has a crit header"
		case "b64":
			return "the " + k.name + " has a b64 header (RFC 7797 is not accepted)"
		case "cty":
			if s, _ := val.(string); strings.EqualFold(s, "JWT") {
				return "nested JWTs are not accepted"
			}
		case "typ":
			s, ok := val.(string)
			if !ok {
				return "the " + k.name + "'s typ is not a string"
			}
			t := strings.TrimPrefix(strings.ToLower(s), "application/")
			if strings.HasSuffix(t, "+jwt") && !k.typeOK(t) {
				return "the " + k.name + " is typed as another kind of JWT (" + t + ")"
			}
		}
	}
	return ""
}

// splitJWT checks the compact shape: exactly three segments of base64url characters in
// canonical form (no padding, unused trailing bits zero, so one token has one spelling),
// header and payload non-empty; the signature may be empty (an unsigned token is refused for
// its alg). It returns the index of the last '.'.
func splitJWT(tok string) (lastDot int, ok bool) {
	first := -1
	lastDot = -1
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		case c == '.':
			switch {
			case first < 0:
				first = i
			case lastDot < 0:
				lastDot = i
			default:
				return -1, false // more than three segments (a JWE has five)
			}
		default:
			return -1, false
		}
	}
	if first <= 0 || lastDot < 0 || lastDot == first+1 {
		return -1, false
	}
	if !canonicalB64(tok[:first]) || !canonicalB64(tok[first+1:lastDot]) || !canonicalB64(tok[lastDot+1:]) {
		return -1, false
	}
	return lastDot, true
}

// canonicalB64 reports whether seg (base64url characters only) has a valid unpadded length
// and zero unused bits in its last character.
func canonicalB64(seg string) bool {
	var unused byte
	switch len(seg) % 4 {
	case 0:
		return true
	case 1:
		return false
	case 2:
		unused = 0x0f
	case 3:
		unused = 0x03
	}
	return b64urlValue(seg[len(seg)-1])&unused == 0
}

// b64urlValue is the 6-bit value of a base64url character.
func b64urlValue(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c - 'A'
	case 'a' <= c && c <= 'z':
		return c - 'a' + 26
	case '0' <= c && c <= '9':
		return c - '0' + 52
	case c == '-':
		return 62
	}
	return 63
}

// maxKeysTried bounds the keys one token is checked against (duplicate kids, or no kid).
const maxKeysTried = 4

// sigResult is the outcome of checking a token against a key set.
type sigResult uint8

const (
	sigOK          sigResult = iota
	sigUnknownKey            // no key of the set has the token's kid (or the set is empty)
	sigAlgMismatch           // the keys found do not allow the token's alg
	sigBad                   // a key allowing the alg was found and the signature failed
)

// issuerKeys are the keys of one issuer or identity provider: an inline set (a `jwks` stored
// in the key source) or a remote one (a `jwks_uri`).
type issuerKeys struct {
	inline *jwks.Set
	remote *jwks.Remote
}

// verifySignature checks p's signature with keys, refetching a remote set once when the kid is
// unknown or the signature fails (the issuer may have rotated its keys). It returns the set
// that verified, or the kind's denial: unknown_key, unsupported_algorithm (the alg is not the
// key's), bad_signature, or keys_unavailable for a remote set never fetched.
func verifySignature(ctx context.Context, keys issuerKeys, p *jwsToken, k *jwtKind) (*jwks.Set, *reason.Error) {
	set := keys.inline
	if keys.remote != nil {
		s, err := keys.remote.Keys(ctx)
		if err != nil {
			return nil, unavailableKeys(err, k)
		}
		set = s
	}
	res := tryKeys(set, p)
	if keys.remote != nil && (res == sigUnknownKey || res == sigBad) {
		if s, err := keys.remote.Refetch(ctx, set); err == nil && s != set {
			set = s
			res = tryKeys(set, p)
		}
	}
	switch res {
	case sigOK:
		return set, nil
	case sigUnknownKey:
		return nil, k.deny(reason.UnknownKey, "no key of the "+k.name+"'s "+k.issuer+" has its kid")
	case sigAlgMismatch:
		return nil, k.deny(reason.UnsupportedAlgorithm, "the "+k.name+"'s alg is not one its "+k.issuer+"'s key accepts")
	}
	return nil, k.deny(reason.BadSignature, "the "+k.name+"'s signature does not verify")
}

// tryKeys checks p against set: the keys with p's kid, or (no kid) the keys allowing p's alg.
func tryKeys(set *jwks.Set, p *jwsToken) sigResult {
	if set.Len() == 0 {
		return sigUnknownKey
	}
	if p.kid != "" {
		keys := set.ByKID(p.kid)
		if len(keys) == 0 {
			return sigUnknownKey
		}
		allowed := false
		for i, key := range keys {
			if i == maxKeysTried {
				break
			}
			if key.Allows(p.alg) {
				allowed = true
				if key.Verify(p.alg, p.input, p.sig) {
					return sigOK
				}
			}
		}
		if !allowed {
			return sigAlgMismatch
		}
		return sigBad
	}
	tried := 0
	for _, key := range set.Keys {
		if !key.Allows(p.alg) {
			continue
		}
		if key.Verify(p.alg, p.input, p.sig) {
			return sigOK
		}
		if tried++; tried == maxKeysTried {
			break
		}
	}
	if tried == 0 {
		return sigAlgMismatch
	}
	return sigBad
}

// findIssuer returns the first of candidates named iss whose audience aud holds (audienceOf
// gives a candidate's); failing that, the first named iss; nil when none is. The issuer of an
// unverified token only picks the keys that must then verify it.
func findIssuer[T any](candidates []T, iss string, aud *audience, issuerOf, audienceOf func(T) string) (T, bool) {
	var first T
	found := false
	if iss == "" {
		return first, false
	}
	for _, c := range candidates {
		if issuerOf(c) != iss {
			continue
		}
		if aud.contains(audienceOf(c)) {
			return c, true
		}
		if !found {
			first, found = c, true
		}
	}
	return first, found
}

// invalidToken is an access token's 401 denial with the RFC 6750 challenge.
func invalidToken(r reason.Reason, detail string) *reason.Error {
	return &reason.Error{Reason: r, Detail: detail,
		Headers: map[string]string{"WWW-Authenticate": `Bearer error="invalid_token"`}}
}

// badIDToken is the invalid_id_token denial with a description for a person.
func badIDToken(detail string) *reason.Error { return reason.Newf(reason.InvalidIDToken, detail) }

// unavailableKeys is the 503 denial of an issuer whose keys could never be fetched.
func unavailableKeys(err error, k *jwtKind) *reason.Error {
	rerr := unavailable(err, "the "+k.name+"'s "+k.issuer+" keys cannot be fetched right now; retry later")
	var ue *jwks.UnavailableError
	if errors.As(err, &ue) && ue.RetryAfter > 0 {
		rerr.Headers["Retry-After"] = retryAfterSeconds(ue.RetryAfter)
	}
	return rerr
}
