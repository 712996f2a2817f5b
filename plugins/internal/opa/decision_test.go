package opa

import (
	"encoding/json"
	"strings"
	"testing"
)

// The decision rules of SPEC §5a, and the refusals.
func TestReadDecision(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Decision
		err  string
	}{
		{`[]`, Decision{Status: 403, Reason: "the policy's decision is undefined"}, ""},
		{`[{"result": true}]`, Decision{Allow: true}, ""},
		{`[{"result": false}]`, Decision{Status: 403}, ""},
		{`[{"result": {"allowed": true, "headers": {"X-A": "1", "x-b": ["2", "3"]}}}]`, Decision{Allow: true, Headers: map[string]string{"x-a": "1", "x-b": "2, 3"}}, ""},
		{`[{"result": {"allowed": false, "http_status": 429, "body": "slow down", "headers": {"retry-after": "5"}}}]`,
			Decision{Status: 429, Reason: "slow down", Headers: map[string]string{"retry-after": "5"}}, ""},
		{`[{"result": {"allowed": false, "body": "` + strings.Repeat("é", 200) + `"}}]`, Decision{Status: 403, Reason: strings.Repeat("é", 128)}, ""},
		{`[{"result": {"allowed": true, "headers": {"x-auth-user": "1"}}}]`, Decision{}, "x-auth-"},
		{`[{"result": {"allowed": true, "headers": {"X_Auth_User": "1"}}}]`, Decision{}, "x-auth-"},
		{`[{"result": {"allowed": true, "headers": {"host": "evil"}}}]`, Decision{}, "reserved"},
		{`[{"result": {"allowed": true, "headers": {"x-a": "a\nb"}}}]`, Decision{}, "control"},
		{`[{"result": {"allowed": true, "headers": {"x-a": 1}}}]`, Decision{}, "string"},
		{`[{"result": {"allowed": false, "http_status": 200}}]`, Decision{}, "400..599"},
		{`[{"result": {"headers": {}}}]`, Decision{}, "allowed"},
		{`[{"result": "yes"}]`, Decision{}, "neither"},
		{`{}`, Decision{}, "array"},
	} {
		got, err := ReadDecision([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want an error about %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !equalDecision(got, tc.want) {
			t.Errorf("%s:\n got  %+v %v\n want %+v", tc.in, got, err, tc.want)
		}
	}
}

func equalDecision(a, b Decision) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// FuzzReadDecision: any result a module returns is a decision or an error, never a panic,
// and an allowed decision never sets an x-auth-* header.
func FuzzReadDecision(f *testing.F) {
	f.Add([]byte(`[{"result": {"allowed": true, "headers": {"x-a": ["1"]}}}]`))
	f.Add([]byte(`[{"result": true}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := ReadDecision(b)
		if err != nil {
			return
		}
		for name := range out.Headers {
			if strings.HasPrefix(strings.ReplaceAll(strings.ToLower(name), "_", "-"), "x-auth-") {
				t.Fatalf("header %q allowed", name)
			}
		}
		if !out.Allow && (out.Status < 400 || out.Status > 599) {
			t.Fatalf("a denial with status %d", out.Status)
		}
	})
}
