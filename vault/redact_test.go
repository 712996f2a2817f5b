package vault

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://idp.example.com/jwks", "https://idp.example.com/jwks"},
		{"https://user:pw@idp.example.com/jwks", "https://redacted@idp.example.com/jwks"},
		{"https://tok3n@idp.example.com/jwks", "https://redacted@idp.example.com/jwks"},
		{"https://idp.example.com:8443/a%20b/jwks?access_token=s3cr3t&x=1&flag", "https://idp.example.com:8443/a%20b/jwks?access_token=redacted&x=redacted&flag"},
		{"https://u:p@idp.example.com/jwks?access_token=s3cr3t#frag=s3cr3t", "https://redacted@idp.example.com/jwks?access_token=redacted#redacted"},
		{"http://127.0.0.1:8200", "http://127.0.0.1:8200"},
		{"https://idp.example.com/jwks?", "https://idp.example.com/jwks?"},
		{"unix:///run/vault.sock", "unix:///run/vault.sock"},
		// Values that do not parse are redacted by their shape.
		{"https://u:s3cr3t@idp.example.com:badport/jwks?access_token=s3cr3t", "https://redacted@idp.example.com:badport/jwks?redacted"},
		{"https://idp.example.com/\x7f?access_token=s3cr3t", "https://idp.example.com/\x7f?redacted"},
		{"u:s3cr3t@idp.example.com:1:2", "redacted@idp.example.com:1:2"},
		{"", ""},
	}
	for _, tc := range tests {
		got := RedactURL(tc.in)
		if got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.Contains(got, "s3cr3t") || strings.Contains(got, "pw@") || strings.Contains(got, "tok3n") {
			t.Errorf("RedactURL(%q) = %q still holds the secret", tc.in, got)
		}
	}
}

func TestRedactURLError(t *testing.T) {
	err := error(&url.Error{Op: "Get", URL: "https://u:***@idp.example.com/jwks?access_token=s3cr3t", Err: errors.New("connection refused")})
	wrapped := RedactURLError(errors.Join(errors.New("fetch"), err))
	if s := wrapped.Error(); strings.Contains(s, "s3cr3t") || !strings.Contains(s, "access_token=redacted") {
		t.Errorf("RedactURLError: %q", s)
	}
	if RedactURLError(nil) != nil {
		t.Error("RedactURLError(nil) is not nil")
	}
}

// FuzzRedactURL: whatever the value, a password or query value placed in it never survives.
func FuzzRedactURL(f *testing.F) {
	for _, s := range []string{"https://u:p@h/x?a=b#c", "h:1", "u:p@h", "https://h/x?", "%zz://u:p@h"} {
		f.Add(s, "s3cr3tv4lue")
	}
	f.Fuzz(func(t *testing.T, raw, secret string) {
		if len(secret) < 8 || strings.ContainsAny(secret, "@?#/:&=%;[]") || strings.Contains(raw, secret) {
			return
		}
		for _, in := range []string{
			"https://user:" + secret + "@" + raw,
			"https://" + raw + "?access_token=" + secret,
			raw + "?a=" + secret,
			raw + "#" + secret,
		} {
			if strings.Contains(RedactURL(strings.Replace(in, secret, "", 1)), secret) {
				continue // the rest of the value spells the secret by itself (escaping, say)
			}
			if got := RedactURL(in); strings.Contains(got, secret) {
				t.Fatalf("RedactURL(%q) = %q keeps %q", in, got, secret)
			}
		}
	})
}
