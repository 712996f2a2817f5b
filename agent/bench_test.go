package agent

import (
	"fmt"
	"testing"

	"github.com/tokenagent/tokenagent/agent/config"
)

// Micro-benchmarks of the pipeline's unexported steps: finding credentials, looking up the
// site, normalising the path and matching route rules. They live here, beside the code, so
// the internals stay unexported; the token verifiers and whole checks are benchmarked in
// bench/.
//
//	go test ./agent -run '^$' -bench 'FindCredentials|SiteLookup|NormalizePath|MatchRoute' -benchmem

func BenchmarkFindCredentials(b *testing.B) {
	base := map[string]string{":authority": "docs.example.com", ":method": "GET", ":path": "/@api/deki/pages/home",
		":scheme": "https", "accept": "application/json", "user-agent": "Mozilla/5.0", "x-forwarded-proto": "https",
		"x-request-id": "6f1c0f0e-4a1b-4a8e-9e55-0a1f1f1b2c3d", "accept-encoding": "gzip"}
	with := func(extra ...string) map[string]string {
		h := make(map[string]string, len(base)+len(extra)/2)
		for k, v := range base {
			h[k] = v
		}
		for i := 0; i+1 < len(extra); i += 2 {
			h[extra[i]] = extra[i+1]
		}
		return h
	}
	auth := "42_638000000000000000_" + fmt.Sprintf("%064x", 7)
	for _, c := range []struct {
		name    string
		headers map[string]string
		query   string
	}{
		{"none", with(), ""},
		{"none+query", with(), "mode=view&format=html&redirects=0"},
		{"cookie", with("cookie", "theme=dark; _ga=GA1.2.3.4; authtoken="+auth+"; lang=en-US"), ""},
		{"x-authtoken", with("x-authtoken", auth), ""},
		{"query-authtoken", with(), "mode=view&authtoken=" + auth},
		{"server", with("x-deki-token", "tkn_k1_1763726400_42_"+fmt.Sprintf("%064x", 9)), ""},
		{"bearer", with("authorization", "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"), ""},
		{"browser+cookie", with("x-deki-token", "pub1", "cookie", "authtoken="+auth, "origin", "https://app.example.org"), ""},
		{"multiple", with("x-deki-token", "tkn_k1_1_2_3", "authorization", "Bearer a.b.c"), ""},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = findCredentials(c.headers, c.query)
			}
		})
	}
}

func BenchmarkSiteLookup(b *testing.B) {
	var cfgs []config.Site
	for i := range 50 {
		cfgs = append(cfgs, config.Site{ID: fmt.Sprintf("s%d", i),
			Hosts: []string{fmt.Sprintf("site%d.example.com", i), fmt.Sprintf("*.site%d.example.com", i)}})
	}
	idx, _ := buildSites(cfgs)
	for _, c := range []struct{ name, host string }{
		{"exact", "site7.example.com"},
		{"exact+port", "site7.example.com:443"},
		{"upper-case", "Site7.Example.COM"},
		{"wildcard", "eu.site42.example.com"},
		{"unknown", "nowhere.example.net"},
	} {
		b.Run(c.name+"/sites=50", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				idx.find(c.host)
			}
		})
	}
}

func BenchmarkNormalizePath(b *testing.B) {
	for _, c := range []struct{ name, path string }{
		{"clean", "/@api/deki/pages/1234/contents"},
		{"encoded", "/@api/deki/pages/=Guides%252FInstall/contents"},
		{"dot-segments", "/@api/deki/./pages//1234/../5678/contents"},
		{"encoded-dots", "/@api/deki/pages/%2E%2E/%2e%2e/site/settings"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				NormalizePath(c.path)
			}
		})
	}
}

func BenchmarkMatchRoute(b *testing.B) {
	rules := []config.Route{
		{Methods: []string{"POST", "PUT", "DELETE"}, Path: "/@api/deki/pages/*", Require: config.RequireUser, Scopes: []string{"write"}},
		{Path: "/@api/deki/site/*", Require: config.RequireAuthenticated},
		{Path: "/admin", Require: config.RequireUser},
	}
	for i := range 17 { // a site with 20 rules
		rules = append(rules, config.Route{Path: fmt.Sprintf("/@api/deki/extra%d/*", i), Require: config.RequireUser})
	}
	var routes []Route
	for _, r := range rules {
		routes = append(routes, compileRoute(r))
	}
	for _, c := range []struct{ name, method, path string }{
		{"first", "PUT", "/@api/deki/pages/1234/contents"},
		{"second", "GET", "/@api/deki/site/settings"},
		{"last", "GET", "/@api/deki/extra16/x"},
		{"none", "GET", "/@api/deki/pages/1234/contents"},
	} {
		b.Run(fmt.Sprintf("%s/rules=%d", c.name, len(routes)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				matchRoute(routes, c.method, c.path)
			}
		})
	}
	// The whole route step of a check: split off the query, normalise, match.
	b.Run("split+normalize+match", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p, _ := splitPath("/@api/deki/pages/1234/contents?mode=view&format=html")
			matchRoute(routes, "GET", NormalizePath(p))
		}
	})
}
