package agent

import (
	"context"
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
