package hostname

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestParseAuthority(t *testing.T) {
	tests := []struct {
		in   string
		host string
		port uint16
		err  error
	}{
		{"docs.example.com", "docs.example.com", 0, nil},
		{"Docs.Example.COM.:8443", "docs.example.com", 8443, nil},
		{"127.0.0.1:80", "127.0.0.1", 80, nil},
		{"[::1]:9191", "[::1]", 9191, nil},
		{"[0:0:0::1]", "[::1]", 0, nil},
		{"bücher.example", "", 0, ErrNotASCII},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", 0, nil},
		{"docs.example.com\u3002", "", 0, ErrNotASCII},               // ideographic full stop
		{"docs\uff0eexample.com", "", 0, ErrNotASCII},                // fullwidth full stop
		{"\uff44\uff4f\uff43\uff53.example.com", "", 0, ErrNotASCII}, // fullwidth letters
		{"docs.example.com\u3002:443", "", 0, ErrNotASCII},
		{"docs.exam\u00adple.com", "", 0, ErrNotASCII}, // soft hyphen, which IDNA drops
		{"docs.example.com\xff", "", 0, ErrNotASCII},   // not UTF-8 either
		{"under_score.example", "under_score.example", 0, nil},
		{"docs.example.com:65535", "docs.example.com", 65535, nil},
		{"", "", 0, ErrHost},
		{":443", "", 0, ErrHost},
		{"docs.example.com:", "", 0, ErrPort},
		{"docs.example.com:0", "", 0, ErrPort},
		{"docs.example.com:080", "", 0, ErrPort},
		{"docs.example.com:65536", "", 0, ErrPort},
		{"docs.example.com:1:2", "", 0, ErrPort},
		{"docs.example.com:+80", "", 0, ErrPort},
		{"docs.example.com:1@evil.example.com", "", 0, ErrSyntax},
		{"user@docs.example.com", "", 0, ErrSyntax},
		{"docs.example.com/x", "", 0, ErrSyntax},
		{"docs.example.com?x", "", 0, ErrSyntax},
		{"docs.example.com#x", "", 0, ErrSyntax},
		{"docs.example.com x", "", 0, ErrSyntax},
		{"docs.example.com\t", "", 0, ErrSyntax},
		{"docs%2eexample.com", "", 0, ErrSyntax},
		{`docs.example.com\x`, "", 0, ErrSyntax},
		{"docs..example.com", "", 0, ErrHost},
		{".docs.example.com", "", 0, ErrHost},
		{"[::1", "", 0, ErrHost},
		{"[fe80::1%25eth0]", "", 0, ErrSyntax},
		{"[docs.example.com]", "", 0, ErrHost},
		{"[::1]x", "", 0, ErrSyntax},
		{strings.Repeat("a", 64) + ".example", "", 0, ErrHost},
	}
	for _, tc := range tests {
		host, port, err := ParseAuthority(tc.in)
		if !errors.Is(err, tc.err) || host != tc.host || port != tc.port {
			t.Errorf("ParseAuthority(%q) = %q, %d, %v; want %q, %d, %v", tc.in, host, port, err, tc.host, tc.port, tc.err)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _, _, _ = ParseAuthority("docs.example.com:443") }); n != 0 {
		t.Errorf("ParseAuthority of a canonical host allocates %v times", n)
	}
}

// TestParseConfigAuthority: what an operator writes may be Unicode and becomes its A-label;
// the rest of the syntax is the request form's.
func TestParseConfigAuthority(t *testing.T) {
	tests := []struct {
		in   string
		host string
		port uint16
		err  error
	}{
		{"bücher.example", "xn--bcher-kva.example", 0, nil},
		{"Bücher.Example.:8443", "xn--bcher-kva.example", 8443, nil},
		{"docs.example.com", "docs.example.com", 0, nil},
		{"docs.example.com\xff", "", 0, ErrHost},
		{"user@bücher.example", "", 0, ErrSyntax},
		{"bücher.example:0", "", 0, ErrPort},
	}
	for _, tc := range tests {
		host, port, err := ParseConfigAuthority(tc.in)
		if !errors.Is(err, tc.err) || host != tc.host || port != tc.port {
			t.Errorf("ParseConfigAuthority(%q) = %q, %d, %v; want %q, %d, %v", tc.in, host, port, err, tc.host, tc.port, tc.err)
		}
	}
}

func TestIsIP(t *testing.T) {
	for h, want := range map[string]bool{"[::1]": true, "127.0.0.1": true, "a.b.1": true, "docs.example.com": false,
		"1.example.com": false, "": false} {
		if got := IsIP(h); got != want {
			t.Errorf("IsIP(%q) = %v, want %v", h, got, want)
		}
	}
}

// FuzzParseAuthority checks ParseAuthority against its definition: an accepted authority holds
// none of the characters an authority cannot, its host is canonical (Canonical returns it
// unchanged) and its port is the number written after the host; and the canonical form reads
// back the same.
func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"docs.example.com", "DOCS.example.com.:8443", "[::1]:80", "a:1@b", "x:0", "x:",
		"bücher.example", "[fe80::1%25eth0]", "a..b", "a/b", "127.0.0.1:65535",
		"docs.example.com\u3002", "docs\uff0eexample.com", "\uff44\uff4f\uff43\uff53.example.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, a string) {
		host, port, err := ParseAuthority(a)
		if err != nil {
			return
		}
		if strings.ContainsAny(a, "@/?#\\% \t\r\n\x00") {
			t.Fatalf("ParseAuthority(%q) accepted a character an authority cannot hold", a)
		}
		for i := 0; i < len(a); i++ {
			if a[i] >= 0x80 {
				t.Fatalf("ParseAuthority(%q) accepted a non-ASCII byte: a request's host is never IDNA-mapped", a)
			}
		}
		if c, err := Canonical(host); err != nil || c != host {
			t.Fatalf("host %q of %q is not canonical: %q, %v", host, a, c, err)
		}
		if port != 0 {
			i := strings.LastIndexByte(a, ':')
			if n, err := strconv.Atoi(a[i+1:]); err != nil || n != int(port) {
				t.Fatalf("port %d of %q", port, a)
			}
		}
		back := host
		if port != 0 {
			back += ":" + strconv.Itoa(int(port))
		}
		if h2, p2, err := ParseAuthority(back); err != nil || h2 != host || p2 != port {
			t.Fatalf("%q reads back as %q, %d, %v", back, h2, p2, err)
		}
	})
}
