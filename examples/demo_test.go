package examples_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDevDemo runs the README's first command, examples/dev/demo.sh, and checks that the agent
// it starts answers each request as the script says.
func TestDevDemo(t *testing.T) {
	out, err := exec.Command("bash", "dev/demo.sh").CombinedOutput()
	if err != nil {
		t.Fatalf("demo.sh: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{
		`{"ready":true}`,
		"upstream header  x-auth-kind: anonymous",
		"upstream header  x-auth-user: =alice",
		"upstream header  x-auth-user: 42",
		"removed header   x-auth-admin",
		"x-auth-reason: authentication_required",
		"x-auth-reason: bad_signature",
		"x-auth-reason: unknown_site",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	if n := strings.Count(s, "\n    ALLOW"); n != 3 {
		t.Errorf("%d requests allowed, want 3:\n%s", n, s)
	}
}
