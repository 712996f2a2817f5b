package fleet_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/fleet"
	"github.com/tokenagent/tokenagent/agent/fleet/redistest"
)

const sig = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newStore opens a store for a test. Unless the test sets one, the budget is 10 s, not the
// default 50 ms: only TestRedisDownAndSlow is about the budget, and on a busy machine a dial
// alone can take longer than 50 ms.
func newStore(t *testing.T, opts fleet.ReplayOptions) *fleet.ReplayStore {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet()
	}
	if opts.Budget == 0 {
		opts.Budget = 10 * time.Second
	}
	r, err := fleet.NewReplayStore(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// A token is a first use once, whatever the case of its hex signature; the key expires with the
// token's window; other sites and keys are other tokens.
func TestRedisFirstUse(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	reg := prometheus.NewRegistry()
	r := newStore(t, fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: srv.Addr}, Registerer: reg})
	ctx := context.Background()
	window := 3 * time.Minute
	expires := time.Now().Add(window)
	for _, tc := range []struct {
		site, key, sig string
		want           bool
	}{
		{"docs", "k1", sig, true},
		{"docs", "k1", sig, false},
		{"docs", "k1", strings.ToLower(sig), false}, // the same signature
		{"docs", "k2", sig, true},
		{"api", "k1", sig, true},
	} {
		got, err := r.FirstUse(ctx, tc.site, tc.key, tc.sig, expires)
		if err != nil || got != tc.want {
			t.Fatalf("FirstUse(%s, %s) = %v, %v; want %v", tc.site, tc.key, got, err, tc.want)
		}
	}
	admin := srv.Client(t)
	key := r.Key("docs", "k1", sig)
	if want := "tokenagent:replay:docs:k1:" + strings.ToLower(sig); key != want {
		t.Fatalf("key %q, want %q", key, want)
	}
	ttl, err := admin.PTTL(ctx, key).Result()
	if err != nil || ttl <= window-time.Minute || ttl > window {
		t.Fatalf("PTTL %v (%v), want the remaining window (just under %v)", ttl, err, window)
	}
	if n := metric(t, reg, "tokenagent_replay_store_requests_total", map[string]string{"result": "first_use"}); n != 3 {
		t.Errorf("first_use = %v, want 3", n)
	}
	if n := metric(t, reg, "tokenagent_replay_store_requests_total", map[string]string{"result": "replayed"}); n != 2 {
		t.Errorf("replayed = %v, want 2", n)
	}

	// The memory ends with the window: Redis expires the key itself.
	short := time.Now().Add(300 * time.Millisecond)
	if ok, err := r.FirstUse(ctx, "docs", "k9", sig, short); !ok || err != nil {
		t.Fatal(ok, err)
	}
	daemontest.Eventually(t, "Redis to expire the key with the window", func() bool {
		n, err := admin.Exists(ctx, r.Key("docs", "k9", sig)).Result()
		return err == nil && n == 0
	})
	if ok, err := r.FirstUse(ctx, "docs", "k9", sig, time.Now()); ok || err != nil {
		t.Fatalf("a token past its window: %v, %v (nothing to remember, not a first use)", ok, err)
	}
}

// metric reads the counter or gauge name{labels} from reg (-1 when absent).
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// Concurrent first uses of one token from many goroutines: exactly one wins.
func TestRedisFirstUseIsAtomic(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := newStore(t, fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: srv.Addr}})
	b := newStore(t, fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: srv.Addr}})
	var wins atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 50 {
		r := a
		if i%2 == 1 {
			r = b
		}
		wg.Go(func() {
			<-start
			ok, err := r.FirstUse(context.Background(), "docs", "k1", sig, time.Now().Add(time.Minute))
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if n := wins.Load(); n != 1 {
		t.Fatalf("%d first uses of one token, want 1", n)
	}
}

// Redis down, or too slow for the budget: an error (the verifier refuses with
// keys_unavailable), reported by Warnings; Redis back: answers again, with no restart.
func TestRedisDownAndSlow(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	// A budget of 1 s: far above what a busy machine needs, far below the pause below.
	r := newStore(t, fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: srv.Addr}, Budget: time.Second})
	ctx := context.Background()
	if _, err := r.FirstUse(ctx, "docs", "k1", sig, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if w := r.Warnings(); len(w) != 0 {
		t.Fatalf("warnings while Redis answers: %v", w)
	}

	// Slow: every write held by CLIENT PAUSE for longer than the budget (until UNPAUSE).
	admin := srv.Client(t)
	if err := admin.Do(ctx, "CLIENT", "PAUSE", "30000", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	_, err := r.FirstUse(ctx, "docs", "k2", sig, time.Now().Add(time.Minute))
	var ue *fleet.UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("a paused Redis: %v, want UnavailableError", err)
	}
	if err := admin.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
		t.Fatal(err)
	}

	// Down.
	srv.Kill()
	if _, err := r.FirstUse(ctx, "docs", "k3", sig, time.Now().Add(time.Minute)); !errors.As(err, &ue) {
		t.Fatalf("Redis down: %v, want UnavailableError", err)
	}
	if w := r.Warnings(); len(w) != 1 || !strings.Contains(w[0], "keys_unavailable") {
		t.Fatalf("warnings with Redis down: %v", w)
	}
	srv.Restart(t)
	daemontest.Eventually(t, "the store to answer after Redis restarts", func() bool {
		ok, err := r.FirstUse(ctx, "docs", "k4", sig, time.Now().Add(time.Minute))
		return err == nil && ok
	})
	if w := r.Warnings(); len(w) != 0 {
		t.Fatalf("warnings after recovery: %v", w)
	}
}

// With an ACL user allowed only SET, PING, INFO and WAIT on tokenagent:* keys (agent/token/README.md's ACL) and the
// password in a file; a wrong password fails every call.
func TestRedisACL(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{User: "tokenagent", Password: "s3cret-redis"})
	dir := t.TempDir()
	pw := filepath.Join(dir, "redis-password")
	daemontest.WriteFile(t, pw, "s3cret-redis\n")
	r := newStore(t, fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: srv.Addr, Username: "tokenagent", PasswordFile: pw}})
	if ok, err := r.FirstUse(context.Background(), "docs", "k1", sig, time.Now().Add(time.Minute)); !ok || err != nil {
		t.Fatalf("with the ACL user: %v, %v", ok, err)
	}
	if w := r.Warnings(); len(w) != 0 {
		t.Fatalf("warnings: %v (PING must be allowed)", w)
	}
	bad := filepath.Join(dir, "wrong")
	daemontest.WriteFile(t, bad, "guess")
	wrong := newStore(t, fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: srv.Addr, Username: "tokenagent", PasswordFile: bad}})
	if _, err := wrong.FirstUse(context.Background(), "docs", "k2", sig, time.Now().Add(time.Minute)); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	// Outside the prefix the ACL refuses: the store never writes elsewhere.
	other := newStore(t, fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: srv.Addr, Username: "tokenagent", PasswordFile: pw, KeyPrefix: "other:"}})
	if _, err := other.FirstUse(context.Background(), "docs", "k1", sig, time.Now().Add(time.Minute)); err == nil {
		t.Fatal("the ACL let a key outside tokenagent:* be written")
	}
}

func TestNewReplayStoreRefuses(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	daemontest.WriteFile(t, empty, "\n")
	for _, tc := range []struct {
		name string
		opts fleet.ReplayOptions
		want string
	}{
		{"no address", fleet.ReplayOptions{}, "address"},
		{"missing password file", fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: "127.0.0.1:6379", PasswordFile: filepath.Join(dir, "none")}}, "password_file"},
		{"empty password file", fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: "127.0.0.1:6379", PasswordFile: empty}}, "empty"},
		{"sentinel with tls", fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: "127.0.0.1:26379", SentinelMaster: "m", TLS: true}}, "replay.redis.tls"},
		{"sentinel password without a master name", fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: "127.0.0.1:26379", SentinelPasswordFile: empty}}, "replay.redis.sentinel_password_file: needs sentinel_master"},
		{"missing sentinel password file", fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: "127.0.0.1:26379", SentinelMaster: "m", SentinelPasswordFile: filepath.Join(dir, "none")}}, "replay.redis.sentinel_password_file"},
		{"a sentinel address without a port", fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: "127.0.0.1:26379,sentinel2", SentinelMaster: "m"}}, "sentinel2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := fleet.NewReplayStore(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

// TLS to Redis: the server's certificate is checked against the given roots.
func TestRedisTLS(t *testing.T) {
	ca := daemontest.NewCA(t, "redis CA")
	crt, key := ca.Issue(t, "127.0.0.1", false)
	dir := t.TempDir()
	for name, b := range map[string][]byte{"redis.crt": crt, "redis.key": key, "ca.crt": ca.PEM()} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srv := redistest.Start(t, redistest.Options{CertFile: filepath.Join(dir, "redis.crt"), KeyFile: filepath.Join(dir, "redis.key"),
		CAFile: filepath.Join(dir, "ca.crt")})
	// A budget for a busy test machine: the first call makes the TLS connection.
	r := newStore(t, fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: srv.Addr, TLS: true, TLSConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}}, Budget: 5 * time.Second})
	if ok, err := r.FirstUse(context.Background(), "docs", "k1", sig, time.Now().Add(time.Minute)); !ok || err != nil {
		t.Fatalf("over TLS: %v, %v", ok, err)
	}
	untrusted := newStore(t, fleet.ReplayOptions{Redis: fleet.RedisOptions{Address: srv.Addr, TLS: true}, Budget: 5 * time.Second})
	if _, err := untrusted.FirstUse(context.Background(), "docs", "k2", sig, time.Now().Add(time.Minute)); err == nil {
		t.Fatal("a server of an untrusted CA was accepted")
	}
}
