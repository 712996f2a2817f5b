package config

import (
	"fmt"
	"strings"
	"time"
)

// The production settings of SPEC §8. Each is optional; absent, the agent behaves as in
// §1–§7. Listener and tracing settings take effect at start-up (like the listen addresses); a
// config reload keeps the ones the agent started with and says so in the log.

// TLS is the TLS of one listener (grpc_tls, http_tls).
type TLS struct {
	// CertFile and KeyFile are the PEM certificate chain and private key, re-read when they
	// change on disk.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, turns on mutual TLS: a client without a certificate signed by
	// one of these CAs fails the handshake.
	ClientCAFile string `yaml:"client_ca_file"`
}

func (t *TLS) validate(field, dir string) error {
	if t == nil {
		return nil
	}
	if t.CertFile == "" {
		return fmt.Errorf("%s.cert_file: required", field)
	}
	if t.KeyFile == "" {
		return fmt.Errorf("%s.key_file: required", field)
	}
	t.CertFile, t.KeyFile = resolve(dir, t.CertFile), resolve(dir, t.KeyFile)
	t.ClientCAFile = resolve(dir, t.ClientCAFile)
	return nil
}

// Tracing sends OpenTelemetry traces over OTLP/gRPC.
type Tracing struct {
	// OTLPEndpoint is the collector's host:port (required).
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// Insecure sends in plaintext (default: TLS).
	Insecure bool `yaml:"insecure"`
	// SampleRatio is the share of requests without a sampling decision that are traced
	// (parent-based: a sampled traceparent is always followed); default 0.01.
	SampleRatio *float64 `yaml:"sample_ratio"`
}

// DefaultSampleRatio is tracing.sample_ratio's default.
const DefaultSampleRatio = 0.01

func (t *Tracing) validate() error {
	if t == nil {
		return nil
	}
	if err := checkAddr("tracing.otlp_endpoint", t.OTLPEndpoint); err != nil {
		return err
	}
	if t.SampleRatio == nil {
		r := DefaultSampleRatio
		t.SampleRatio = &r
	}
	if r := *t.SampleRatio; r < 0 || r > 1 {
		return fmt.Errorf("tracing.sample_ratio: %v is not between 0 and 1", r)
	}
	return nil
}

// Replay is the memory of single-use Server API Tokens (SPEC §3.2, §8).
type Replay struct {
	// Store is "local" (the default: node-local memory) or "redis" (shared by every agent on
	// the same Redis).
	Store string `yaml:"store"`
	// Redis configures the redis store.
	Redis Redis `yaml:"redis"`
}

// Redis is a fleet store's Redis (replay.redis, revocation.redis).
type Redis struct {
	// Address is host:port, a comma-separated list of Redis Cluster seed nodes, or with
	// sentinel_master the sentinels' addresses (required with store redis).
	Address string `yaml:"address"`
	// SentinelMaster is the master's name at the Redis Sentinels listed in address.
	SentinelMaster string `yaml:"sentinel_master"`
	// SentinelPasswordFile holds the sentinels' own password (optional; read at start).
	SentinelPasswordFile string `yaml:"sentinel_password_file"`
	// Username and PasswordFile are the ACL credentials (optional).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// TLS connects with TLS.
	TLS bool `yaml:"tls"`
	// KeyPrefix starts every key the agent writes (default "tokenagent:").
	KeyPrefix string `yaml:"key_prefix"`
}

// Replay stores.
const (
	ReplayLocal = "local"
	ReplayRedis = "redis"
)

func (r *Replay) validate(dir string) error {
	switch r.Store {
	case "":
		r.Store = ReplayLocal
	case ReplayLocal:
	case ReplayRedis:
		if err := r.Redis.validate("replay.redis", dir); err != nil {
			return err
		}
	default:
		return fmt.Errorf("replay.store: %q is not local or redis", r.Store)
	}
	if r.Redis.KeyPrefix == "" {
		r.Redis.KeyPrefix = "tokenagent:"
	}
	return nil
}

// validate checks a Redis section named field, resolves its files against dir and sets the
// key prefix's default.
func (r *Redis) validate(field, dir string) error {
	if err := checkRedisAddr(field+".address", r.Address); err != nil {
		return err
	}
	// How the fields combine (sentinel_master with tls, for example) is fleet.RedisOptions'
	// to check, when the store is made at start.
	r.PasswordFile = resolve(dir, r.PasswordFile)
	r.SentinelPasswordFile = resolve(dir, r.SentinelPasswordFile)
	if r.KeyPrefix == "" {
		r.KeyPrefix = "tokenagent:"
	}
	return nil
}

// Site modes (SPEC §1, §8).
const (
	ModeEnforce = "enforce"
	ModeShadow  = "shadow"
)

func validateMode(m *string) error {
	switch *m {
	case "":
		*m = ModeEnforce
	case ModeEnforce, ModeShadow:
	default:
		return fmt.Errorf("mode: %q is not enforce or shadow", *m)
	}
	return nil
}

// validateProduction checks the production settings of c.
func (c *Config) validateProduction() error {
	if err := c.GRPCTLS.validate("grpc_tls", c.Dir); err != nil {
		return err
	}
	if err := c.HTTPTLS.validate("http_tls", c.Dir); err != nil {
		return err
	}
	if err := c.Tracing.validate(); err != nil {
		return err
	}
	if err := c.Replay.validate(c.Dir); err != nil {
		return err
	}
	return c.Revocation.validate(c.Dir, &c.Replay.Redis)
}

// checkRedisAddr checks a Redis address: host:port, or a comma-separated list of Redis Cluster
// seed nodes or sentinels, each host:port.
func checkRedisAddr(field, addr string) error {
	if addr == "" {
		return fmt.Errorf("%s: required", field)
	}
	for _, a := range strings.Split(addr, ",") {
		if err := checkAddr(field, a); err != nil {
			return err
		}
	}
	return nil
}

// Revocation is the fleet's revocation list (SPEC §9).
type Revocation struct {
	// Store is "" (no revocation list: every check as in SPEC §1–§8) or "redis".
	Store string `yaml:"store"`
	// Redis is the list's Redis, the same fields as replay.redis; absent: replay.redis.
	Redis *Redis `yaml:"redis"`
	// MaxStale is how long the agent may go without a confirmed sync (default 5m): then
	// /readyz warns, and with on_stale deny every credential is refused with 503.
	MaxStale Duration `yaml:"max_stale"`
	// OnStale is serve (default: the entries already read stay in force) or deny (503
	// keys_unavailable for every credential while the list is stale).
	OnStale string `yaml:"on_stale"`
	// JWTLifetime is the longest an OAuth token of the sites' issuers lives (exp − iat; default
	// 720h). A user or client entry is kept for the longest lifetime of the site's credential
	// kinds after its before: this, the site's authtoken_ttl, its server_token_window.
	JWTLifetime Duration `yaml:"jwt_lifetime"`
}

// Revocation settings.
const (
	RevocationRedis           = "redis"
	OnStaleServe              = "serve"
	OnStaleDeny               = "deny"
	DefaultRevocationMaxStale = 5 * time.Minute
	DefaultJWTLifetime        = 720 * time.Hour
)

// Enabled reports whether the config has a revocation list.
func (r *Revocation) Enabled() bool { return r.Store == RevocationRedis }

func (r *Revocation) validate(dir string, replay *Redis) error {
	switch r.Store {
	case "":
		if r.Redis != nil || r.MaxStale != 0 || r.OnStale != "" {
			return fmt.Errorf("revocation.store: required with the other revocation settings (redis)")
		}
		return nil
	case RevocationRedis:
	default:
		return fmt.Errorf("revocation.store: %q is not redis", r.Store)
	}
	if r.Redis == nil {
		if replay.Address == "" {
			return fmt.Errorf("revocation.redis.address: required (or replay.redis.address, which revocation.redis defaults to)")
		}
		copied := *replay
		r.Redis = &copied
	} else if err := r.Redis.validate("revocation.redis", dir); err != nil {
		return err
	}
	switch {
	case r.MaxStale < 0:
		return fmt.Errorf("revocation.max_stale: %s is negative", r.MaxStale.D())
	case r.MaxStale == 0:
		r.MaxStale = Duration(DefaultRevocationMaxStale)
	case r.MaxStale.D() < 2*time.Second:
		return fmt.Errorf("revocation.max_stale: %s is under 2s (the list is confirmed every second)", r.MaxStale.D())
	}
	switch r.OnStale {
	case "":
		r.OnStale = OnStaleServe
	case OnStaleServe, OnStaleDeny:
	default:
		return fmt.Errorf("revocation.on_stale: %q is not serve or deny", r.OnStale)
	}
	switch {
	case r.JWTLifetime < 0:
		return fmt.Errorf("revocation.jwt_lifetime: %s is negative", r.JWTLifetime.D())
	case r.JWTLifetime == 0:
		r.JWTLifetime = Duration(DefaultJWTLifetime)
	}
	return nil
}

// sameRevocationStore compares what the running list is built from (on_stale and
// jwt_lifetime take effect at a reload).
func sameRevocationStore(a, b *Revocation) bool {
	return a.Store == b.Store && eqPtr(a.Redis, b.Redis) && a.MaxStale == b.MaxStale
}

// startOnly are the settings that take effect only at start-up (listeners, TLS, reflection,
// tracing, the key source, the replay store): how to compare two configs' values and how to
// keep the running one. The one owner of that rule: StartOnly reports with it and
// KeepStartOnly applies it.
var startOnly = []struct {
	name string
	same func(a, b *Config) bool
	keep func(dst, src *Config)
}{
	{"grpc_addr", func(a, b *Config) bool { return a.GRPCAddr == b.GRPCAddr }, func(d, s *Config) { d.GRPCAddr = s.GRPCAddr }},
	{"grpc_socket_mode", func(a, b *Config) bool { return a.GRPCSocketMode == b.GRPCSocketMode }, func(d, s *Config) { d.GRPCSocketMode = s.GRPCSocketMode }},
	{"grpc_transport", func(a, b *Config) bool { return a.GRPCTransport == b.GRPCTransport }, func(d, s *Config) { d.GRPCTransport = s.GRPCTransport }},
	{"http_addr", func(a, b *Config) bool { return a.HTTPAddr == b.HTTPAddr }, func(d, s *Config) { d.HTTPAddr = s.HTTPAddr }},
	{"authz_http_addr", func(a, b *Config) bool { return a.AuthzHTTPAddr == b.AuthzHTTPAddr }, func(d, s *Config) { d.AuthzHTTPAddr = s.AuthzHTTPAddr }},
	{"authz_http", func(a, b *Config) bool { return a.AuthzHTTP == b.AuthzHTTP }, func(d, s *Config) { d.AuthzHTTP = s.AuthzHTTP }},
	{"grpc_tls", func(a, b *Config) bool { return eqPtr(a.GRPCTLS, b.GRPCTLS) }, func(d, s *Config) { d.GRPCTLS = s.GRPCTLS }},
	{"http_tls", func(a, b *Config) bool { return eqPtr(a.HTTPTLS, b.HTTPTLS) }, func(d, s *Config) { d.HTTPTLS = s.HTTPTLS }},
	{"grpc_reflection", func(a, b *Config) bool { return a.GRPCReflection == b.GRPCReflection }, func(d, s *Config) { d.GRPCReflection = s.GRPCReflection }},
	{"tracing", func(a, b *Config) bool { return eqTracing(a.Tracing, b.Tracing) }, func(d, s *Config) { d.Tracing = s.Tracing }},
	{"keys", func(a, b *Config) bool { return a.Keys == b.Keys }, func(d, s *Config) { d.Keys = s.Keys }},
	{"replay", func(a, b *Config) bool { return a.Replay == b.Replay }, func(d, s *Config) { d.Replay = s.Replay }},
	{"revocation", func(a, b *Config) bool { return sameRevocationStore(&a.Revocation, &b.Revocation) }, func(d, s *Config) {
		d.Revocation.Store, d.Revocation.Redis, d.Revocation.MaxStale = s.Revocation.Store, s.Revocation.Redis, s.Revocation.MaxStale
	}},
}

// StartOnly lists the settings that differ between c and o and take effect only at start-up
// (listen addresses, TLS, reflection, tracing, the key source, the replay store).
func (c *Config) StartOnly(o *Config) []string {
	var out []string
	for _, s := range startOnly {
		if !s.same(c, o) {
			out = append(out, s.name)
		}
	}
	return out
}

// KeepStartOnly makes c, a config loaded for a reload, keep running's start-up-only settings
// (StartOnly's list), and returns the names of those that differed: they wait for a restart.
func (c *Config) KeepStartOnly(running *Config) []string {
	changed := c.StartOnly(running)
	for _, s := range startOnly {
		s.keep(c, running)
	}
	return changed
}

func eqPtr[T comparable](a, b *T) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

func eqTracing(a, b *Tracing) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	return a == nil || (a.OTLPEndpoint == b.OTLPEndpoint && a.Insecure == b.Insecure &&
		eqPtr(a.SampleRatio, b.SampleRatio))
}
