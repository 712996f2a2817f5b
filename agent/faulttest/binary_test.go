package faulttest

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// agentBinary builds tokenagent once per test binary.
func agentBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "faulttest-bin-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "tokenagent")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/tokenagent").CombinedOutput()
		if err != nil {
			binErr = &buildError{err: err, out: string(out)}
		}
	})
	if binErr != nil {
		t.Fatalf("building tokenagent: %v", binErr)
	}
	return binPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// process is the built agent running as a child process.
type process struct {
	cmd      *exec.Cmd
	grpc     string
	http     string
	dir      string
	cfgPath  string
	mu       sync.Mutex
	logLines []map[string]any
	logDone  chan struct{}
	exited   chan error
}

// fileKeys is the key file of the binary tests: the docs site's Auth Token key and k1..k9.
func fileKeys() string {
	var b strings.Builder
	b.WriteString("sites:\n  docs:\n    authtoken:\n      - {key: \"" + base64.StdEncoding.EncodeToString(authKey) +
		"\", created: \"2026-01-01T00:00:00Z\"}\n    server-tokens:\n")
	for i := 1; i <= 9; i++ {
		k := "k" + strconv.Itoa(i)
		b.WriteString("      " + k + ": {secret: \"secret-" + k + "\"}\n")
	}
	return b.String()
}

// startBinary runs `tokenagent serve` on cfgYAML (with the key file above), waits until it
// says where it serves, and collects its JSON log lines.
func startBinary(t *testing.T, cfgYAML string, args ...string) *process {
	t.Helper()
	bin := agentBinary(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "keys.yaml"), fileKeys())
	cfgPath := filepath.Join(dir, "tokenagent.yaml")
	writeFile(t, cfgPath, cfgYAML)
	cmd := exec.Command(bin, append([]string{"serve", "--config", cfgPath, "--grpc-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, dir: dir, cfgPath: cfgPath, logDone: make(chan struct{}), exited: make(chan error, 1)}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.logDone
	})
	lines := bufio.NewScanner(stderr)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	for p.grpc == "" && lines.Scan() {
		var rec map[string]any
		if json.Unmarshal(lines.Bytes(), &rec) == nil && rec["msg"] == "tokenagent serving" {
			p.grpc, _ = rec["grpc"].(string)
			p.http, _ = rec["http"].(string)
		}
	}
	if p.grpc == "" {
		t.Fatal("the agent never said where it serves")
	}
	go func() {
		defer close(p.logDone)
		for lines.Scan() {
			var rec map[string]any
			// Denials are logged one line each; no test reads them, and a soak makes many.
			if json.Unmarshal(lines.Bytes(), &rec) == nil && rec["msg"] != "denied" {
				p.mu.Lock()
				p.logLines = append(p.logLines, rec)
				p.mu.Unlock()
			}
		}
		p.exited <- cmd.Wait()
	}()
	return p
}

// logs returns the log lines whose msg is msg.
func (p *process) logs(msg string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, r := range p.logLines {
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

func (p *process) client(t *testing.T) authv3.AuthorizationClient {
	t.Helper()
	conn, err := grpc.NewClient(p.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// metric reads one unlabelled sample from the process's /metrics.
func (p *process) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

// TestSIGTERMUnderLoad sends SIGTERM to the built agent while a fixed number of checks are in
// flight, and accounts for every check the client started: each gets a CheckResponse, or a
// gRPC Unavailable because the agent no longer accepted it (its listener closed, or the
// connection's GOAWAY refused the stream) — none is lost mid-flight. The agent logs every
// decision (log.allow_sample: 1) with its id, and the ids it logged are exactly the ids the
// client received: no check was decided and then dropped. The process exits 0.
func TestSIGTERMUnderLoad(t *testing.T) {
	p := startBinary(t, `
keys: {source: file, file: keys.yaml}
log: {allow_sample: 1}
sites:
  - id: docs
    hosts: [docs.example.com]
    routes:
      - {path: "/private/*", require: user}
`, "--config-poll", "0")
	c := p.client(t)
	const workers = 16
	var started, answered, refused atomic.Int64
	var mu sync.Mutex
	ids := map[string]bool{}
	var lost []string
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				var req *authv3.CheckRequest
				if i%2 == 0 {
					req = serverCheck("k1", "42")
				} else {
					req = authTokenCheck("7")
				}
				started.Add(1)
				resp, err := c.Check(context.Background(), req)
				switch {
				case err == nil && codes.Code(resp.GetStatus().GetCode()) == codes.OK:
					answered.Add(1)
					mu.Lock()
					ids[resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue()] = true
					mu.Unlock()
				case status.Code(err) == codes.Unavailable:
					refused.Add(1)
					return // the agent is gone: this worker is done
				default:
					mu.Lock()
					lost = append(lost, (result{err: err, resp: resp}).String())
					mu.Unlock()
					return
				}
			}
		}()
	}
	eventually(t, "2000 checks answered before SIGTERM", func() bool { return answered.Load() >= 2000 })
	atSignal := answered.Load()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	var exitErr error
	select {
	case exitErr = <-p.exited:
	case <-time.After(60 * time.Second):
		t.Fatal("the agent did not exit after SIGTERM")
	}
	if exitErr != nil {
		t.Errorf("exit after SIGTERM: %v, want status 0", exitErr)
	}
	<-p.logDone
	for _, l := range lost {
		t.Errorf("a check neither answered nor refused: %s", l)
	}
	if s, a, r := started.Load(), answered.Load(), refused.Load(); s != a+r {
		t.Errorf("started %d checks, %d answered + %d refused = %d", s, a, r, a+r)
	}
	logged := map[string]bool{}
	for _, rec := range p.logs("allowed") {
		id, _ := rec["decision_id"].(string)
		logged[id] = true
	}
	if len(logged) != len(ids) {
		t.Errorf("the agent logged %d decisions, the client received %d", len(logged), len(ids))
	}
	for id := range logged {
		if !ids[id] {
			t.Errorf("decision %s was made but its answer never reached the client", id)
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("RESULT sigterm: %d checks started by %d concurrent clients, %d answered (%d of them after SIGTERM was sent), %d refused before being accepted (gRPC Unavailable), 0 lost; %d decisions logged = answered; exit status 0",
		started.Load(), workers, answered.Load(), answered.Load()-atSignal, refused.Load(), len(logged))
}

// TestSIGHUPReloadsUnderLoad reloads the built agent's config with SIGHUP while checks run,
// alternating two good configs (an anonymous request to /private/x is 401 under one and
// allowed under the other) and bad ones (invalid YAML, an invalid field). No check fails (no
// gRPC error, and a server token is allowed throughout); each good reload switches the
// decision, each bad one leaves the previous config deciding; the reload counters agree.
func TestSIGHUPReloadsUnderLoad(t *testing.T) {
	const strict = `
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com]
    routes:
      - {path: "/private/*", require: user}
`
	const open = `
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com]
`
	bad := []string{"sites: [\n  - id: docs\n", strict + "    authtoken_ttl: -5s\n", strings.Replace(strict, "require: user", "require: admin", 1)}
	p := startBinary(t, strict, "--config-poll", "0")
	c := p.client(t)

	// The anonymous check's outcome names the config deciding: "strict" (401
	// authentication_required) or "open" (allowed).
	configOf := func(r result) string {
		switch {
		case r.err == nil && r.code == codes.OK:
			return "open"
		case r.err == nil && r.code == codes.Unauthenticated && r.reason == "authentication_required":
			return "strict"
		}
		return r.String()
	}
	var accept atomic.Value
	accept.Store(map[string]bool{"strict": true})
	anon := envoyRequest("GET", "docs.example.com", "/private/x", nil)
	next := func(_, i int) *authv3.CheckRequest {
		if i%2 == 0 {
			return serverCheck("k1", "42")
		}
		return anon
	}
	judge := func(_ string, r result) string {
		if r.err != nil {
			return "check failed: " + r.String()
		}
		if upstreamHeader(r.resp, "x-auth-kind") == "server" {
			return ""
		}
		if o := configOf(r); !accept.Load().(map[string]bool)[o] {
			return "outcome " + o
		}
		return ""
	}
	l := startLoad(t, c, 4, next, judge)
	l.setPhase(t, "strict", 200)
	reload := func(cfg string) {
		t.Helper()
		writeFile(t, p.cfgPath, cfg)
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	good, errs := 0, 0
	for round := 0; round < 3; round++ {
		for _, to := range []string{"open", "strict"} {
			from := map[string]string{"open": "strict", "strict": "open"}[to]
			accept.Store(map[string]bool{from: true, to: true})
			cfg := strict
			if to == "open" {
				cfg = open
			}
			reload(cfg)
			good++
			l.setPhase(t, "reloading to "+to, 1)
			eventually(t, "the reload to "+to+" decides", func() bool {
				return configOf(check(context.Background(), c, anon)) == to
			})
			// Phase first, then the narrower outcomes: a check still running under the old
			// config spans the change and is not judged.
			l.phase.Store(to)
			accept.Store(map[string]bool{to: true})
			l.waitPhase(t, to, 200)

			// A bad file: refused, the config just loaded keeps deciding.
			reload(bad[(2*round+len(to))%len(bad)])
			errs++
			eventually(t, "the bad config refused", func() bool {
				return p.metric(t, "tokenagent_config_reload_errors_total") == float64(errs)
			})
			l.setPhase(t, to+" after a bad reload", 200)
		}
	}
	counts := l.finish(t)
	if n := p.metric(t, "tokenagent_config_reloads_total"); n != float64(good) {
		t.Errorf("tokenagent_config_reloads_total = %v, want %d", n, good)
	}
	if t.Failed() {
		return
	}
	t.Logf("RESULT sighup: %d checks during %d good and %d bad reloads by SIGHUP; 0 failed; every good reload switched the decision, every bad one kept the previous config",
		sum(counts), good, errs)
}
