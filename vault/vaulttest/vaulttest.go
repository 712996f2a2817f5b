// Package vaulttest starts a real HashiCorp Vault dev server on 127.0.0.1 for integration
// tests: no fake HTTP server stands in for Vault.
//
//	func TestSomething(t *testing.T) {
//		srv := vaulttest.Start(t) // stopped by t.Cleanup
//		_, err := srv.Client.KVv2("secret").Put(ctx, "tokenagent/x", map[string]any{"a": "b"})
//		...
//	}
//
// A package that wants one server for all its tests starts it in TestMain with New and closes
// it after m.Run.
//
// # Notes
//
//   - The binary is $TOKENAGENT_VAULT_BIN, else $HOME/.cache/tokenagent/vault-1.21.1. When it is
//     missing the test fails (it is never skipped): build it with vault/devserver/build.sh.
//   - A dev server keeps everything in memory and mounts KV v2 at "secret". Restart brings it
//     back on the same address with the same root token, but empty: re-seeding it is the
//     test's job.
//   - The server's output goes to a temp file; failures quote its tail (Logs).
//   - A Server is safe for concurrent use, but Stop and Restart affect every user of it.
package vaulttest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tokenagent/tokenagent/vault/proctest"
)

// Version is the Vault version the binary is built from (vault/devserver).
const Version = "1.21.1"

// EnvBinary names the environment variable that overrides the binary's path.
const EnvBinary = "TOKENAGENT_VAULT_BIN"

// RootToken is the dev server's root token.
const RootToken = "tokenagent-test-root"

// startTimeout bounds how long a server may take to become healthy (about 2 s is usual).
const startTimeout = 60 * time.Second

// BinaryPath returns where the Vault binary is expected: $TOKENAGENT_VAULT_BIN, else
// $HOME/.cache/tokenagent/vault-1.21.1. It does not check that the file exists.
func BinaryPath() string {
	if p := os.Getenv(EnvBinary); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		home = os.Getenv("HOME")
	}
	return filepath.Join(home, ".cache", "tokenagent", "vault-"+Version)
}

// Binary returns the path of the Vault binary, or an error saying how to build it.
func Binary() (string, error) {
	p := BinaryPath()
	st, err := os.Stat(p)
	if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("vaulttest: no Vault binary at %s (set %s, or build it with vault/devserver/build.sh)", p, EnvBinary)
	}
	return p, nil
}

// Server is a running Vault dev server.
type Server struct {
	// Addr is the server's address, "http://127.0.0.1:<port>".
	Addr string
	// Token is the root token.
	Token string
	// Client is an API client for Addr, authenticated with the root token.
	Client *api.Client

	bin     string
	listen  string
	logPath string

	mu   sync.Mutex
	proc *proctest.Process
}

// TB is what Start and RestartT need of a test: testing.TB has it. The package does not import
// testing, so a command (bench/cmd/scale) can run a dev server too without linking it.
type TB interface {
	Helper()
	Fatal(args ...any)
	Cleanup(func())
}

// Start starts a dev server for the test and stops it in t.Cleanup. It fails the test when the
// binary is missing or the server does not become healthy.
func Start(t TB) *Server {
	t.Helper()
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// New starts a dev server on a free port of 127.0.0.1 and waits until it is healthy. The caller
// must Close it. Use it from TestMain; tests use Start.
func New() (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	logFile, err := os.CreateTemp("", "vaulttest-*.log")
	if err != nil {
		return nil, fmt.Errorf("vaulttest: log file: %w", err)
	}
	logFile.Close()
	s := &Server{Token: RootToken, bin: bin, logPath: logFile.Name()}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port can be taken between probe and bind
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s.listen = net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
		s.Addr = "http://" + s.listen
		if lastErr = s.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		os.Remove(s.logPath)
		return nil, lastErr
	}
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("vaulttest: client: %w", err)
	}
	c.SetToken(s.Token)
	c.ClearNamespace()
	s.Client = c
	return s, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("vaulttest: finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs the binary and waits for /v1/sys/health.
func (s *Server) start() error {
	logf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("vaulttest: log file: %w", err)
	}
	fmt.Fprintf(logf, "==== vaulttest: starting %s on %s\n", s.bin, s.listen)
	cmd := exec.Command(s.bin, "server", "-dev",
		"-dev-root-token-id="+s.Token,
		"-dev-listen-address="+s.listen,
		"-dev-no-store-token", // never touch ~/.vault-token
		"-log-level=warn",
	)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := proctest.Start(cmd, func() { logf.Close() })
	if err != nil {
		logf.Close()
		return fmt.Errorf("vaulttest: %w", err)
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	hc := &http.Client{Timeout: 2 * time.Second}
	err = p.WaitReady(startTimeout, func() error {
		resp, err := hc.Get(s.Addr + "/v1/sys/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/v1/sys/health: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		s.stop()
		return fmt.Errorf("vaulttest: vault server on %s: %w\n%s", s.listen, err, s.Logs())
	}
	return nil
}

// cleanEnv is the environment without VAULT_* variables, so the caller's settings cannot
// change the dev server.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	return env
}

// Stop stops the server (an outage). Its data is lost; Restart brings back an empty server on
// the same address.
func (s *Server) Stop() { s.stop() }

func (s *Server) stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		p.Stop(10 * time.Second)
	}
}

// Restart stops the server if it runs and starts a new, empty one on the same address with
// the same root token.
func (s *Server) Restart() error {
	s.stop()
	// The port may linger for a moment: try again, within one overall bound (each try's own
	// health wait is bounded too), so a restart never hangs a test for long.
	deadline := time.Now().Add(startTimeout)
	var err error
	for time.Now().Before(deadline) {
		if err = s.start(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// RestartT is Restart that fails the test on error.
func (s *Server) RestartT(t TB) {
	t.Helper()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
}

// Close stops the server and removes its log file.
func (s *Server) Close() {
	s.stop()
	if s.logPath != "" {
		os.Remove(s.logPath)
	}
}

// Logs returns the tail (up to 8 KiB) of the server's output, for failure messages.
func (s *Server) Logs() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(no vault output: " + err.Error() + ")"
	}
	const max = 8 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return "---- vault output (" + s.logPath + ") ----\n" + string(b)
}

// NewClient returns a new API client for the server, authenticated with token ("" for none).
func (s *Server) NewClient(token string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.ClearNamespace()
	c.ClearToken()
	if token != "" {
		c.SetToken(token)
	}
	return c, nil
}

// Health reports whether the server answers /v1/sys/health as healthy.
func (s *Server) Health(ctx context.Context) error {
	resp, err := s.Client.Sys().HealthWithContext(ctx)
	if err != nil {
		return err
	}
	if !resp.Initialized || resp.Sealed {
		return errors.New("vaulttest: server not initialized or sealed")
	}
	return nil
}
