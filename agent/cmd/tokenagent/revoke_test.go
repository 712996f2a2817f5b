package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/fleet"
	"github.com/tokenagent/tokenagent/agent/fleet/redistest"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
)

// TestRevokeCommands: two real agents on one Redis; a user revoked with `tokenagent revoke`
// run against agent A's config is refused by agent B while B serves 2,000 checks a second;
// `tokenagent revocations` lists the entries without printing a token; the command's mistakes
// are refused.
func TestRevokeCommands(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	dir := t.TempDir()
	daemontest.WriteFile(t, filepath.Join(dir, "keys.yaml"), "sites:\n  docs: {server-tokens: {k1: {secret: \"s3cret\"}}}\n")
	cfg := func(name string) string {
		p := filepath.Join(dir, name)
		daemontest.WriteFile(t, p, fmt.Sprintf("keys: {source: file, file: keys.yaml}\n"+
			"revocation: {store: redis, redis: {address: %q}}\nsites:\n  - {id: docs, hosts: [docs.example.com]}\n", srv.Addr))
		return p
	}
	cfgA, cfgB := cfg("a.yaml"), cfg("b.yaml")
	_ = daemontest.StartProcess(t, cfgA, nil)
	b := daemontest.StartProcess(t, cfgB, nil)
	client := b.Client(t)
	mint := func(user string, at time.Time) string {
		return token.MintServerToken("k1", vault.NewSecret([]byte("s3cret")), user, at)
	}
	ask := func(tok string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := client.Check(ctx, daemontest.CheckRequest("GET", "docs.example.com", "/", map[string]string{"x-deki-token": tok}))
		if err != nil {
			return "rpc error: " + err.Error()
		}
		return daemontest.Reason(resp)
	}
	old := mint("42", time.Now().Add(-10*time.Second))
	if got := ask(old); got != "allowed" {
		t.Fatalf("before the revocation: %s", got)
	}

	// B under load: 2,000 checks a second of other users' tokens, on a fixed schedule.
	ctx, stop := context.WithCancel(context.Background())
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for n := 0; ctx.Err() == nil; {
			<-tick.C
			for range 2 {
				n++
				tok := mint(fmt.Sprintf("=load%d", n%100), time.Now())
				wg.Go(func() {
					if ask(tok) != "allowed" {
						failed.Add(1)
					}
					sent.Add(1)
				})
			}
		}
	})
	t.Cleanup(func() { stop(); wg.Wait() })
	daemontest.Eventually(t, "a second of load on agent B", func() bool { return sent.Load() >= 2000 })

	code, out, errOut := runCLI("revoke", "--config", cfgA, "--site", "docs", "--user", "42")
	revoked := time.Now()
	if code != 0 || !strings.Contains(out, "kind=user user=42") {
		t.Fatalf("revoke: %d %q %q", code, out, errOut)
	}
	daemontest.Eventually(t, "agent B refuses the revoked user", func() bool { return ask(old) == "revoked" })
	t.Logf("agent B refused the user %v after the command returned, under %d checks so far", time.Since(revoked).Round(time.Millisecond), sent.Load())
	if fresh := mint("42", time.Now().Add(2*time.Second)); ask(fresh) != "allowed" {
		t.Error("a token issued after the revocation is refused")
	}

	// A token by its file, and a client; listed without the token.
	leaked := mint("=alice", time.Now())
	tokFile := filepath.Join(dir, "leaked.txt")
	daemontest.WriteFile(t, tokFile, leaked+"\n")
	if code, out, errOut := runCLI("revoke", "--config", cfgA, "--site", "docs", "--token-file", tokFile); code != 0 ||
		strings.Contains(out, leaked) || !strings.Contains(out, fleet.TokenSubject(leaked)[:8]) {
		t.Fatalf("revoke --token-file: %d %q %q", code, out, errOut)
	}
	daemontest.Eventually(t, "the token refused", func() bool { return ask(leaked) == "revoked" })
	if code, _, errOut := runCLI("revoke", "--config", cfgA, "--site", "docs", "--client", "portal", "--before", "2026-12-01T00:00:00Z"); code != 0 {
		t.Fatalf("revoke --client: %d %q", code, errOut)
	}
	code, out, errOut = runCLI("revocations", "--config", cfgB, "--site", "docs")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || strings.Contains(out, leaked) || strings.Contains(out, fleet.TokenSubject(leaked)) ||
		!strings.Contains(out, "kind=client client=portal before=2026-12-01T00:00:00Z") {
		t.Fatalf("revocations: %d %q %q", code, out, errOut)
	}
	stop()
	wg.Wait()
	if failed.Load() > 0 {
		t.Errorf("%d of %d load checks (other users) were not allowed", failed.Load(), sent.Load())
	}

	// Mistakes.
	plain := filepath.Join(dir, "plain.yaml")
	daemontest.WriteFile(t, plain, "keys: {source: file, file: keys.yaml}\nsites:\n  - {id: docs, hosts: [docs.example.com]}\n")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"revoke", "--config", cfgA, "--site", "docs"}, 2, "exactly one"},
		{[]string{"revoke", "--config", cfgA, "--site", "docs", "--user", "1", "--client", "c"}, 2, "exactly one"},
		{[]string{"revoke", "--config", cfgA, "--user", "1"}, 2, "--site"},
		{[]string{"revoke", "--config", cfgA, "--site", "docs", "--user", "1", "--before", "yesterday"}, 2, "--before"},
		{[]string{"revoke", "--config", cfgA, "--site", "nosuch", "--user", "1"}, 1, "not a site"},
		{[]string{"revoke", "--config", plain, "--site", "docs", "--user", "1"}, 1, "no revocation list"},
		{[]string{"revoke", "--config", cfgA, "--site", "docs", "--token-file", filepath.Join(dir, "none")}, 1, "--token-file"},
		{[]string{"revocations", "--config", cfgA}, 2, "--site"},
	} {
		code, _, errOut := runCLI(tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d %q, want %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}
