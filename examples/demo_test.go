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
		"shadow mode: enforce would deny (authentication_required)",
		"removed header   x-auth-user",
		`tokenagent_shadow_denials_total{reason="authentication_required",site="trial"} 1`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	if n := strings.Count(s, "\n    ALLOW"); n != 4 {
		t.Errorf("%d requests allowed, want 4 (one of them by the shadow-mode site):\n%s", n, s)
	}
}
