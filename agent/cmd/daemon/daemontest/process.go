package daemontest

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// binary is the tokenagent binary built once per test binary (a memo of this test-support
// package, like plugintest's builds).
var binary struct {
	once sync.Once
	path string
	err  error
}

// Binary builds `tokenagent` once per test binary, into a directory that lives as long as the
// machine's temporary files, and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	binary.once.Do(func() {
		dir, err := os.MkdirTemp("", "daemontest-bin-")
		if err != nil {
			binary.err = err
			return
		}
		binary.path = filepath.Join(dir, "tokenagent")
		out, err := exec.Command("go", "build", "-o", binary.path, "github.com/tokenagent/tokenagent/agent/cmd/tokenagent").CombinedOutput()
		if err != nil {
			binary.err = &buildError{err: err, out: string(out)}
		}
	})
	if binary.err != nil {
		t.Fatalf("daemontest: building tokenagent: %v", binary.err)
	}
	return binary.path
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// Process is `tokenagent serve` running as a child process.
type Process struct {
	Cmd *exec.Cmd
	// GRPC, HTTP and AuthzHTTP are the addresses it serves on (read from its "tokenagent
	// serving" line); AuthzHTTP is "" when the HTTP front is off.
	GRPC, HTTP, AuthzHTTP string
	// ConfigPath is its config file.
	ConfigPath string

	mu    sync.Mutex
	lines []map[string]any
	raw   []string
	done  chan struct{}
	exit  chan error
}

// StartProcess runs `tokenagent serve --config cfgPath` with args, on free loopback ports,
// with env added to the test's environment (VAULT_TOKEN is emptied unless env sets it), waits
// until it says where it serves, and collects its JSON log lines (all but "denied", of which a
// load makes many). The process is killed when the test ends.
func StartProcess(t testing.TB, cfgPath string, env []string, args ...string) *Process {
	t.Helper()
	flags := []string{"serve", "--config", cfgPath, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}
	if tr := os.Getenv(TransportEnv); tr != "" {
		flags = append(flags, "--grpc-transport", tr)
	}
	cmd := exec.Command(Binary(t), append(flags, args...)...)
	cmd.Env = append(append(os.Environ(), "VAULT_TOKEN="), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Process{Cmd: cmd, ConfigPath: cfgPath, done: make(chan struct{}), exit: make(chan error, 1)}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			p.mu.Lock()
			t.Logf("the agent's log:\n%s", strings.Join(p.raw, "\n"))
			p.mu.Unlock()
		}
	})
	serving := make(chan map[string]any, 1)
	go p.read(stderr, serving)
	select {
	case rec, ok := <-serving:
		if !ok {
			t.Fatal("the agent exited before serving")
		}
		p.GRPC, _ = rec["grpc"].(string)
		p.HTTP, _ = rec["http"].(string)
		p.AuthzHTTP, _ = rec["authz_http"].(string)
	case <-time.After(2 * time.Minute):
		t.Fatal("the agent never said where it serves")
	}
	return p
}

// read collects the process's log lines until it exits.
func (p *Process) read(stderr io.Reader, serving chan<- map[string]any) {
	defer close(p.done)
	lines := bufio.NewScanner(stderr)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	announced := false
	for lines.Scan() {
		var rec map[string]any
		if json.Unmarshal(lines.Bytes(), &rec) != nil {
			continue
		}
		if !announced && rec["msg"] == "tokenagent serving" {
			announced = true
			serving <- rec
		}
		if rec["msg"] == "denied" {
			continue
		}
		p.mu.Lock()
		p.lines = append(p.lines, rec)
		if len(p.raw) < 2000 {
			p.raw = append(p.raw, lines.Text())
		}
		p.mu.Unlock()
	}
	if !announced {
		close(serving)
	}
	p.exit <- p.Cmd.Wait()
}

// Exited delivers the process's exit (the error of exec.Cmd.Wait) once it has exited and its
// log is read.
func (p *Process) Exited() <-chan error { return p.exit }

// Logs returns the log lines whose msg is msg.
func (p *Process) Logs(msg string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, r := range p.lines {
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// Client connects a gRPC client to the process, closed when the test ends.
func (p *Process) Client(t testing.TB) authv3.AuthorizationClient {
	t.Helper()
	conn, err := grpc.NewClient(p.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// Ready reports whether the process's /readyz answers 200.
func (p *Process) Ready() bool {
	resp, err := http.Get("http://" + p.HTTP + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Readyz fetches the process's /readyz: its status and decoded body.
func (p *Process) Readyz(t testing.TB) (int, daemon.Readiness) {
	t.Helper()
	resp, err := http.Get("http://" + p.HTTP + "/readyz")
	if err != nil {
		t.Fatalf("readyz: %v", err)
	}
	defer resp.Body.Close()
	var r daemon.Readiness
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("readyz body: %v", err)
	}
	return resp.StatusCode, r
}

// Metric reads one unlabelled sample from the process's /metrics.
func (p *Process) Metric(t testing.TB, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.HTTP + "/metrics")
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
