package token

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	josejson "github.com/go-jose/go-jose/v4/json"
)

// Claims are decoded into typed structs with go-jose's JSON package (a fork of encoding/json
// kept for JOSE): member names match exactly, case-sensitively, after unescaping (so "ISS"
// never stands in for "iss", and "\u0069ss" is "iss"), a member given twice is refused (so a
// token never means two things), and a claim of the wrong JSON type is refused. decodeClaims
// adds what go-jose's package lets through: invalid UTF-8 anywhere (encoding/json would
// replace it), and null for a date.

// decodeClaims decodes a JWT payload into dst (a pointer to a claims struct): exactly one JSON
// object and nothing after it, valid UTF-8.
func decodeClaims(payload []byte, dst any) bool {
	if !utf8.Valid(payload) {
		return false
	}
	b := bytes.TrimLeft(payload, " \t\r\n")
	if len(b) == 0 || b[0] != '{' {
		return false // only an object; a string or a list would fail later, with less clear errors
	}
	return josejson.Unmarshal(payload, dst) == nil
}

// accessClaims are the claims tokenagent reads from an OAuth access token or long-term JWT.
type accessClaims struct {
	Iss      string      `json:"iss"`
	Sub      string      `json:"sub"`
	ClientID string      `json:"client_id"`
	Aud      audience    `json:"aud"`
	Exp      numericDate `json:"exp"`
	Nbf      numericDate `json:"nbf"`
	Iat      numericDate `json:"iat"`
	Scope    *string     `json:"scope"`
	Scp      audience    `json:"scp"` // `scp`: a string or a list of strings (Okta, Azure AD)
}

// scopes returns the token's scopes: `scope` split on U+0020 (RFC 6749 §3.3, RFC 9068);
// without `scope`, `scp` as a space-separated string or a list of strings. ok is false when
// they hold control characters.
func (c *accessClaims) scopes() ([]string, bool) {
	if c.Scope != nil {
		return splitScopes(nil, *c.Scope)
	}
	if !c.Scp.set {
		return nil, true
	}
	out, ok := splitScopes(nil, c.Scp.one)
	for _, e := range c.Scp.many {
		if !ok {
			break
		}
		out, ok = splitScopes(out, e)
	}
	return out, ok
}

func splitScopes(out []string, s string) ([]string, bool) {
	if !headerSafe(s) {
		return nil, false
	}
	// RFC 6749 §3.3: scopes are separated by the space character U+0020 only; any other
	// space (U+00A0, U+2003) is part of a scope (SPEC §3.4).
	for f := range strings.SplitSeq(s, " ") {
		if f != "" {
			out = append(out, f)
		}
	}
	return out, true
}

// idClaims are the claims the exchange reads from an OpenID Connect id_token.
type idClaims struct {
	Iss        string      `json:"iss"`
	Sub        string      `json:"sub"`
	Azp        *string     `json:"azp"`
	GivenName  string      `json:"given_name"`
	FamilyName string      `json:"family_name"`
	Email      string      `json:"email"`
	Aud        audience    `json:"aud"`
	Exp        numericDate `json:"exp"`
	Iat        numericDate `json:"iat"`
	Nbf        numericDate `json:"nbf"`
	// Events is set when the token has an `events` claim that is not null: a logout or
	// security event token, never an id_token.
	Events eventsClaim `json:"events"`
}

// eventsClaim records that an `events` member with a value other than null is present.
type eventsClaim bool

// UnmarshalJSON implements json.Unmarshaler.
func (e *eventsClaim) UnmarshalJSON(b []byte) error {
	*e = string(b) != "null"
	return nil
}

// audience is a claim that is one string or a list of strings (`aud`, `scp`); null is absent.
type audience struct {
	one  string
	many []string
	set  bool
}

var errNotStrings = errors.New("not a string or a list of strings")

// UnmarshalJSON implements json.Unmarshaler.
func (a *audience) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
		*a = audience{}
		return nil
	case b[0] == '"':
		a.set = true
		return josejson.Unmarshal(b, &a.one)
	case b[0] == '[':
		var items []josejson.RawMessage
		if err := josejson.Unmarshal(b, &items); err != nil {
			return err
		}
		a.set, a.many = true, make([]string, 0, len(items))
		for _, it := range items {
			var s string
			if len(it) == 0 || it[0] != '"' || josejson.Unmarshal(it, &s) != nil {
				return errNotStrings
			}
			a.many = append(a.many, s)
		}
		return nil
	}
	return errNotStrings
}

func (a *audience) contains(want string) bool {
	if want == "" || !a.set {
		return false
	}
	if a.one == want {
		return true
	}
	for _, s := range a.many {
		if s == want {
			return true
		}
	}
	return false
}

// numericDate is a JWT NumericDate (RFC 7519 §2): seconds since the epoch, possibly
// fractional, a JSON number within ±2^62 (not null, not a string).
type numericDate struct {
	secs float64
	set  bool
}

// maxNumericDate bounds dates so conversions cannot overflow (2^62 s, as go-jose does).
const maxNumericDate = 1 << 62

var errNotDate = errors.New("not a NumericDate")

// UnmarshalJSON implements json.Unmarshaler.
func (n *numericDate) UnmarshalJSON(b []byte) error {
	var num josejson.Number
	if len(b) == 0 || !(b[0] == '-' || '0' <= b[0] && b[0] <= '9') || josejson.Unmarshal(b, &num) != nil {
		return errNotDate
	}
	f, err := num.Float64()
	if err != nil || f >= maxNumericDate || f <= -maxNumericDate {
		return errNotDate
	}
	n.secs, n.set = f, true
	return nil
}

func (n *numericDate) time() time.Time {
	s := math.Floor(n.secs)
	return time.Unix(int64(s), int64((n.secs-s)*1e9))
}

// headerSafe reports whether s can be sent in an HTTP header value as it is: no control
// characters (a claim never smuggles a header line upstream).
func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}
