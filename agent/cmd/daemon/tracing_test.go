package daemon_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/token"
)

// tracedDaemon runs a daemon that sends traces to endpoint, with one OAuth issuer whose key set
// a real HTTP server on 127.0.0.1 serves; it returns the daemon and a minting function.
func tracedDaemon(t *testing.T, endpoint string, ratio float64) (*daemontest.Env, func(sub string) string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "a", Algorithm: "ES256", Use: "sig"}}})
	jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(set)
	}))
	t.Cleanup(jwksSrv.Close)
	cfg := fmt.Sprintf(`
keys: {source: file, file: keys.yaml}
tracing: {otlp_endpoint: %q, insecure: true, sample_ratio: %v}
sites:
  - id: docs
    hosts: [docs.example.com]
    routes:
      - {path: "/private/*", require: authenticated}
`, endpoint, ratio)
	keys := keysYAML() + `    issuers:
      cxone: {issuer: "https://cxone.example.com", audience: "docs", jwks_uri: "` + jwksSrv.URL + `/jwks"}
`
	e := daemontest.Start(t, cfg, daemontest.Options{Files: map[string]string{"keys.yaml": keys},
		Daemon: daemon.Options{Logger: slog.New(slog.DiscardHandler), Version: "v-test"}})
	mint := func(sub string) string {
		tok, err := token.MintJWT(jose.JSONWebKey{Key: key, KeyID: "a", Algorithm: "ES256"}, map[string]any{
			"iss": "https://cxone.example.com", "aud": "docs", "sub": sub, "client_id": "app",
			"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(), "scope": "read write"})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	return e, mint
}

func traceparent(traceID, spanID string, sampled bool) string {
	flags := "00"
	if sampled {
		flags = "01"
	}
	return "00-" + traceID + "-" + spanID + "-" + flags
}

// The check's span is the child of the request's traceparent and holds the decision; key-source
// reads and JWKS fetches made for the check are its children; the verified-token cache hit is
// recorded; checks without a sampled parent are sampled at sample_ratio (0 here); nothing
// secret is in any span (SPEC §8). The spans are read from an OTLP receiver the test runs.
func TestTracingSpans(t *testing.T) {
	rx := daemontest.StartOTLP(t)
	e, mint := tracedDaemon(t, rx.Addr, 0)
	const (
		traceA = "4bf92f3577b34da6a3ce929d0e0e4736"
		traceB = "5bf92f3577b34da6a3ce929d0e0e4737"
		traceC = "6bf92f3577b34da6a3ce929d0e0e4738"
		traceD = "7bf92f3577b34da6a3ce929d0e0e4739"
		parent = "00f067aa0ba902b7"
	)
	tok := mint("user-1")
	bearer := map[string]string{"authorization": "Bearer " + tok}
	with := func(h map[string]string, tp string) map[string]string {
		out := map[string]string{"traceparent": tp}
		for k, v := range h {
			out[k] = v
		}
		return out
	}
	// A: the first sight of the token, sampled by the caller: key record read, key set fetched.
	first := e.Check(t, "GET", "docs.example.com", "/private/a", with(bearer, traceparent(traceA, parent, true)))
	if daemontest.Reason(first) != "allowed" {
		t.Fatalf("first check: %s", daemontest.Reason(first))
	}
	user := daemontest.UpstreamHeader(first, "x-auth-user")
	// B: the same token again: a cache hit.
	e.Check(t, "GET", "docs.example.com", "/private/b", with(bearer, traceparent(traceB, parent, true)))
	// C: not sampled by the caller, D: no traceparent (ratio 0): no span.
	e.Check(t, "GET", "docs.example.com", "/private/c", with(bearer, traceparent(traceC, parent, false)))
	e.Check(t, "GET", "docs.example.com", "/private/d", bearer)
	// E: a forged Server API Token, sampled: a denial.
	forged := serverToken("guessed", "42")
	e.Check(t, "GET", "docs.example.com", "/private/e", map[string]string{"x-deki-token": forged,
		"traceparent": traceparent(traceD, parent, true)})

	var checks map[string]daemontest.Span
	daemontest.Eventually(t, "three check spans at the receiver", func() bool {
		checks = map[string]daemontest.Span{}
		for _, s := range rx.Spans() {
			if s.Name == "tokenagent.check" {
				checks[s.TraceID] = s
			}
		}
		return len(checks) >= 3
	})
	spans := rx.Spans()
	if len(checks) != 3 {
		t.Fatalf("check spans in traces %v, want A, B and D only", keysOf(checks))
	}
	a, b, d := checks[traceA], checks[traceB], checks[traceD]
	for name, s := range map[string]daemontest.Span{"A": a, "B": b, "D": d} {
		if s.ParentSpanID != parent || s.Kind != tracepb.Span_SPAN_KIND_SERVER || s.Service != "tokenagent" {
			t.Errorf("span %s: parent %s kind %v service %q; want parent %s, server, tokenagent", name, s.ParentSpanID, s.Kind, s.Service, parent)
		}
		if s.Attributes["tokenagent.site"] != "docs" || s.Attributes["tokenagent.decision_id"] == "" {
			t.Errorf("span %s attributes %v", name, s.Attributes)
		}
	}
	want := map[string]any{"tokenagent.kind": "oauth", "tokenagent.decision": "allow", "tokenagent.cache_hit": false, "enduser.id": user}
	for k, v := range want {
		if a.Attributes[k] != v {
			t.Errorf("span A %s = %v, want %v", k, a.Attributes[k], v)
		}
	}
	if b.Attributes["tokenagent.cache_hit"] != true {
		t.Errorf("span B cache_hit = %v, want true", b.Attributes["tokenagent.cache_hit"])
	}
	if d.Attributes["tokenagent.decision"] != "deny" || d.Attributes["tokenagent.reason"] != "bad_signature" {
		t.Errorf("span D %v", d.Attributes)
	}
	if _, has := d.Attributes["enduser.id"]; has {
		t.Error("a denial's span names a user")
	}

	children := map[string][]daemontest.Span{}
	for _, s := range spans {
		if s.Name != "tokenagent.check" {
			children[s.TraceID] = append(children[s.TraceID], s)
		}
	}
	var read, fetch bool
	for _, c := range children[traceA] {
		if c.ParentSpanID != a.SpanID {
			t.Errorf("%s in trace A has parent %s, want the check %s", c.Name, c.ParentSpanID, a.SpanID)
		}
		read = read || c.Name == "tokenagent.keys.read" && c.Attributes["tokenagent.key_source"] == "file"
		fetch = fetch || c.Name == "tokenagent.jwks.fetch" && c.Attributes["tokenagent.result"] == "ok" &&
			c.Attributes["server.address"] != ""
	}
	if !read || !fetch {
		t.Errorf("trace A's children %+v: want a key-source read and a JWKS fetch", children[traceA])
	}
	if len(children[traceB]) != 0 {
		t.Errorf("a cache hit made child spans: %+v", children[traceB])
	}

	for _, s := range spans {
		for k, v := range s.Attributes {
			str := fmt.Sprint(v)
			for _, secret := range []string{tok, forged, "s3cret", "/private/"} {
				if strings.Contains(str, secret) && secret != "" {
					t.Errorf("span %s attribute %s holds %q", s.Name, k, secret)
				}
			}
		}
	}
	// The receiver has the spans before the export call returns to the exporter, which counts
	// them then: wait for the count.
	daemontest.Eventually(t, "tokenagent_trace_spans_total{exported} ≥ 3", func() bool {
		return e.Counter(t, "tokenagent_trace_spans_total", map[string]string{"result": "exported"}) >= 3
	})
}

func keysOf(m map[string]daemontest.Span) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A collector that is down costs the checks nothing: every check is answered, and the spans
// that cannot be sent are dropped and counted.
func TestTracingCollectorDown(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close() // nothing listens there: connections are refused
	e, mint := tracedDaemon(t, dead, 1)
	bearer := map[string]string{"authorization": "Bearer " + mint("user-2")}
	for i := range 3000 {
		if r := e.Check(t, "GET", "docs.example.com", "/private/x", bearer); daemontest.Reason(r) != "allowed" {
			t.Fatalf("check %d with the collector down: %s", i, daemontest.Reason(r))
		}
	}
	daemontest.Eventually(t, "spans dropped and failed exports counted", func() bool {
		return e.Counter(t, "tokenagent_trace_spans_total", map[string]string{"result": "dropped"}) > 0 &&
			e.Counter(t, "tokenagent_trace_spans_total", map[string]string{"result": "failed"}) > 0
	})
	if n := e.Counter(t, "tokenagent_trace_spans_total", map[string]string{"result": "exported"}); n != 0 {
		t.Errorf("%v spans exported to a dead collector", n)
	}
}
