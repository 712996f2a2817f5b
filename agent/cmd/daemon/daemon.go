// Package daemon runs tokenagent: it builds the key source and store from a Config, the
// agent, the ext_authz gRPC server and the HTTP server (/healthz, /readyz, /metrics), serves
// until its context ends, reloads the config on request, and shuts down gracefully (in-flight
// checks finish).
//
//	d, err := daemon.New(ctx, cfg, daemon.Options{})
//	go d.Serve()
//	...
//	d.Shutdown(ctx)
//
// # Notes
//
//   - New validates and builds everything before anything listens; Listen then binds the
//     addresses, so a bad config or a taken port fails before the agent answers anything.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/fleet"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/extauthz"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/filestamp"
	"github.com/tokenagent/tokenagent/vault/users"
)

// Options tune a Daemon.
type Options struct {
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Now is the agent's clock (default time.Now).
	Now func() time.Time
	// ShutdownGrace bounds how long in-flight checks may take to finish (default 10 s).
	ShutdownGrace time.Duration
	// ConfigPath is the config file; when set, the daemon reloads it when it changes (checked
	// every ConfigPoll), in addition to explicit Reload calls (SIGHUP).
	ConfigPath string
	// ConfigPoll is how often ConfigPath is checked (default DefaultConfigPoll; negative: never).
	ConfigPoll time.Duration
	// CertPoll is how often the listeners' certificate files are checked (default
	// DefaultCertPoll; negative: never).
	CertPoll time.Duration
	// Pprof serves net/http/pprof under /debug/pprof/ on the HTTP address.
	Pprof bool
	// Version is the build's version, for tokenagent_build_info and the traces' service.version
	// (default "dev").
	Version string
}

func (o Options) version() string {
	if o.Version == "" {
		return "dev"
	}
	return o.Version
}

// Daemon is a running tokenagent: the composition root. It builds once what outlives a config
// (the registry and its collectors, the key source and store, the user directory, the
// pipeline's Runtime, the listeners) and closes it at exit; each config (at start and at every
// reload) is compiled into a new agent.Agent over the same Runtime.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	reg     *prometheus.Registry
	source  vault.Source
	closer  func()
	users   users.Directory
	closeUs func()
	store   *vault.Store
	rt      *agent.Runtime
	tls     listenerTLS
	tracing *tracing              // nil without tracing
	replay  *fleet.ReplayStore    // nil with replay.store local
	revoked *fleet.RevocationList // nil without revocation.store

	mu    sync.RWMutex
	cfg   *config.Config
	agent *agent.Agent

	ext        *extauthz.Server
	check      *checkListener // grpc_addr and its server (listener.go)
	http       *http.Server
	httpLis    net.Listener
	reloads    prometheus.Counter
	reloadErrs prometheus.Counter
	lastReload error

	reloadMu sync.Mutex // one reload at a time (SIGHUP and the file watcher)
	ops      opsState   // HTTP front, config watcher, reload gauges, pprof (ops.go)
}

// New builds a daemon from cfg; nothing listens yet.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 10 * time.Second
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d := &Daemon{opts: opts, log: opts.Logger, reg: reg, cfg: cfg}
	d.reloads = prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenagent_config_reloads_total",
		Help: "Successful config reloads."})
	d.reloadErrs = prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenagent_config_reload_errors_total",
		Help: "Config reloads refused because the new file is invalid; the old config keeps serving."})
	reg.MustRegister(d.reloads, d.reloadErrs)

	// The listeners' certificates first: local files, checked before any connection to the
	// key source is made.
	var err error
	if d.tls, err = loadTLS(cfg, opts.Logger); err != nil {
		return nil, err
	}
	var tp trace.TracerProvider
	var ratio float64
	if cfg.Tracing != nil {
		ratio = *cfg.Tracing.SampleRatio
		if d.tracing, err = newTracing(cfg.Tracing, reg, opts.Logger, opts.version()); err != nil {
			return nil, err
		}
		tp = d.tracing.tp
	}
	src, closer, err := OpenSource(ctx, cfg, reg, opts.Logger)
	if err != nil {
		d.tracing.shutdown()
		return nil, err
	}
	d.source, d.closer = src, closer
	if d.users, d.closeUs, err = openUsers(cfg, src); err != nil {
		d.Close()
		return nil, err
	}
	var replayStore token.ReplayStore
	if cfg.Replay.Store == config.ReplayRedis {
		if d.replay, err = fleet.NewReplayStore(fleet.ReplayOptions{Redis: RedisOptions(&cfg.Replay.Redis),
			Registerer: reg, Logger: opts.Logger}); err != nil {
			d.Close()
			return nil, err
		}
		replayStore = d.replay
	}
	var revocations agent.Revocations
	if cfg.Revocation.Enabled() {
		if d.revoked, err = OpenRevocations(cfg, reg, opts.Logger); err != nil {
			d.Close()
			return nil, err
		}
		d.revoked.Start(ctx) // the subscription and the first full read, in the background
		revocations = d.revoked
	}
	store, err := vault.NewStore(src, vault.StoreOptions{
		Refresh: cfg.Keys.Refresh.D(), MaxStale: cfg.Keys.MaxStale.D(), MaxCost: cfg.Keys.CacheBytes,
		Now: opts.Now, Logger: opts.Logger, Metrics: vault.NewStoreMetrics(reg),
	})
	if err != nil {
		d.Close()
		return nil, err
	}
	d.store = store
	d.rt, err = agent.NewRuntime(agent.RuntimeOptions{Keys: store, Users: d.users, Registerer: reg,
		Logger: opts.Logger, Now: opts.Now, PolicyCacheDir: policyCacheDir(cfg),
		TracerProvider: tp, TraceRatio: ratio, Replay: replayStore, Revocations: revocations})
	if err != nil {
		d.Close()
		return nil, err
	}
	a, err := agent.New(d.rt, cfg)
	if err != nil {
		d.Close()
		return nil, err
	}
	d.agent = a
	d.ext = extauthz.NewServer(a, extauthz.WithLogger(opts.Logger))
	d.check = newCheckListener(cfg, d.ext, d.tls, reg, opts.Logger)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", d.serveReady)
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	d.initOps(cfg, reg, mux)
	d.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return d, nil
}

// policyCacheDir is where compiled WebAssembly modules are kept across restarts:
// policies.cache_dir, or tokenagent/wasm in the user cache directory.
func policyCacheDir(cfg *config.Config) string {
	if dir := cfg.Policies.CacheDir; dir != "" {
		return dir
	}
	if base, err := os.UserCacheDir(); err == nil {
		return filepath.Join(base, "tokenagent", "wasm")
	}
	return ""
}

// OpenSource opens the key source cfg.Keys names. The returned func closes it.
func OpenSource(ctx context.Context, cfg *config.Config, reg prometheus.Registerer, log *slog.Logger) (vault.Source, func(), error) {
	return openSource(ctx, cfg, reg, log)
}

// Agent returns the agent currently deciding.
func (d *Daemon) Agent() *agent.Agent {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.agent
}

// Store returns the key store.
func (d *Daemon) Store() *vault.Store { return d.store }

// Registry returns the daemon's Prometheus registry.
func (d *Daemon) Registry() *prometheus.Registry { return d.reg }

// Listen binds the gRPC and HTTP addresses of the config.
func (d *Daemon) Listen() error {
	d.mu.RLock()
	httpAddr, authzAddr := d.cfg.HTTPAddr, d.cfg.AuthzHTTPAddr
	d.mu.RUnlock()
	var err error
	if err = d.check.listen(); err != nil {
		return err
	}
	if d.httpLis, err = net.Listen("tcp", httpAddr); err != nil {
		d.check.lis.Close()
		return fmt.Errorf("http_addr: %w", err)
	}
	d.httpLis = d.tls.wrapHTTP(d.httpLis)
	if err = d.listenOps(authzAddr); err != nil {
		d.check.lis.Close()
		d.httpLis.Close()
		return err
	}
	return nil
}

// GRPCAddr is the bound ext_authz address as a gRPC client dials it (after Listen):
// host:port, or unix:///path for a Unix socket.
func (d *Daemon) GRPCAddr() string { return d.check.addr() }

// HTTPAddr is the bound HTTP address (after Listen).
func (d *Daemon) HTTPAddr() string { return d.httpLis.Addr().String() }

// Serve serves until Shutdown; it returns the first serving error.
func (d *Daemon) Serve() error {
	errc := make(chan error, 3)
	n := 2 + d.startOps(errc)
	go func() { errc <- d.check.serve() }() // a Shutdown before Serve is a clean stop
	go func() {
		if err := d.http.Serve(d.httpLis); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
			return
		}
		errc <- nil
	}()
	d.mu.RLock()
	sites := len(d.cfg.Sites)
	d.mu.RUnlock()
	d.log.Info("tokenagent serving", "grpc", d.GRPCAddr(), "transport", d.check.cfg.GRPCTransport, "http", d.HTTPAddr(),
		"authz_http", d.AuthzHTTPAddr(), "key_source", d.source.Name(), "sites", sites)
	err := <-errc
	for i := 1; i < n; i++ {
		if err2 := <-errc; err == nil {
			err = err2
		}
	}
	return err
}

// Shutdown stops taking new checks, lets in-flight checks finish (up to ShutdownGrace), and
// closes everything.
func (d *Daemon) Shutdown(ctx context.Context) {
	d.ext.Shutdown()
	waitFront := d.stopOps(ctx)
	defer waitFront()
	d.check.shutdown(ctx, d.opts.ShutdownGrace)
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = d.http.Shutdown(hctx)
	d.Close()
}

// Close releases, in the reverse order of New, what the daemon built: the pipeline's Runtime,
// the key store, the user directory and the key source.
func (d *Daemon) Close() {
	if d.rt != nil {
		_ = d.rt.Close(context.Background())
	}
	if d.store != nil {
		d.store.Close()
	}
	if d.closeUs != nil {
		d.closeUs()
	}
	if d.closer != nil {
		d.closer()
	}
	if d.replay != nil {
		_ = d.replay.Close()
	}
	if d.revoked != nil {
		_ = d.revoked.Close()
	}
	d.tracing.shutdown()
}

// Reload reads the config file at path again, validates it in full and swaps it in
// atomically; a bad file leaves the old config serving and is returned (and reported in
// /readyz). Key source settings are not reloaded: changing them needs a restart.
func (d *Daemon) Reload(path string) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	stamp := filestamp.Of(path)
	for _, r := range d.tls.reloaders() {
		_ = r.Reload() // SIGHUP re-reads the certificates too; a bad pair is reported by the reloader
	}
	err := d.reload(path)
	d.reloaded(stamp, err)
	d.mu.Lock()
	d.lastReload = err
	d.mu.Unlock()
	if err != nil {
		d.reloadErrs.Inc()
		d.log.Error("config reload refused; the old config keeps serving", "error", err.Error())
		return err
	}
	d.reloads.Inc()
	d.log.Info("config reloaded", "path", path)
	return nil
}

func (d *Daemon) reload(path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	d.mu.RLock()
	old := d.cfg
	d.mu.RUnlock()
	if changed := cfg.KeepStartOnly(old); len(changed) > 0 {
		d.log.Warn("config reload: these settings take effect at the next restart; the running ones are kept",
			"settings", changed)
	}
	a, err := agent.New(d.rt, cfg)
	if err != nil {
		return err
	}
	if d.revoked != nil {
		// A new site's entries are read before it serves; when Redis does not answer, the
		// list reads them as soon as it does (and on_stale says what the agent answers).
		if err := d.revoked.SetSites(context.Background(), siteIDs(cfg)); err != nil {
			d.log.Warn("config reload: a new site's revocation entries are not read yet", "error", err.Error())
		}
	}
	d.mu.Lock()
	d.cfg, d.agent = cfg, a
	d.mu.Unlock()
	d.ext.SetChecker(a)
	d.setFrontChecker(a)
	d.rt.KeepOnly(a) // modules only the old config used go after a grace
	return nil
}

// Readiness is the body of /readyz.
type Readiness struct {
	Ready    bool     `json:"ready"`
	Problems []string `json:"problems,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// Ready reports whether the daemon can decide checks, with the problems that stop it and the
// warnings that do not.
func (d *Daemon) Ready() Readiness {
	r := Readiness{Ready: true}
	if err := d.store.Ready(); err != nil {
		r.Ready = false
		r.Problems = append(r.Problems, "key source: "+err.Error())
	}
	a := d.Agent()
	r.Problems = append(r.Problems, a.Problems()...)
	if len(r.Problems) > 0 {
		r.Ready = false
	}
	// The agent's warnings first: its first call reads every site's key records, and the
	// invalid ones it finds must be in this answer's store warnings, not only the next one's.
	agentWarnings := a.Warnings()
	r.Warnings = append(r.Warnings, d.store.Warnings()...)
	r.Warnings = append(r.Warnings, d.tls.warnings()...)
	if d.replay != nil {
		r.Warnings = append(r.Warnings, d.replay.Warnings()...)
	}
	if d.revoked != nil {
		r.Warnings = append(r.Warnings, d.revoked.Warnings()...)
	}
	r.Warnings = append(r.Warnings, agentWarnings...)
	d.mu.RLock()
	if d.lastReload != nil {
		r.Warnings = append(r.Warnings, "last config reload refused: "+d.lastReload.Error())
	}
	d.mu.RUnlock()
	return r
}

func (d *Daemon) serveReady(w http.ResponseWriter, _ *http.Request) {
	r := d.Ready()
	w.Header().Set("Content-Type", "application/json")
	if !r.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(r)
}
