package agent

import (
	"slices"
	"strings"
	"testing"
)

func TestIsAuthHeader(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"x-auth-user", true},
		{"X-Auth-User", true},
		{"x_auth_user", true},
		{"X-Auth_User", true},
		{"x_auth-elevated", true},
		{"X_AUTH_SITE", true},
		{"x-auth-", true},
		{"x-auth", false},
		{"x-authtoken", false},
		{"x-authorization", false},
		{"xx-auth-user", false},
		{"x-auth.user", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := isAuthHeader(tc.name); got != tc.want {
			t.Errorf("isAuthHeader(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCleanQuery(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"empty", "", ""},
		{"nothing to remove", "a=1&b=2", "a=1&b=2"},
		{"authtoken", "authtoken=1_2_3", ""},
		{"first", "authtoken=x&a=1", "a=1"},
		{"middle", "a=1&apikey=k&b=2", "a=1&b=2"},
		{"last", "a=1&apikey=k", "a=1"},
		{"impersonateuserid", "apikey=k&impersonateuserid=5&a=1", "a=1"},
		{"case", "AuthToken=x&a=1", "a=1"},
		{"encoded name", "a%75thtoken=x&a=1", "a=1"},
		{"plus in the name", "api+key=x&a=1", "api+key=x&a=1"},
		{"no value", "apikey&a", "a"},
		{"repeated", "authtoken=A&authtoken=B&a=1", "a=1"},
		{"similar names stay", "authtokens=1&myapikey=2", "authtokens=1&myapikey=2"},
		{"empty pairs dropped when rebuilding", "a=1&&apikey=2&", "a=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cleanQuery(tt.in); got != tt.want {
				t.Errorf("cleanQuery(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	if n := testing.AllocsPerRun(100, func() { _ = cleanQuery("a=1&b=2&c=3") }); n != 0 {
		t.Errorf("cleanQuery allocates %v times when nothing is removed", n)
	}
}

func TestCleanURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/a/b", "/a/b"},
		{"/a?x=1", "/a?x=1"},
		{"/a?authtoken=S", "/a"},
		{"/a?x=1&apikey=S", "/a?x=1"},
		{"https://docs.example.com/p?apikey=S&impersonateuserid=2#frag", "https://docs.example.com/p#frag"},
		{"https://docs.example.com/p?q=1&authtoken=S#f?authtoken=T", "https://docs.example.com/p?q=1#f?authtoken=T"},
		{"?authtoken=S", ""},
	}
	for _, tc := range tests {
		if got := cleanURL(tc.in); got != tc.want {
			t.Errorf("cleanURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCleanCookie(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a=1; b=2", "a=1; b=2"},
		{"authtoken=S", ""},
		{"a=1; authtoken=S; b=2", "a=1; b=2"},
		{"authtoken=S; authtoken=T;lang=en", "lang=en"},
		{"myauthtoken=1", "myauthtoken=1"},
		{"authtokens=1; authtoken =S", "authtokens=1"},
	}
	for _, tc := range tests {
		if got := cleanCookie(tc.in); got != tc.want {
			t.Errorf("cleanCookie(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A policy never sees a credential (SPEC §5): not in a credential header, not in the cookie,
// not in a URL-bearing header's query, and no client-sent x-auth-* header in any spelling.
func TestPolicyHeaders(t *testing.T) {
	const secret = "SECRET-CREDENTIAL"
	h := map[string]string{
		"authorization":         "Bearer " + secret,
		"proxy-authorization":   "Basic " + secret,
		"x-deki-token":          secret,
		"x_deki_token":          secret,
		"x-authtoken":           secret,
		"cookie":                "lang=en; authtoken=" + secret,
		":path":                 "/p?authtoken=" + secret + "&x=1",
		"x-original-uri":        "/p?apikey=" + secret,
		"x-forwarded-uri":       "/p?impersonateuserid=7&apikey=" + secret,
		"x-envoy-original-path": "/p?AUTHTOKEN=" + secret,
		"referer":               "https://docs.example.com/p?authtoken=" + secret,
		"x-auth-user":           "42",
		"x_auth_user":           "42",
		"X-Auth_Elevated":       "true",
		"accept":                "text/html",
	}
	got := policyHeaders(h)
	slices.SortFunc(got, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	want := [][2]string{
		{":path", "/p?x=1"},
		{"accept", "text/html"},
		{"cookie", "lang=en"},
		{"referer", "https://docs.example.com/p"},
		{"x-envoy-original-path", "/p"},
		{"x-forwarded-uri", "/p"},
		{"x-original-uri", "/p"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("policyHeaders =\n%q\nwant\n%q", got, want)
	}
}
