package blocking_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/vault/blocking"
)

func TestAhead(t *testing.T) {
	blocking.Ahead(context.Background()) // no hook: nothing happens

	calls := 0
	ctx := blocking.With(context.Background(), func() { calls++ })
	blocking.Ahead(ctx)
	derived, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	blocking.Ahead(derived)
	if calls != 2 {
		t.Fatalf("the hook ran %d times, want 2 (directly and through a derived context)", calls)
	}
}

func ExampleWith() {
	ctx := blocking.With(context.Background(), func() {
		// The runner learns the work is about to wait: it hands the work on.
	})
	blocking.Ahead(ctx) // called by the code that waits, just before it does
}
