package token

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"log/slog"
	"net/url"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/vault"
)

// decoyAPIKey is what a candidate API key is compared with when the site has no legacy
// record, so that the answer takes the same path and time as a wrong key.
var decoyAPIKey = vault.NewSecret([]byte("tokenagent-decoy-api-key-for-sites-without-one"))

// APIKeyVerifier verifies the legacy Site API Key `?apikey=<key>` (SPEC §3.7), optionally
// with `impersonateuserid=<id>`.
//
// # Notes
//
//   - Safe for concurrent use.
//   - The site switch `legacy.apikey` is checked first: off, every API key is
//     legacy_token_disabled.
//   - The key is compared in constant time, by their SHA-256 digests, so neither the key's
//     bytes nor its length show in the timing; a site without a `legacy` record compares with
//     a decoy and answers invalid_api_key like a wrong key.
//   - The identity is elevated (`x-auth-elevated: true`), and names the impersonated user or
//     no user at all (the key itself acts: it passes `require: authenticated`).
//   - Every accepted key is logged as a warning and counted (see LegacyAudit).
type APIKeyVerifier struct {
	// Keys looks up the site's legacy record (required).
	Keys LegacyKeys
	// Audit logs and counts accepted keys; nil logs through slog.Default() and counts nothing.
	Audit *LegacyAudit
}

// Verify checks key (the `apikey` query parameter) for site; impersonate is the
// `impersonateuserid` parameter, "" when absent (an empty parameter counts as absent).
// Reasons: legacy_token_disabled, malformed_token (an empty or over-long key, or an
// impersonateuserid that is not a decimal id of 1 to 19 digits), invalid_api_key (a wrong key,
// or no legacy key for the site), keys_unavailable.
func (v *APIKeyVerifier) Verify(ctx context.Context, site *SiteSettings, key, impersonate string) (Identity, error) {
	if !site.LegacyAPIKey {
		return Identity{}, reason.New(reason.LegacyTokenDisabled)
	}
	if key == "" || len(key) > MaxTokenLen {
		return Identity{}, reason.New(reason.MalformedToken)
	}
	if impersonate != "" && !ValidUserID(impersonate) {
		return Identity{}, reason.Newf(reason.MalformedToken, "impersonateuserid is not a decimal user id")
	}
	leg, err := v.Keys.Legacy(ctx, site.ID)
	stored, known, rerr := secretOrDecoy(leg, err, func(l *vault.Legacy) *vault.Secret { return l.APIKey }, decoyAPIKey)
	if rerr != nil {
		return Identity{}, rerr
	}
	if !apiKeyEqual(stored, key) || !known {
		return Identity{}, reason.New(reason.InvalidAPIKey)
	}
	v.Audit.Used(site.ID, KindAPIKey, impersonate, key)
	return Identity{Kind: KindAPIKey, User: impersonate, Elevated: true}, nil
}

// apiKeyEqual compares the SHA-256 digests of the stored key and the candidate in constant
// time.
func apiKeyEqual(stored *vault.Secret, candidate string) bool {
	b := stored.Bytes()
	want := sha256.Sum256(b)
	clear(b)
	got := sha256.Sum256([]byte(candidate))
	return subtle.ConstantTimeCompare(want[:], got[:]) == 1
}

// NewAPIKey returns a new random Site API Key (64 hex digits: 256 bits) for a site's `legacy`
// record. For tests and `tokenagent mint`.
func NewAPIKey() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// APIKeyQuery returns the query string that presents a Site API Key, acting as the user
// impersonate (a decimal id; "" for none): `apikey=<key>[&impersonateuserid=<id>]`.
func APIKeyQuery(key, impersonate string) string {
	q := "apikey=" + url.QueryEscape(key)
	if impersonate != "" {
		q += "&impersonateuserid=" + url.QueryEscape(impersonate)
	}
	return q
}

// LegacyAudit logs a warning and counts `tokenagent_legacy_credentials_total{site,kind}` for
// every accepted legacy credential (Impersonation Auth Token, Site API Key), so operators can
// find and retire the integrations that still use them.
//
// # Notes
//
//   - Safe for concurrent use. A nil *LegacyAudit logs through slog.Default() and counts
//     nothing.
//   - The log never holds the credential: it names it by the first 12 hex digits of its
//     SHA-256 (`credential_sha256`), enough to tell integrations apart.
type LegacyAudit struct {
	log  *slog.Logger
	uses *prometheus.CounterVec

	mu    sync.RWMutex
	bound map[legacyLabels]prometheus.Counter // counters bound to their labels, so a use hashes nothing
}

type legacyLabels struct {
	site string
	kind Kind
}

// LegacyMetricName is the name of the legacy credential counter.
const LegacyMetricName = "tokenagent_legacy_credentials_total"

// NewLegacyAudit returns an audit that logs to log (nil: slog.Default()) and registers its
// counter with reg (nil: not registered). Build one per process: it outlives config reloads.
func NewLegacyAudit(reg prometheus.Registerer, log *slog.Logger) (*LegacyAudit, error) {
	if log == nil {
		log = slog.Default()
	}
	uses := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: LegacyMetricName,
		Help: "Accepted legacy credentials (Impersonation Auth Tokens, Site API Keys) by site and kind; migrate these integrations to Server API Tokens.",
	}, []string{"site", "kind"})
	if reg != nil {
		if err := reg.Register(uses); err != nil {
			return nil, err
		}
	}
	return &LegacyAudit{log: log, uses: uses, bound: map[legacyLabels]prometheus.Counter{}}, nil
}

// Used records one accepted legacy credential of kind at site, acting as user ("" for none).
func (a *LegacyAudit) Used(site string, kind Kind, user, credential string) {
	log := slog.Default()
	if a != nil {
		log = a.log
		a.counter(site, kind).Inc()
	}
	ctx := context.Background()
	if !log.Enabled(ctx, slog.LevelWarn) {
		return
	}
	log.LogAttrs(ctx, slog.LevelWarn, "legacy credential used; migrate this integration to a Server API Token",
		slog.String("site", site), slog.String("kind", string(kind)), slog.String("user", user),
		slog.String("credential_sha256", CredentialFingerprint(credential)))
}

func (a *LegacyAudit) counter(site string, kind Kind) prometheus.Counter {
	k := legacyLabels{site, kind}
	a.mu.RLock()
	c, ok := a.bound[k]
	a.mu.RUnlock()
	if ok {
		return c
	}
	c = a.uses.WithLabelValues(site, string(kind))
	a.mu.Lock()
	a.bound[legacyLabels{strings.Clone(site), kind}] = c
	a.mu.Unlock()
	return c
}
