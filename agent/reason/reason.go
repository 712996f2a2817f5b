// Package reason is the closed list of reasons tokenagent gives for a denial (SPEC §4), with the
// HTTP status and the human text that go with each, and the typed error that carries one.
//
// Every layer that can refuse a request (credential finding, verifiers, route rules, policies,
// the key source) returns a *Error; the agent turns it into the denial answer. Callers act on
// the Reason, never on the error's text.
package reason

import (
	"errors"
	"net/http"
)

// Reason is the machine-readable cause of a denial, sent as `x-auth-reason` and as the JSON
// body's "error" field.
type Reason string

// The reasons of SPEC §4. The list is closed: a new reason is added here, in agent/README.md's
// reasons table and in statusOf.
const (
	UnknownSite            Reason = "unknown_site"
	MalformedToken         Reason = "malformed_token"
	BadSignature           Reason = "bad_signature"
	TokenExpired           Reason = "token_expired"
	TokenNotYetValid       Reason = "token_not_yet_valid"
	UnknownKey             Reason = "unknown_key"
	RevokedKey             Reason = "revoked_key"
	ReplayedToken          Reason = "replayed_token"
	UserRestricted         Reason = "user_restricted"
	OriginNotAllowed       Reason = "origin_not_allowed"
	MultipleCredentials    Reason = "multiple_credentials"
	LegacyTokenDisabled    Reason = "legacy_token_disabled"
	UserTokenRequired      Reason = "user_token_required"
	InsufficientScope      Reason = "insufficient_scope"
	AuthenticationRequired Reason = "authentication_required"
	UnsupportedAlgorithm   Reason = "unsupported_algorithm"
	UnknownIssuer          Reason = "unknown_issuer"
	InvalidAudience        Reason = "invalid_audience"
	InvalidAPIKey          Reason = "invalid_api_key"
	InvalidIDToken         Reason = "invalid_id_token"
	BodyTooLarge           Reason = "body_too_large"
	PolicyDenied           Reason = "policy_denied"
	PolicyError            Reason = "policy_error"
	KeysUnavailable        Reason = "keys_unavailable"
	MalformedRequest       Reason = "malformed_request"
	Revoked                Reason = "revoked"
)

type info struct {
	status int
	text   string
}

var table = map[Reason]info{
	UnknownSite:            {http.StatusNotFound, "no site is configured for this host"},
	MalformedToken:         {http.StatusUnauthorized, "the credential is not well formed"},
	BadSignature:           {http.StatusUnauthorized, "the credential's signature does not verify"},
	TokenExpired:           {http.StatusUnauthorized, "the credential has expired"},
	TokenNotYetValid:       {http.StatusUnauthorized, "the credential is not valid yet"},
	UnknownKey:             {http.StatusUnauthorized, "the credential names a key this site does not know"},
	RevokedKey:             {http.StatusUnauthorized, "the credential's key has been disabled"},
	ReplayedToken:          {http.StatusUnauthorized, "the single-use credential was already used"},
	UserRestricted:         {http.StatusForbidden, "the key may not act as this user"},
	OriginNotAllowed:       {http.StatusForbidden, "the origin is not allowed for this key"},
	MultipleCredentials:    {http.StatusBadRequest, "the request carries more than one credential"},
	LegacyTokenDisabled:    {http.StatusUnauthorized, "this legacy credential is turned off for the site"},
	UserTokenRequired:      {http.StatusForbidden, "this route needs a credential that names a user"},
	InsufficientScope:      {http.StatusForbidden, "the token lacks a scope this route needs"},
	AuthenticationRequired: {http.StatusUnauthorized, "this route needs a credential"},
	UnsupportedAlgorithm:   {http.StatusUnauthorized, "the token's signing algorithm is not accepted"},
	UnknownIssuer:          {http.StatusUnauthorized, "the token's issuer is not trusted by this site"},
	InvalidAudience:        {http.StatusUnauthorized, "the token is not meant for this site"},
	InvalidAPIKey:          {http.StatusUnauthorized, "the API key is not valid"},
	InvalidIDToken:         {http.StatusUnauthorized, "the identity token is not valid"},
	BodyTooLarge:           {http.StatusRequestEntityTooLarge, "the request body is too large"},
	PolicyDenied:           {http.StatusForbidden, "the site's policy refused the request"},
	PolicyError:            {http.StatusForbidden, "the site's policy failed; the request is refused"},
	KeysUnavailable:        {http.StatusServiceUnavailable, "keys cannot be read right now; retry later"},
	MalformedRequest:       {http.StatusBadRequest, "the request's method or path cannot be read safely"},
	Revoked:                {http.StatusUnauthorized, "the credential has been revoked"},
}

// All returns every reason, in the order of SPEC §4 (for documentation and tests).
func All() []Reason {
	return []Reason{UnknownSite, MalformedToken, BadSignature, TokenExpired, TokenNotYetValid,
		UnknownKey, RevokedKey, ReplayedToken, UserRestricted, OriginNotAllowed,
		MultipleCredentials, LegacyTokenDisabled, UserTokenRequired, InsufficientScope,
		AuthenticationRequired, UnsupportedAlgorithm, UnknownIssuer, InvalidAudience,
		InvalidAPIKey, InvalidIDToken, BodyTooLarge, PolicyDenied, PolicyError, KeysUnavailable,
		MalformedRequest, Revoked}
}

// Status is the HTTP status of a denial for r (401 for a reason not in the list).
func (r Reason) Status() int {
	if i, ok := table[r]; ok {
		return i.status
	}
	return http.StatusUnauthorized
}

// Text is the default human-readable description of r.
func (r Reason) Text() string {
	if i, ok := table[r]; ok {
		return i.text
	}
	return "the request is refused"
}

// Error is a denial with its reason. Detail, when set, replaces the reason's default text in
// the answer's error_description; it must never hold a token or a secret.
//
// Status is 0 to use Reason.Status(); Headers are added to the denial answer (for example
// WWW-Authenticate or Retry-After).
type Error struct {
	Reason  Reason
	Status  int
	Detail  string
	Headers map[string]string
	// Cause is the internal error behind the denial, for logs only (never sent to a client).
	Cause error
}

// New returns a denial for r with its default status and text.
func New(r Reason) *Error { return &Error{Reason: r} }

// Newf returns a denial for r whose description is detail.
func Newf(r Reason, detail string) *Error { return &Error{Reason: r, Detail: detail} }

// Error implements error.
func (e *Error) Error() string {
	if e.Detail != "" {
		return string(e.Reason) + ": " + e.Detail
	}
	return string(e.Reason)
}

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.Cause }

// HTTPStatus is the status the denial answers with.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	return e.Reason.Status()
}

// Description is the human text of the denial.
func (e *Error) Description() string {
	if e.Detail != "" {
		return e.Detail
	}
	return e.Reason.Text()
}

// From returns the *Error inside err, or a KeysUnavailable denial carrying err as its cause
// when err is some other (internal) error: every internal failure fails closed.
func From(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Reason: KeysUnavailable, Cause: err, Headers: map[string]string{"Retry-After": "5"}}
}
