package daemon_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	dto "github.com/prometheus/client_model/go"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/agent/token/idtokentest"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
	"github.com/tokenagent/tokenagent/vault"
)

// TestEveryCounterKeepsCountingAcrossReloads reloads the config under load and checks that
// every tokenagent_* counter the traffic moves before a reload still moves after it: the
// collectors are built once, with the Runtime, and a reload's new agent counts into them
// (before the redesign the legacy counter of a reloaded agent was registered nowhere and
// stopped). The traffic exercises every credential kind, the exchange, a policy, CORS and the
// HTTP front.
func TestEveryCounterKeepsCountingAcrossReloads(t *testing.T) {
	hsKey := []byte("reload-metrics-hs256-key-32bytes")
	idp := idtokentest.NewProvider(t, "https://idp.example.com", "docs-app")
	policy := plugintest.BuildWAT(t, "../../../plugins/testdata/wat/allow_v1.wat")
	const apiKey = "reload-metrics-legacy-api-key-0001"
	cfg := func(generation int) string {
		return fmt.Sprintf(`
authz_http_addr: 127.0.0.1:0
keys: {source: file, file: keys.yaml, refresh: 1h}
policies: {cache_dir: %s}
sites:
  - id: docs
    hosts: [docs.example.com]
    policy: %s
    policy_deadline: 5s
    legacy: {impersonation: true, apikey: true}
    routes:
      - {path: "/generation-%d/*", require: user}
`, filepath.Join(plugintest.CacheDir(), "wazero"), policy, generation)
	}
	keys := `
sites:
  docs:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(authKey) + `", created: "2026-01-01T00:00:00Z"}
    server-tokens:
      k1: {secret: "s3cret"}
    browser-tokens:
      pub1: {origins: ["https://app.example.org"]}
    oauth:
      issuer: "https://docs.example.com"
      audience: docs
      jwks: {keys: [{kty: oct, kid: hs, alg: HS256, k: "` + base64.RawURLEncoding.EncodeToString(hsKey) + `"}]}
    legacy: {apikey: "` + apiKey + `"}
    idps:
      corp: ` + idp.RecordYAML(t, 0) + `
`
	e := daemontest.Start(t, cfg(1), daemontest.Options{Files: map[string]string{"keys.yaml": keys},
		Daemon: daemon.Options{Logger: slog.New(slog.DiscardHandler), ConfigPoll: -1}, WaitReady: true})
	front := "http://" + e.D.AuthzHTTPAddr()

	jwt, err := token.MintJWT(jose.JSONWebKey{Key: hsKey, KeyID: "hs", Algorithm: "HS256"}, map[string]any{
		"iss": "https://docs.example.com", "aud": "docs", "sub": "u1", "scope": "read", "exp": time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	// One round of every kind of traffic; a fresh token where one is used once.
	round := func(ctx context.Context) {
		i := n.Add(1)
		now := time.Now()
		for _, h := range []map[string]string{
			nil, // anonymous
			{"x-deki-token": token.MintServerToken("k1", vault.NewSecret([]byte("s3cret")), "42", now)},
			{"cookie": "authtoken=" + token.MintAuthToken(vault.NewSecret(authKey), "7", now)},
			{"x-deki-token": "pub1", "origin": "https://app.example.org"},
			{"authorization": "Bearer " + jwt},
			{"x-authtoken": token.MintImpersonationToken(vault.NewSecret([]byte(apiKey)), "9", now)},
			{"x-deki-token": token.MintServerToken("k1", vault.NewSecret([]byte("wrong")), "42", now)}, // denied
		} {
			_, _ = e.Client.Check(ctx, daemontest.CheckRequest("GET", "docs.example.com", "/page", h))
		}
		_, _ = e.Client.Check(ctx, daemontest.CheckRequest("GET", "docs.example.com", "/?apikey="+url.QueryEscape(apiKey), nil))
		_, _ = e.Client.Check(ctx, daemontest.CheckRequest("OPTIONS", "docs.example.com", "/page",
			map[string]string{"origin": "https://app.example.org", "access-control-request-method": "PUT"}))
		_, _ = e.Client.Check(ctx, exchangeRequest("docs.example.com", "application/jwt",
			idp.Mint(t, idp.Claims(now, fmt.Sprint("user-", i), nil)), true))
		if resp, err := http.Get(front + "/envoy/page"); err == nil {
			resp.Body.Close()
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					round(context.Background())
				}
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	window := func() {
		t.Helper()
		start := n.Load()
		daemontest.Eventually(t, "20 rounds of traffic", func() bool { return n.Load() >= start+20 })
	}

	window() // warm: caches filled, first fetches made
	s0 := counters(t, e)
	window()
	s1 := counters(t, e)
	var active []string
	for name, v := range s1 {
		if v > s0[name] {
			active = append(active, name)
		}
	}
	sort.Strings(active)
	for _, must := range []string{"tokenagent_decisions_total", "tokenagent_legacy_credentials_total",
		"tokenagent_exchanges_total", "tokenagent_oauth_token_cache_total", "tokenagent_policy_evaluations_total",
		"tokenagent_http_authz_responses_total", "tokenagent_check_duration_seconds"} {
		if s1[must] <= s0[must] {
			t.Fatalf("%s did not move under traffic before any reload (%v -> %v): the traffic does not exercise it", must, s0[must], s1[must])
		}
	}
	for gen := 2; gen <= 4; gen++ {
		daemontest.WriteFile(t, e.ConfigPath, cfg(gen))
		if err := e.D.Reload(e.ConfigPath); err != nil {
			t.Fatalf("reload %d: %v", gen, err)
		}
		before := counters(t, e)
		window()
		after := counters(t, e)
		var stopped []string
		for _, name := range active {
			if after[name] <= before[name] {
				stopped = append(stopped, name)
			}
		}
		if len(stopped) > 0 {
			t.Fatalf("after reload %d these counters stopped counting: %s", gen, strings.Join(stopped, ", "))
		}
	}
	if got := e.Counter(t, "tokenagent_config_reloads_total", nil); got != 3 {
		t.Errorf("tokenagent_config_reloads_total = %v, want 3", got)
	}
	t.Logf("%d counter families kept counting across 3 reloads: %s", len(active), strings.Join(active, ", "))
}

// counters reads every tokenagent_* counter family of the daemon (and the sample count of
// every histogram) as one number per family.
func counters(t *testing.T, e *daemontest.Env) map[string]float64 {
	t.Helper()
	mfs, err := e.D.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "tokenagent_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[mf.GetName()] += m.GetCounter().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[mf.GetName()] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}
