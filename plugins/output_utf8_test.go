package plugins

import (
	"strings"
	"testing"
)

// TestDecodeOutputHeaderNotUTF8 is the regression test of a finding of the hardening review: a
// policy's output header value (upstream or response) holding bytes that are not UTF-8 was
// accepted, and the agent put it into the CheckResponse, which gRPC cannot marshal (a proto3
// string must be UTF-8): the check failed with a gRPC Internal error instead of a decision. Such
// an output is now malformed (policy_error, fail closed), like a control character.
func TestDecodeOutputHeaderNotUTF8(t *testing.T) {
	for _, o := range []rawOutput{
		{version: 1, flags: 1, headers: [][2]string{{"x-site-role", "\xff"}}},
		{version: 1, status: 403, reason: "no", resp: [][2]string{{"x-why", "caf\xc3"}}},
	} {
		if _, err := decodeOutput(o.bytes()); err == nil || !strings.Contains(err.Error(), "UTF-8") {
			t.Errorf("decodeOutput(%+v) = %v, want an error about UTF-8", o, err)
		}
	}
	if out, err := decodeOutput(rawOutput{version: 1, flags: 1, headers: [][2]string{{"x-site-role", "rédacteur"}}}.bytes()); err != nil ||
		out.Headers["x-site-role"] != "rédacteur" {
		t.Errorf("a UTF-8 value: %+v, %v", out, err)
	}
}
