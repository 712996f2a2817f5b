package output

import (
	"strings"
	"testing"
)

func TestCheckHeader(t *testing.T) {
	tests := []struct {
		name, value, err string
	}{
		{"x-policy", "ok", ""},
		{"x-policy", "tab\tok", ""},
		{"", "v", "bytes"},
		{strings.Repeat("a", MaxHeaderNameBytes+1), "v", "bytes"},
		{"X-Upper", "v", "lower-case"},
		{"x y", "v", "lower-case"},
		{"x-auth-user", "v", "x-auth-"},
		{"x_auth_user", "v", "x-auth-"},
		{"X_AUTH_USER", "v", "lower-case"},
		{"host", "v", "reserved"},
		{"set-cookie", "v", "reserved"},
		{"x-policy", "a\nb", "control"},
		{"x-policy", "a\x7fb", "control"},
		{"x-policy", "\xff", "UTF-8"},
		{"x-policy", strings.Repeat("v", MaxHeaderValueBytes+1), "over"},
	}
	for _, tc := range tests {
		err := CheckHeader("header", []byte(tc.name), []byte(tc.value))
		if tc.err == "" {
			if err != nil {
				t.Errorf("%q: %q refused: %v", tc.name, tc.value, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: %q: %v, want an error about %q", Truncate([]byte(tc.name)), Truncate([]byte(tc.value)), err, tc.err)
		}
	}
}

func TestSanitizeAndReason(t *testing.T) {
	if got := Sanitize([]byte("a\nb\xffc")); got != "a\uFFFDb\uFFFDc" {
		t.Errorf("Sanitize = %q", got)
	}
	long := strings.Repeat("é", MaxReasonBytes) // two bytes each
	r := Reason(long)
	if len(r) > MaxReasonBytes || !strings.HasPrefix(long, r) || len(r) < MaxReasonBytes-1 {
		t.Errorf("Reason cut to %d bytes (%q...), want at most %d at a character boundary", len(r), r[:8], MaxReasonBytes)
	}
	if got := Truncate([]byte(strings.Repeat("x", 100))); len(got) != 67 {
		t.Errorf("Truncate: %d bytes", len(got))
	}
}
