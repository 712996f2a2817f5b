package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/config"
)

var serveHelp = helpPage{
	name: "tokenagent serve — run the authorization agent",
	synopsis: `tokenagent serve --config FILE [--grpc-addr ADDR] [--grpc-transport NAME] [--http-addr ADDR]
                 [--authz-http-addr ADDR] [--log-level LEVEL] [--config-poll DURATION] [--pprof]`,
	description: `Reads the config file (sites, route rules, key source, listen addresses), validates it in full,
opens the key source, and only then listens:

  grpc_addr        Envoy's ext_authz v3 gRPC API (envoy.service.auth.v3.Authorization/Check)
                   and the gRPC health service: host:port, or unix:///path for a Unix socket
                   (a stale socket is removed first; the socket goes when the agent exits).
  http_addr        /healthz, /readyz and /metrics (Prometheus); /debug/pprof/ with --pprof.
  authz_http_addr  the HTTP authorization front, when set: {envoy_path_prefix}/… for Envoy's
                   HTTP ext_authz, /nginx for nginx auth_request, /traefik for Traefik
                   forwardAuth, /answer/… for requests the agent answers itself. Off by default.

Decision logs (JSON lines on stderr) name every denial, and one allowed request in
log.allow_sample, each with a decision id; tokens and secrets are never logged.

The config is reloaded when the file changes (checked every --config-poll) and on SIGHUP:
validated in full, then swapped in atomically; a bad file keeps the old config serving and is
logged, counted in tokenagent_config_reload_errors_total and shown in /readyz. Listen
addresses and the key source settings take effect at the next restart.`,
	extra: `SIGNALS
    SIGHUP           reload the config file now.
    SIGTERM, SIGINT  stop taking new checks (gRPC health goes NOT_SERVING), let in-flight checks
                     finish (up to 10 s), then exit 0.`,
	exitStatus: `0   stopped by SIGTERM or SIGINT after in-flight checks finished.
1   the config is invalid, the key source cannot be opened, an address cannot be bound, or
    serving failed; one line on stderr names the problem, before anything listens.
2   usage error: an unknown flag, a bad flag value, or no --config.`,
	environment: vaultEnvironment,
	examples: `Example 1 — the development config (keys from examples/dev/keys.yaml):
    tokenagent serve --config examples/dev/tokenagent.yaml

Example 2 — also serve the HTTP front for nginx or Traefik, and profiling:
    tokenagent serve --config /etc/tokenagent/tokenagent.yaml \
        --authz-http-addr 127.0.0.1:9193 --pprof

Example 3 — reload by hand instead of by watching the file:
    tokenagent serve --config tokenagent.yaml --config-poll 0 &
    kill -HUP %1`,
}

func cmdServe(args []string, stderr io.Writer) error {
	fs := newFlags("serve", serveHelp, stderr)
	configPath := fs.String("config", "", "the config file (YAML; required)")
	grpcAddr := fs.String("grpc-addr", "", "listen address of the ext_authz gRPC server: host:port or unix:///path (overrides grpc_addr)")
	grpcTransport := fs.String("grpc-transport", "", "the ext_authz server: tokenagent (default) or grpc-go (overrides grpc_transport)")
	httpAddr := fs.String("http-addr", "", "listen address of /healthz, /readyz and /metrics (overrides http_addr)")
	authzHTTPAddr := fs.String("authz-http-addr", "", "listen address of the HTTP authorization front for nginx, Traefik and Envoy's HTTP ext_authz (overrides authz_http_addr; off when both are empty)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (overrides log.level)")
	configPoll := fs.Duration("config-poll", daemon.DefaultConfigPoll, "how often to check the config file for changes and reload it; 0 turns it off (SIGHUP still reloads)")
	pprofOn := fs.Bool("pprof", false, "serve Go's profiler (net/http/pprof) under /debug/pprof/ on the --http-addr address")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *configPath == "" {
		fmt.Fprintln(stderr, "tokenagent serve: --config is required (try examples/dev/tokenagent.yaml)")
		return errUsage
	}
	if *configPoll < 0 {
		fmt.Fprintln(stderr, "tokenagent serve: --config-poll: must be 0 (off) or a positive duration")
		return errUsage
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	if *grpcAddr != "" {
		cfg.GRPCAddr = *grpcAddr
	}
	if *grpcTransport != "" {
		cfg.GRPCTransport = *grpcTransport
	}
	if *httpAddr != "" {
		cfg.HTTPAddr = *httpAddr
	}
	if *authzHTTPAddr != "" {
		cfg.AuthzHTTPAddr = *authzHTTPAddr
	}
	if err := cfg.CheckListeners(); err != nil { // the flags are checked as the file is
		return fmt.Errorf("tokenagent serve: %w", err)
	}
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	log := newLogger(cfg.Log.Level, stderr)
	slog.SetDefault(log)
	redis.SetLogger(redisLog{log}) // the process's one Redis client library: its notes as JSON lines

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	poll := *configPoll
	if poll == 0 {
		poll = -1 // off
	}
	d, err := daemon.New(ctx, cfg, daemon.Options{Logger: log, ConfigPath: *configPath, ConfigPoll: poll,
		Pprof: *pprofOn, Version: buildVersion()})
	if err != nil {
		return err
	}
	if err := d.Listen(); err != nil {
		d.Close()
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			_ = d.Reload(*configPath)
		}
	}()
	errc := make(chan error, 1)
	go func() { errc <- d.Serve() }()
	select {
	case err := <-errc:
		d.Close()
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight checks")
	d.Shutdown(context.Background())
	<-errc
	return nil
}

// redisLog passes go-redis's own notes (dial and pool problems) to the agent's log at debug
// level: the replay store reports its failures itself (log, /readyz, metrics).
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug("redis client", "message", fmt.Sprintf(format, v...))
}
