package daemon_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/config"
)

// socketConfig serves grpc_addr on a Unix socket at path.
func socketConfig(path, mode string) string {
	cfg := strings.Replace(configYAML, "grpc_addr: 127.0.0.1:0", "grpc_addr: unix://"+path, 1)
	if mode != "" {
		cfg = "grpc_socket_mode: \"" + mode + "\"\n" + cfg
	}
	return cfg
}

// shortDir is a temporary directory with a path short enough for a Unix socket (108 bytes).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ta-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// grpc_addr: unix:///path serves the checks on a Unix socket with grpc_socket_mode, and the
// socket file goes when the agent stops.
func TestUnixSocket(t *testing.T) {
	for _, mode := range []string{"", "0600"} {
		t.Run("mode "+mode, func(t *testing.T) {
			path := filepath.Join(shortDir(t), "ext_authz.sock")
			e := daemontest.Start(t, socketConfig(path, mode), daemontest.Options{KeepAddrs: true,
				Files: map[string]string{"keys.yaml": keysYAML()}})
			if got := e.D.GRPCAddr(); got != "unix://"+path {
				t.Fatalf("GRPCAddr = %q", got)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			want := os.FileMode(0o660)
			if mode != "" {
				want = 0o600
			}
			if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != want {
				t.Fatalf("the socket's mode is %v, want a socket with %v", fi.Mode(), want)
			}
			if r := e.Check(t, "GET", "docs.example.com", "/", map[string]string{"x-deki-token": serverToken("s3cret", "7")}); daemontest.UpstreamHeader(r, "x-auth-user") != "7" {
				t.Fatalf("a check over the socket: %v", r)
			}
			e.D.Shutdown(context.Background())
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Fatalf("the socket file is still there after the agent stopped: %v", err)
			}
		})
	}
}

// A socket file that no process answers on (an agent that was killed) is removed at start; one
// another process still serves, or a file that is not a socket, stops the start with one line.
func TestUnixSocketStartup(t *testing.T) {
	cfgOf := func(t *testing.T, path string) *config.Config {
		t.Helper()
		dir := t.TempDir()
		daemontest.WriteFile(t, filepath.Join(dir, "keys.yaml"), keysYAML())
		daemontest.WriteFile(t, filepath.Join(dir, "tokenagent.yaml"), socketConfig(path, ""))
		cfg, err := config.Load(filepath.Join(dir, "tokenagent.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	listen := func(t *testing.T, path string) *net.UnixListener {
		t.Helper()
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	t.Run("stale socket", func(t *testing.T) {
		path := filepath.Join(shortDir(t), "s.sock")
		l := listen(t, path)
		l.SetUnlinkOnClose(false)
		l.Close() // the file stays, nobody answers: what a killed agent leaves
		e := daemontest.StartConfig(t, cfgOf(t, path), daemontest.Options{KeepAddrs: true})
		if r := e.Check(t, "GET", "docs.example.com", "/", nil); daemontest.UpstreamHeader(r, "x-auth-site") != "docs" {
			t.Fatalf("a check over the socket that replaced a stale one: %v", r)
		}
	})
	t.Run("socket in use", func(t *testing.T) {
		path := filepath.Join(shortDir(t), "s.sock")
		l := listen(t, path)
		defer l.Close()
		go func() { // answer (and close) whoever connects, as a live server would
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		d, err := daemon.New(context.Background(), cfgOf(t, path), daemon.Options{Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if err := d.Listen(); err == nil || !strings.Contains(err.Error(), "another process is serving") {
			t.Fatalf("Listen on a socket in use: %v", err)
		}
	})
	t.Run("not a socket", func(t *testing.T) {
		path := filepath.Join(shortDir(t), "s.sock")
		daemontest.WriteFile(t, path, "not a socket")
		d, err := daemon.New(context.Background(), cfgOf(t, path), daemon.Options{Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if err := d.Listen(); err == nil || !strings.Contains(err.Error(), "is not a socket") {
			t.Fatalf("Listen over a regular file: %v", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "not a socket" {
			t.Fatal("the file was touched")
		}
	})
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
