package agent

import (
	"testing"

	"github.com/tokenagent/tokenagent/agent/config"
)

func TestNormalizePath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/", "/"},
		{"", "/"},
		{"/a/b", "/a/b"},
		{"/a//b///c", "/a/b/c"},
		{"/a/./b", "/a/b"},
		{"/a/b/../c", "/a/c"},
		{"/a/b/..", "/a/"},
		{"/a/b/.", "/a/b/"},
		{"/../../a", "/a"},
		{"/a/%2E%2E/b", "/b"},
		{"/a/%2e%2e/b", "/b"},
		{"/a/.%2E/b", "/b"},
		{"/%7Euser/%41bc", "/~user/Abc"},
		{"/a%2Fb/c", "/a%2Fb/c"},
		{"/a%2fb/c", "/a%2Fb/c"},
		{"/a%2F..%2Fb", "/a%2F..%2Fb"},
		{"/a%25b", "/a%25b"},
		{"/%40api/deki", "/@api/deki"},
		{"/a%zz", "/a%zz"},
		{"/a%", "/a%"},
		{"a/b", "/a/b"},
		{"/@api/deki/pages/home", "/@api/deki/pages/home"},
		{"/x/.hidden", "/x/.hidden"},
		{"/x/..hidden/..", "/x/"},
		// Matrix parameters (SPEC §5), removed before dot segments are read.
		{"/admin;x=1/secret", "/admin/secret"},
		{"/@api/deki/users/current;jsessionid=1", "/@api/deki/users/current"},
		{"/public/..;/admin", "/admin"},
		{"/public/..;x=1/admin", "/admin"},
		{"/a/.;x/b", "/a/b"},
		{"/;x=1/admin", "/admin"},
		{"/admin%3Bx=1/secret", "/admin/secret"},
		{"/a;b;c/d", "/a/d"},
	}
	for _, tc := range tests {
		if got := NormalizePath(tc.in); got != tc.want {
			t.Errorf("NormalizePath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRouteMatching(t *testing.T) {
	routes := []Route{
		compileRoute(config.Route{Methods: []string{"POST", "PUT"}, Path: "/@api/deki/pages/*", Require: config.RequireUser}),
		compileRoute(config.Route{Path: "/@api/deki/site/*", Require: config.RequireAuthenticated}),
		compileRoute(config.Route{Path: "/exact", Require: config.RequireUser}),
		compileRoute(config.Route{Path: "/pre*", Require: config.RequireAuthenticated}),
		compileRoute(config.Route{Methods: []string{"get"}, Path: "/reads", Require: config.RequireUser}),
	}
	tests := []struct {
		method, path string
		want         int // index of the matching rule, -1 for none
	}{
		{"POST", "/@api/deki/pages/home", 0},
		{"POST", "/@api/deki/pages/", 0},
		{"POST", "/@api/deki/pages", -1},
		{"GET", "/@api/deki/pages/home", -1},
		{"DELETE", "/@api/deki/site/x", 1},
		{"GET", "/@api/deki/site/", 1},
		{"GET", "/@api/deki/Site/x", -1}, // case-sensitive
		{"GET", "/exact", 2},
		{"GET", "/exact/", 2}, // an exact pattern covers one trailing slash
		{"GET", "/exact//", -1},
		{"GET", "/exactx", -1},
		{"GET", "/exactly", -1},
		{"GET", "/prefix", 3},
		{"GET", "/pre", 3},
		{"GET", "/pr", -1},
		{"GET", "/reads", 4},
		{"HEAD", "/reads", 4}, // a GET rule covers HEAD (SPEC §2a)
		{"POST", "/reads", -1},
	}
	for _, tc := range tests {
		r := matchRoute(routes, tc.method, tc.path)
		got := -1
		for i := range routes {
			if r == &routes[i] {
				got = i
			}
		}
		if got != tc.want {
			t.Errorf("%s %s matched rule %d, want %d", tc.method, tc.path, got, tc.want)
		}
	}
}

func TestSiteLookup(t *testing.T) {
	idx, _ := buildSites([]config.Site{
		{ID: "docs", Hosts: []string{"docs.example.com", "*.docs.example.com"}},
		{ID: "eu", Hosts: []string{"*.eu.docs.example.com"}},
		{ID: "local", Hosts: []string{"localhost", "[::1]", "127.0.0.1"}},
	})
	tests := []struct{ host, want string }{
		{"docs.example.com", "docs"},
		{"DOCS.Example.com", "docs"},
		{"docs.example.com:8443", "docs"},
		{"docs.example.com.", "docs"},
		{"a.docs.example.com", "docs"},
		{"a.b.docs.example.com", "docs"},
		{"x.eu.docs.example.com", "eu"},
		{"eu.docs.example.com", "docs"},
		{"evildocs.example.com", ""},
		{"docs.example.com.evil.net", ""},
		{"example.com", ""},
		{"localhost:9191", "local"},
		{"[::1]:80", "local"},
		{"127.0.0.1:8080", "local"},
		{"[0:0::1]:80", "local"},
		{"", ""},
		{"[::1", ""},
		// Not a plain host[:port]: no site (SPEC §1).
		{"docs.example.com:1@evil.example.com", ""},
		{"evil.example.com@docs.example.com", ""},
		{"user@docs.example.com", ""},
		{"docs.example.com:", ""},
		{"docs.example.com:0", ""},
		{"docs.example.com:65536", ""},
		{"docs.example.com:8x", ""},
		{"docs.example.com:1:2", ""},
		{"docs.example.com/x", ""},
		{"docs.example.com x", ""},
		{" docs.example.com", ""},
		{"docs.example.com%2e", ""},
		{"docs.example.com\\", ""},
		{"docs.example.com#", ""},
		{"docs..example.com", ""},
		{"1.2.3.4.docs.example.com", "docs"},
		{"x.127.0.0.1", ""},
	}
	for _, tc := range tests {
		got := ""
		if _, s := idx.find(tc.host); s != nil {
			got = s.ID
		}
		if got != tc.want {
			t.Errorf("lookup(%q) = %q, want %q", tc.host, got, tc.want)
		}
	}
}
