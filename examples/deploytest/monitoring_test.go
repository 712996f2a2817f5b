package deploytest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/fleet/redistest"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/vaulttest"
)

const (
	alertsFile    = "../helm/tokenagent/files/alerts.yaml"
	dashboardFile = "../helm/tokenagent/files/dashboard.json"
)

var promql = parser.NewParser(parser.Options{})

// loadAlerts parses the alert rules with Prometheus' own rule-file loader, which also parses
// every expression and annotation template.
func loadAlerts(t *testing.T) *rulefmt.RuleGroups {
	t.Helper()
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatalf("alerts: %v", errs)
	}
	return groups
}

// grafanaVars replaces the Grafana variables the dashboard's queries use with what Grafana
// sends, so Prometheus' parser can read them.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$site", ".*")

// dashboardQueries returns every query of the dashboard, by panel title, variables replaced.
func dashboardQueries(t *testing.T) (map[string][]string, map[string]any) {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating map[string]any `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	out := map[string][]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out[p.Title] = append(out[p.Title], grafanaVars.Replace(tg.Expr))
		}
	}
	return out, d.Templating
}

// metricNames lists the metric names an expression selects.
func metricNames(t *testing.T, expr string) []string {
	t.Helper()
	e, err := promql.ParseExpr(expr)
	if err != nil {
		t.Fatalf("%q: %v", expr, err)
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names
}

// TestAlertRules: every rule parses, names a severity and says what to do; the alerts the
// issue asks for are there.
func TestAlertRules(t *testing.T) {
	groups := loadAlerts(t)
	byName := map[string]rulefmt.Rule{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			byName[r.Alert] = r
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s lacks a severity, summary or description", r.Alert)
			}
		}
	}
	for alert, metric := range map[string]string{
		"TokenagentKeySourceFailing":  "tokenagent_key_source_failing_since_timestamp_seconds",
		"TokenagentKeysNearMaxStale":  "tokenagent_key_max_stale_seconds",
		"TokenagentPolicyErrors":      "tokenagent_policy_errors_total",
		"TokenagentCheckLatencyHigh":  "tokenagent_check_duration_seconds_bucket",
		"TokenagentNotReady":          "tokenagent_ready",
		"TokenagentKeysUnavailable":   "tokenagent_decisions_total",
		"TokenagentVaultLoginFailing": "tokenagent_vault_login_failures_total",
	} {
		r, ok := byName[alert]
		if !ok {
			t.Errorf("no alert %s", alert)
			continue
		}
		if !slices.Contains(metricNames(t, r.Expr), metric) {
			t.Errorf("alert %s does not use %s: %s", alert, metric, r.Expr)
		}
	}
}

// TestDashboard: every query parses, and the dashboard shows what the issue asks for.
func TestDashboard(t *testing.T) {
	queries, templating := dashboardQueries(t)
	all := ""
	for title, qs := range queries {
		for _, q := range qs {
			if len(metricNames(t, q)) == 0 {
				t.Errorf("panel %q: %q selects no metric", title, q)
			}
			all += q + "\n"
		}
	}
	for what, want := range map[string]string{
		"decisions by reason":   "sum by (reason) (rate(tokenagent_decisions_total",
		"decisions by site":     "sum by (site, decision) (rate(tokenagent_decisions_total",
		"p50 check latency":     "histogram_quantile(0.5, sum by (le) (rate(tokenagent_check_duration_seconds_bucket",
		"p99 check latency":     "histogram_quantile(0.99, sum by (le) (rate(tokenagent_check_duration_seconds_bucket",
		"key-source state":      "tokenagent_key_source_failing_since_timestamp_seconds",
		"shadow would-denies":   "tokenagent_shadow_denials_total",
		"policy errors":         "tokenagent_policy_errors_total",
		"Vault login state":     "tokenagent_vault_auth_state",
		"verified-token cache":  "tokenagent_oauth_token_cache_total",
		"key-source read rates": "tokenagent_key_source_reads_total",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("the dashboard does not show %s (%s)", what, want)
		}
	}
	if b, _ := json.Marshal(templating); !strings.Contains(string(b), `"datasource"`) || !strings.Contains(string(b), `"site"`) {
		t.Errorf("the dashboard has no datasource and site variables: %s", b)
	}
}

// trapPolicy is an ABI v1 module whose evaluation traps: every call is a policy error.
const trapPolicy = `(module
  (memory (export "memory") 2)
  (func (export "tokenagent_abi_v1"))
  (func (export "tokenagent_alloc") (param i32) (result i32) (i32.const 65536))
  (func (export "tokenagent_evaluate") (param i32 i32) (result i64) unreachable))`

// TestMonitoringMetricsServed runs a real agent (keys in a real Vault dev server, a policy,
// traces to an OTLP receiver, a site in shadow mode, a revocation list on a real Redis), sends it the checks that make each kind
// of event, scrapes its /metrics over HTTP, and checks that every metric the alerts and the
// dashboard name is served.
func TestMonitoringMetricsServed(t *testing.T) {
	names := map[string]string{} // metric -> where it is used
	for _, g := range loadAlerts(t).Groups {
		for _, r := range g.Rules {
			for _, n := range metricNames(t, r.Expr) {
				names[n] = "alert " + r.Alert
			}
		}
	}
	queries, _ := dashboardQueries(t)
	for title, qs := range queries {
		for _, q := range qs {
			for _, n := range metricNames(t, q) {
				names[n] = "dashboard panel " + title
			}
		}
	}

	v := vaulttest.Start(t)
	ctx := context.Background()
	authKey := []byte("0123456789abcdef0123456789abcdef")
	for p, data := range map[string]map[string]any{
		"tokenagent/sites/docs/authtoken":        {"key": base64.StdEncoding.EncodeToString(authKey)},
		"tokenagent/sites/docs/server-tokens/k1": {"secret": "s3cret"},
	} {
		if _, err := v.Client.KVv2("secret").Put(ctx, p, data); err != nil {
			t.Fatal(err)
		}
	}
	rx := daemontest.StartOTLP(t)
	redis := redistest.Start(t, redistest.Options{})
	dir := t.TempDir()
	policy := plugintest.WAT(t, "trap", trapPolicy)
	daemontest.WriteFile(t, filepath.Join(dir, "vault-token"), v.Token)
	cfg := fmt.Sprintf(`
keys:
  source: vault
  vault: {address: %q, auth: {method: token, token_file: vault-token}}
tracing: {otlp_endpoint: %q, insecure: true, sample_ratio: 1}
revocation: {store: redis, redis: {address: %q}}
sites:
  - id: docs
    hosts: [docs.example.com]
    routes: [{path: "/private/*", require: user}]
  - id: trial
    mode: shadow
    hosts: [trial.example.com]
    routes: [{path: "/private/*", require: user}]
  - id: scripted
    hosts: [scripted.example.com]
    policy: %q
`, v.Addr, rx.Addr, redis.Addr, policy)
	t.Setenv("VAULT_TOKEN", "")
	e := daemontest.Start(t, cfg, daemontest.Options{Files: map[string]string{"vault-token": v.Token},
		Daemon: daemon.Options{Logger: slog.New(slog.DiscardHandler)}})
	daemontest.Eventually(t, "ready after the Vault login", func() bool { return e.D.Ready().Ready })
	srv := token.MintServerToken("k1", vault.NewSecret([]byte("s3cret")), "42", time.Now())
	for _, c := range []struct {
		host, path string
		headers    map[string]string
	}{
		{"docs.example.com", "/private/a", map[string]string{"x-deki-token": srv}}, // allowed, Vault read
		{"docs.example.com", "/private/a", nil},                                    // denied
		{"trial.example.com", "/private/a", nil},                                   // a shadow denial
		{"scripted.example.com", "/", nil},                                         // a policy error
	} {
		e.Check(t, "GET", c.host, c.path, c.headers)
	}

	resp, err := e.HTTPClient.Get(e.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	tp := expfmt.NewTextParser(model.UTF8Validation)
	families, err := tp.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	var missing []string
	for n, where := range names {
		family := n
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suffix); ok && families[base] != nil {
				family = base
			}
		}
		if families[family] == nil {
			missing = append(missing, n+" ("+where+")")
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("named by the alerts or the dashboard but not in /metrics:\n  %s", strings.Join(missing, "\n  "))
	}
	if len(names) < 15 {
		t.Fatalf("only %d metric names found in the alerts and the dashboard", len(names))
	}
}
