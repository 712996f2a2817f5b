package token

import (
	"context"
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
)

// The key lookups the verifiers need, one interface per verifier (go-oidc's KeySet is the
// model): each verifier asks for the one lookup it needs, so a test can hand it just that, and
// the key layer knows nothing of verifiers. *vault.Store implements them all.
//
// A lookup reports vault.ErrNotFound for a key or record that does not exist, and a
// *vault.UnavailableError when the keys cannot be read; the verifiers map those to their
// reasons (a missing key is each verifier's own reason; unavailable is keys_unavailable).

// AuthTokenKeys looks up a site's Auth Token key generations (the current one and those
// replaced less than grace ago).
type AuthTokenKeys interface {
	AuthTokenKeys(ctx context.Context, site string, grace time.Duration) (*vault.AuthTokenKeys, error)
}

// ServerKeys looks up a Server API Token key of a site.
type ServerKeys interface {
	ServerKey(ctx context.Context, site, name string) (*vault.ServerKey, error)
}

// BrowserKeys looks up a site's Browser API Token keys: one by name, and the whole set (for
// CORS preflights).
type BrowserKeys interface {
	BrowserKey(ctx context.Context, site, name string) (*vault.BrowserKey, error)
	BrowserKeys(ctx context.Context, site string) (*vault.BrowserKeySet, error)
}

// Issuers looks up a site's trusted OAuth issuers: its own (`oauth`) and its external ones.
type Issuers interface {
	OAuthIssuer(ctx context.Context, site string) (*vault.Issuer, error)
	Issuers(ctx context.Context, site string) ([]*vault.Issuer, error)
}

// IdentityProviders looks up a site's trusted identity providers (the token exchange).
type IdentityProviders interface {
	IdPs(ctx context.Context, site string) ([]*vault.IdP, error)
}

// LegacyKeys looks up a site's legacy record (the Site API Key, which also signs
// Impersonation Auth Tokens).
type LegacyKeys interface {
	Legacy(ctx context.Context, site string) (*vault.Legacy, error)
}

var (
	_ AuthTokenKeys     = (*vault.Store)(nil)
	_ ServerKeys        = (*vault.Store)(nil)
	_ BrowserKeys       = (*vault.Store)(nil)
	_ Issuers           = (*vault.Store)(nil)
	_ IdentityProviders = (*vault.Store)(nil)
	_ LegacyKeys        = (*vault.Store)(nil)
)

// secretOrDecoy returns the secret of a looked-up record, or decoy when the record does not
// exist (known false): the caller then does the same work for a missing key as for a wrong
// one, so the timing tells them apart no more than the answer does. A lookup that failed
// otherwise is a keys_unavailable denial.
func secretOrDecoy[R any](rec R, err error, secretOf func(R) *vault.Secret, decoy *vault.Secret) (secret *vault.Secret, known bool, rerr *reason.Error) {
	switch {
	case err == nil:
		return secretOf(rec), true, nil
	case errors.Is(err, vault.ErrNotFound):
		return decoy, false, nil
	}
	return nil, false, unavailable(err, "")
}

// defaultRetryAfter is what a client is told to wait when the key layer gives no better hint.
const defaultRetryAfter = 5 * time.Second

// unavailable is the denial of a key lookup that failed for any reason but ErrNotFound: 503
// keys_unavailable with Retry-After (fail closed), the lookup's error kept as the cause for
// the logs. detail, when set, replaces the reason's text.
func unavailable(err error, detail string) *reason.Error {
	retry := defaultRetryAfter
	var ue *vault.UnavailableError
	if errors.As(err, &ue) && ue.RetryAfter > 0 {
		retry = ue.RetryAfter
	}
	return &reason.Error{Reason: reason.KeysUnavailable, Detail: detail, Cause: err,
		Headers: map[string]string{"Retry-After": retryAfterSeconds(retry)}}
}

// retryAfterSeconds writes d as a Retry-After value: whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) string {
	return strconv.FormatInt(max(int64(math.Ceil(d.Seconds())), 1), 10)
}
