package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
)

// TestRunSmall runs one small measurement end to end (a real Vault dev server, two real agent
// processes): every check of a known key is allowed, and a result comes back per agent with the
// model's figure. The measured rate is printed, never judged: it is a timing.
func TestRunSmall(t *testing.T) {
	o := Options{Sites: 1, Keys: 3, Unknown: 1, Agents: 2, Concurrency: 2, Refresh: time.Second,
		Duration: time.Second, Bin: daemontest.Binary(t)}
	res, err := Run(context.Background(), o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 {
		t.Fatalf("%d results, want one per agent", len(res))
	}
	for _, r := range res {
		if r.Checks <= 0 || r.Model != 8 { // 1 site × (3 + 1) records × 2 / 1 s
			t.Errorf("agent %d: %+v", r.Agent, r)
		}
	}
	var out bytes.Buffer
	Report(&out, o, res)
	if !strings.Contains(out.String(), "| 1 |") || !strings.Contains(out.String(), "| 2 |") {
		t.Errorf("report:\n%s", out.String())
	}
	t.Log("\n" + out.String())
}
