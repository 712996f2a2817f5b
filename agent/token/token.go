// Package token holds one verifier per credential kind of SPEC §3 (one file per kind). A
// verifier takes the credential string found on a request and the site's settings, checks it
// against the site's keys (package vault), and returns the Identity it proves, or a
// *reason.Error saying why not.
//
// # Notes
//
//   - Verifiers are safe for concurrent use and allocate little: they parse without regexps,
//     check lengths before any work, and compare every secret and signature in constant time.
//   - A verifier never puts a token or secret into an error.
package token

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Kind is the credential kind of an identity, sent upstream as `x-auth-kind`.
type Kind string

// The kinds of SPEC §4.
const (
	KindAuthToken     Kind = "authtoken"
	KindBrowser       Kind = "browser"
	KindServer        Kind = "server"
	KindOAuth         Kind = "oauth"
	KindImpersonation Kind = "impersonation"
	KindAPIKey        Kind = "apikey"
	KindAnonymous     Kind = "anonymous"
)

// MaxTokenLen is the longest MindTouch-style token string (server, browser, auth,
// impersonation, API key) accepted, checked before any parsing (SPEC §2).
const MaxTokenLen = 255

// MaxJWTLen is the longest JWT accepted (SPEC §2).
const MaxJWTLen = 8 << 10

// Identity is who a verified credential says the caller is.
type Identity struct {
	Kind Kind
	// User is the user as the token names it: a decimal id, "=" plus the still-encoded
	// username, or an OAuth `sub`. Empty when the credential names no user.
	User string
	// ClientID names the OAuth application (RFC 9068 `client_id`).
	ClientID string
	// Scopes are the OAuth token's scopes.
	Scopes []string
	// Application is true for an OAuth client-credentials token (sub == client_id): it has no
	// user.
	Application bool
	// Elevated marks the legacy Site API Key.
	Elevated bool
	// Expires is when the credential stops being valid (zero when unknown); caches use it.
	Expires time.Time
	// IssuedAt is when the credential was issued (SPEC §9): an Auth Token's ticks, a Server API
	// Token's or Impersonation token's epoch, a JWT's iat. Zero when the credential carries no
	// issue time (a JWT without iat, the Site API Key): a revocation by user or client then
	// counts it as issued before any time.
	IssuedAt time.Time
}

// Authenticated reports whether the identity names a user or an application.
func (id *Identity) Authenticated() bool {
	return id.User != "" || id.ClientID != "" || id.Kind == KindAPIKey
}

// HasUser reports whether the identity names a user.
func (id *Identity) HasUser() bool { return id.User != "" && !id.Application }

// SiteSettings is what verifiers need to know of a site: its id, hostnames and token settings. The
// agent compiles it from the config once, at load.
type SiteSettings struct {
	ID string
	// Hosts are the site's hostnames as configured (exact names or "*.suffix"), lower case.
	Hosts []string
	// AuthTokenTTL is how long an Auth Token lives (default 561600 s).
	AuthTokenTTL time.Duration
	// AuthTokenRotationGrace is how long a replaced Auth Token key generation still verifies,
	// counted from the creation of the generation that replaced it (default: AuthTokenTTL).
	AuthTokenRotationGrace time.Duration
	// ServerTokenWindow is the largest |now - epoch| of a Server API Token (default 300 s).
	ServerTokenWindow time.Duration
	// ServerTokenSingleUse refuses a Server API Token seen before within its window.
	ServerTokenSingleUse bool
	// Legacy switches, all off by default.
	LegacyImpersonation         bool
	LegacyAPIKey                bool
	LegacyUnprefixedServerToken bool
}

// Defaults of SPEC §3.
const (
	DefaultAuthTokenTTL      = 561600 * time.Second
	DefaultServerTokenWindow = 300 * time.Second
	// ClockSkew is how far in the future an issue time may be.
	ClockSkew = 60 * time.Second
)

// CredentialFingerprint names a credential in logs without revealing it: the first 12 hex
// digits of its SHA-256. It is the only form in which tokenagent ever logs a credential
// (legacy-use warnings, decision logs).
func CredentialFingerprint(credential string) string {
	sum := sha256.Sum256([]byte(credential))
	return hex.EncodeToString(sum[:6])
}
