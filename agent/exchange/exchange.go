// Package exchange is the Identity Token Exchange endpoint (SPEC §3.5): `POST
// /@app/auth/token/exchange` with an OpenID Connect id_token in its body. The agent answers it
// itself: the id_token is verified against the site's identity providers, the user
// (provider, sub) is found or created in the just-in-time user directory, and the answer is
// 200 with the user as JSON and a fresh Auth Token cookie.
//
//	e := &exchange.Endpoint{IDTokens: v, Keys: store, Users: dir, Metrics: m}
//	ans, rerr := e.Exchange(ctx, site, body, truncated)
//
// # Notes
//
//   - Safe for concurrent use. The package knows nothing of the transport: the caller says
//     whether the body it has was cut short (Envoy's partial body, the HTTP front's limit).
//   - A refusal is a *reason.Error that never holds the token; the log line of a success
//     names the id_token by its fingerprint only.
package exchange

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent/internal/clock"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/blocking"
	"github.com/tokenagent/tokenagent/vault/users"
)

// Path is the path of the Identity Token Exchange (SPEC §3.5).
const Path = "/@app/auth/token/exchange"

// MaxBody is the largest exchange body accepted, in bytes (SPEC §2).
const MaxBody = 16 << 10

// Endpoint answers the Identity Token Exchange of one config.
type Endpoint struct {
	// IDTokens verifies the body's id_token (required).
	IDTokens *token.IDTokenVerifier
	// Keys looks up the site's Auth Token keys, which sign the session (required).
	Keys token.AuthTokenKeys
	// Users is the just-in-time user directory (nil: every exchange is keys_unavailable).
	Users users.Directory
	// Metrics counts exchanges (required).
	Metrics *Metrics
	// Logger receives a line per exchanged token (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Answer is the endpoint's own 200 answer.
type Answer struct {
	// Status is 200.
	Status int
	// Headers are content-type, cache-control and the session's set-cookie.
	Headers []token.Header
	// Body is the user as JSON.
	Body []byte
	// Identity is the user the new session names.
	Identity token.Identity
}

// Metrics are the exchange's Prometheus collectors.
type Metrics struct {
	// Total counts exchanges by site, identity provider (unknown when none matched) and
	// outcome (created: a new user; existing: a known user; otherwise the refusal's reason).
	Total *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them with reg (nil: not registered). Build
// them once per process.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{Total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_exchanges_total",
		Help: "Identity token exchanges by site, identity provider (unknown when none matched) and outcome " +
			"(created: a new user; existing: a known user; otherwise the denial's reason)."},
		[]string{"site", "provider", "outcome"})}
	if reg != nil {
		if err := reg.Register(m.Total); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) count(site, provider, outcome string) {
	if provider == "" {
		provider = "unknown"
	}
	m.Total.WithLabelValues(site, provider, outcome).Inc()
}

// retryLater is a keys_unavailable refusal with a Retry-After of secs.
func retryLater(detail, secs string, cause error) *reason.Error {
	return &reason.Error{Reason: reason.KeysUnavailable, Detail: detail, Cause: cause,
		Headers: map[string]string{"Retry-After": secs}}
}

// Exchange answers one exchange at site: body is the request body as the caller has it,
// truncated whether it was cut short (then it is over MaxBody: 413 body_too_large).
func (e *Endpoint) Exchange(ctx context.Context, site *token.SiteSettings, body []byte, truncated bool) (*Answer, *reason.Error) {
	provider := ""
	refuse := func(r *reason.Error) (*Answer, *reason.Error) {
		e.Metrics.count(site.ID, provider, string(r.Reason))
		return nil, r
	}
	// Size first, before any parsing work (SPEC §2).
	if len(body) > MaxBody || truncated {
		return refuse(reason.Newf(reason.BodyTooLarge, "the exchange body is over 16 KiB"))
	}
	raw, rerr := ParseBody(body)
	if rerr != nil {
		return refuse(rerr)
	}
	idt, err := e.IDTokens.Verify(ctx, site, raw)
	provider = idt.Provider
	if err != nil {
		r := reason.From(err)
		if provider != "" && r.Cause == nil {
			r.Cause = fmt.Errorf("identity provider %s", provider)
		}
		return refuse(r)
	}
	keys, err := e.Keys.AuthTokenKeys(ctx, site.ID, site.AuthTokenRotationGrace)
	switch {
	case errors.Is(err, vault.ErrNotFound):
		return refuse(retryLater("the site has no auth token key to sign a session with", "30", err))
	case err != nil:
		return refuse(retryLater("", "5", err))
	}
	if e.Users == nil {
		return refuse(retryLater("the agent has no user directory", "30", nil))
	}
	var created bool
	blocking.Ahead(ctx) // the user directory may be read and written (Vault): the connection goes on
	id, err := e.Users.Provision(users.WithCreated(ctx, &created), site.ID, idt.Provider, idt.Subject,
		users.Profile{GivenName: idt.GivenName, FamilyName: idt.FamilyName, Email: idt.Email})
	switch {
	case errors.Is(err, users.ErrBlocked):
		return refuse(&reason.Error{Reason: reason.InvalidIDToken, Detail: "this identity is blocked in the user directory", Cause: err})
	case err != nil:
		return refuse(retryLater("the user directory cannot be used right now; retry later", "5", err))
	case !token.ValidUserID(id):
		return refuse(retryLater("the user directory gave an unusable id", "5", fmt.Errorf("user directory id %q", id)))
	}

	now := clock.Now(e.Now)
	session := token.MintAuthToken(keys.Current().Secret, id, now)
	answer, err := json.Marshal(user{ID: id, Anonymous: "false", Username: idt.Subject,
		Fullname: idt.GivenName + " " + idt.FamilyName, Email: idt.Email})
	if err != nil {
		return refuse(retryLater("", "5", err))
	}
	outcome := "existing"
	if created {
		outcome = "created"
	}
	e.Metrics.count(site.ID, provider, outcome)
	log := e.Logger
	if log == nil {
		log = slog.Default()
	}
	log.LogAttrs(ctx, slog.LevelInfo, "identity token exchanged",
		slog.String("site", site.ID), slog.String("provider", provider), slog.String("user", id),
		slog.Bool("new_user", created), slog.String("id_token_sha256", token.CredentialFingerprint(raw)))
	maxAge := strconv.FormatInt(int64(site.AuthTokenTTL.Seconds()), 10)
	return &Answer{
		Status: http.StatusOK,
		Headers: []token.Header{
			{Name: "content-type", Value: "application/json"},
			{Name: "cache-control", Value: "no-store"},
			{Name: "set-cookie", Value: "authtoken=" + session + "; Path=/; Max-Age=" + maxAge + "; HttpOnly; Secure; SameSite=Lax"},
		},
		Body:     answer,
		Identity: token.Identity{Kind: token.KindAuthToken, User: id, Expires: now.Add(site.AuthTokenTTL)},
	}, nil
}

// user is the exchange's answer body, members in the order SPEC §3.5 gives.
type user struct {
	ID        string `json:"@id"`
	Anonymous string `json:"@anonymous"`
	Username  string `json:"username"`
	Fullname  string `json:"fullname"`
	Email     string `json:"email"`
}
