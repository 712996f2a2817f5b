package token

import (
	"errors"
	"strings"
	"testing"

	"github.com/tokenagent/tokenagent/agent/internal/hostname"
)

func TestParseOrigin(t *testing.T) {
	tests := []struct {
		name, in string
		want     Origin
		bad      bool
	}{
		{name: "https default port", in: "https://app.example.com", want: Origin{"https", "app.example.com", 443}},
		{name: "http default port", in: "http://app.example.com", want: Origin{"http", "app.example.com", 80}},
		{name: "explicit default port", in: "https://app.example.com:443", want: Origin{"https", "app.example.com", 443}},
		{name: "explicit port", in: "http://localhost:8080", want: Origin{"http", "localhost", 8080}},
		{name: "upper case", in: "HTTPS://App.EXAMPLE.com", want: Origin{"https", "app.example.com", 443}},
		{name: "trailing dot", in: "https://app.example.com.", want: Origin{"https", "app.example.com", 443}},
		{name: "trailing dot and port", in: "https://app.example.com.:8443", want: Origin{"https", "app.example.com", 8443}},
		{name: "punycode host", in: "https://xn--bcher-kva.example", want: Origin{"https", "xn--bcher-kva.example", 443}},
		// SPEC §1: an Origin is compared as ASCII bytes, never IDNA-mapped (browsers send the
		// A-label form, so only a client that is not a browser sends these).
		{name: "unicode host", in: "https://Bücher.example", bad: true},
		{name: "japanese host", in: "https://例え.テスト", bad: true},
		{name: "fullwidth dot", in: "https://docs．example.com", bad: true},
		{name: "ideographic full stop", in: "https://docs.example.com。", bad: true},
		{name: "fullwidth letters", in: "https://ｄｏｃｓ.example.com", bad: true},
		{name: "ipv4", in: "http://127.0.0.1:3000", want: Origin{"http", "127.0.0.1", 3000}},
		{name: "ipv6", in: "http://[::1]:3000", want: Origin{"http", "[::1]", 3000}},
		{name: "ipv6 non canonical", in: "https://[0:0:0:0:0:0:0:1]", want: Origin{"https", "[::1]", 443}},
		{name: "underscore", in: "https://my_app.example.com", want: Origin{"https", "my_app.example.com", 443}},
		{name: "max port", in: "https://a.example:65535", want: Origin{"https", "a.example", 65535}},

		{name: "null", in: "null", bad: true},
		{name: "empty", in: "", bad: true},
		{name: "no scheme", in: "app.example.com", bad: true},
		{name: "ftp scheme", in: "ftp://app.example.com", bad: true},
		{name: "file scheme", in: "file://", bad: true},
		{name: "chrome extension", in: "chrome-extension://abcdef", bad: true},
		{name: "https lookalike scheme", in: "httpſ://app.example.com", bad: true},
		{name: "path", in: "https://app.example.com/path", bad: true},
		{name: "trailing slash", in: "https://app.example.com/", bad: true},
		{name: "query", in: "https://app.example.com?x=1", bad: true},
		{name: "fragment", in: "https://app.example.com#x", bad: true},
		{name: "userinfo", in: "https://user@app.example.com", bad: true},
		{name: "userinfo trick", in: "https://app.example.com@evil.net", bad: true},
		{name: "percent", in: "https://app%2eexample.com", bad: true},
		{name: "backslash", in: `https://evil.net\app.example.com`, bad: true},
		{name: "empty host", in: "https://", bad: true},
		{name: "empty host with port", in: "https://:443", bad: true},
		{name: "empty port", in: "https://app.example.com:", bad: true},
		{name: "port zero", in: "https://app.example.com:0", bad: true},
		{name: "port too big", in: "https://app.example.com:65536", bad: true},
		{name: "port leading zero", in: "https://app.example.com:0443", bad: true},
		{name: "port sign", in: "https://app.example.com:+443", bad: true},
		{name: "port letters", in: "https://app.example.com:https", bad: true},
		{name: "two ports", in: "https://app.example.com:443:443", bad: true},
		{name: "space", in: "https://app.example.com ", bad: true},
		{name: "list of origins", in: "https://a.example https://b.example", bad: true},
		{name: "crlf", in: "https://a.example\r\nx-evil: 1", bad: true},
		{name: "empty label", in: "https://app..example.com", bad: true},
		{name: "two trailing dots", in: "https://app.example.com..", bad: true},
		{name: "leading dot", in: "https://.example.com", bad: true},
		{name: "only a dot", in: "https://.", bad: true},
		{name: "wildcard", in: "https://*.example.com", bad: true},
		{name: "label too long", in: "https://" + strings.Repeat("a", 64) + ".example", bad: true},
		{name: "host too long", in: "https://" + strings.Repeat("abcdefghi.", 26) + "com", bad: true},
		{name: "bad unicode", in: "https://a\xffb.example", bad: true},
		{name: "disallowed unicode", in: "https://a\u2028b.example", bad: true},
		{name: "ipv6 zone", in: "http://[fe80::1%25eth0]", bad: true},
		{name: "ipv6 unclosed", in: "http://[::1", bad: true},
		{name: "ipv6 junk after", in: "http://[::1]x", bad: true},
		{name: "ipv4 in brackets", in: "http://[127.0.0.1]", bad: true},
		{name: "too long", in: "https://" + strings.Repeat("a", MaxOriginLen), bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseOrigin(tt.in)
			if tt.bad {
				if err == nil {
					t.Fatalf("ParseOrigin(%q) = %+v, want an error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseOrigin(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseOrigin(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestOriginString(t *testing.T) {
	for in, want := range map[string]string{
		"https://A.example:443":             "https://a.example",
		"http://a.example:80":               "http://a.example",
		"http://a.example:443":              "http://a.example:443",
		"https://xn--bcher-kva.example:443": "https://xn--bcher-kva.example",
	} {
		o, err := ParseOrigin(in)
		if err != nil {
			t.Fatal(err)
		}
		if o.String() != want {
			t.Errorf("%q: String() = %q, want %q", in, o.String(), want)
		}
	}
}

// TestOriginMatch covers every pattern form of SPEC §3.3 and the tricky cases.
func TestOriginMatch(t *testing.T) {
	tests := []struct {
		name     string
		patterns []string
		origin   string
		want     bool
	}{
		// bare host: any scheme and port
		{"host https", []string{"app.example.com"}, "https://app.example.com", true},
		{"host http", []string{"app.example.com"}, "http://app.example.com", true},
		{"host any port", []string{"app.example.com"}, "https://app.example.com:8443", true},
		{"host other host", []string{"app.example.com"}, "https://www.example.com", false},
		{"host subdomain is not host", []string{"example.com"}, "https://app.example.com", false},
		{"host upper case pattern", []string{"App.Example.COM"}, "https://app.example.com", true},
		{"host upper case origin", []string{"app.example.com"}, "https://APP.EXAMPLE.COM", true},
		{"host trailing dot pattern", []string{"app.example.com."}, "https://app.example.com", true},
		{"host trailing dot origin", []string{"app.example.com"}, "https://app.example.com.", true},
		{"host prefix attack", []string{"example.com"}, "https://example.com.evil.net", false},
		{"host suffix attack", []string{"example.com"}, "https://evilexample.com", false},

		// *.suffix: any subdomain, never the bare suffix
		{"wildcard subdomain", []string{"*.example.com"}, "https://app.example.com", true},
		{"wildcard deep subdomain", []string{"*.example.com"}, "https://a.b.c.example.com", true},
		{"wildcard any scheme", []string{"*.example.com"}, "http://app.example.com", true},
		{"wildcard any port", []string{"*.example.com"}, "https://app.example.com:9000", true},
		{"wildcard not bare suffix", []string{"*.example.com"}, "https://example.com", false},
		{"wildcard not bare suffix trailing dot", []string{"*.example.com"}, "https://example.com.", false},
		{"wildcard hyphen lookalike", []string{"*.example.com"}, "https://evil-example.com", false},
		{"wildcard glued lookalike", []string{"*.example.com"}, "https://evilexample.com", false},
		{"wildcard suffix inside", []string{"*.example.com"}, "https://example.com.evil.net", false},
		{"wildcard subdomain of suffix inside", []string{"*.example.com"}, "https://app.example.com.evil.net", false},
		{"wildcard upper case", []string{"*.EXAMPLE.com"}, "https://APP.example.COM", true},
		{"wildcard trailing dot origin", []string{"*.example.com"}, "https://app.example.com.", true},
		{"wildcard trailing dot pattern", []string{"*.example.com."}, "https://app.example.com", true},
		{"wildcard other tld", []string{"*.example.com"}, "https://app.example.org", false},
		{"wildcard over ip never", []string{"*.0.0.1"}, "http://127.0.0.1", false},

		// scheme://host[:port]: exactly that origin
		{"exact", []string{"https://app.example.org"}, "https://app.example.org", true},
		{"exact explicit default port", []string{"https://app.example.org"}, "https://app.example.org:443", true},
		{"exact pattern explicit default port", []string{"https://app.example.org:443"}, "https://app.example.org", true},
		{"exact other scheme", []string{"https://app.example.org"}, "http://app.example.org", false},
		{"exact other port", []string{"https://app.example.org"}, "https://app.example.org:8443", false},
		{"exact http default", []string{"http://app.example.org"}, "http://app.example.org:80", true},
		{"exact http vs https port", []string{"http://app.example.org:443"}, "https://app.example.org", false},
		{"exact with port", []string{"http://localhost:8080"}, "http://localhost:8080", true},
		{"exact with port other port", []string{"http://localhost:8080"}, "http://localhost:8081", false},
		{"exact with port no port", []string{"http://localhost:8080"}, "http://localhost", false},
		{"exact subdomain", []string{"https://example.org"}, "https://app.example.org", false},
		{"exact upper case", []string{"HTTPS://App.Example.ORG"}, "https://app.example.org", true},
		{"exact trailing slash in pattern", []string{"https://app.example.org/"}, "https://app.example.org", true},
		{"exact trailing dot", []string{"https://app.example.org."}, "https://app.example.org", true},
		{"exact ipv6", []string{"http://[::1]:3000"}, "http://[0::1]:3000", true},
		{"exact ipv4", []string{"http://127.0.0.1:3000"}, "http://127.0.0.1:3000", true},

		// IDNA: compare in ASCII
		{"idna unicode pattern punycode origin", []string{"bücher.example"}, "https://xn--bcher-kva.example", true},
		{"idna punycode pattern unicode origin", []string{"xn--bcher-kva.example"}, "https://Bücher.example", false},
		{"unicode pattern unicode origin", []string{"bücher.example"}, "https://bücher.example", false},
		{"ideographic full stop origin", []string{"docs.example.com"}, "https://docs.example.com。", false},
		{"fullwidth dot origin", []string{"*.example.com"}, "https://docs．example.com", false},
		{"fullwidth letters origin", []string{"https://docs.example.com"}, "https://ｄｏｃｓ.example.com", false},
		{"idna wildcard", []string{"*.bücher.example"}, "https://shop.xn--bcher-kva.example", true},
		{"idna wildcard not bare", []string{"*.bücher.example"}, "https://xn--bcher-kva.example", false},
		{"idna exact", []string{"https://bücher.example"}, "https://xn--bcher-kva.example", true},
		{"idna homograph differs", []string{"apple.com"}, "https://аpple.com", false}, // Cyrillic а

		// refused origins never match, whatever the patterns
		{"null", []string{"*.example.com", "null"}, "null", false},
		{"path", []string{"app.example.com"}, "https://app.example.com/x", false},
		{"userinfo", []string{"app.example.com"}, "https://app.example.com@evil.net", false},
		{"bad port", []string{"app.example.com"}, "https://app.example.com:99999", false},
		{"non-http scheme", []string{"app.example.com"}, "ws://app.example.com", false},
		{"empty", []string{"app.example.com"}, "", false},

		// several patterns, invalid ones ignored
		{"several", []string{"a.example", "*.b.example", "https://c.example"}, "https://x.b.example", true},
		{"invalid ignored", []string{"*", "https://*.example.com", "*.example.com"}, "https://a.example.com", true},
		{"star matches nothing", []string{"*"}, "https://a.example.com", false},
		{"no patterns", nil, "https://a.example.com", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := CompileOrigins(tt.patterns)
			if got := m.MatchString(tt.origin); got != tt.want {
				t.Fatalf("patterns %q, origin %q: match = %v, want %v", tt.patterns, tt.origin, got, tt.want)
			}
		})
	}
}

func TestOriginPatternErrors(t *testing.T) {
	bad := []string{
		"", "  ", "*", "**.example.com", "*example.com", "a.*.example.com", "*.*.example.com",
		"https://*.example.com", "example.com:8080", "example.com/path", "https://example.com/path",
		"ftp://example.com", "null", "*.127.0.0.1", "*.[::1]", "user@example.com",
		"https://example.com:0", "exa mple.com", "*.",
	}
	for _, p := range bad {
		var m OriginMatcher
		err := m.Add(p)
		if err == nil {
			t.Errorf("Add(%q) = nil, want an error", p)
			continue
		}
		var pe *PatternError
		if !errors.As(err, &pe) || pe.Pattern != p {
			t.Errorf("Add(%q) = %v, want a *PatternError naming the pattern", p, err)
		}
		if m.Len() != 0 {
			t.Errorf("Add(%q) added a pattern", p)
		}
	}
	good := []string{"example.com", "*.example.com", "https://example.com", "http://localhost:8080",
		" https://example.com/ ", "[::1]", "127.0.0.1", "bücher.example", "*.bücher.example"}
	for _, p := range good {
		var m OriginMatcher
		if err := m.Add(p); err != nil {
			t.Errorf("Add(%q): %v", p, err)
		}
	}
	m, errs := CompileOrigins([]string{"a.example", "*", "b.example"})
	if len(errs) != 1 || m.Len() != 2 {
		t.Errorf("CompileOrigins: %d errors, %d patterns; want 1 and 2", len(errs), m.Len())
	}
}

func TestAddHostPattern(t *testing.T) {
	var m OriginMatcher
	for _, h := range []string{"docs.example.com", "*.docs.example.com"} {
		if err := m.AddHostPattern(h); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.AddHostPattern("https://docs.example.com"); err == nil {
		t.Error("AddHostPattern accepted a scheme")
	}
	for origin, want := range map[string]bool{
		"https://docs.example.com":        true,
		"http://docs.example.com:8080":    true,
		"https://eu.docs.example.com":     true,
		"https://example.com":             false,
		"https://evil-docs.example.com":   false,
		"https://docs.example.com.evil.n": false,
	} {
		if got := m.MatchString(origin); got != want {
			t.Errorf("%q: %v, want %v", origin, got, want)
		}
	}
}

// TestCORSHeadersCrossOrigin: CORS headers exactly for an Origin whose host is not the
// request's (the authority canonicalised as the agent does before it asks).
func TestCORSHeadersCrossOrigin(t *testing.T) {
	tests := []struct {
		name, origin, authority string
		want                    bool
	}{
		{"no origin", "", "docs.example.com", false},
		{"same host", "https://docs.example.com", "docs.example.com", false},
		{"same host other port", "https://docs.example.com:8443", "docs.example.com", false},
		{"same host authority port", "https://docs.example.com", "docs.example.com:443", false},
		{"same host other scheme", "http://docs.example.com", "docs.example.com", false},
		{"same host case", "https://DOCS.example.com", "Docs.Example.Com", false},
		{"same host trailing dot", "https://docs.example.com.", "docs.example.com", false},
		{"same host trailing dot authority", "https://docs.example.com", "docs.example.com.:443", false},
		{"same ipv6", "http://[::1]:8080", "[::1]:8080", false},
		{"other host", "https://app.example.com", "docs.example.com", true},
		{"subdomain", "https://eu.docs.example.com", "docs.example.com", true},
		{"unparseable origin", "null", "docs.example.com", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, _, err := hostname.ParseAuthority(tt.authority)
			if err != nil {
				t.Fatal(err)
			}
			if got := CORSHeaders(tt.origin, host) != nil; got != tt.want {
				t.Fatalf("CORSHeaders(%q, %q) = %v, want headers %v", tt.origin, host, got, tt.want)
			}
		})
	}
}

func TestOriginMatchAllocs(t *testing.T) {
	m, _ := CompileOrigins([]string{"a.example", "*.example.com", "https://app.example.org"})
	for _, origin := range []string{"https://x.y.example.com", "https://app.example.org", "https://nope.example.net"} {
		allocs := testing.AllocsPerRun(100, func() { m.MatchString(origin) })
		if allocs != 0 {
			t.Errorf("MatchString(%q) allocates %v times", origin, allocs)
		}
	}
}

// FuzzOriginMatch checks the origin parser and matcher on arbitrary input: no panics, a
// parsed origin is canonical (it parses again to itself), a suffix pattern never matches its
// bare suffix, and a match implies a simple reference rule.
func FuzzOriginMatch(f *testing.F) {
	for _, s := range []string{
		"https://app.example.com", "http://example.com", "https://example.com.evil.net",
		"https://evil-example.com", "HTTPS://APP.EXAMPLE.COM.:443", "null", "https://Bücher.example",
		"http://[::1]:8080", "https://user@example.com", "https://app.example.com/", "ws://x",
		"http://127.0.0.1", "https://a..example.com", "https://xn--bcher-kva.example",
		"https://app.example.com\u3002", "https://app\uff0eexample.com", "https://\uff41pp.example.com",
	} {
		f.Add(s)
	}
	m, errs := CompileOrigins([]string{"*.example.com", "docs.example.org", "https://app.example.net:8443"})
	if len(errs) != 0 {
		f.Fatal(errs)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseOrigin(s)
		matched := m.MatchString(s)
		if err == nil && strings.ContainsFunc(s, func(r rune) bool { return r >= 0x80 }) {
			t.Fatalf("%q holds a non-ASCII character but parses: an Origin is never IDNA-mapped", s)
		}
		if err != nil {
			if matched {
				t.Fatalf("%q does not parse but matches", s)
			}
			return
		}
		again, err := ParseOrigin(o.String())
		if err != nil || again != o {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v: not canonical", s, o, o.String(), again, err)
		}
		if o.Host == "example.com" && matched {
			t.Fatalf("%q: the bare suffix matched *.example.com", s)
		}
		ref := strings.HasSuffix(o.Host, ".example.com") || o.Host == "docs.example.org" ||
			(o.Scheme == "https" && o.Host == "app.example.net" && o.Port == 8443)
		if matched != ref {
			t.Fatalf("%q (%+v): match %v, reference %v", s, o, matched, ref)
		}
	})
}
