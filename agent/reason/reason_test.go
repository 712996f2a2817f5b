package reason

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
)

// TestReasonsAreDocumented ties the closed list to agent/README.md: every reason has a status of
// SPEC §4, a text, and a row in agent/README.md's reasons table.
func TestReasonsAreDocumented(t *testing.T) {
	readme, err := os.ReadFile("../README.md") // agent/README.md: the reasons table
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[int]bool{400: true, 401: true, 403: true, 404: true, 413: true, 503: true}
	seen := map[Reason]bool{}
	for _, r := range All() {
		if seen[r] {
			t.Errorf("%s listed twice", r)
		}
		seen[r] = true
		if !allowed[r.Status()] {
			t.Errorf("%s has status %d, not one of SPEC §4", r, r.Status())
		}
		if _, ok := table[r]; !ok || r.Text() == "" {
			t.Errorf("%s has no status and text of its own", r)
		}
		if !strings.Contains(string(readme), "| `"+string(r)+"` |") {
			t.Errorf("%s is missing from agent/README.md's reasons table", r)
		}
	}
	if len(table) != len(All()) {
		t.Errorf("All() has %d reasons, the table %d", len(All()), len(table))
	}
}

func TestErrorHelpers(t *testing.T) {
	e := Newf(UserRestricted, "only as its user")
	if e.HTTPStatus() != http.StatusForbidden || e.Description() != "only as its user" || e.Error() != "user_restricted: only as its user" {
		t.Errorf("error = %v %d %q", e, e.HTTPStatus(), e.Description())
	}
	wrapped := fmt.Errorf("context: %w", New(BadSignature))
	if got := From(wrapped); got.Reason != BadSignature {
		t.Errorf("From(wrapped) = %v", got)
	}
	internal := From(errors.New("disk on fire"))
	if internal.Reason != KeysUnavailable || internal.HTTPStatus() != 503 || internal.Headers["Retry-After"] == "" {
		t.Errorf("an internal error does not fail closed: %+v", internal)
	}
	if strings.Contains(internal.Description(), "disk") {
		t.Error("an internal cause leaks into the description")
	}
	if From(nil) != nil {
		t.Error("From(nil) != nil")
	}
}
