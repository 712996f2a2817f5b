package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/extauthz"
	"github.com/tokenagent/tokenagent/vault/filestamp"
)

// DefaultConfigPoll is how often the config file is checked for changes (Options.ConfigPoll).
const DefaultConfigPoll = 2 * time.Second

// opsState is the operations side of the daemon: the HTTP authorization front, the config
// file watcher, the reload and build metrics, and pprof.
type opsState struct {
	front    *extauthz.HTTPHandler // nil when authz_http_addr is empty
	frontSrv *http.Server
	frontLis net.Listener

	stamp    filestamp.Stamp // the config file as last (re)loaded; guarded by Daemon.reloadMu
	stop     chan struct{}
	stopOnce sync.Once
	watching sync.WaitGroup

	lastOK   prometheus.Gauge
	lastOKAt prometheus.Gauge
}

// initOps builds the operations side: called by New once the agent exists, with the mux of
// http_addr.
func (d *Daemon) initOps(cfg *config.Config, reg *prometheus.Registry, mux *http.ServeMux) {
	o := &d.ops
	o.stop = make(chan struct{})
	if d.opts.ConfigPath != "" {
		o.stamp = filestamp.Of(d.opts.ConfigPath)
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tokenagent_build_info",
		Help:        "Always 1; the labels name the running build.",
		ConstLabels: prometheus.Labels{"version": d.opts.version(), "go_version": runtime.Version()}})
	build.Set(1)
	o.lastOK = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tokenagent_config_last_reload_successful",
		Help: "1 when the last config load or reload succeeded, 0 when the last reload was refused."})
	o.lastOK.Set(1)
	o.lastOKAt = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tokenagent_config_last_reload_success_timestamp_seconds",
		Help: "When the config now serving was loaded (Unix seconds)."})
	o.lastOKAt.SetToCurrentTime()
	ready := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tokenagent_ready",
		Help: "1 when /readyz answers 200 (key source answered, policies loaded), else 0."},
		func() float64 {
			if d.Ready().Ready {
				return 1
			}
			return 0
		})
	reg.MustRegister(build, o.lastOK, o.lastOKAt, ready)

	if d.opts.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if cfg.AuthzHTTPAddr != "" {
		o.front = extauthz.NewHTTPHandler(d.agent, extauthz.HTTPOptions{
			EnvoyPathPrefix: cfg.AuthzHTTP.EnvoyPathPrefix, Metrics: extauthz.NewHTTPMetrics(reg), Logger: d.log})
		o.frontSrv = &http.Server{Handler: o.front, ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 128 << 10}
	}
}

// listenOps binds authz_http_addr when the HTTP front is on.
func (d *Daemon) listenOps(addr string) error {
	if d.ops.frontSrv == nil {
		return nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("authz_http_addr: %w", err)
	}
	d.ops.frontLis = d.tls.wrapHTTP(lis)
	return nil
}

// AuthzHTTPAddr is the bound address of the HTTP authorization front (after Listen), or ""
// when it is off.
func (d *Daemon) AuthzHTTPAddr() string {
	if d.ops.frontLis == nil {
		return ""
	}
	return d.ops.frontLis.Addr().String()
}

// startOps starts the HTTP front (its result goes to errc) and the config watcher; it returns
// how many results Serve must wait for on errc.
func (d *Daemon) startOps(errc chan<- error) int {
	n := 0
	if d.ops.frontSrv != nil {
		n++
		go func() {
			if err := d.ops.frontSrv.Serve(d.ops.frontLis); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
				return
			}
			errc <- nil
		}()
	}
	if every := d.configPoll(); every > 0 {
		d.ops.watching.Add(1)
		go d.watchConfig(d.opts.ConfigPath, every)
	}
	if every := d.certPoll(); every > 0 {
		for _, r := range d.tls.reloaders() {
			d.ops.watching.Go(func() { r.Watch(d.ops.stop, every) })
		}
	}
	return n
}

func (d *Daemon) configPoll() time.Duration {
	switch {
	case d.opts.ConfigPath == "" || d.opts.ConfigPoll < 0:
		return 0
	case d.opts.ConfigPoll == 0:
		return DefaultConfigPoll
	}
	return d.opts.ConfigPoll
}

func (d *Daemon) certPoll() time.Duration {
	switch {
	case d.opts.CertPoll < 0:
		return 0
	case d.opts.CertPoll == 0:
		return DefaultCertPoll
	}
	return d.opts.CertPoll
}

// stopOps stops the config watcher and starts a graceful stop of the HTTP front (in-flight
// requests finish, up to ShutdownGrace); the returned func waits for it.
func (d *Daemon) stopOps(ctx context.Context) (wait func()) {
	d.ops.stopOnce.Do(func() { close(d.ops.stop) })
	d.ops.watching.Wait()
	if d.ops.frontSrv == nil || d.ops.frontLis == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sctx, cancel := context.WithTimeout(ctx, d.opts.ShutdownGrace)
		defer cancel()
		if err := d.ops.frontSrv.Shutdown(sctx); err != nil {
			_ = d.ops.frontSrv.Close()
		}
	}()
	return func() { <-done }
}

// reloaded records a reload's outcome: the config file's stamp taken before it was read (so a
// change during the read is seen by the next poll), and the reload gauges. Called with
// reloadMu held.
func (d *Daemon) reloaded(stamp filestamp.Stamp, err error) {
	d.ops.stamp = stamp
	if err != nil {
		d.ops.lastOK.Set(0)
		return
	}
	d.ops.lastOK.Set(1)
	d.ops.lastOKAt.SetToCurrentTime()
}

// setFrontChecker hands a new agent to the HTTP front (config reload).
func (d *Daemon) setFrontChecker(a *agent.Agent) {
	if d.ops.front != nil {
		d.ops.front.SetChecker(a)
	}
}

// watchConfig checks the config file every period and reloads it when it changed (in
// addition to SIGHUP). A bad file is reported by Reload (log, metrics, /readyz) and the old
// config keeps serving; it is read again only once the file changes again.
func (d *Daemon) watchConfig(path string, every time.Duration) {
	defer d.ops.watching.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-d.ops.stop:
			return
		case <-t.C:
		}
		cur := filestamp.Of(path)
		d.reloadMu.Lock()
		unchanged := cur == d.ops.stamp
		d.reloadMu.Unlock()
		if unchanged {
			continue
		}
		d.log.Info("config file changed; reloading", "path", path)
		_ = d.Reload(path)
	}
}
