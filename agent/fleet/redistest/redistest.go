// Package redistest runs a real redis-server (Debian's redis-server package) for tests: on a
// free 127.0.0.1 port, with no persistence, stopped by PID when the test ends. A test can kill
// it (SIGKILL, as a crash) and start it again on the same port.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenagent/tokenagent/vault/proctest"
)

// Options configure the server.
type Options struct {
	// User and Password make an ACL user allowed only what tokenagent needs (keys and channels
	// under "tokenagent:", the commands of ACL), and turn the default user off.
	User, Password string
	// ACL are the user's commands (default ReplayACL).
	ACL []string
	// CertFile, KeyFile and CAFile serve TLS only (the plain port is off).
	CertFile, KeyFile, CAFile string
	// cluster runs the server as a Redis Cluster node (StartCluster).
	cluster bool
	// replicaOf makes the server a replica of this host:port (StartSentinel).
	replicaOf string
	// sentinel runs a Redis Sentinel with these configuration lines (StartSentinel).
	sentinel string
	// port is the port to listen on (0: a free one).
	port int
}

// The commands each of tokenagent's stores needs (agent/token/README.md and
// agent/cmd/daemon/README.md document the same lists).
var (
	ReplayACL     = []string{"+set", "+ping", "+info", "+wait"}
	RevocationACL = []string{"+hget", "+hset", "+hgetall", "+hdel", "+pexpiretime", "+pexpireat", "+publish",
		"+subscribe", "+ping", "+eval", "+evalsha", "+info", "+wait"}
)

// Server is a running redis-server.
type Server struct {
	// Addr is 127.0.0.1:port.
	Addr string

	opts Options
	dir  string
	port int

	mu   sync.Mutex
	proc *proctest.Process
}

// Binary is the path of redis-server, or an error that says how to install it.
func Binary() (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	return "", errors.New("redis-server is not installed: apt-get install -y redis-server (.ci/test installs it)")
}

// Start starts a server; it stops when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if _, err := Binary(); err != nil {
		t.Fatal(err)
	}
	s := &Server{opts: opts, dir: t.TempDir()}
	for attempt := 0; ; attempt++ {
		s.port = opts.port
		if s.port == 0 {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s.port = lis.Addr().(*net.TCPAddr).Port
			lis.Close()
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
		err := s.start()
		if err == nil {
			break
		}
		if attempt == 3 {
			t.Fatal(err)
		}
	}
	t.Cleanup(s.Kill)
	return s
}

// Restart starts the server again on the same port after Kill (an empty memory).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
}

func (s *Server) start() error {
	bin, err := Binary()
	if err != nil {
		return err
	}
	args := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", s.dir,
		"--daemonize", "no", "--logfile", filepath.Join(s.dir, "redis.log")}
	if s.opts.sentinel != "" {
		// A sentinel rewrites its configuration file, so it gets one of its own.
		conf := filepath.Join(s.dir, "sentinel.conf")
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n%s", s.port, s.dir,
			filepath.Join(s.dir, "redis.log"), s.opts.sentinel)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return err
		}
		args = []string{conf, "--sentinel"}
	} else if s.opts.CertFile != "" {
		args = append(args, "--port", "0", "--tls-port", strconv.Itoa(s.port), "--tls-cert-file", s.opts.CertFile,
			"--tls-key-file", s.opts.KeyFile, "--tls-ca-cert-file", s.opts.CAFile, "--tls-auth-clients", "no")
	} else {
		args = append(args, "--port", strconv.Itoa(s.port))
	}
	if s.opts.replicaOf != "" {
		host, port, _ := net.SplitHostPort(s.opts.replicaOf)
		args = append(args, "--replicaof", host, port)
	}
	if s.opts.cluster {
		// A node that notices a dead master within a second, so a failover takes a few.
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(s.dir, "nodes.conf"),
			"--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0")
	}
	if s.opts.User != "" {
		// What tokenagent needs, and nothing else (agent/token/README.md, Server API Token: the ACL).
		acl := s.opts.ACL
		if acl == nil {
			acl = ReplayACL
		}
		args = append(args, "--user", "default", "off", "--user", s.opts.User, "on", ">"+s.opts.Password,
			"~tokenagent:*", "&tokenagent:*", "-@all")
		args = append(args, acl...)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	p, err := proctest.Start(cmd, nil)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	// Ready when it accepts connections (PING answers, even NOAUTH does).
	err = p.WaitReady(30*time.Second, func() error {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		s.Kill()
		log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
		return fmt.Errorf("redis-server on %s: %w\n%s", s.Addr, err, log)
	}
	return nil
}

// Kill stops the server with SIGKILL (a crash) and waits for it to exit.
func (s *Server) Kill() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

// Client is an administrative client of the server (the default user, or the ACL user).
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	o := &redis.Options{Addr: s.Addr, Username: s.opts.User, Password: s.opts.Password, DisableIdentity: true,
		MaxRetries: -1}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = c.Ping(ctx).Err()
	return c
}
