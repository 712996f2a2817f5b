// Package plugintest builds and loads tokenagent policy modules in tests: a Go policy with the
// Go toolchain (cached by content), a WAT module with wabt's wat2wasm, and an Engine whose
// compilation cache persists between test runs.
//
//	func TestPolicy(t *testing.T) {
//		m := plugintest.Load(t, plugintest.NewEngine(t), plugintest.BuildGo(t, "."), plugins.ModuleOptions{})
//		out, err := m.Evaluate(context.Background(), &plugins.Input{Kind: "anonymous", Method: "GET", Path: "/"})
//		...
//	}
//
// # Notes
//
//   - Built modules are cached under $TOKENAGENT_CACHE (default: the user cache directory,
//     e.g. $HOME/.cache/tokenagent): wasm/<hash>.wasm, keyed by the Go version, the build
//     flags and the content of every non-standard package the policy builds from; compiled code
//     under wazero/. Both are safe to delete.
//   - BuildWAT needs wat2wasm (Debian/Ubuntu: apt-get install -y wabt). When it is missing the
//     test fails and says so; it does not skip.
//   - The helpers are safe for concurrent use by parallel tests and parallel test binaries.
package plugintest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/plugins"
)

// CacheDir returns the directory the helpers cache into: $TOKENAGENT_CACHE, or tokenagent under
// the user cache directory, or under the system temporary directory when there is none.
func CacheDir() string {
	if d := os.Getenv("TOKENAGENT_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "tokenagent")
	}
	return filepath.Join(os.TempDir(), "tokenagent-cache")
}

var (
	buildMu sync.Mutex
	builds  = map[string]*buildResult{}
)

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// CachedBuild returns CacheDir()/name, building it first when it is not there: build writes the
// file at the temporary path it is given, which is then renamed into place (so a concurrent
// test process never sees half a file). Within the process each name is built once; name should
// hold a hash of what the build depends on (e.g. "opa/<sha256>.tar.gz").
func CachedBuild(name string, build func(tmp string) error) (string, error) {
	buildMu.Lock()
	r := builds[name]
	if r == nil {
		r = &buildResult{}
		builds[name] = r
	}
	buildMu.Unlock()
	r.once.Do(func() {
		out := filepath.Join(CacheDir(), name)
		if _, err := os.Stat(out); err == nil {
			r.path = out
			return
		}
		if r.err = os.MkdirAll(filepath.Dir(out), 0o755); r.err != nil {
			return
		}
		tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
		if r.err = build(tmp); r.err != nil {
			_ = os.Remove(tmp)
			return
		}
		if r.err = os.Rename(tmp, out); r.err == nil {
			r.path = out
		}
	})
	return r.path, r.err
}

// BuildGo builds the Go policy package in dir (a main package importing plugins/guest) with
// GOOS=wasip1 GOARCH=wasm -buildmode=c-shared and returns the .wasm file's path. ldflags are
// passed to -ldflags (e.g. "-X main.window=22:00-02:00"). The result is cached by content, so
// an unchanged policy is not built again. A build failure fails the test with the compiler's
// output.
func BuildGo(tb testing.TB, dir string, ldflags ...string) string {
	tb.Helper()
	path, err := buildGo(dir, strings.Join(ldflags, " "))
	if err != nil {
		tb.Fatalf("plugintest: build Go policy %s: %v", dir, err)
	}
	return path
}

func buildGo(dir, ldflags string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command is not on PATH: %w", err)
	}
	key, err := sourceHash(goBin, abs, ldflags)
	if err != nil {
		return "", err
	}
	return CachedBuild(filepath.Join("wasm", key+".wasm"), func(tmp string) error {
		args := []string{"build", "-buildmode=c-shared", "-trimpath", "-o", tmp}
		if ldflags != "" {
			args = append(args, "-ldflags="+ldflags)
		}
		args = append(args, ".")
		cmd := exec.Command(goBin, args...)
		cmd.Dir = abs
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0", "GOFLAGS=")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return nil
	})
}

// sourceHash hashes what a build of dir depends on: the Go version, the flags, and the files of
// every non-standard package in the build (listed by go list for wasip1/wasm).
func sourceHash(goBin, dir, ldflags string) (string, error) {
	cmd := exec.Command(goBin, "list", "-deps", "-f",
		`{{if not .Standard}}{{.Dir}}{{"\t"}}{{join .GoFiles "\t"}}{{"\t"}}{{join .EmbedFiles "\t"}}{{end}}`, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0", "GOFLAGS=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	list, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go list in %s: %v\n%s", dir, err, stderr.Bytes())
	}
	ver, err := exec.Command(goBin, "env", "GOVERSION").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOVERSION: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "tokenagent-wasm-v1\n%s\n%s\n", bytes.TrimSpace(ver), ldflags)
	lines := strings.Split(strings.TrimSpace(string(list)), "\n")
	sort.Strings(lines)
	for _, line := range lines {
		f := strings.Split(line, "\t")
		if len(f) == 0 || f[0] == "" {
			continue
		}
		pkgDir := f[0]
		rel, _ := filepath.Rel(dir, pkgDir)
		fmt.Fprintf(h, "pkg %s\n", rel)
		for _, name := range f[1:] {
			if name == "" {
				continue
			}
			b, err := os.ReadFile(filepath.Join(pkgDir, name))
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "file %s %d\n", name, len(b))
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// BuildWAT assembles the WebAssembly text file at path with wat2wasm into the test's temporary
// directory and returns the .wasm file's path. The test fails (it does not skip) when wat2wasm
// is missing.
func BuildWAT(tb testing.TB, path string) string {
	tb.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("plugintest: %v", err)
	}
	return WAT(tb, strings.TrimSuffix(filepath.Base(path), ".wat"), string(src))
}

// WAT assembles the WebAssembly text src with wat2wasm into the test's temporary directory as
// name.wasm and returns its path. The test fails (it does not skip) when wat2wasm is missing.
func WAT(tb testing.TB, name, src string) string {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), name+".wasm")
	if err := AssembleWAT(src, out); err != nil {
		tb.Fatalf("plugintest: %v", err)
	}
	return out
}

// AssembleWAT assembles the WebAssembly text src into the file out with wat2wasm.
func AssembleWAT(src, out string) error {
	bin, err := exec.LookPath("wat2wasm")
	if err != nil {
		return errors.New("wat2wasm not found on PATH: the WAT modules of these tests need wabt " +
			"(Debian/Ubuntu: apt-get install -y wabt; macOS: brew install wabt)")
	}
	in := out + ".wat"
	if err := os.WriteFile(in, []byte(src), 0o644); err != nil {
		return err
	}
	defer os.Remove(in)
	if b, err := exec.Command(bin, "-o", out, in).CombinedOutput(); err != nil {
		return fmt.Errorf("wat2wasm %s: %v\n%s", out, err, b)
	}
	return nil
}

// NewEngine returns an Engine for tests: compiled code cached on disk under CacheDir()/wazero
// (so each module is compiled once per machine, not once per test run), logs to the test's
// log, metrics unregistered unless opts says otherwise. It is closed when the test ends. Fields
// set in opts (at most one) are kept.
func NewEngine(tb testing.TB, opts ...plugins.EngineOptions) *plugins.Engine {
	tb.Helper()
	var o plugins.EngineOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.CacheDir == "" {
		o.CacheDir = filepath.Join(CacheDir(), "wazero")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e, err := plugins.NewEngine(context.Background(), o)
	if err != nil {
		tb.Fatalf("plugintest: %v", err)
	}
	tb.Cleanup(func() { _ = e.Close(context.Background()) })
	return e
}

// Load loads the module at path into e, failing the test on error; it is closed when the test
// ends.
//
// Tests check behaviour, not timing, and run on loaded machines (with -race, a Go module can
// take seconds to start), so the timeouts opts leaves at zero are generous here: Deadline 1 s,
// InitTimeout and MaxWait 1 minute. Set them to test the limits themselves.
func Load(tb testing.TB, e *plugins.Engine, path string, opts plugins.ModuleOptions) *plugins.Module {
	tb.Helper()
	if opts.Deadline == 0 {
		opts.Deadline = time.Second
	}
	if opts.InitTimeout == 0 {
		opts.InitTimeout = time.Minute
	}
	if opts.MaxWait == 0 {
		opts.MaxWait = time.Minute
	}
	m, err := e.Load(context.Background(), path, opts)
	if err != nil {
		tb.Fatalf("plugintest: %v", err)
	}
	tb.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

// testWriter sends log lines to the test's log.
type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
