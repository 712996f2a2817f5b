package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
)

// opsConfig is configYAML with the HTTP front on; extra is appended to the docs site's routes.
func opsConfig(extra string) string {
	return strings.Replace(configYAML, "http_addr: 127.0.0.1:0\n",
		"http_addr: 127.0.0.1:0\nauthz_http_addr: 127.0.0.1:0\nlog: {allow_sample: 1}\n", 1) + extra
}

// startWith runs a real daemon on cfgYAML and keysYAML with opts (quiet unless opts logs;
// the config file watched unless opts says otherwise).
func startWith(t *testing.T, cfgYAML string, opts daemon.Options) *daemontest.Env {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "tokenagent.yaml")
	daemontest.WriteFile(t, cfgPath, cfgYAML)
	daemontest.WriteFile(t, filepath.Join(dir, "keys.yaml"), keysYAML())
	if opts.ConfigPath == "" {
		opts.ConfigPath = cfgPath
	}
	return daemontest.StartFile(t, cfgPath, daemontest.Options{Daemon: opts})
}

func nginxCheck(t *testing.T, e *daemontest.Env, method, uri string, h map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+e.D.AuthzHTTPAddr()+"/nginx", nil)
	req.Header.Set("X-Original-Method", method)
	req.Header.Set("X-Original-URI", uri)
	req.Header.Set("X-Original-Host", "docs.example.com")
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

var hexID = regexp.MustCompile(`^[0-9a-f]{16}$`)

func TestHTTPFrontServedAndReloaded(t *testing.T) {
	e := startWith(t, opsConfig(""), daemon.Options{ConfigPoll: -1})
	if e.D.AuthzHTTPAddr() == "" {
		t.Fatal("authz_http_addr is set but the front does not listen")
	}
	resp := nginxCheck(t, e, "GET", "/private", map[string]string{"X-Deki-Token": serverToken("s3cret", "5")})
	if resp.StatusCode != 200 || resp.Header.Get("X-Auth-User") != "5" || !hexID.MatchString(resp.Header.Get("X-Auth-Decision-Id")) {
		t.Fatalf("nginx check: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := nginxCheck(t, e, "GET", "/private", nil); resp.StatusCode != 200 {
		t.Fatalf("anonymous /private before the reload: %d", resp.StatusCode)
	}
	daemontest.WriteFile(t, e.ConfigPath, opsConfig("      - {path: /private, require: authenticated}\n"))
	if err := e.D.Reload(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	if resp := nginxCheck(t, e, "GET", "/private", nil); resp.StatusCode != 401 || resp.Header.Get("X-Auth-Reason") != "authentication_required" {
		t.Fatalf("the HTTP front still decides with the old config: %d %v", resp.StatusCode, resp.Header)
	}
	// The gRPC answer carries the same kind of decision id in its dynamic metadata.
	md := e.Check(t, "GET", "docs.example.com", "/", nil).GetDynamicMetadata().GetFields()
	if !hexID.MatchString(md["decision_id"].GetStringValue()) {
		t.Errorf("dynamic metadata decision_id = %v", md["decision_id"])
	}
}

func TestFrontOffByDefault(t *testing.T) {
	e := start(t)
	if a := e.D.AuthzHTTPAddr(); a != "" {
		t.Fatalf("the HTTP front listens on %s without authz_http_addr", a)
	}
}

func TestPprofFlag(t *testing.T) {
	off := startWith(t, configYAML, daemon.Options{ConfigPoll: -1})
	if code, _ := get(t, off.HTTP+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("pprof without the flag: %d", code)
	}
	on := startWith(t, configYAML, daemon.Options{ConfigPoll: -1, Pprof: true})
	if code, body := get(t, on.HTTP+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof with the flag: %d", code)
	}
	if code, body := get(t, on.HTTP+"/debug/pprof/cmdline"); code != 200 || body == "" {
		t.Errorf("pprof cmdline: %d", code)
	}
}

// scrape reads /metrics and parses it as Prometheus does.
func scrape(t *testing.T, e *daemontest.Env) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(e.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return mfs
}

func labelNames(m *dto.Metric) string {
	var names []string
	for _, l := range m.GetLabel() {
		names = append(names, l.GetName())
	}
	return strings.Join(names, ",")
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func TestMetricsExposition(t *testing.T) {
	e := startWith(t, opsConfig(""), daemon.Options{ConfigPoll: -1, Version: "v1.2.3"})
	e.Check(t, "GET", "docs.example.com", "/", nil)
	e.Check(t, "GET", "docs.example.com", "/", map[string]string{"x-deki-token": serverToken("guess", "1")})
	// Made-up hosts must not make new series: their site is "unknown".
	for i := range 20 {
		e.Check(t, "GET", fmt.Sprintf("h%d.example.net", i), "/", nil)
	}
	nginxCheck(t, e, "GET", "/", nil)
	daemontest.WriteFile(t, e.ConfigPath, "sites: [")
	_ = e.D.Reload(e.ConfigPath)

	mfs := scrape(t, e)
	want := []struct {
		name   string
		typ    dto.MetricType
		labels string // sorted label names of every series
	}{
		{"tokenagent_check_duration_seconds", dto.MetricType_HISTOGRAM, "decision,kind,site"},
		{"tokenagent_decisions_total", dto.MetricType_COUNTER, "decision,kind,reason,site"},
		{"tokenagent_key_cache_hits_total", dto.MetricType_COUNTER, ""},
		{"tokenagent_key_cache_misses_total", dto.MetricType_COUNTER, ""},
		{"tokenagent_key_source_reads_total", dto.MetricType_COUNTER, "outcome,source"},
		{"tokenagent_key_source_read_duration_seconds", dto.MetricType_HISTOGRAM, "source"},
		{"tokenagent_config_reloads_total", dto.MetricType_COUNTER, ""},
		{"tokenagent_config_reload_errors_total", dto.MetricType_COUNTER, ""},
		{"tokenagent_config_last_reload_successful", dto.MetricType_GAUGE, ""},
		{"tokenagent_config_last_reload_success_timestamp_seconds", dto.MetricType_GAUGE, ""},
		{"tokenagent_build_info", dto.MetricType_GAUGE, "go_version,version"},
		{"tokenagent_ready", dto.MetricType_GAUGE, ""},
		{"tokenagent_http_authz_responses_total", dto.MetricType_COUNTER, "code,endpoint"},
	}
	for _, w := range want {
		mf := mfs[w.name]
		if mf == nil {
			t.Errorf("/metrics lacks %s", w.name)
			continue
		}
		if mf.GetType() != w.typ {
			t.Errorf("%s is a %v, want %v", w.name, mf.GetType(), w.typ)
		}
		for _, m := range mf.GetMetric() {
			if got := labelNames(m); got != w.labels {
				t.Errorf("%s labels %q, want %q", w.name, got, w.labels)
			}
		}
	}
	sites := map[string]int{}
	for _, m := range mfs["tokenagent_decisions_total"].GetMetric() {
		sites[labelValue(m, "site")]++
		if labelValue(m, "site") == "docs" && labelValue(m, "reason") == "bad_signature" && m.GetCounter().GetValue() != 1 {
			t.Errorf("bad_signature counted %v", m.GetCounter().GetValue())
		}
	}
	if len(sites) != 2 || sites["unknown"] != 1 {
		t.Errorf("decision series by site %v: want docs and one unknown", sites)
	}
	if m := mfs["tokenagent_build_info"].GetMetric()[0]; labelValue(m, "version") != "v1.2.3" || m.GetGauge().GetValue() != 1 {
		t.Errorf("build info %v", m)
	}
	if v := mfs["tokenagent_config_last_reload_successful"].GetMetric()[0].GetGauge().GetValue(); v != 0 {
		t.Errorf("last reload successful = %v after a refused reload", v)
	}
	if v := mfs["tokenagent_config_reload_errors_total"].GetMetric()[0].GetCounter().GetValue(); v != 1 {
		t.Errorf("reload errors = %v", v)
	}
	if v := mfs["tokenagent_ready"].GetMetric()[0].GetGauge().GetValue(); v != 1 {
		t.Errorf("ready = %v", v)
	}
	var nginx200 float64
	for _, m := range mfs["tokenagent_http_authz_responses_total"].GetMetric() {
		if labelValue(m, "endpoint") == "nginx" && labelValue(m, "code") == "200" {
			nginx200 = m.GetCounter().GetValue()
		}
	}
	if nginx200 != 1 {
		t.Errorf("nginx 200 answers = %v", nginx200)
	}

	// Every tokenagent family follows Prometheus's naming conventions.
	name := regexp.MustCompile(`^tokenagent_[a-z][a-z0-9_]*[a-z0-9]$`)
	for n, mf := range mfs {
		if !strings.HasPrefix(n, "tokenagent_") {
			continue
		}
		if !name.MatchString(n) || strings.Contains(n, "__") {
			t.Errorf("%s: not snake_case under tokenagent_", n)
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s has no help", n)
		}
		isTotal := strings.HasSuffix(n, "_total")
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			if !isTotal {
				t.Errorf("counter %s does not end in _total", n)
			}
		case dto.MetricType_HISTOGRAM:
			if !strings.HasSuffix(n, "_seconds") && !strings.HasSuffix(n, "_bytes") {
				t.Errorf("histogram %s is not in a base unit (_seconds, _bytes)", n)
			}
		default:
			if isTotal {
				t.Errorf("%s %v ends in _total", mf.GetType(), n)
			}
		}
	}
}

func TestReloadOnFileChange(t *testing.T) {
	logs := &daemontest.Buffer{}
	e := startWith(t, configYAML, daemon.Options{ConfigPoll: 20 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	allowed := func() bool { return e.Check(t, "GET", "docs.example.com", "/private", nil).GetOkResponse() != nil }
	if !allowed() {
		t.Fatal("/private closed before any change")
	}

	// A good change is picked up without a signal. Files are replaced by a rename, as editors
	// and Kubernetes do, so each write is one change (a write in place can be seen half done,
	// which is a refused reload and then a good one).
	writeAtomic(t, e.ConfigPath, configYAML+"      - {path: /private, require: authenticated}\n")
	daemontest.Eventually(t, "the changed config takes effect", func() bool { return !allowed() })

	// A bad file keeps the config serving, and is reported: log, metric, /readyz.
	writeAtomic(t, e.ConfigPath, configYAML+"      - {path: /private, require: nobody}\n")
	daemontest.Eventually(t, "the refused reload is in /readyz", func() bool {
		_, body := get(t, e.HTTP+"/readyz")
		return strings.Contains(body, "reload refused") && strings.Contains(body, "require")
	})
	if allowed() {
		t.Fatal("a bad file changed the decisions")
	}
	mfs := scrape(t, e)
	if v := mfs["tokenagent_config_reload_errors_total"].GetMetric()[0].GetCounter().GetValue(); v < 1 {
		t.Errorf("reload errors = %v", v)
	}
	if v := mfs["tokenagent_config_last_reload_successful"].GetMetric()[0].GetGauge().GetValue(); v != 0 {
		t.Errorf("last reload successful = %v", v)
	}
	if !strings.Contains(logs.String(), "config reload refused") {
		t.Errorf("the refused reload is not logged:\n%s", logs.String())
	}
	// The bad file is not read again and again: only a change triggers a reload.
	errsBefore := mfs["tokenagent_config_reload_errors_total"].GetMetric()[0].GetCounter().GetValue()

	// Fixing the file recovers: the warning goes, the gauge is 1, the new rule serves.
	writeAtomic(t, e.ConfigPath, configYAML+"      - {path: /private, require: authenticated}\n      - {path: /other, require: user}\n")
	daemontest.Eventually(t, "the fixed config takes effect", func() bool {
		return e.Check(t, "GET", "docs.example.com", "/other", nil).GetOkResponse() == nil
	})
	_, body := get(t, e.HTTP+"/readyz")
	if strings.Contains(body, "reload refused") {
		t.Errorf("/readyz still warns after a good reload: %s", body)
	}
	mfs = scrape(t, e)
	if v := mfs["tokenagent_config_last_reload_successful"].GetMetric()[0].GetGauge().GetValue(); v != 1 {
		t.Errorf("last reload successful = %v after the fix", v)
	}
	if v := mfs["tokenagent_config_reload_errors_total"].GetMetric()[0].GetCounter().GetValue(); v != errsBefore {
		t.Errorf("reload errors went from %v to %v: the bad file was read again without a change", errsBefore, v)
	}
}

// TestReloadUnderLoad: checks keep being answered over real gRPC while the config is
// reloaded several times (by Reload and by file change), and the decisions follow each
// reload.
func TestReloadUnderLoad(t *testing.T) {
	e := startWith(t, configYAML, daemon.Options{ConfigPoll: 20 * time.Millisecond})
	open := configYAML
	closed := configYAML + "      - {path: /private, require: authenticated}\n"
	tok := serverToken("s3cret", "7")

	var (
		stop            atomic.Bool
		checks, failed  atomic.Int64
		allows, denials atomic.Int64
		wg              sync.WaitGroup
		firstErr        atomic.Value
	)
	const workers, maxChecks = 4, 200000 // bounded: the loop ends after the reloads, or here
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() && checks.Load() < maxChecks {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := e.Client.Check(ctx, daemontest.CheckRequest("GET", "docs.example.com", "/private", nil))
				cancel()
				checks.Add(1)
				switch {
				case err != nil:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				case resp.GetOkResponse() != nil:
					allows.Add(1)
				case resp.GetDeniedResponse().GetStatus().GetCode() == 401:
					denials.Add(1)
				default:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("unexpected answer %v", resp))
				}
				// A credentialed check too: never affected by the rule.
				resp, err = e.Client.Check(context.Background(), daemontest.CheckRequest("GET", "docs.example.com", "/private",
					map[string]string{"x-deki-token": tok}))
				checks.Add(1)
				if err != nil || resp.GetOkResponse() == nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("credentialed check: %v %v", resp, err))
				}
			}
		}()
	}
	isOpen := func() bool {
		return e.Check(t, "GET", "docs.example.com", "/private", nil).GetOkResponse() != nil
	}
	for i := range 6 {
		next, wantOpen := closed, false
		if i%2 == 1 {
			next, wantOpen = open, true
		}
		// Let the load run across every reload: some checks before each one.
		before := checks.Load()
		daemontest.Eventually(t, "checks keep running", func() bool { return checks.Load() >= before+100 })
		daemontest.WriteFile(t, e.ConfigPath, next)
		if i%3 == 0 { // some reloads by hand (as SIGHUP does), the others by the file watcher
			if err := e.D.Reload(e.ConfigPath); err != nil {
				t.Fatal(err)
			}
		}
		daemontest.Eventually(t, fmt.Sprintf("reload %d switches the decision to open=%v", i, wantOpen),
			func() bool { return isOpen() == wantOpen })
	}
	stop.Store(true)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d checks failed during reloads; first: %v", n, checks.Load(), firstErr.Load())
	}
	if allows.Load() == 0 || denials.Load() == 0 {
		t.Errorf("the load saw %d allows and %d denials: the decisions did not switch under load", allows.Load(), denials.Load())
	}
	t.Logf("%d checks over %d reloads", checks.Load(), 6)
}

// writeAtomic replaces the file at p by a rename.
func writeAtomic(t *testing.T, p, s string) {
	t.Helper()
	daemontest.WriteFile(t, p+".new", s)
	if err := os.Rename(p+".new", p); err != nil {
		t.Fatal(err)
	}
}

// TestDecisionLogOverTheWire: the daemon's decision log names the same id as the answer.
func TestDecisionLogOverTheWire(t *testing.T) {
	logs := &daemontest.Buffer{}
	e := startWith(t, opsConfig(""), daemon.Options{ConfigPoll: -1, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	tok := serverToken("s3cret", "=jane")
	resp := e.Check(t, "GET", "docs.example.com", "/x?authtoken=zzz", map[string]string{"x-deki-token": tok})
	id := resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue()
	if !hexID.MatchString(id) {
		t.Fatalf("decision_id %q", id)
	}
	var found bool
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("a log line is not JSON: %q", line)
		}
		if rec["decision_id"] == id {
			found = true
			if rec["msg"] != agent.LogDenied || rec["reason"] != "multiple_credentials" || rec["path"] != "/x" {
				t.Errorf("log line %v", rec)
			}
		}
		if strings.Contains(line, tok) || strings.Contains(line, "zzz") {
			t.Errorf("a log line holds a credential: %s", line)
		}
	}
	if !found {
		t.Fatalf("no log line has decision id %s:\n%s", id, logs.String())
	}
}
