package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/extauthz"
)

// checkListener is the ext_authz listener (grpc_addr: TCP or a Unix socket) and the server
// behind it: tokenagent's own transport, with a gRPC-Go server for every other method
// (reflection, health Watch) on the same connections, or gRPC-Go alone (grpc_transport:
// grpc-go).
type checkListener struct {
	gs  *grpc.Server        // gRPC-Go: the server, or the transport's fallback
	tr  *extauthz.Transport // nil with grpc_transport: grpc-go
	lis net.Listener        // after listen
	cfg *config.Config      // the start-up config (the listener's settings never reload)
	log *slog.Logger
}

// newCheckListener builds the servers of cfg's grpc_transport over ext; nothing listens yet.
func newCheckListener(cfg *config.Config, ext *extauthz.Server, t listenerTLS, reg prometheus.Registerer, log *slog.Logger) *checkListener {
	l := &checkListener{cfg: cfg, log: log}
	opts := extauthz.ServerOptions()
	if cfg.GRPCTransport == config.TransportGRPCGo {
		opts = append(opts, t.grpcCreds()...)
	}
	l.gs = grpc.NewServer(opts...)
	ext.Register(l.gs)
	if cfg.GRPCReflection {
		reflection.Register(l.gs) // grpcurl and ghz without proto files (SPEC §8)
	}
	if cfg.GRPCTransport != config.TransportGRPCGo {
		l.tr = ext.NewTransport(extauthz.TransportOptions{TLS: t.grpcConfig(), Fallback: l.gs,
			Logger: log, Registerer: reg})
	}
	return l
}

// listen binds grpc_addr. A Unix socket's stale file (left by an agent that died) is removed
// first; a socket another process still answers on, or a file that is not a socket, is an
// error. The socket gets grpc_socket_mode and is removed when the listener closes.
func (l *checkListener) listen() error {
	network, addr := l.cfg.GRPCListen()
	if network == "unix" {
		if err := removeStaleSocket(addr); err != nil {
			return fmt.Errorf("grpc_addr: %w", err)
		}
	}
	lis, err := net.Listen(network, addr)
	if err != nil {
		return fmt.Errorf("grpc_addr: %w", err)
	}
	if network == "unix" {
		mode, _ := l.cfg.SocketMode() // validated with the config
		if err := os.Chmod(addr, mode); err != nil {
			lis.Close()
			return fmt.Errorf("grpc_socket_mode: %w", err)
		}
	}
	l.lis = lis
	return nil
}

// removeStaleSocket removes path if it is a Unix socket nobody answers on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; not removing it", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s: another process is serving on this socket", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the stale socket: %w", err)
	}
	return nil
}

// addr is the bound address as a gRPC client dials it: host:port, or unix:///path.
func (l *checkListener) addr() string {
	if l.lis.Addr().Network() == "unix" {
		return "unix://" + l.lis.Addr().String()
	}
	return l.lis.Addr().String()
}

// serve serves until shutdown; a shutdown is a clean stop, not an error.
func (l *checkListener) serve() error {
	if l.tr == nil {
		if err := l.gs.Serve(l.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return err
		}
		return nil
	}
	if err := l.tr.Serve(l.lis); err != nil && !errors.Is(err, extauthz.ErrTransportClosed) {
		return err
	}
	return nil
}

// shutdown drains: GOAWAY and in-flight checks answered, for up to grace (or until ctx ends),
// then whatever is left is closed.
func (l *checkListener) shutdown(ctx context.Context, grace time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	if l.tr == nil {
		done := make(chan struct{})
		go func() { l.gs.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			l.log.Warn("shutdown grace ended; stopping in-flight checks")
			l.gs.Stop()
		}
		return
	}
	// The fallback's streams (a health Watch, reflection) end now, so the drain does not wait
	// for streams that never end by themselves.
	go l.gs.GracefulStop()
	if err := l.tr.Shutdown(ctx); err != nil {
		l.log.Warn("shutdown grace ended; stopping in-flight checks")
	}
	l.gs.Stop()
}
