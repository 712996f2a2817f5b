package daemon

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon/internal/certs"
	"github.com/tokenagent/tokenagent/agent/config"
)

// DefaultCertPoll is how often the listeners' certificate files are checked for changes
// (Options.CertPoll).
const DefaultCertPoll = 2 * time.Second

// listenerTLS holds the certificate reloaders of the listeners; nil ones serve plaintext.
type listenerTLS struct {
	grpc, http *certs.Reloader
}

// loadTLS reads the listeners' certificates (SPEC §8): a bad path or pair stops the start-up
// with one line naming the setting, before anything listens.
func loadTLS(cfg *config.Config, log *slog.Logger) (listenerTLS, error) {
	var t listenerTLS
	var err error
	load := func(field string, c *config.TLS) (*certs.Reloader, error) {
		if c == nil {
			return nil, nil
		}
		r, err := certs.New(certs.Files{Cert: c.CertFile, Key: c.KeyFile, ClientCA: c.ClientCAFile}, log.With("listener", field))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return r, nil
	}
	if t.grpc, err = load("grpc_tls", cfg.GRPCTLS); err != nil {
		return t, err
	}
	if t.http, err = load("http_tls", cfg.HTTPTLS); err != nil {
		return t, err
	}
	return t, nil
}

// grpcCreds is the gRPC server's transport credentials option: TLS when grpc_tls is set.
func (t listenerTLS) grpcCreds() []grpc.ServerOption {
	if t.grpc == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(t.grpc.ServerConfig([]string{"h2"})))}
}

// grpcConfig is the TLS config of the ext_authz listener (ALPN h2), nil without grpc_tls.
func (t listenerTLS) grpcConfig() *tls.Config {
	if t.grpc == nil {
		return nil
	}
	return t.grpc.ServerConfig([]string{"h2"})
}

// wrapHTTP serves lis with TLS when http_tls is set (the HTTP address and the HTTP front).
func (t listenerTLS) wrapHTTP(lis net.Listener) net.Listener {
	if t.http == nil {
		return lis
	}
	return tls.NewListener(lis, t.http.ServerConfig([]string{"h2", "http/1.1"}))
}

// reloaders are the listeners' certificate reloaders that are set.
func (t listenerTLS) reloaders() []*certs.Reloader {
	var out []*certs.Reloader
	for _, r := range []*certs.Reloader{t.grpc, t.http} {
		if r != nil {
			out = append(out, r)
		}
	}
	return out
}

// warnings are the refused certificate changes, for /readyz.
func (t listenerTLS) warnings() []string {
	var out []string
	for _, r := range t.reloaders() {
		out = append(out, r.Warnings()...)
	}
	return out
}
