package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"weak"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/jwks"
	"github.com/tokenagent/tokenagent/vault/users"
)

// MaxExchangeBody is the largest Identity Token Exchange body accepted, in bytes (SPEC §2).
const MaxExchangeBody = 16 << 10

// partialBodyHeader is the header Envoy adds when it sent only the first part of a body
// (`allow_partial_message`).
const partialBodyHeader = "x-envoy-auth-partial-body"

// exchangeState is the Identity Token Exchange's state (SPEC §3.5): the id_token verifier,
// the user directory and the exchange counter.
type exchangeState struct {
	users    users.Directory
	verifier *token.IDTokenVerifier
	total    *prometheus.CounterVec
}

// exchangeShared is what every Agent built over one key store shares: the counter, so a
// config reload (which builds a new Agent without a registerer) keeps counting into the
// registered collector.
type exchangeShared struct {
	total *prometheus.CounterVec
}

var sharedExchange sync.Map // weak.Pointer[vault.Store] -> *exchangeShared

func (a *Agent) initExchange() error {
	key := weak.Make(a.keys)
	sh, ok := sharedExchange.Load(key)
	if !ok {
		total := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenagent_exchanges_total",
			Help: "Identity token exchanges by site, identity provider (unknown when none matched) and outcome " +
				"(created: a new user; existing: a known user; otherwise the denial's reason)."},
			[]string{"site", "provider", "outcome"})
		if a.reg != nil {
			if err := a.reg.Register(total); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					return err
				}
				if c, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
					total = c
				}
			}
		}
		var loaded bool
		if sh, loaded = sharedExchange.LoadOrStore(key, &exchangeShared{total: total}); !loaded {
			runtime.AddCleanup(a.keys, func(k weak.Pointer[vault.Store]) { sharedExchange.Delete(k) }, key)
		}
	}
	a.exchange.total = sh.(*exchangeShared).total

	// The providers' key sets live in the OAuth verifier's cache: one fetch per jwks_uri, the
	// same refetch limit, and a failing jwks_uri shows in /readyz with the issuers'.
	var cache *jwks.Cache
	if a.oauth.v != nil {
		cache = a.oauth.v.JWKS
	}
	if cache == nil {
		cache = jwks.NewCache(jwks.Options{Now: a.now, Logger: a.log})
	}
	v := &token.IDTokenVerifier{Keys: a.keys, JWKS: cache, Now: a.now}
	a.exchange.verifier = v
	ids := make([]string, len(a.list))
	for i, s := range a.list {
		ids[i] = s.ID
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), prefetchTimeout)
		defer cancel()
		// Not before the key source answers (Vault logged in): a read refused meanwhile would
		// mark the source down and refuse the first exchanges.
		for a.keys.Ready() != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		v.Prefetch(ctx, ids...)
	}()
	return nil
}

// doExchange answers `POST /@app/auth/token/exchange` itself: it verifies the body's id_token
// against the site's identity providers, provisions the user (provider, sub) in the user
// directory, and answers 200 with the user as JSON and a fresh Auth Token cookie.
func (a *Agent) doExchange(ctx context.Context, s *Site, req *Request) *Decision {
	provider := ""
	refuse := func(e *reason.Error) *Decision {
		a.countExchange(s, provider, string(e.Reason))
		return a.deny(s, e)
	}
	// Size first, before any parsing work (SPEC §2).
	if len(req.Body) > MaxExchangeBody || req.BodyTruncated || strings.EqualFold(req.Headers[partialBodyHeader], "true") {
		return refuse(reason.Newf(reason.BodyTooLarge, "the exchange body is over 16 KiB"))
	}
	raw, rerr := ParseExchangeBody(req.Body)
	if rerr != nil {
		return refuse(rerr)
	}
	idt, err := a.exchange.verifier.Verify(ctx, &s.Site, raw)
	provider = idt.Provider
	if err != nil {
		e := reason.From(err)
		if provider != "" && e.Cause == nil {
			e.Cause = fmt.Errorf("identity provider %s", provider)
		}
		return refuse(e)
	}
	keys, err := a.keys.AuthTokenKeys(ctx, s.ID, s.AuthTokenRotationGrace)
	if err != nil {
		if errors.Is(err, vault.ErrNotFound) {
			return refuse(&reason.Error{Reason: reason.KeysUnavailable, Detail: "the site has no auth token key to sign a session with",
				Headers: map[string]string{"Retry-After": "30"}})
		}
		return refuse(reason.From(err))
	}
	if a.exchange.users == nil {
		return refuse(&reason.Error{Reason: reason.KeysUnavailable, Detail: "the agent has no user directory",
			Headers: map[string]string{"Retry-After": "30"}})
	}
	var created bool
	id, err := a.exchange.users.Provision(users.WithCreated(ctx, &created), s.ID, idt.Provider, idt.Subject,
		users.Profile{GivenName: idt.GivenName, FamilyName: idt.FamilyName, Email: idt.Email})
	if err != nil {
		if errors.Is(err, users.ErrBlocked) {
			return refuse(&reason.Error{Reason: reason.InvalidIDToken, Detail: "this identity is blocked in the user directory", Cause: err})
		}
		return refuse(&reason.Error{Reason: reason.KeysUnavailable, Detail: "the user directory cannot be used right now; retry later",
			Headers: map[string]string{"Retry-After": "5"}, Cause: err})
	}
	if !validUserID(id) {
		return refuse(&reason.Error{Reason: reason.KeysUnavailable, Detail: "the user directory gave an unusable id",
			Headers: map[string]string{"Retry-After": "5"}, Cause: fmt.Errorf("user directory id %q", id)})
	}

	now := a.now()
	session := token.MintAuthToken(keys.Current().Secret, id, now)
	body, err := exchangeBody(id, idt)
	if err != nil {
		return refuse(&reason.Error{Reason: reason.KeysUnavailable, Cause: err})
	}
	maxAge := int64(s.AuthTokenTTL.Seconds())
	headers := []Header{
		{"content-type", "application/json"},
		{"cache-control", "no-store"},
		{"set-cookie", "authtoken=" + session + "; Path=/; Max-Age=" + strconv.FormatInt(maxAge, 10) +
			"; HttpOnly; Secure; SameSite=Lax"},
	}
	outcome := "existing"
	if created {
		outcome = "created"
	}
	a.countExchange(s, provider, outcome)
	a.log.LogAttrs(ctx, slog.LevelInfo, "identity token exchanged",
		slog.String("site", s.ID), slog.String("provider", provider), slog.String("user", id),
		slog.Bool("new_user", created), slog.String("id_token_sha256", fingerprint(raw)))
	d := answer(s, http.StatusOK, headers, body)
	d.Identity = token.Identity{Kind: token.KindAuthToken, User: id, Expires: now.Add(s.AuthTokenTTL)}
	return d
}

// fingerprint names a token in logs without revealing it: the first 12 hex digits of its
// SHA-256, the form every credential takes in tokenagent's logs.
func fingerprint(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:6])
}

func (a *Agent) countExchange(s *Site, provider, outcome string) {
	if provider == "" {
		provider = "unknown"
	}
	a.exchange.total.WithLabelValues(s.ID, provider, outcome).Inc()
}

// exchangeUser is the exchange's answer body, members in the order SPEC §3.5 gives.
type exchangeUser struct {
	ID        string `json:"@id"`
	Anonymous string `json:"@anonymous"`
	Username  string `json:"username"`
	Fullname  string `json:"fullname"`
	Email     string `json:"email"`
}

func exchangeBody(id string, idt token.IDToken) ([]byte, error) {
	return json.Marshal(exchangeUser{ID: id, Anonymous: "false", Username: idt.Subject,
		Fullname: idt.GivenName + " " + idt.FamilyName, Email: idt.Email})
}

// validUserID reports whether id is an Auth Token user id: 1 to 19 decimal digits.
func validUserID(id string) bool {
	if len(id) == 0 || len(id) > 19 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < '0' || id[i] > '9' {
			return false
		}
	}
	return true
}

// ParseExchangeBody returns the id_token an exchange body carries, whatever its content type:
//
//   - a JSON object with an "id_token" string member (other members are ignored; the member
//     given twice is refused);
//   - a JSON string;
//   - a form body (`application/x-www-form-urlencoded`) with one `id_token` field, told by its
//     `=` (a JWT never holds one);
//   - otherwise the raw JWT (`text/plain`, `application/jwt`, a form post of the bare token …).
//
// Leading and trailing whitespace is ignored. The result is not checked to be a JWT: the
// verifier does that. Callers check the body's size first (MaxExchangeBody). A body that holds
// no id_token is an invalid_id_token denial.
func ParseExchangeBody(body []byte) (string, *reason.Error) {
	b := bytes.TrimSpace(body)
	if len(b) == 0 {
		return "", reason.Newf(reason.InvalidIDToken, "the body holds no id_token")
	}
	var tok string
	switch {
	case b[0] == '{':
		t, err := idTokenFromJSONObject(b)
		if err != nil {
			return "", reason.Newf(reason.InvalidIDToken, "the JSON body is not an object with one id_token string")
		}
		tok = t
	case b[0] == '"':
		if err := json.Unmarshal(b, &tok); err != nil {
			return "", reason.Newf(reason.InvalidIDToken, "the body is not a JSON string")
		}
	case bytes.IndexByte(b, '=') >= 0:
		q, err := url.ParseQuery(string(b))
		if err != nil || len(q["id_token"]) != 1 {
			return "", reason.Newf(reason.InvalidIDToken, "the form body does not hold one id_token field")
		}
		tok = q["id_token"][0]
	default:
		tok = string(b)
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", reason.Newf(reason.InvalidIDToken, "the body holds no id_token")
	}
	return tok, nil
}

var errNoIDToken = errors.New("no id_token member")

// idTokenFromJSONObject reads the "id_token" member of the JSON object b (exactly one value,
// nothing after it).
func idTokenFromJSONObject(b []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", errNoIDToken
	}
	var tok string
	found := false
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return "", err
		}
		key, _ := k.(string)
		if key == "id_token" {
			if found {
				return "", errors.New("id_token given twice")
			}
			found = true
			if err := dec.Decode(&tok); err != nil {
				return "", err
			}
			continue
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", err
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return "", errNoIDToken
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", errors.New("data after the JSON object")
	}
	if !found {
		return "", errNoIDToken
	}
	return tok, nil
}
