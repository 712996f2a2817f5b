package agent

import (
	"context"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tokenagent/tokenagent/agent/reason"
)

// FuzzFindCredentials feeds arbitrary headers and queries to the credential finder and the
// whole pipeline: nothing panics, every answer is a decision with a known reason, and no
// credential is echoed in a denial.
func FuzzFindCredentials(f *testing.F) {
	f.Add("tkn_k1_1_2_"+strings.Repeat("a", 64), "", "authtoken=1", "/a")
	f.Add("pub1", "Bearer a.b.c", "", "/@api/deki/pages/x")
	f.Add("", "", "authtoken=42_x; authtoken=43", "/?authtoken=&apikey=%zz")
	f.Add("k_1_=a_b_c", "bearer ", "a=b", "/%2e%2e/%2F")
	a := newTestAgent(f)
	known := map[reason.Reason]bool{}
	for _, r := range reason.All() {
		known[r] = true
	}
	f.Fuzz(func(t *testing.T, deki, authz, cookie, path string) {
		h := map[string]string{}
		if deki != "" {
			h["x-deki-token"] = deki
		}
		if authz != "" {
			h["authorization"] = authz
		}
		if cookie != "" {
			h["cookie"] = cookie
		}
		_, query := splitPath(path)
		_, _ = findCredentials(h, query)
		d := a.Check(context.Background(), &Request{Method: "POST", Host: "docs.example.com", Path: path, Headers: h})
		if d == nil {
			t.Fatal("nil decision")
		}
		if !d.Allowed && !d.Answered && !known[d.Reason] {
			t.Fatalf("unknown reason %q", d.Reason)
		}
		if !d.Allowed {
			for _, v := range []string{deki, authz, cookie} {
				if len(v) >= 8 && strings.Contains(string(d.Body), v) {
					t.Fatalf("denial %s echoes %q", d.Body, v)
				}
			}
		}
	})
}

// FuzzNormalizePath checks that normalisation is idempotent, keeps paths absolute, and leaves
// no dot segment or repeated slash behind.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "/%2E%2E/x", "//a//b/", "/a%2Fb", "a/./b/.", "/%", "/%%32%65"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		n := NormalizePath(p)
		if n == "" || n[0] != '/' {
			t.Fatalf("NormalizePath(%q) = %q is not absolute", p, n)
		}
		if strings.Contains(n, "//") || strings.Contains(n, "/./") || strings.Contains(n, "/../") ||
			strings.HasSuffix(n, "/.") || strings.HasSuffix(n, "/..") {
			t.Fatalf("NormalizePath(%q) = %q keeps a dot segment or repeated slash", p, n)
		}
		if again := NormalizePath(n); again != n && !strings.Contains(n, "%") {
			t.Fatalf("not idempotent: %q -> %q -> %q", p, n, again)
		}
	})
}

// FuzzReadTarget checks the request line rules of SPEC §2a against their definition: a target
// is accepted only when it is "*" for OPTIONS or starts with "/", holds no raw control
// character or "#", and its path holds no raw or encoded backslash or encoded control
// character; the method comes out upper-case; the normalised path is absolute, free of dot
// segments, repeated slashes and matrix parameters, and normalising it again changes nothing.
func FuzzReadTarget(f *testing.F) {
	for _, s := range [][2]string{{"GET", "/"}, {"post", "/@api/deki/pages/x?a=1"}, {"GET", "/a%00"},
		{"GET", `/a\b`}, {"GET", "/a%5cb"}, {"GET", "/a#b"}, {"GET", "https://h/p"}, {"OPTIONS", "*"},
		{"GET", "*"}, {"GET", ""}, {"G T", "/"}, {"GET", "/admin;x=1/secret"}, {"GET", "/p/..;/admin"},
		{"GET", "/a?b=%00&c=\\"}, {"GET", "/a%7f"}, {"GET", "/%2e%2e;/x"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, method, target string) {
		tg, err := readTarget(method, target)
		if err != nil {
			if err.Reason != reason.MalformedRequest || err.HTTPStatus() != 400 {
				t.Fatalf("readTarget refused with %v", err)
			}
			return
		}
		if tg.method != strings.ToUpper(method) || tg.method == "" {
			t.Fatalf("method %q read as %q", method, tg.method)
		}
		if target == "*" {
			if tg.method != "OPTIONS" {
				t.Fatalf("* accepted for %s", tg.method)
			}
			return
		}
		p, q, _ := strings.Cut(target, "?")
		if p != tg.rawPath || q != tg.query || !strings.HasPrefix(p, "/") {
			t.Fatalf("target %q split as %q %q", target, tg.rawPath, tg.query)
		}
		if strings.ContainsAny(target, "#\x7f") || strings.ContainsFunc(target, func(r rune) bool { return r < 0x20 }) {
			t.Fatalf("target %q with a control character or fragment accepted", target)
		}
		if strings.Contains(p, `\`) || strings.Contains(strings.ToLower(p), "%5c") {
			t.Fatalf("path %q with a backslash accepted", p)
		}
		for i := 0; i+2 < len(p); i++ {
			if p[i] == '%' {
				if v, err := strconv.ParseUint(p[i+1:i+3], 16, 8); err == nil && (v < 0x20 || v == 0x7f) {
					t.Fatalf("path %q with an encoded control character accepted", p)
				}
			}
		}
		n := tg.path
		if !strings.HasPrefix(n, "/") || strings.Contains(n, "//") || strings.Contains(n, ";") ||
			strings.Contains(n, "/./") || strings.Contains(n, "/../") || strings.HasSuffix(n, "/.") || strings.HasSuffix(n, "/..") {
			t.Fatalf("path %q normalised to %q", p, n)
		}
		if again := NormalizePath(n); again != n && !strings.Contains(n, "%") {
			t.Fatalf("not idempotent: %q -> %q -> %q", p, n, again)
		}
	})
}

// FuzzPolicyView checks that a policy never sees a credential (SPEC §5): whatever a header is
// called (any case, "_" for "-") and wherever a credential stands in it (the query of a URL,
// a cookie, a credential header), the policy's headers do not hold it, and no x-auth-*
// header in any spelling reaches it.
func FuzzPolicyView(f *testing.F) {
	for _, s := range [][4]string{
		{":path", "/p?", "authtoken", "&x=1"}, {"Referer", "https://h/p?a=1&", "apikey", "#frag"},
		{"X_Original_URI", "/p?", "AuthToken", ""}, {"x-forwarded-uri", "/p?x=1&", "impersonateuserid", "&y"},
		{"cookie", "lang=en; ", "authtoken", "; a=b"}, {"X-Deki-Token", "", "", ""}, {"x_auth_user", "", "", ""},
		{"x-envoy-original-path", "/?", "%61pikey", ""}, {"authorization", "Bearer ", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	const secret = "S3CR3T-CREDENTIAL"
	f.Fuzz(func(t *testing.T, name, before, param, after string) {
		var v string
		switch {
		case param == "":
			v = before + secret + after
		default:
			v = before + param + "=" + secret + after
		}
		out := policyHeaders(map[string]string{name: v})
		spelled := strings.ReplaceAll(strings.ToLower(name), "_", "-")
		dp, _ := url.QueryUnescape(param)
		credentialParam := strings.EqualFold(dp, "authtoken") || strings.EqualFold(dp, "apikey") ||
			strings.EqualFold(dp, "impersonateuserid")
		for _, h := range out {
			if strings.HasPrefix(spelled, "x-auth-") {
				t.Fatalf("the policy sees %s", name)
			}
			switch spelled {
			case "authorization", "proxy-authorization", "x-deki-token", "x-authtoken":
				t.Fatalf("the policy sees the credential header %s", name)
			}
			if !strings.Contains(h[1], secret) {
				continue
			}
			isURL := slices.Contains([]string{":path", "x-original-uri", "x-forwarded-uri", "x-envoy-original-path",
				"x-original-url", "x-rewrite-url", "referer"}, spelled)
			// The credential is a parameter of the URL's query: its pair starts right after
			// the first "?" or after an "&" of the query, and ends at "&", "#" or the end.
			qi := strings.IndexByte(before, '?')
			inQuery := qi >= 0 && !strings.Contains(before, "#") && (qi == len(before)-1 || strings.HasSuffix(before, "&")) &&
				!strings.ContainsAny(param, "&=#?") && (after == "" || after[0] == '&' || after[0] == '#')
			if isURL && credentialParam && inQuery {
				t.Fatalf("the policy sees the credential in %s: %q", name, h[1])
			}
			if spelled == "cookie" && param == "authtoken" &&
				(strings.TrimLeft(before, " \t") == "" || strings.HasSuffix(strings.TrimRight(before, " \t"), ";")) {
				t.Fatalf("the policy sees the authtoken cookie: %q", h[1])
			}
		}
	})
}
