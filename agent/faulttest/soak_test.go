package faulttest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
)

// EnvSoak turns the soak test on; EnvSoakDuration and EnvSoakRate change its length (a Go
// duration, default 3m) and its rate (checks per second, default 500).
const (
	EnvSoak         = "TOKENAGENT_SOAK"
	EnvSoakDuration = "TOKENAGENT_SOAK_DURATION"
	EnvSoakRate     = "TOKENAGENT_SOAK_RATE"
)

// soakSample is one measurement of the agent process.
type soakSample struct {
	at         time.Duration
	rssKiB     int64
	goroutines int64
	fds        int64
	checks     int64
}

// TestSoak runs the built agent at a fixed rate of checks for a few minutes — every
// credential kind, valid and forged, anonymous, unknown keys, and a new gRPC connection every
// 200 checks — and samples the process every 5 s: resident memory (/proc/PID/status VmRSS),
// goroutines (/metrics go_goroutines) and open file descriptors (/proc/PID/fd). After a
// 30 s warm-up each must stay flat: bounded growth over the warm-up's last sample (generous
// bounds, no timing). Every check must get its expected decision.
//
// It runs only with TOKENAGENT_SOAK=1 (it takes minutes):
//
//	TOKENAGENT_SOAK=1 go test ./agent/faulttest -run TestSoak -v -timeout 30m
func TestSoak(t *testing.T) {
	if os.Getenv(EnvSoak) != "1" {
		t.Skip("soak test: runs for minutes, so only with " + EnvSoak + "=1 (go test ./agent/faulttest -run TestSoak -v); see agent/faulttest/README.md")
	}
	duration := 3 * time.Minute
	if v := os.Getenv(EnvSoakDuration); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: %v", EnvSoakDuration, err)
		}
		duration = d
	}
	rate := 500
	if v := os.Getenv(EnvSoakRate); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("%s: %q is not a positive number", EnvSoakRate, v)
		}
		rate = n
	}
	const warmUp = 30 * time.Second
	if duration < 2*warmUp {
		t.Fatalf("%s must be at least %v", EnvSoakDuration, 2*warmUp)
	}

	p := startBinary(t, `
keys: {source: file, file: keys.yaml, refresh: 5s}
sites:
  - id: docs
    hosts: [docs.example.com]
    routes:
      - {path: "/private/*", require: user}
`, "--config-poll", "0")
	pid := p.Cmd.Process.Pid

	// The mix: what each check sends, and whether it must be allowed.
	type kind struct {
		name  string
		req   func(i int) *authv3.CheckRequest
		allow bool
	}
	forged := token.MintServerToken("k1", vault.NewSecret([]byte("not-the-secret")), "42", time.Now())
	mix := []kind{
		{"server", func(i int) *authv3.CheckRequest { return serverCheck(fmt.Sprintf("k%d", 1+i%9), "42") }, true},
		{"authtoken", func(i int) *authv3.CheckRequest { return authTokenCheck(strconv.Itoa(1 + i%1000)) }, true},
		{"anonymous", func(int) *authv3.CheckRequest {
			return daemontest.CheckRequest("GET", "docs.example.com", "/public", nil)
		}, true},
		{"anonymous on a user route", func(int) *authv3.CheckRequest {
			return daemontest.CheckRequest("GET", "docs.example.com", "/private/x", nil)
		}, false},
		{"forged", func(int) *authv3.CheckRequest {
			return daemontest.CheckRequest("GET", "docs.example.com", "/", map[string]string{"x-deki-token": forged})
		}, false},
		{"unknown key", func(i int) *authv3.CheckRequest {
			k := fmt.Sprintf("nokey%d", i%50) // a bounded set: negative cache entries, refreshed
			return daemontest.CheckRequest("GET", "docs.example.com", "/", map[string]string{
				"x-deki-token": token.MintServerToken(k, vault.NewSecret([]byte("x")), "1", time.Now())})
		}, false},
		{"unknown site", func(int) *authv3.CheckRequest { return daemontest.CheckRequest("GET", "nowhere.example.com", "/", nil) }, false},
	}

	newConn := func() (*grpc.ClientConn, authv3.AuthorizationClient) {
		conn, err := grpc.NewClient(p.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		return conn, authv3.NewAuthorizationClient(conn)
	}
	var (
		checks  atomic.Int64
		wrongMu sync.Mutex
		wrong   []string
	)
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	const workers = 4
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	work := make(chan int, workers)
	go func() { // the fixed rate: one check per tick, handed to a free worker (or skipped)
		defer close(work)
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				select {
				case work <- i:
				default:
				}
			}
		}
	}()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, c := newConn()
			defer func() { conn.Close() }()
			n := 0
			for i := range work {
				if n++; n%200 == 0 { // connection churn: a leak of connections or fds shows
					conn.Close()
					conn, c = newConn()
				}
				k := mix[i%len(mix)]
				r := check(context.Background(), c, k.req(i))
				checks.Add(1)
				if r.err != nil || r.ok() != k.allow {
					wrongMu.Lock()
					if len(wrong) < 20 {
						wrong = append(wrong, k.name+": "+r.String())
					}
					wrongMu.Unlock()
				}
			}
		}()
	}

	var samples []soakSample
	start := time.Now()
	sample := func() {
		samples = append(samples, soakSample{at: time.Since(start).Round(time.Second), rssKiB: procRSS(t, pid),
			goroutines: int64(p.Metric(t, "go_goroutines")), fds: procFDs(t, pid), checks: checks.Load()})
	}
	sample()
	every := time.NewTicker(5 * time.Second)
	defer every.Stop()
	for done := false; !done; {
		select {
		case <-every.C:
			sample()
		case <-ctx.Done():
			done = true
		}
	}
	wg.Wait()
	sample()

	var table strings.Builder
	fmt.Fprintf(&table, "%8s %10s %10s %5s %9s\n", "t", "RSS MiB", "goroutines", "fds", "checks")
	for _, s := range samples {
		fmt.Fprintf(&table, "%8s %10.1f %10d %5d %9d\n", s.at, float64(s.rssKiB)/1024, s.goroutines, s.fds, s.checks)
	}
	t.Logf("samples:\n%s", table.String())
	for _, w := range wrong {
		t.Errorf("wrong decision: %s", w)
	}

	// Flat after the warm-up: every later sample within generous bounds of the warm-up's last.
	var base *soakSample
	for i := range samples {
		if samples[i].at <= warmUp {
			base = &samples[i]
		}
	}
	var maxRSS, maxG, maxFD int64
	for _, s := range samples {
		if s.at <= warmUp {
			continue
		}
		maxRSS, maxG, maxFD = max(maxRSS, s.rssKiB), max(maxG, s.goroutines), max(maxFD, s.fds)
	}
	if limit := base.rssKiB*3/2 + 32<<10; maxRSS > limit {
		t.Errorf("RSS grew from %d KiB after the warm-up to %d KiB (limit %d)", base.rssKiB, maxRSS, limit)
	}
	if limit := base.goroutines + 50; maxG > limit {
		t.Errorf("goroutines grew from %d after the warm-up to %d (limit %d)", base.goroutines, maxG, limit)
	}
	if limit := base.fds + 32; maxFD > limit {
		t.Errorf("open files grew from %d after the warm-up to %d (limit %d)", base.fds, maxFD, limit)
	}
	last := samples[len(samples)-1]
	t.Logf("RESULT soak: %d checks in %v (%d/s target, %.0f/s done) by %d clients with a new connection every 200 checks; after a %v warm-up: RSS %.1f → max %.1f MiB (end %.1f), goroutines %d → max %d (end %d), fds %d → max %d (end %d); wrong decisions %d",
		last.checks, duration, rate, float64(last.checks)/duration.Seconds(), workers, warmUp,
		float64(base.rssKiB)/1024, float64(maxRSS)/1024, float64(last.rssKiB)/1024, base.goroutines, maxG, last.goroutines,
		base.fds, maxFD, last.fds, len(wrong))
}

// procRSS is the process's resident set size in KiB (/proc/PID/status VmRSS).
func procRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// procFDs is the number of the process's open file descriptors (/proc/PID/fd).
func procFDs(t *testing.T, pid int) int64 {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(ents))
}
