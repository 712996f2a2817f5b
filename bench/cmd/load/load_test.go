package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/extauthz"
)

// The setup (an RSA key takes a while to generate) is made once for the whole test binary.
var (
	setupDir  string
	setupOnce sync.Once
	setupErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if setupDir != "" {
		os.RemoveAll(setupDir)
	}
	os.Exit(code)
}

func testSetup(t *testing.T) (string, *Keys) {
	t.Helper()
	setupOnce.Do(func() {
		setupDir, setupErr = os.MkdirTemp("", "load-test-")
		if setupErr != nil {
			return
		}
		_, setupErr = Setup(SetupOptions{Dir: setupDir, Site: "bench", Host: "bench.example.com",
			GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", ServerKeys: 2, BrowserKeys: 2})
	})
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	keys, err := LoadKeys(setupDir)
	if err != nil {
		t.Fatal(err)
	}
	return setupDir, keys
}

// startAgent serves the setup's config with a real tokenagent daemon on 127.0.0.1
// (daemontest) and returns its gRPC address.
func startAgent(t *testing.T, dir string) string {
	t.Helper()
	e := daemontest.StartFile(t, filepath.Join(dir, configFile), daemontest.Options{
		Daemon: daemon.Options{Logger: slog.New(slog.DiscardHandler)}})
	return e.D.GRPCAddr()
}

func dialT(t *testing.T, name, addr string) *Target {
	t.Helper()
	tg, err := Dial(name, addr, 2, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tg.Close)
	return tg
}

func allKinds() map[string]float64 {
	w := map[string]float64{}
	for _, k := range ValidKinds {
		w[k] = 1
	}
	return w
}

// TestSetupEveryKind checks that the setup's config loads, and that the agent built from it
// allows every valid kind the generator makes and denies every invalid variant with its
// reason, over real gRPC.
func TestSetupEveryKind(t *testing.T) {
	dir, keys := testSetup(t)
	addr := startAgent(t, dir)
	mix, err := BuildMix(keys, MixOptions{Weights: allKinds(), Invalid: 0.5, Tokens: 4, InvalidTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	tg := dialT(t, "agent", addr)
	send := makeSender(tg, keys.Host, 1, 5*time.Second)
	tests := []struct {
		class string
		want  Expect
	}{
		{"authtoken", Expect{Allow: true, Kind: "authtoken"}},
		{"server", Expect{Allow: true, Kind: "server"}},
		{"browser", Expect{Allow: true, Kind: "browser"}},
		{"rs256", Expect{Allow: true, Kind: "oauth"}},
		{"es256", Expect{Allow: true, Kind: "oauth"}},
		{"hs256", Expect{Allow: true, Kind: "oauth"}},
		{"anonymous", Expect{Allow: true, Kind: "anonymous"}},
		{"invalid/authtoken-bad-signature", Expect{Reason: "bad_signature"}},
		{"invalid/authtoken-expired", Expect{Reason: "token_expired"}},
		{"invalid/server-bad-signature", Expect{Reason: "bad_signature"}},
		{"invalid/server-expired", Expect{Reason: "token_expired"}},
		{"invalid/server-unknown-key", Expect{Reason: "unknown_key"}},
		{"invalid/browser-bad-origin", Expect{Reason: "origin_not_allowed"}},
		{"invalid/jwt-bad-signature", Expect{Reason: "bad_signature"}},
		{"invalid/jwt-expired", Expect{Reason: "token_expired"}},
		{"invalid/jwt-unknown-kid", Expect{Reason: "unknown_key"}},
		{"invalid/malformed", Expect{Reason: "malformed_token"}},
		{"invalid/multiple-credentials", Expect{Reason: "multiple_credentials"}},
		{"invalid/anonymous-needs-auth", Expect{Reason: "authentication_required"}},
		{"invalid/unknown-site", Expect{Reason: "unknown_site"}},
	}
	if len(tests) != len(mix.Classes) {
		t.Errorf("the mix has %d classes, the test knows %d", len(mix.Classes), len(tests))
	}
	for _, tc := range tests {
		t.Run(tc.class, func(t *testing.T) {
			c := mix.Find(tc.class)
			if c == nil {
				t.Fatal("class missing from the mix")
			}
			for i := range c.Len() {
				it := c.take(false)
				if it.Expect != tc.want {
					t.Errorf("item %d expects %s, want %s", i, it.Expect, tc.want)
				}
				var resp Response
				if err := send(context.Background(), 0, it, &resp); err != nil {
					t.Fatalf("item %d: %v", i, err)
				}
				got := Expect{Allow: resp.Allowed(), Kind: resp.Kind}
				if !got.Allow {
					got = Expect{Reason: resp.Reason}
				}
				if got != tc.want {
					t.Errorf("item %d (%s): got %s (HTTP %d), want %s", i, it.Path, got, resp.HTTPStatus, tc.want)
				}
			}
		})
	}
}

// TestRunAgainstAgent runs short, bounded loads of the default mix against a real daemon and
// writes the report files.
func TestRunAgainstAgent(t *testing.T) {
	dir, keys := testSetup(t)
	addr := startAgent(t, dir)
	weights, err := ParseMix(DefaultMix)
	if err != nil {
		t.Fatal(err)
	}
	mix, err := BuildMix(keys, MixOptions{Weights: weights, Invalid: 0.1, Tokens: 20, InvalidTokens: 2})
	if err != nil {
		t.Fatal(err)
	}
	tg := dialT(t, "agent", addr)
	tests := []struct {
		name string
		o    RunOptions
	}{
		{"closed", RunOptions{Concurrency: 4, Requests: 300}},
		{"open", RunOptions{Open: true, Rate: 400, Concurrency: 8, Duration: time.Second, Warmup: 200 * time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var progress bytes.Buffer
			tc.o.Progress = &progress
			measured := false
			tc.o.OnMeasureStart = func() { measured = true }
			res, err := Run(context.Background(), mix, makeSender(tg, keys.Host, tc.o.Concurrency, 5*time.Second), tc.o)
			if err != nil {
				t.Fatal(err)
			}
			s := res.Stats
			if !measured {
				t.Error("OnMeasureStart was not called")
			}
			if s.Count() == 0 || s.ErrorCount() != 0 || s.Unexpected != 0 || s.Dropped != 0 {
				t.Fatalf("answered %d, errors %v, unexpected %d %v, dropped %d", s.Count(), s.Errors, s.Unexpected, s.Examples, s.Dropped)
			}
			if tc.o.Requests > 0 && s.Count() != tc.o.Requests {
				t.Errorf("answered %d, want %d", s.Count(), tc.o.Requests)
			}
			if sum(s.Allowed) == 0 || sum(s.Denied) == 0 {
				t.Errorf("allowed %v, denied %v: want both", s.Allowed, s.Denied)
			}

			rep := &Report{Started: time.Now(), Machine: newMachine(), Settings: Settings{Mode: mode(tc.o.Rate)}, Mix: mix.Summary()}
			self, _ := ReadProc(0)
			rep.Targets = []TargetResult{targetResult(tg, s, res.Measured().Seconds(), nil, procResult(0, ProcSample{}, self))}
			out := t.TempDir()
			if err := rep.WriteFiles(out); err != nil {
				t.Fatal(err)
			}
			checkReportFiles(t, out, 1)
		})
	}
}

// checkReportFiles checks that result.json decodes with the right number of targets, that the
// Markdown has the headline table and links the plot, and that the SVG is well-formed XML.
func checkReportFiles(t *testing.T, dir string, targets int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "result.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got Report
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("result.json: %v", err)
	}
	if len(got.Targets) != targets || got.Targets[0].Requests == 0 || len(got.Targets[0].Curve) == 0 {
		t.Errorf("result.json: %d targets, first %+v", len(got.Targets), got.Targets)
	}
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| target | checks/s | p50 |", "## Decisions", "![latency by percentile](latency.svg)"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	f, err := os.Open(filepath.Join(dir, "latency.svg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := xml.NewDecoder(f)
	lines := 0
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("latency.svg is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			if se.Name.Local == "polyline" {
				lines++
			}
		}
	}
	if root != "svg" || lines != targets {
		t.Errorf("latency.svg: root <%s>, %d polylines; want <svg> and %d", root, lines, targets)
	}
}

// TestCommands runs the command line: run and compare against two real daemons that serve
// the same setup.
func TestCommands(t *testing.T) {
	dir, _ := testSetup(t)
	a, b := startAgent(t, dir), startAgent(t, dir)
	common := []string{"--keys", dir, "--tokens", "10", "--invalid-tokens", "2", "--concurrency", "2", "--quiet", "--warmup", "0"}
	tests := []struct {
		name    string
		args    []string
		targets int
	}{
		{"run", append([]string{"run", "--addr", a, "--requests", "100", "--pid", "0"}, common...), 1},
		{"run open loop, no target", append([]string{"run", "--addr", "noop", "--rate", "2000", "--duration", "300ms"}, common...), 1},
		{"compare", append([]string{"compare", "--a", a, "--b", b, "--slices", "2", "--slice", "150ms"}, common...), 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			var stdout, stderr bytes.Buffer
			if code := run(append(tc.args, "--out", out), &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			if strings.Contains(stderr.String(), "unexpected") {
				t.Errorf("stderr: %s", stderr.String())
			}
			if !strings.Contains(stdout.String(), "| target | checks/s |") {
				t.Errorf("stdout lacks the table:\n%s", stdout.String())
			}
			checkReportFiles(t, out, tc.targets)
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"no command", nil, 2},
		{"unknown command", []string{"bogus"}, 2},
		{"setup without dir", []string{"setup"}, 2},
		{"run without keys", []string{"run"}, 2},
		{"run bad flag", []string{"run", "--nope"}, 2},
		{"compare without targets", []string{"compare", "--keys", "x"}, 2},
		{"run missing keys dir", []string{"run", "--keys", "/nonexistent/dir"}, 1},
		{"ghz without out", []string{"ghz", "--keys", "x"}, 2},
		{"ghz missing keys dir", []string{"ghz", "--keys", "/nonexistent/dir", "--out", "/tmp/x"}, 1},
		{"help", []string{"run", "--help"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if code := run(tc.args, io.Discard, io.Discard); code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
		})
	}
}

// TestPercentiles checks the histogram's percentiles on known data: 1..10000 µs, once each,
// recorded in two shards and merged.
func TestPercentiles(t *testing.T) {
	a, b := NewStats(), NewStats()
	ok := &Response{Kind: "anonymous"}
	exp := Expect{Allow: true, Kind: "anonymous"}
	for i := 1; i <= 10000; i++ {
		s := a
		if i%2 == 0 {
			s = b
		}
		s.Record("anonymous", exp, time.Duration(i)*time.Microsecond, ok, "")
	}
	a.Merge(b)
	p := PercentilesOf(a.Latency)
	tests := []struct {
		name      string
		got, want float64
	}{
		{"p50", p.P50, 5000}, {"p90", p.P90, 9000}, {"p99", p.P99, 9900}, {"p99.9", p.P999, 9990},
		{"max", p.Max, 10000}, {"mean", p.Mean, 5000.5},
	}
	for _, tc := range tests {
		if math.Abs(tc.got-tc.want) > tc.want*0.001 { // 3 significant digits
			t.Errorf("%s = %v µs, want %v", tc.name, tc.got, tc.want)
		}
	}
	if a.Count() != 10000 || a.Allowed["anonymous"] != 10000 || a.Unexpected != 0 {
		t.Errorf("count %d, allowed %v, unexpected %d", a.Count(), a.Allowed, a.Unexpected)
	}
	c := Curve(a.Latency)
	if c[0].Percentile != 0 || c[len(c)-1].Percentile != 100 || c[len(c)-1].Micros != p.Max {
		t.Errorf("curve ends: %v … %v", c[0], c[len(c)-1])
	}
	for i := 1; i < len(c); i++ {
		if c[i].Micros < c[i-1].Micros || c[i].Percentile <= c[i-1].Percentile {
			t.Errorf("curve not increasing at %d: %v then %v", i, c[i-1], c[i])
		}
	}
}

func TestRecordDecisions(t *testing.T) {
	s := NewStats()
	tests := []struct {
		name string
		exp  Expect
		resp Response
		err  string
	}{
		{"allowed as expected", Expect{Allow: true, Kind: "server"}, Response{Kind: "server"}, ""},
		{"denied as expected", Expect{Reason: "bad_signature"}, Response{Code: 16, HTTPStatus: 401, Reason: "bad_signature"}, ""},
		{"allowed, wrong kind", Expect{Allow: true, Kind: "server"}, Response{Kind: "browser"}, ""},
		{"denied without a reason", Expect{Allow: true, Kind: "server"}, Response{Code: 7, HTTPStatus: 403}, ""},
		{"gRPC error", Expect{Allow: true, Kind: "server"}, Response{}, "Unavailable"},
	}
	for _, tc := range tests {
		s.Record(tc.name, tc.exp, time.Millisecond, &tc.resp, tc.err)
	}
	if s.Allowed["server"] != 1 || s.Allowed["browser"] != 1 || s.Denied["bad_signature"] != 1 || s.Denied["status 403"] != 1 {
		t.Errorf("allowed %v, denied %v", s.Allowed, s.Denied)
	}
	if s.Errors["Unavailable"] != 1 || s.Count() != 4 || s.Unexpected != 2 || len(s.Examples) != 2 {
		t.Errorf("errors %v, count %d, unexpected %d %v", s.Errors, s.Count(), s.Unexpected, s.Examples)
	}
}

// virtualClock is a clock that moves only when told to: the fake target advances it by its
// service time, and SleepUntil waits for it to get there.
type virtualClock struct {
	mu   sync.Mutex
	cond *sync.Cond
	now  time.Time
}

func newVirtualClock() *virtualClock {
	c := &virtualClock{now: time.Unix(1_800_000_000, 0)}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *virtualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *virtualClock) SleepUntil(t time.Time) {
	c.mu.Lock()
	for c.now.Before(t) {
		c.cond.Wait()
	}
	c.mu.Unlock()
}

func (c *virtualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.cond.Broadcast()
	c.mu.Unlock()
}

// TestSchedulerIntendedTime drives a fake target that takes 10 ms per request, one at a time,
// with a virtual clock. Closed loop: every latency is the 10 ms service time. Open loop at
// 1000/s: request i is due at i ms but can only start when request i-1 is done, at 10·i ms, and
// ends at 10·(i+1) ms; measured from its intended start its latency is 9·i + 10 ms. A
// measurement from the actual send would report 10 ms throughout (coordinated omission).
func TestSchedulerIntendedTime(t *testing.T) {
	mix := &Mix{Classes: []*Class{{Name: "anonymous", Weight: 1}}, cum: []float64{1}}
	items := []Item{{Path: "/", Expect: Expect{Allow: true, Kind: "anonymous"}}}
	mix.Classes[0].items.Store(&items)
	const service = 10 * time.Millisecond
	tests := []struct {
		name          string
		o             RunOptions
		count         int64
		p50, p99, max float64 // ms
	}{
		{"closed", RunOptions{Concurrency: 1, Duration: 100 * time.Millisecond}, 10, 10, 10, 10},
		{"open", RunOptions{Open: true, Rate: 1000, Concurrency: 1, Duration: 100 * time.Millisecond}, 100,
			9*49 + 10, 9*98 + 10, 9*99 + 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newVirtualClock()
			tc.o.Clock = clk
			send := func(_ context.Context, _ int, it *Item, resp *Response) error {
				clk.Advance(service)
				*resp = Response{Kind: "anonymous"}
				return nil
			}
			res, err := Run(context.Background(), mix, send, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			s := res.Stats
			if s.Count() != tc.count || s.Dropped != 0 || s.Unexpected != 0 {
				t.Fatalf("count %d (want %d), dropped %d, unexpected %d", s.Count(), tc.count, s.Dropped, s.Unexpected)
			}
			p := PercentilesOf(s.Latency)
			for _, c := range []struct {
				name      string
				got, want float64
			}{{"p50", p.P50 / 1000, tc.p50}, {"p99", p.P99 / 1000, tc.p99}, {"max", p.Max / 1000, tc.max}} {
				if math.Abs(c.got-c.want) > c.want*0.001 {
					t.Errorf("%s = %.3f ms, want %.3f ms", c.name, c.got, c.want)
				}
			}
			if want := time.Duration(tc.count) * service; res.Measured() != want {
				t.Errorf("measured %s, want %s", res.Measured(), want)
			}
		})
	}
}

// TestBuilderEncode decodes the builder's hand-written wire format with the real protobuf
// decoder and the agent's transport.
func TestBuilderEncode(t *testing.T) {
	b := newBuilder("docs.example.com", 3)
	tests := []struct {
		name string
		it   Item
		host string
	}{
		{"anonymous", Item{Path: "/@api/deki/pages/1/info"}, "docs.example.com"},
		{"cookie", Item{Path: "/x?y=1", Headers: []Header{{"cookie", "a=b; authtoken=1_2_3"}}}, "docs.example.com"},
		{"two headers, other host", Item{Host: "other.example.net", Path: "/", Headers: []Header{{"x-deki-token", "pub1"}, {"origin", "https://a.example.org"}}}, "other.example.net"},
		{"long value", Item{Path: "/", Headers: []Header{{"authorization", "Bearer " + strings.Repeat("x", 1000)}}}, "docs.example.com"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var req authv3.CheckRequest
			if err := proto.Unmarshal(b.encode(&tc.it), &req); err != nil {
				t.Fatal(err)
			}
			h := req.GetAttributes().GetRequest().GetHttp()
			if h.GetHost() != tc.host || h.GetPath() != tc.it.Path || h.GetMethod() != "GET" || h.GetScheme() != "https" || h.GetProtocol() != "HTTP/2" {
				t.Errorf("http attributes: %v", h)
			}
			if h.GetId() == "" || h.GetHeaders()["x-request-id"] != h.GetId() || !strings.HasSuffix(h.GetId(), "00000000000"+string("123456789"[i])) {
				t.Errorf("request id %q, header %q", h.GetId(), h.GetHeaders()["x-request-id"])
			}
			want := map[string]string{":authority": tc.host, ":path": tc.it.Path, ":method": "GET"}
			for _, hv := range tc.it.Headers {
				want[hv.Name] = hv.Value
			}
			for k, v := range want {
				if h.GetHeaders()[k] != v {
					t.Errorf("header %s = %q, want %q", k, h.GetHeaders()[k], v)
				}
			}
			if len(h.GetHeaders()) != len(b.base)+3+len(tc.it.Headers) {
				t.Errorf("%d headers: %v", len(h.GetHeaders()), h.GetHeaders())
			}
			if req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress() != "203.0.113.4" {
				t.Errorf("source: %v", req.GetAttributes().GetSource())
			}
			ar, err := extauthz.ToRequest(&req)
			if err != nil || ar.Host != tc.host || ar.Path != tc.it.Path || ar.Method != "GET" {
				t.Errorf("ToRequest: %+v, %v", ar, err)
			}
		})
	}
}

// TestResponseParse reads CheckResponses encoded by the real protobuf encoder.
func TestResponseParse(t *testing.T) {
	hdr := func(k, v string, raw bool) *corev3.HeaderValueOption {
		if raw {
			return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)}}
		}
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
	}
	tests := []struct {
		name string
		in   *authv3.CheckResponse
		want Response
	}{
		{"allowed", &authv3.CheckResponse{Status: &rpcstatus.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{
			OkResponse: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hdr("x-auth-site", "docs", false), hdr("x-auth-kind", "server", false)},
				HeadersToRemove: []string{"x-auth-user"}}}}, Response{Kind: "server"}},
		{"allowed, raw value, upper case", &authv3.CheckResponse{HttpResponse: &authv3.CheckResponse_OkResponse{
			OkResponse: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hdr("X-Auth-Kind", "oauth", true)}}}}, Response{Kind: "oauth"}},
		{"denied", &authv3.CheckResponse{Status: &rpcstatus.Status{Code: 16, Message: "x"}, HttpResponse: &authv3.CheckResponse_DeniedResponse{
			DeniedResponse: &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: 401}, Body: `{"error":"bad_signature"}`,
				Headers: []*corev3.HeaderValueOption{hdr("content-type", "application/json", false), hdr("x-auth-reason", "bad_signature", false)}}}},
			Response{Code: 16, HTTPStatus: 401, Reason: "bad_signature"}},
		{"denied, no reason", &authv3.CheckResponse{Status: &rpcstatus.Status{Code: 7}, HttpResponse: &authv3.CheckResponse_DeniedResponse{
			DeniedResponse: &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: 403}}}}, Response{Code: 7, HTTPStatus: 403}},
		{"error response", &authv3.CheckResponse{Status: &rpcstatus.Status{Code: 14}, HttpResponse: &authv3.CheckResponse_ErrorResponse{
			ErrorResponse: &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: 503},
				Headers: []*corev3.HeaderValueOption{hdr("x-auth-reason", "some_new_reason", false)}}}},
			Response{Code: 14, HTTPStatus: 503, Reason: "some_new_reason"}},
		{"empty", &authv3.CheckResponse{}, Response{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			got := Response{Kind: "stale"}
			if err := got.Parse(b); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	var r Response
	if err := r.Parse([]byte{0x0a, 0x05, 0x08}); err == nil {
		t.Error("a truncated message parsed")
	}
}

func TestParseMix(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]float64
		wantErr bool
	}{
		{"authtoken=3,server=1", map[string]float64{"authtoken": 3, "server": 1}, false},
		{" rs256 = 1 , ", map[string]float64{"rs256": 1}, false},
		{"bogus=1", nil, true},
		{"authtoken", nil, true},
		{"authtoken=-1", nil, true},
	}
	for _, tc := range tests {
		got, err := ParseMix(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseMix(%q): error %v", tc.in, err)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("ParseMix(%q) = %v, want %v", tc.in, got, tc.want)
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("ParseMix(%q)[%s] = %v, want %v", tc.in, k, got[k], v)
			}
		}
	}
}

// TestMixShares checks the shares of the mix and that --once stops after each request was
// used.
func TestMixShares(t *testing.T) {
	_, keys := testSetup(t)
	mix, err := BuildMix(keys, MixOptions{Weights: map[string]float64{"authtoken": 3, "anonymous": 1}, Invalid: 0.2, Tokens: 5, InvalidTokens: 1})
	if err != nil {
		t.Fatal(err)
	}
	share := map[string]float64{}
	for _, c := range mix.Summary() {
		share[c.Name] = c.Share
	}
	if math.Abs(share["authtoken"]-0.6) > 1e-9 || math.Abs(share["anonymous"]-0.2) > 1e-9 ||
		math.Abs(share["invalid/malformed"]-0.2/float64(len(invalidVariants))) > 1e-9 {
		t.Errorf("shares: %v", share)
	}
	if got := mix.Pick(0); got.Name != "authtoken" {
		t.Errorf("Pick(0) = %s", got.Name)
	}
	if got := mix.Pick(0.999999); !strings.HasPrefix(got.Name, "invalid/") {
		t.Errorf("Pick(0.999999) = %s", got.Name)
	}
	c := mix.Find("authtoken")
	for i := range 5 {
		if c.take(true) == nil {
			t.Fatalf("take %d: ran out early", i)
		}
	}
	if c.take(true) != nil {
		t.Error("take after the last: want nil")
	}
	if _, err := BuildMix(keys, MixOptions{Weights: map[string]float64{}, Tokens: 5}); err == nil {
		t.Error("an empty mix was accepted")
	}
}

// TestJWTCache checks that minted JWTs are reused from the keys directory.
func TestJWTCache(t *testing.T) {
	_, keys := testSetup(t)
	dir := t.TempDir()
	o := MixOptions{Weights: map[string]float64{"es256": 1}, Tokens: 3, CacheDir: dir}
	first, err := BuildMix(keys, o)
	if err != nil {
		t.Fatal(err)
	}
	o.Tokens = 5 // two more are minted and appended
	second, err := BuildMix(keys, o)
	if err != nil {
		t.Fatal(err)
	}
	a, b := *first.Classes[0].items.Load(), *second.Classes[0].items.Load()
	if len(b) != 5 {
		t.Fatalf("%d tokens", len(b))
	}
	for i := range a {
		if a[i].Headers[0] != b[i].Headers[0] {
			t.Errorf("token %d was minted again", i)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, jwtCachePrefix+"ES256.txt")); err != nil {
		t.Error(err)
	}
	if got := readJWTCache(filepath.Join(dir, jwtCachePrefix+"ES256.txt"), jwtCacheHeader{KID: "other"}, time.Now()); got != nil {
		t.Error("a cache for another key was used")
	}
}

func TestReadProc(t *testing.T) {
	s, err := ReadProc(0)
	if err != nil {
		t.Fatal(err)
	}
	if s.RSSKiB <= 0 || s.PeakRSSKiB < s.RSSKiB || s.CPUSeconds < 0 {
		t.Errorf("%+v", s)
	}
	if _, err := ReadProc(1 << 30); err == nil {
		t.Error("a process that does not exist was read")
	}
}
