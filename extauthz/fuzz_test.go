package extauthz

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/agenttest"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
)

// The fuzz targets' agent: one site with every MindTouch credential kind turned on.
const (
	fuzzSecret = "s3cret"
	fuzzAPIKey = "legacy-api-key-for-the-fuzzer-0123456789"
)

var fuzzNow = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func fuzzAgent(tb testing.TB) *agent.Agent {
	tb.Helper()
	cfg, err := config.Parse([]byte(`
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com, "*.docs.example.com"]
    legacy: {impersonation: true, apikey: true, unprefixed_server_tokens: true}
    routes:
      - {methods: [POST], path: "/@api/*", require: user}
`), tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	clock := func() time.Time { return fuzzNow }
	store := filetest.Store(tb, `
sites:
  docs:
    authtoken:
      - {key: "ZG9jcy1jdXJyZW50LWF1dGgtdG9rZW4ta2V5LTMyYnk=", created: "2026-11-01T00:00:00Z"}
    server-tokens:
      k1: {secret: "`+fuzzSecret+`"}
    browser-tokens:
      pub1: {origins: ["*.example.com", "https://app.example.org"]}
    legacy: {apikey: "`+fuzzAPIKey+`"}
`, vault.StoreOptions{Now: clock, Logger: slog.New(slog.DiscardHandler)})
	a := agenttest.New(tb, cfg, agent.RuntimeOptions{Keys: store, Now: clock, Logger: slog.New(slog.DiscardHandler)})
	return a
}

// checkWire runs one CheckRequest through the server as gRPC would, and fails when the answer
// is not a CheckResponse that gRPC can send: a decision must always reach Envoy (SPEC §4), and
// a proto3 string holding invalid UTF-8 cannot be marshalled, which gRPC turns into an
// Internal error instead of the decision.
func checkWire(t *testing.T, s *Server, in *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	resp, err := s.Check(context.Background(), in)
	if err != nil {
		t.Fatalf("Check returned an error instead of a decision: %v", err)
	}
	if _, err := proto.Marshal(resp); err != nil {
		t.Fatalf("the answer cannot be sent: %v\n%v", err, resp)
	}
	ok := resp.GetOkResponse() != nil
	if ok != (codes.Code(resp.GetStatus().GetCode()) == codes.OK) {
		t.Fatalf("status %v with ok_response %v", resp.GetStatus(), ok)
	}
	for _, hs := range [][]*corev3.HeaderValueOption{resp.GetOkResponse().GetHeaders(),
		resp.GetOkResponse().GetResponseHeadersToAdd(), resp.GetDeniedResponse().GetHeaders()} {
		for _, h := range hs {
			if strings.ContainsAny(h.GetHeader().GetKey()+h.GetHeader().GetValue(), "\r\n\x00") {
				t.Fatalf("header %q: %q could inject a header", h.GetHeader().GetKey(), h.GetHeader().GetValue())
			}
		}
	}
	return resp
}

// FuzzCheckRequest sends arbitrary CheckRequests in Envoy's raw form: a header_map whose
// values are raw bytes (Envoy's encode_raw_headers, where values need not be UTF-8), any
// method, host and path, and a raw body. Every one must be answered with a CheckResponse that
// gRPC can marshal.
func FuzzCheckRequest(f *testing.F) {
	srv := token.MintServerToken("k1", vault.NewSecret([]byte(fuzzSecret)), "=j%C3%B6rg", fuzzNow)
	f.Add("GET", "docs.example.com", "/", "x-deki-token: "+srv, []byte(nil))
	f.Add("POST", "eu.docs.example.com", "/@api/x?apikey="+fuzzAPIKey, "origin: https://app.example.com\nx-deki-token: pub1\nx-auth-user: 1", []byte("b"))
	f.Add("OPTIONS", "docs.example.com", "/", "origin: https://app.example.org\naccess-control-request-method: PUT\naccess-control-request-headers: x-auth-user, range", []byte(nil))
	f.Add("POST", "docs.example.com", "/@app/auth/token/exchange", "content-type: application/json\ncookie: authtoken=1_2_3", []byte(`{"id_token":"a.b.c"}`))
	f.Add("GET", "docs.example.com", "/\xff", "origin: https://\xff.example.com\nx-deki-token: \xfe", []byte{0xff})
	s := NewServer(fuzzAgent(f))
	f.Fuzz(func(t *testing.T, method, host, path, headers string, body []byte) {
		var hm []*corev3.HeaderValue
		for _, line := range strings.Split(headers, "\n") {
			name, value, _ := strings.Cut(line, ":")
			hm = append(hm, &corev3.HeaderValue{Key: strings.TrimSpace(name), RawValue: []byte(strings.TrimSpace(value))})
		}
		hm = append(hm, &corev3.HeaderValue{Key: ":authority", RawValue: []byte(host)},
			&corev3.HeaderValue{Key: ":path", RawValue: []byte(path)}, &corev3.HeaderValue{Key: ":method", RawValue: []byte(method)})
		checkWire(t, s, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{HeaderMap: &corev3.HeaderMap{Headers: hm}, RawBody: body,
				Size: int64(len(body))}}}})
	})
}

// FuzzSignedUser explores what a holder of a key can make the agent say: the fuzzer picks the
// user part of a Server API Token (both forms) and of an Impersonation Auth Token, and the
// target signs it with the real key, so every input passes the signature check. The agent
// must refuse the token as malformed or answer with headers that are safe to send: a
// CheckResponse gRPC can marshal, no CR/LF/NUL in any header, and x-auth-user exactly the
// token's user.
func FuzzSignedUser(f *testing.F) {
	for _, u := range []string{"42", "=jane", "=john_doe%40x", "=j%C3%B6rg", "=jörg", "=\xff\xfe", "=a\r\nx: y", "=%0d%0a"} {
		f.Add(u)
	}
	s := NewServer(fuzzAgent(f))
	secret := vault.NewSecret([]byte(fuzzSecret))
	epoch := strconv.FormatInt(fuzzNow.Unix(), 10)
	f.Fuzz(func(t *testing.T, user string) {
		body := "k1_" + epoch + "_" + user
		imp := "imp_" + epoch + "_" + impersonationDigest(fuzzAPIKey, strings.TrimPrefix(user, "="), epoch) + "_" + user
		for _, cred := range []struct{ name, value string }{
			{"x-deki-token", token.ServerTokenPrefix + body + "_" + secret.HexMAC(body)},
			{"x-deki-token", "k1_" + epoch + "_" + user + "_" + secret.HexMAC("k1", epoch, user)},
			{"x-authtoken", imp},
		} {
			resp := checkWire(t, s, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
				Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "docs.example.com", Path: "/",
					HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: cred.name, RawValue: []byte(cred.value)}}}}}}})
			if ok := resp.GetOkResponse(); ok != nil {
				for _, h := range ok.GetHeaders() {
					if h.GetHeader().GetKey() == agent.HeaderUser && h.GetHeader().GetValue() != user {
						t.Fatalf("%s: x-auth-user %q for a token of user %q", cred.name, h.GetHeader().GetValue(), user)
					}
				}
			}
		}
	})
}

// impersonationDigest is the legacy token's hex MD5 of "{name}:{epoch}:{api key}" (SPEC §3.6).
func impersonationDigest(apiKey string, name, epoch string) string {
	sum := md5.Sum([]byte(name + ":" + epoch + ":" + apiKey))
	return hex.EncodeToString(sum[:])
}

// TestSignedUserWithInvalidUTF8 is the regression test of a FuzzSignedUser finding: a Server
// API Token signed with the real key whose user holds bytes that are not UTF-8 (possible in
// Envoy's raw header_map, or through the HTTP front) was allowed with that user in
// x-auth-user and the dynamic metadata; gRPC cannot marshal such a string, so the check
// failed with an Internal error instead of a decision. It is now malformed_token.
func TestSignedUserWithInvalidUTF8(t *testing.T) {
	s := NewServer(fuzzAgent(t))
	epoch := strconv.FormatInt(fuzzNow.Unix(), 10)
	for _, user := range []string{"=\xff\xfe", "=a\xc3", "=\xed\xa0\x80"} {
		body := "k1_" + epoch + "_" + user
		tok := token.ServerTokenPrefix + body + "_" + vault.NewSecret([]byte(fuzzSecret)).HexMAC(body)
		resp := checkWire(t, s, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "docs.example.com", Path: "/",
				HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "x-deki-token", RawValue: []byte(tok)}}}}}}})
		if got := deniedHeader(resp, "x-auth-reason"); got != "malformed_token" {
			t.Errorf("user %q: reason %q, want malformed_token", user, got)
		}
	}
	// Valid UTF-8 in a username is still accepted as it stands.
	body := "k1_" + epoch + "_=jörg"
	tok := token.ServerTokenPrefix + body + "_" + vault.NewSecret([]byte(fuzzSecret)).HexMAC(body)
	resp := checkWire(t, s, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "docs.example.com", Path: "/",
			Headers: map[string]string{"x-deki-token": tok}}}}})
	if resp.GetOkResponse() == nil {
		t.Errorf("a UTF-8 username: %v", resp)
	}
}

func deniedHeader(r *authv3.CheckResponse, name string) string {
	for _, h := range r.GetDeniedResponse().GetHeaders() {
		if h.GetHeader().GetKey() == name {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// FuzzHTTPFront sends arbitrary authorization requests to the HTTP front, as raw HTTP/1.1 (so
// what reaches the handler is what net/http would parse from a proxy): any endpoint, method,
// request target, forwarding headers (X-Original-*, X-Forwarded-*), credentials and body.
// Nothing panics; every answer has a valid status, no header value the front writes holds CR,
// LF or NUL; a 2xx answer of an authorization endpoint (envoy, nginx, traefik) is an allowed
// decision (it carries x-auth-site), never the agent's own answer or an error, since the proxy
// would let the request through.
func FuzzHTTPFront(f *testing.F) {
	srv := token.MintServerToken("k1", vault.NewSecret([]byte(fuzzSecret)), "=jane", fuzzNow)
	f.Add("GET", "/envoy/@api/x?a=1", "X-Deki-Token: "+srv+"\nX-Auth-User: spoof", []byte(nil))
	f.Add("GET", "/nginx", "X-Original-URI: /@api/x\nX-Original-Method: POST\nX-Original-Host: eu.docs.example.com\nCookie: authtoken=1_2_3", []byte(nil))
	f.Add("GET", "/traefik", "X-Forwarded-Uri: https://docs.example.com/x?apikey="+fuzzAPIKey+"\nX-Forwarded-Host: docs.example.com\nX-Forwarded-Method: DELETE", []byte(nil))
	f.Add("OPTIONS", "/answer/x", "Origin: https://app.example.org\nAccess-Control-Request-Method: PUT", []byte(nil))
	f.Add("POST", "/answer/@app/auth/token/exchange", "Content-Type: text/plain\nX-Envoy-Auth-Partial-Body: true", []byte("a.b.c"))
	f.Add("GET", "/envoyx", "", []byte(nil))
	h := NewHTTPHandler(fuzzAgent(f), HTTPOptions{Logger: slog.New(slog.DiscardHandler)})
	f.Fuzz(func(t *testing.T, method, target, headers string, body []byte) {
		var raw strings.Builder
		raw.WriteString(method + " " + target + " HTTP/1.1\r\nHost: docs.example.com\r\n")
		for _, line := range strings.Split(headers, "\n") {
			if line != "" {
				raw.WriteString(line + "\r\n")
			}
		}
		raw.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
		raw.Write(body)
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw.String())))
		if err != nil {
			return // not a request a proxy could send
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code < 100 || rec.Code > 599 {
			t.Fatalf("status %d", rec.Code)
		}
		for name, vs := range rec.Header() {
			for _, v := range vs {
				if strings.ContainsAny(name+v, "\r\n\x00") {
					t.Fatalf("header %q: %q could inject a header", name, v)
				}
			}
		}
		ep, _ := h.route(req) // the answer endpoint's 2xx go to the client as they are
		if ep != EndpointAnswer && rec.Code >= 200 && rec.Code < 300 && rec.Header().Get(agent.HeaderSite) == "" {
			t.Fatalf("a %d answer that is not an allowed decision: %v %s", rec.Code, rec.Header(), rec.Body.Bytes())
		}
	})
}
