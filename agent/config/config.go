package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenagent/tokenagent/agent/internal/hostname"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault/kv"
)

// Config is the agent's configuration file (SPEC §7). Load parses and validates it in full;
// an agent is only ever built from a valid Config.
type Config struct {
	// GRPCAddr is the ext_authz listener: host:port, or unix:///absolute/path for a Unix
	// socket (a per-node agent reached over a hostPath directory).
	GRPCAddr string `yaml:"grpc_addr"`
	// GRPCSocketMode is the file mode of grpc_addr's Unix socket, in octal (default "0660").
	GRPCSocketMode string `yaml:"grpc_socket_mode"`
	// GRPCTransport is the HTTP/2 server of grpc_addr: "tokenagent" (default: the agent's own,
	// one goroutine per connection) or "grpc-go" (gRPC-Go's server, kept for one release).
	GRPCTransport string `yaml:"grpc_transport"`
	HTTPAddr      string `yaml:"http_addr"`
	// AuthzHTTPAddr is the listen address of the HTTP authorization front (Envoy's HTTP
	// ext_authz, nginx auth_request, Traefik forwardAuth); empty (the default): off.
	AuthzHTTPAddr string `yaml:"authz_http_addr"`
	// AuthzHTTP tunes the HTTP authorization front.
	AuthzHTTP AuthzHTTP `yaml:"authz_http"`
	Keys      Keys      `yaml:"keys"`
	Policies  Policies  `yaml:"policies"`
	Log       Log       `yaml:"log"`
	Sites     []Site    `yaml:"sites"`

	// The production settings of SPEC §8 (production.go).
	GRPCTLS        *TLS       `yaml:"grpc_tls"`
	HTTPTLS        *TLS       `yaml:"http_tls"`
	GRPCReflection bool       `yaml:"grpc_reflection"`
	Tracing        *Tracing   `yaml:"tracing"`
	Replay         Replay     `yaml:"replay"`
	Revocation     Revocation `yaml:"revocation"`

	// Dir is the directory of the config file; relative paths in it are resolved against it.
	Dir string `yaml:"-"`
}

// Keys selects and tunes the key source (SPEC §6).
type Keys struct {
	// Source is "file" (the embedded key source) or "vault".
	Source string `yaml:"source"`
	// File is the keys file of the file source, relative to the config file.
	File string `yaml:"file"`
	// Refresh is how long a record is used before it is read again (default 30s).
	Refresh Duration `yaml:"refresh"`
	// MaxStale is how long cached records keep serving while the source is down (default 1h).
	MaxStale Duration `yaml:"max_stale"`
	// CacheBytes is the key cache's capacity (default 64 MiB).
	CacheBytes int64 `yaml:"cache_bytes"`
	// UsersFile is the just-in-time user directory of the identity token exchange when
	// Source is "file", relative to the config file (default users.yaml beside the keys
	// file). With Vault the directory lives in Vault, under each site's users/ folder.
	UsersFile string `yaml:"users_file"`
	// Vault configures the Vault source.
	Vault Vault `yaml:"vault"`
}

// Vault is the Vault KV v2 key source's configuration (package vault/kv, whose
// Options.Validate holds its rules and defaults). Address, token and namespace also come from
// VAULT_ADDR, VAULT_TOKEN and VAULT_NAMESPACE.
type Vault struct {
	Address   string    `yaml:"address"`
	Namespace string    `yaml:"namespace"`
	Mount     string    `yaml:"mount"`
	Prefix    string    `yaml:"prefix"`
	Timeout   Duration  `yaml:"timeout"`
	Auth      VaultAuth `yaml:"auth"`
}

// KV returns the settings as the Vault source's options (without its logger and metrics).
func (v *Vault) KV() kv.Options {
	return kv.Options{Address: v.Address, Namespace: v.Namespace, Mount: v.Mount, Prefix: v.Prefix,
		Timeout: v.Timeout.D(),
		Auth: kv.Auth{Method: v.Auth.Method, RoleID: v.Auth.RoleID, RoleIDFile: v.Auth.RoleIDFile,
			SecretIDFile: v.Auth.SecretIDFile, Role: v.Auth.Role, TokenFile: v.Auth.TokenFile,
			MountPath: v.Auth.MountPath}}
}

// VaultAuth is how the agent logs in to Vault.
type VaultAuth struct {
	// Method is "token" (default), "approle" or "kubernetes".
	Method string `yaml:"method"`
	// TokenFile holds the Vault token (method token; VAULT_TOKEN otherwise).
	TokenFile string `yaml:"token_file"`
	// RoleID (or RoleIDFile) and SecretIDFile are the AppRole credentials (method approle).
	RoleID       string `yaml:"role_id"`
	RoleIDFile   string `yaml:"role_id_file"`
	SecretIDFile string `yaml:"secret_id_file"`
	// Role is the Vault role (method kubernetes); TokenFile is then the service-account token
	// (default /var/run/secrets/kubernetes.io/serviceaccount/token).
	Role string `yaml:"role"`
	// MountPath is the auth method's mount path when not the default.
	MountPath string `yaml:"mount_path"`
}

// Policies tunes the WebAssembly policy engine.
type Policies struct {
	// CacheDir keeps compiled modules across restarts (default: the user cache dir).
	CacheDir string `yaml:"cache_dir"`
	// Deadline is the default per-call deadline (default 5ms).
	Deadline Duration `yaml:"deadline"`
}

// AuthzHTTP tunes the HTTP authorization front (package extauthz, HTTPHandler).
type AuthzHTTP struct {
	// EnvoyPathPrefix is the path_prefix of Envoy's http_service: an authorization request for
	// the original path P arrives as EnvoyPathPrefix+P (default "/envoy").
	EnvoyPathPrefix string `yaml:"envoy_path_prefix"`
}

// DefaultEnvoyPathPrefix is the default of authz_http.envoy_path_prefix.
const DefaultEnvoyPathPrefix = "/envoy"

// reservedAuthzPaths are the HTTP front's fixed endpoints (extauthz/http.go); the Envoy
// prefix may not shadow them.
var reservedAuthzPaths = []string{"/nginx", "/traefik", "/answer"}

func (h *AuthzHTTP) validate() error {
	p := h.EnvoyPathPrefix
	if p == "" {
		h.EnvoyPathPrefix = DefaultEnvoyPathPrefix
		return nil
	}
	if p[0] != '/' || len(p) < 2 || p[len(p)-1] == '/' || strings.ContainsAny(p, "?#% \t*") {
		return fmt.Errorf("authz_http.envoy_path_prefix: %q must be a path such as /envoy (a leading /, no trailing /, no query)", p)
	}
	for _, r := range reservedAuthzPaths {
		if p == r || strings.HasPrefix(p, r+"/") {
			return fmt.Errorf("authz_http.envoy_path_prefix: %q is taken by the HTTP front's %s endpoint", p, r)
		}
	}
	return nil
}

// Log tunes logging.
type Log struct {
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
	// AllowSample logs one allowed decision in N (0: none; denials are always logged).
	AllowSample int `yaml:"allow_sample"`
}

// Site is one site (tenant) of the config file.
type Site struct {
	ID                     string   `yaml:"id"`
	Hosts                  []string `yaml:"hosts"`
	AuthTokenTTL           Duration `yaml:"authtoken_ttl"`
	AuthTokenRotationGrace Duration `yaml:"authtoken_rotation_grace"`
	ServerTokenWindow      Duration `yaml:"server_token_window"`
	ServerTokenSingleUse   bool     `yaml:"server_token_single_use"`
	Legacy                 Legacy   `yaml:"legacy"`
	Routes                 []Route  `yaml:"routes"`
	// Policy is the path of the site's WebAssembly policy module (relative to the config).
	Policy string `yaml:"policy"`
	// PolicyDeadline overrides the per-call policy deadline for this site.
	PolicyDeadline Duration `yaml:"policy_deadline"`
	// PolicyEntrypoint names the rule an OPA bundle evaluates (SPEC §5a; default: the
	// bundle's only entrypoint).
	PolicyEntrypoint string `yaml:"policy_entrypoint"`
	// Mode is enforce (default) or shadow: would-be denials are allowed, logged and counted
	// (SPEC §8).
	Mode string `yaml:"mode"`
}

// Legacy holds the legacy credential switches, all off by default.
type Legacy struct {
	Impersonation          bool `yaml:"impersonation"`
	APIKey                 bool `yaml:"apikey"`
	UnprefixedServerTokens bool `yaml:"unprefixed_server_tokens"`
}

// Route is one route rule (SPEC §5).
type Route struct {
	Methods []string `yaml:"methods"`
	Path    string   `yaml:"path"`
	Require string   `yaml:"require"`
	Scopes  []string `yaml:"scopes"`
}

// Duration is a time.Duration written as a Go duration string ("30s", "156h").
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: want a duration such as \"30s\"", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (use Go syntax such as \"30s\" or \"156h\")", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Load reads, parses and validates the config file at path. The error is one line that
// names the file and the field at fault.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg, err := Parse(b, dir)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse parses and validates a config document whose relative paths are resolved
// against dir, and fills in defaults.
func Parse(b []byte, dir string) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, oneLine(err)
	}
	cfg.Dir = dir
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// oneLine flattens yaml's multi-line type errors into one line.
func oneLine(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, e := range te.Errors {
			msgs[i] = strings.Replace(e, "not found in type config.", "is unknown in ", 1)
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	return errors.New(strings.ReplaceAll(err.Error(), "\n", " "))
}

// Defaults applied by validate.
const (
	DefaultGRPCAddr = "127.0.0.1:9191"
	DefaultHTTPAddr = "127.0.0.1:9192"
	DefaultRefresh  = 30 * time.Second
	DefaultMaxStale = time.Hour
)

func (c *Config) validate() error {
	if c.GRPCAddr == "" {
		c.GRPCAddr = DefaultGRPCAddr
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if err := c.CheckListeners(); err != nil {
		return err
	}
	if err := c.AuthzHTTP.validate(); err != nil {
		return err
	}
	if err := c.Keys.validate(c.Dir); err != nil {
		return err
	}
	if err := c.validateProduction(); err != nil {
		return err
	}
	if c.Policies.Deadline < 0 {
		return fmt.Errorf("policies.deadline: must be positive")
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	if c.Log.AllowSample < 0 {
		return fmt.Errorf("log.allow_sample: must be 0 or more")
	}
	if len(c.Sites) == 0 {
		return fmt.Errorf("sites: at least one site is required")
	}
	ids := map[string]bool{}
	hosts := map[string]string{}
	for i := range c.Sites {
		s := &c.Sites[i]
		if err := s.validate(c.Dir); err != nil {
			return fmt.Errorf("sites[%d] (%s).%w", i, s.ID, err)
		}
		if ids[s.ID] {
			return fmt.Errorf("sites[%d].id: %q is used by another site", i, s.ID)
		}
		ids[s.ID] = true
		for _, h := range s.Hosts {
			if other, ok := hosts[h]; ok {
				return fmt.Errorf("sites[%d] (%s).hosts: %q is also a host of site %q", i, s.ID, h, other)
			}
			hosts[h] = s.ID
		}
	}
	return nil
}

// CheckListeners checks the listen settings (grpc_addr, grpc_transport, grpc_socket_mode,
// http_addr, authz_http_addr), filling in the defaults of the grpc_* ones; Load calls it, and so
// must whoever changes them afterwards (the command line's overrides).
func (c *Config) CheckListeners() error {
	if err := c.validateGRPCListener(); err != nil {
		return err
	}
	if err := checkAddr("http_addr", c.HTTPAddr); err != nil {
		return err
	}
	if c.AuthzHTTPAddr != "" {
		return checkAddr("authz_http_addr", c.AuthzHTTPAddr)
	}
	return nil
}

// The values of grpc_transport.
const (
	TransportTokenagent = "tokenagent"
	TransportGRPCGo     = "grpc-go"
)

// DefaultGRPCSocketMode is grpc_socket_mode's default: the owner and its group may connect.
const DefaultGRPCSocketMode = "0660"

// unixScheme starts a grpc_addr that is a Unix socket.
const unixScheme = "unix://"

func (c *Config) validateGRPCListener() error {
	switch c.GRPCTransport {
	case "":
		c.GRPCTransport = TransportTokenagent
	case TransportTokenagent, TransportGRPCGo:
	default:
		return fmt.Errorf("grpc_transport: %q is not %s or %s", c.GRPCTransport, TransportTokenagent, TransportGRPCGo)
	}
	if c.GRPCSocketMode == "" {
		c.GRPCSocketMode = DefaultGRPCSocketMode
	}
	if _, err := c.SocketMode(); err != nil {
		return err
	}
	if path, ok := strings.CutPrefix(c.GRPCAddr, unixScheme); ok {
		if !filepath.IsAbs(path) || filepath.Clean(path) != path {
			return fmt.Errorf("grpc_addr: %q: a Unix socket is unix:// and an absolute, clean path (unix:///run/tokenagent/ext_authz.sock)", c.GRPCAddr)
		}
		if len(path) > 107 { // sun_path holds 108 bytes with the NUL
			return fmt.Errorf("grpc_addr: the socket path %q is over the 107 bytes a Unix socket path may have", path)
		}
		return nil
	}
	return checkAddr("grpc_addr", c.GRPCAddr)
}

// GRPCListen is the network ("tcp" or "unix") and address grpc_addr names.
func (c *Config) GRPCListen() (network, address string) {
	if path, ok := strings.CutPrefix(c.GRPCAddr, unixScheme); ok {
		return "unix", path
	}
	return "tcp", c.GRPCAddr
}

// SocketMode is grpc_socket_mode as a file mode.
func (c *Config) SocketMode() (os.FileMode, error) {
	m := c.GRPCSocketMode
	if m == "" {
		m = DefaultGRPCSocketMode
	}
	v, err := strconv.ParseUint(m, 8, 32)
	if err != nil || v > 0o777 || v&0o600 != 0o600 {
		return 0, fmt.Errorf("grpc_socket_mode: %q is not an octal file mode that lets the agent's user read and write (such as \"0660\")", c.GRPCSocketMode)
	}
	return os.FileMode(v), nil
}

func checkAddr(field, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%s: %q is not host:port", field, addr)
	}
	return nil
}

func (k *Keys) validate(dir string) error {
	if k.Refresh == 0 {
		k.Refresh = Duration(DefaultRefresh)
	}
	if k.MaxStale == 0 {
		k.MaxStale = Duration(DefaultMaxStale)
	}
	if k.Refresh < 0 {
		return fmt.Errorf("keys.refresh: must be positive")
	}
	if k.MaxStale < k.Refresh {
		return fmt.Errorf("keys.max_stale: must be at least keys.refresh (%s)", k.Refresh.D())
	}
	if k.CacheBytes < 0 {
		return fmt.Errorf("keys.cache_bytes: must be positive")
	}
	switch k.Source {
	case "file":
		if k.File == "" {
			return fmt.Errorf("keys.file: required when keys.source is file")
		}
		k.File = resolve(dir, k.File)
		if k.UsersFile == "" {
			k.UsersFile = filepath.Join(filepath.Dir(k.File), "users.yaml")
		}
		if k.UsersFile = resolve(dir, k.UsersFile); filepath.Clean(k.UsersFile) == filepath.Clean(k.File) {
			return fmt.Errorf("keys.users_file: must not be the keys file")
		}
	case "vault":
		if k.UsersFile != "" {
			return fmt.Errorf("keys.users_file: only with keys.source file (with vault the user directory lives in Vault, under each site's users/)")
		}
		v := &k.Vault
		// The rules of these settings are the Vault source's (kv.Options.Validate); the
		// defaults it fills are written back, so the config says what the source will use.
		o := v.KV()
		if err := o.Validate(); err != nil {
			return err
		}
		v.Mount, v.Prefix, v.Timeout = o.Mount, o.Prefix, Duration(o.Timeout)
		v.Auth.Method, v.Auth.TokenFile, v.Auth.MountPath = o.Auth.Method, o.Auth.TokenFile, o.Auth.MountPath
		if v.Auth.SecretIDFile != "" {
			v.Auth.SecretIDFile = resolve(dir, v.Auth.SecretIDFile)
		}
		if v.Auth.TokenFile != "" {
			v.Auth.TokenFile = resolve(dir, v.Auth.TokenFile)
		}
		if v.Auth.RoleIDFile != "" {
			v.Auth.RoleIDFile = resolve(dir, v.Auth.RoleIDFile)
		}
	case "":
		return fmt.Errorf("keys.source: required (file or vault)")
	default:
		return fmt.Errorf("keys.source: %q is not file or vault", k.Source)
	}
	return nil
}

func resolve(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

func (s *Site) validate(dir string) error {
	if !validSiteID(s.ID) {
		return fmt.Errorf("id: %q must match [a-z0-9-]{1,63}", s.ID)
	}
	if len(s.Hosts) == 0 {
		return fmt.Errorf("hosts: at least one hostname is required")
	}
	for i, h := range s.Hosts {
		n, err := normalizeHostPattern(h)
		if err != nil {
			return fmt.Errorf("hosts[%d]: %v", i, err)
		}
		s.Hosts[i] = n
	}
	if s.AuthTokenTTL == 0 {
		s.AuthTokenTTL = Duration(token.DefaultAuthTokenTTL)
	}
	if s.AuthTokenRotationGrace == 0 {
		s.AuthTokenRotationGrace = s.AuthTokenTTL
	}
	if s.ServerTokenWindow == 0 {
		s.ServerTokenWindow = Duration(token.DefaultServerTokenWindow)
	}
	for _, f := range []struct {
		name string
		d    Duration
	}{{"authtoken_ttl", s.AuthTokenTTL}, {"authtoken_rotation_grace", s.AuthTokenRotationGrace},
		{"server_token_window", s.ServerTokenWindow}, {"policy_deadline", s.PolicyDeadline}} {
		if f.d < 0 {
			return fmt.Errorf("%s: must be positive", f.name)
		}
	}
	for i := range s.Routes {
		if err := s.Routes[i].validate(); err != nil {
			return fmt.Errorf("routes[%d].%w", i, err)
		}
	}
	if s.Policy != "" {
		s.Policy = resolve(dir, s.Policy)
	}
	if s.PolicyEntrypoint != "" && s.Policy == "" {
		return fmt.Errorf("policy_entrypoint: only with a policy")
	}
	return validateMode(&s.Mode)
}

func validSiteID(id string) bool {
	if len(id) < 1 || len(id) > 63 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// normalizeHostPattern returns a configured hostname ("docs.example.com", "*.docs.example.com",
// "[::1]") in the canonical form requests are looked up in (package hostname).
func normalizeHostPattern(h string) (string, error) {
	name, wild := strings.CutPrefix(strings.TrimSpace(h), "*.")
	if strings.ContainsAny(name, "/ ") || (strings.Contains(name, ":") && !isIPv6Literal(name)) {
		return "", fmt.Errorf("%q: give a hostname without scheme, port or path", h)
	}
	if ip, err := netip.ParseAddr(name); err == nil && ip.Is6() {
		name = "[" + name + "]" // an IPv6 address, written without its brackets
	}
	c, err := hostname.Canonical(name)
	if err != nil {
		if strings.Contains(name, "*") {
			return "", fmt.Errorf("%q: a wildcard is allowed only as a leading \"*.\"", h)
		}
		return "", fmt.Errorf("%q is not a valid hostname: %v", h, err)
	}
	if wild {
		if hostname.IsIP(c) {
			return "", fmt.Errorf("%q: a \"*.\" wildcard cannot stand over an IP address", h)
		}
		return "*." + c, nil
	}
	return c, nil
}

// isIPv6Literal reports whether h is an IPv6 address, with or without brackets.
func isIPv6Literal(h string) bool {
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
	return err == nil && a.Is6()
}

// Requirements of a route rule.
const (
	RequireAny           = "any"
	RequireAuthenticated = "authenticated"
	RequireUser          = "user"
)

func (r *Route) validate() error {
	switch r.Require {
	case "":
		r.Require = RequireAny
	case RequireAny, RequireAuthenticated, RequireUser:
	default:
		return fmt.Errorf("require: %q is not one of any, authenticated, user", r.Require)
	}
	if r.Path == "" || r.Path[0] != '/' {
		return fmt.Errorf("path: %q must start with /", r.Path)
	}
	if i := strings.IndexByte(r.Path, '*'); i >= 0 && i != len(r.Path)-1 {
		return fmt.Errorf("path: %q may hold * only at its end", r.Path)
	}
	for i, m := range r.Methods {
		if m == "" || strings.ToUpper(m) != m || strings.ContainsAny(m, " \t/") {
			return fmt.Errorf("methods[%d]: %q must be an upper-case HTTP method", i, m)
		}
	}
	for i, sc := range r.Scopes {
		if sc == "" || strings.ContainsAny(sc, " \t\"") {
			return fmt.Errorf("scopes[%d]: %q must be a non-empty scope name without spaces or quotes", i, sc)
		}
	}
	return nil
}
