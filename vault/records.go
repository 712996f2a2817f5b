package vault

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MinAuthTokenKeyLen is the shortest Auth Token key accepted, in bytes (SPEC §6).
const MinAuthTokenKeyLen = 32

// AuthTokenKey is one generation of a site's Auth Token signing key.
type AuthTokenKey struct {
	Secret  *Secret
	Version int
	Created time.Time
	// Replaced is when the next generation was created (zero for the current one); the
	// rotation grace counts from it.
	Replaced time.Time
}

// AuthTokenKeys are a site's Auth Token key generations, newest first.
type AuthTokenKeys struct {
	Generations []AuthTokenKey
}

// Current is the newest generation, the one new tokens are signed with.
func (k *AuthTokenKeys) Current() AuthTokenKey { return k.Generations[0] }

// ServerKey is the record of one Server API Token key (`server-tokens/<key>`).
type ServerKey struct {
	Name           string
	Secret         *Secret
	RestrictedUser string
	Disabled       bool
}

// BrowserKey is the record of one Browser API Token (`browser-tokens/<key>`).
type BrowserKey struct {
	Name    string
	Origins []string
}

// BrowserKeySet is every Browser API Token of a site. A new set (a new pointer) is returned
// whenever it is read again, so derived indexes can be keyed by its address.
type BrowserKeySet struct {
	Keys []*BrowserKey
}

// Issuer is a trusted JWT issuer: the site's own (`oauth`) or an external one (`issuers/<name>`).
// Exactly one of JWKS and JWKSURI is set.
type Issuer struct {
	Name     string
	Issuer   string
	Audience string
	JWKS     json.RawMessage
	JWKSURI  string
}

// IdP is a trusted OpenID Connect identity provider for the token exchange (`idps/<name>`).
// Exactly one of JWKS and JWKSURI is set.
type IdP struct {
	Name     string
	Issuer   string
	ClientID string
	MaxAge   time.Duration
	JWKS     json.RawMessage
	JWKSURI  string
}

// DefaultIdPMaxAge is an identity provider's max_age when its record gives none.
const DefaultIdPMaxAge = 10 * time.Minute

// Legacy is a site's legacy settings record (`legacy`).
type Legacy struct {
	APIKey *Secret
}

// InvalidRecordError reports a record that breaks a rule of SPEC §6; the record is treated as
// absent.
type InvalidRecordError struct {
	Path  string
	Field string
	Msg   string
}

func (e *InvalidRecordError) Error() string {
	return fmt.Sprintf("invalid record %s: field %q %s", e.Path, e.Field, e.Msg)
}

func invalid(path, field, format string, args ...any) error {
	return &InvalidRecordError{Path: path, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// DecodeAuthTokenKey decodes one Auth Token key generation.
func DecodeAuthTokenKey(path string, raw Raw) (AuthTokenKey, error) {
	s, err := str(path, raw.Data, "key", true)
	if err != nil {
		return AuthTokenKey{}, err
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(strings.TrimSpace(s))
	}
	if err != nil {
		return AuthTokenKey{}, invalid(path, "key", "is not base64")
	}
	if len(key) < MinAuthTokenKeyLen {
		return AuthTokenKey{}, invalid(path, "key", "decodes to %d bytes, want at least %d", len(key), MinAuthTokenKeyLen)
	}
	return AuthTokenKey{Secret: NewSecret(key), Version: raw.Version, Created: raw.Created, Replaced: raw.Replaced}, nil
}

// DecodeServerKey decodes a `server-tokens/<name>` record.
func DecodeServerKey(path, name string, raw Raw) (*ServerKey, error) {
	secret, err := str(path, raw.Data, "secret", true)
	if err != nil {
		return nil, err
	}
	restricted, err := str(path, raw.Data, "restricted_user", false)
	if err != nil {
		return nil, err
	}
	disabled, err := boolean(path, raw.Data, "disabled")
	if err != nil {
		return nil, err
	}
	return &ServerKey{Name: name, Secret: NewSecret([]byte(secret)), RestrictedUser: restricted, Disabled: disabled}, nil
}

// DecodeBrowserKey decodes a `browser-tokens/<name>` record.
func DecodeBrowserKey(path, name string, raw Raw) (*BrowserKey, error) {
	v, ok := raw.Data["origins"]
	if !ok {
		return nil, invalid(path, "origins", "is missing")
	}
	var origins []string
	switch o := v.(type) {
	case []any:
		for i, e := range o {
			s, ok := e.(string)
			if !ok || strings.TrimSpace(s) == "" {
				return nil, invalid(path, "origins", "entry %d is not a non-empty string", i)
			}
			origins = append(origins, strings.TrimSpace(s))
		}
	case []string:
		origins = append(origins, o...)
	case string: // Vault UI users sometimes store a JSON or comma-separated string.
		if err := json.Unmarshal([]byte(o), &origins); err != nil {
			for _, s := range strings.Split(o, ",") {
				if s = strings.TrimSpace(s); s != "" {
					origins = append(origins, s)
				}
			}
		}
	default:
		return nil, invalid(path, "origins", "is not a list of strings")
	}
	return &BrowserKey{Name: name, Origins: origins}, nil
}

// DecodeIssuer decodes an `oauth` or `issuers/<name>` record.
func DecodeIssuer(path, name string, raw Raw) (*Issuer, error) {
	iss, err := str(path, raw.Data, "issuer", true)
	if err != nil {
		return nil, err
	}
	aud, err := str(path, raw.Data, "audience", true)
	if err != nil {
		return nil, err
	}
	jwks, uri, err := keySetOf(path, raw.Data)
	if err != nil {
		return nil, err
	}
	return &Issuer{Name: name, Issuer: iss, Audience: aud, JWKS: jwks, JWKSURI: uri}, nil
}

// DecodeIdP decodes an `idps/<name>` record.
func DecodeIdP(path, name string, raw Raw) (*IdP, error) {
	iss, err := str(path, raw.Data, "issuer", true)
	if err != nil {
		return nil, err
	}
	client, err := str(path, raw.Data, "client_id", true)
	if err != nil {
		return nil, err
	}
	jwks, uri, err := keySetOf(path, raw.Data)
	if err != nil {
		return nil, err
	}
	maxAge := DefaultIdPMaxAge
	if v, ok := raw.Data["max_age"]; ok && v != nil {
		secs, err := integer(v)
		if err != nil || secs <= 0 {
			return nil, invalid(path, "max_age", "is not a positive whole number of seconds")
		}
		maxAge = time.Duration(secs) * time.Second
	}
	return &IdP{Name: name, Issuer: iss, ClientID: client, MaxAge: maxAge, JWKS: jwks, JWKSURI: uri}, nil
}

// DecodeLegacy decodes a site's `legacy` record.
func DecodeLegacy(path string, raw Raw) (*Legacy, error) {
	key, err := str(path, raw.Data, "apikey", true)
	if err != nil {
		return nil, err
	}
	return &Legacy{APIKey: NewSecret([]byte(key))}, nil
}

func str(path string, data map[string]any, field string, required bool) (string, error) {
	v, ok := data[field]
	if !ok || v == nil {
		if required {
			return "", invalid(path, field, "is missing")
		}
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", invalid(path, field, "is not a string")
	}
	if required && s == "" {
		return "", invalid(path, field, "is empty")
	}
	return s, nil
}

func boolean(path string, data map[string]any, field string) (bool, error) {
	v, ok := data[field]
	if !ok || v == nil {
		return false, nil
	}
	switch b := v.(type) {
	case bool:
		return b, nil
	case string:
		if b == "" {
			return false, nil
		}
		r, err := strconv.ParseBool(b)
		if err != nil {
			return false, invalid(path, field, "is not a boolean")
		}
		return r, nil
	}
	return false, invalid(path, field, "is not a boolean")
}

func integer(v any) (int64, error) {
	switch n := v.(type) {
	case int:
		return int64(n), nil
	case int64:
		return n, nil
	case float64:
		if n != math.Trunc(n) || n > math.MaxInt32*1e3 {
			return 0, fmt.Errorf("not a whole number")
		}
		return int64(n), nil
	case json.Number:
		return n.Int64()
	case string:
		return strconv.ParseInt(n, 10, 64)
	}
	return 0, fmt.Errorf("not a number")
}

// keySetOf reads `jwks` (a JWKS object, or that object as a JSON string) or `jwks_uri`.
func keySetOf(path string, data map[string]any) (json.RawMessage, string, error) {
	jv, hasJWKS := data["jwks"]
	uv, hasURI := data["jwks_uri"]
	if hasJWKS && jv == nil {
		hasJWKS = false
	}
	if hasURI && (uv == nil || uv == "") {
		hasURI = false
	}
	switch {
	case hasJWKS && hasURI:
		return nil, "", invalid(path, "jwks", "and jwks_uri are both set; give one")
	case !hasJWKS && !hasURI:
		return nil, "", invalid(path, "jwks", "is missing (give jwks or jwks_uri)")
	case hasURI:
		u, ok := uv.(string)
		if !ok {
			return nil, "", invalid(path, "jwks_uri", "is not a string")
		}
		if err := CheckJWKSURI(u); err != nil {
			return nil, "", invalid(path, "jwks_uri", "%v", err)
		}
		return nil, u, nil
	}
	var raw []byte
	switch j := jv.(type) {
	case string:
		raw = []byte(j)
	default:
		b, err := json.Marshal(normalizeYAML(j))
		if err != nil {
			return nil, "", invalid(path, "jwks", "cannot be encoded as JSON: %v", err)
		}
		raw = b
	}
	var probe struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil || probe.Keys == nil {
		return nil, "", invalid(path, "jwks", "is not a JWKS object with a keys list")
	}
	return raw, "", nil
}

// CheckJWKSURI enforces SPEC §3.4: https, or http on a loopback host only.
func CheckJWKSURI(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", RedactURL(raw))
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if h == "localhost" {
			return nil
		}
		if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
			return nil
		}
		return fmt.Errorf("must use https (http is allowed only on a loopback host)")
	}
	return fmt.Errorf("scheme %q is not https", u.Scheme)
}

// normalizeYAML turns map[any]any (older YAML decoders) into map[string]any for JSON.
func normalizeYAML(v any) any {
	switch t := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[fmt.Sprint(k)] = normalizeYAML(e)
		}
		return m
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[k] = normalizeYAML(e)
		}
		return m
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = normalizeYAML(e)
		}
		return out
	}
	return v
}
