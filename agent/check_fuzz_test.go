package agent

import (
	"context"
	"encoding/base64"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/idna"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
)

// The whole-pipeline fuzz target's site: every MindTouch credential kind turned on (browser
// tokens with origins, both legacy credentials, unprefixed server tokens), so the fuzzer can
// reach each verifier, the CORS answers and the preflight.
const fuzzCheckConfig = `
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com, "*.docs.example.com"]
    legacy: {impersonation: true, apikey: true, unprefixed_server_tokens: true}
    routes:
      - {methods: [POST, PUT, DELETE], path: "/@api/deki/pages/*", require: user, scopes: [write]}
      - {path: "/@api/deki/site/*", require: authenticated}
  - id: other
    hosts: [other.example.com]
    server_token_single_use: true
`

const fuzzAPIKey = "legacy-api-key-for-the-fuzzer-0123456789"

func fuzzCheckKeys() string {
	return `
sites:
  docs:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(testAuthKey) + `", created: "2026-11-01T00:00:00Z"}
    server-tokens:
      k1: {secret: "s3cret"}
      bot: {secret: "bot-secret", restricted_user: "9"}
      off: {secret: "off-secret", disabled: true}
    browser-tokens:
      pub1: {origins: ["*.example.com", "https://app.example.org", "partner.example.net"]}
    legacy: {apikey: "` + fuzzAPIKey + `"}
  other:
    server-tokens:
      k1: {secret: "other-secret"}
`
}

// FuzzCheck drives the whole decision pipeline with arbitrary client-controlled request
// parts: method, host, path and query, Origin and the preflight's Access-Control-Request-*,
// X-Deki-Token, Authorization, Cookie, X-Authtoken and a spoofed x-auth-* header. Whatever
// comes in:
//   - the answer is a decision, and a denial has a known reason and that reason's status;
//   - no header the agent writes (upstream, response, or denial) holds CR, LF or NUL, so a
//     client cannot inject headers through a value the agent echoes (an Origin, a user name);
//   - an allowed request's upstream headers are the agent's own: every client-sent x-auth-*
//     header is overwritten or removed, x-auth-site is the decided site, and apikey and
//     authtoken never reach the upstream's query;
//   - a denial never echoes a credential.
func FuzzCheck(f *testing.F) {
	now := testNow
	authTok := token.MintAuthToken(vault.NewSecret(testAuthKey), "42", now)
	srvTok := token.MintServerToken("k1", vault.NewSecret([]byte("s3cret")), "=john_doe%40x", now)
	unprefixed := token.MintUnprefixedServerToken("k1", vault.NewSecret([]byte("s3cret")), "7", now)
	impTok := token.MintImpersonationToken(vault.NewSecret([]byte(fuzzAPIKey)), "=jane", now)
	for _, s := range [][9]string{
		{"GET", "docs.example.com", "/", "", "", "", "", "", ""},
		{"POST", "docs.example.com", "/@api/deki/pages/home", "", "", srvTok, "", "", "alice"},
		{"GET", "eu.docs.example.com:443", "/@api/deki/site/x", "https://app.example.com", "", "pub1", "", "authtoken=" + authTok, ""},
		{"OPTIONS", "docs.example.com", "/x", "https://app.example.org", "PUT", "", "", "", ""},
		{"GET", "docs.example.com", "/?apikey=" + fuzzAPIKey + "&impersonateuserid=5", "", "", "", "", "", "1"},
		{"GET", "DOCS.example.com.", "/a/%2e%2e/@api/deki/site/?authtoken=" + impTok, "null", "", "", "", "", ""},
		{"DELETE", "docs.example.com", "/@api/deki/pages/x", "", "", unprefixed, "Bearer a.b.c", "", ""},
		{"GET", "other.example.com", "/", "http://x\r\nSet-Cookie: a=b", "GET\r\n", "k1_1_2_3", "Basic Zm9v", "authtoken=1_2_3; authtoken=4", "\x00"},
		// The adversarial review's cases (SPEC §1, §2, §2a).
		{"GET", "docs.example.com:1@evil.example.com", "/", "", "", "", "", "", "42"},
		{"post", "docs.example.com", "/@api/deki/pages/home", "", "", "", "", "", "42"},
		{"GET", "docs.example.com", "/@api/deki/users/current%00", "", "", "", "", "", ""},
		{"GET", "docs.example.com", "/@api/deki/users\\current", "", "", "", "", "", ""},
		{"GET", "docs.example.com", "/@api/deki/users%5Ccurrent", "", "", "", "", "", ""},
		{"GET", "docs.example.com", "/@api/deki/users/current#x", "", "", "", "", "", ""},
		{"GET", "docs.example.com", "https://docs.example.com/@api/deki/site/x", "", "", "", "", "", ""},
		{"GET", "docs.example.com", "/public/..;/@api/deki/site/x", "", "", "", "", "", ""},
		{"GET", "docs.example.com", "/", "", "", "", "", "authtoken=" + authTok + "; authtoken=1_2_3", ""},
		{"GET", "docs.example.com", "/?apikey=a&apikey=b", "", "", "", "", "", ""},
		{"OPTIONS", "docs.example.com", "/x", "https://docs.example.com:8443", "POST", "", "", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8])
	}
	cfg, err := config.Parse([]byte(fuzzCheckConfig), f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	clock := func() time.Time { return now }
	store := filetest.Store(f, fuzzCheckKeys(), vault.StoreOptions{Now: clock, Logger: slog.New(slog.DiscardHandler)})
	a, err := New(newRuntime(f, RuntimeOptions{Keys: store, Now: clock, Logger: slog.New(slog.DiscardHandler)}), cfg)
	if err != nil {
		f.Fatal(err)
	}
	known := map[reason.Reason]bool{}
	for _, r := range reason.All() {
		known[r] = true
	}
	f.Fuzz(func(t *testing.T, method, host, path, origin, acrm, deki, authz, cookie, spoof string) {
		h := map[string]string{}
		for name, v := range map[string]string{"origin": origin, "access-control-request-method": acrm,
			"x-deki-token": deki, "authorization": authz, "cookie": cookie, "x-auth-user": spoof} {
			if v != "" {
				h[name] = v
			}
		}
		if spoof != "" {
			h["x-auth-site"], h["X-Auth-Elevated"], h["x_auth_user"], h["x-auth_elevated"] = spoof, "true", spoof, "true"
		}
		d := a.Check(context.Background(), &Request{Method: method, Scheme: "https", Host: host, Path: path, Headers: h})
		if d == nil {
			t.Fatal("nil decision")
		}
		for _, hs := range [][]token.Header{d.UpstreamHeaders, d.ResponseHeaders, d.Headers} {
			for _, x := range hs {
				if strings.ContainsAny(x.Name, "\r\n\x00 :") || x.Name == "" || strings.ContainsAny(x.Value, "\r\n\x00") {
					t.Fatalf("header %q: %q could inject a header", x.Name, x.Value)
				}
			}
		}
		switch {
		case d.Allowed:
			set := map[string]bool{}
			for _, x := range d.UpstreamHeaders {
				set[strings.ToLower(x.Name)] = true
			}
			if v, _ := header(d.UpstreamHeaders, HeaderSite); v != d.Site || d.Site == "" {
				t.Fatalf("allowed with x-auth-site %q for site %q", v, d.Site)
			}
			removed := map[string]bool{}
			for _, n := range d.RemoveHeaders {
				removed[n] = true
			}
			for name := range h {
				// CGI, WSGI, Rack and PHP read "_" as "-": every spelling is the agent's.
				spelled := strings.ReplaceAll(strings.ToLower(name), "_", "-")
				if strings.HasPrefix(spelled, authPrefix) && !set[name] && !removed[name] {
					t.Fatalf("client-sent %s reaches the upstream (set %v, removed %v)", name, d.UpstreamHeaders, d.RemoveHeaders)
				}
			}
			// The request was read one way (SPEC §2a): no control character, backslash or
			// fragment in its path, and an origin-form target.
			p, _, _ := strings.Cut(path, "?")
			if !(strings.HasPrefix(path, "/") || path == "*") || strings.ContainsAny(path, "#\x7f") ||
				strings.ContainsFunc(path, func(r rune) bool { return r < 0x20 }) || strings.Contains(p, "\\") ||
				strings.Contains(strings.ToLower(p), "%5c") || strings.Contains(p, "%00") {
				t.Fatalf("allowed a request whose target %q an upstream may read differently", path)
			}
			if d.Identity.Kind == token.KindAnonymous {
				if _, ok := header(d.UpstreamHeaders, HeaderUser); ok {
					t.Fatalf("anonymous request allowed with x-auth-user: %v", d.UpstreamHeaders)
				}
			}
			q := strings.Join(d.RemoveQuery, ",")
			if !strings.Contains(q, "apikey") || !strings.Contains(q, "authtoken") {
				t.Fatalf("allowed without removing apikey and authtoken from the query: %v", d.RemoveQuery)
			}
		case d.Answered:
			if d.Status != 204 && d.Status != 200 {
				t.Fatalf("agent's own answer with status %d", d.Status)
			}
		default:
			if !known[d.Reason] {
				t.Fatalf("unknown reason %q", d.Reason)
			}
			if d.Reason != reason.PolicyDenied && d.Status != d.Reason.Status() {
				t.Fatalf("reason %s with status %d, want %d", d.Reason, d.Status, d.Reason.Status())
			}
			for _, v := range []string{deki, authz, cookie, strings.TrimPrefix(path, "/")} {
				if len(v) >= 12 && strings.Contains(string(d.Body), v) {
					t.Fatalf("denial %s echoes %q", d.Body, v)
				}
			}
		}
	})
}

// FuzzSiteLookup checks the host → site lookup (SPEC §1) against its definition: whatever
// :authority a client sends, a site is found only for a plain host[:port] (no user info, path,
// space or bad port) whose host, lower-cased and without one trailing dot, is one of the
// site's exact hostnames or a proper subdomain of one of its `*.suffix` patterns; and case
// never changes the answer.
func FuzzSiteLookup(f *testing.F) {
	for _, s := range []string{"docs.example.com", "DOCS.example.com:8443", "a.b.docs.example.com.",
		".docs.example.com", "docs.example.com.evil.net", "evil-docs.example.com", "[::1]:80", "[docs.example.com]",
		"docs.example.com:1:2", "other.example.com", "x.other.example.com", ":443", ".",
		"docs.example.com:1@evil.example.com", "evil.example.com@docs.example.com", "docs.example.com:",
		"docs.example.com:0", "docs.example.com:65536", "docs.example.com:080", "docs.example.com/x",
		"docs.example.com x", "docs.example.com%2f", "docs.example.com\\x"} {
		f.Add(s)
	}
	cfg, err := config.Parse([]byte(fuzzCheckConfig), f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	idx, _ := buildSites(cfg.Sites)
	f.Fuzz(func(t *testing.T, authority string) {
		_, s := idx.find(authority)
		if _, up := idx.find(strings.ToUpper(authority)); up != s && strings.EqualFold(strings.ToUpper(authority), authority) {
			t.Fatalf("lookup(%q) = %v but lookup of its upper case = %v", authority, siteID(s), siteID(up))
		}
		if s == nil {
			return
		}
		if strings.ContainsAny(authority, "@/?#\\% \t\r\n\x00") {
			t.Fatalf("lookup(%q) = site %s, but the authority is not a plain host[:port]", authority, s.ID)
		}
		host := authority
		if i := strings.LastIndexByte(authority, ':'); i >= 0 && !strings.HasSuffix(authority, "]") {
			host = authority[:i]
			port, err := strconv.Atoi(authority[i+1:])
			if err != nil || port < 1 || port > 65535 || authority[i+1] == '0' {
				t.Fatalf("lookup(%q) = site %s, but its port is not 1–65535", authority, s.ID)
			}
		}
		host = strings.TrimSuffix(strings.ToLower(host), ".")
		if a, err := idna.Lookup.ToASCII(host); err == nil {
			host = a
		}
		for _, sc := range cfg.Sites {
			if sc.ID != s.ID {
				continue
			}
			for _, pat := range sc.Hosts {
				if suffix, ok := strings.CutPrefix(pat, "*"); ok {
					if len(host) > len(suffix) && strings.HasSuffix(host, suffix) {
						return
					}
				} else if host == pat {
					return
				}
			}
		}
		t.Fatalf("lookup(%q) = site %s, whose hosts do not cover %q", authority, s.ID, host)
	})
}

func siteID(s *Site) string {
	if s == nil {
		return "<none>"
	}
	return s.ID
}
