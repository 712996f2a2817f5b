// Package kv is the production key source: HashiCorp Vault's KV version 2 secrets engine, read
// through github.com/hashicorp/vault/api, laid out as SPEC §6 says
// (`<mount>/<prefix>/sites/<site>/…`, default `secret` and `tokenagent`).
//
//	src, err := kv.New(kv.Options{
//		Address: "https://vault.example.com:8200",
//		Auth:    kv.Auth{Method: kv.AuthAppRole, RoleID: "tokenagent", SecretIDFile: "/etc/tokenagent/secret-id"},
//	})
//	if err != nil { ... }         // a bad option, never an unreachable Vault
//	src.Start(ctx)                // the login, in the background
//	defer src.Close()
//	store, err := vault.NewStore(src, vault.StoreOptions{})
//
// # Notes
//
//   - New only checks the options and builds the client; Start begins the login, in a goroutine
//     Close stops, and does not wait for Vault: the login is retried with exponential backoff
//     until it succeeds. Options.Validate holds the rules of the options (the config's
//     keys.vault section is checked with it). Ready is nil from the first successful login on;
//     before that it names the auth method and the cause of the last failure (never a secret).
//   - The agent's token is renewed with the client's LifetimeWatcher; when renewal ends (the
//     token reached its max TTL, or cannot be renewed) the source logs in again. A read refused
//     with 403 makes the source check its token and log in again when the token is dead.
//   - Read is the latest version; a latest version that is soft-deleted or destroyed, or a
//     record whose metadata was deleted, is vault.ErrNotFound (SPEC §6 revocation). Versions
//     reads the metadata and then each needed version with `?version=N`.
//   - A path that cannot name a record (an empty or dot segment, `?`, `#`, `%`, `\`, control
//     characters) is vault.ErrNotFound for reads, never a request to Vault, so names taken from
//     client tokens cannot reach other paths or make the source look down.
//   - Tokens and secret ids are never logged or put into errors.
//   - Safe for concurrent use.
package kv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tokenagent/tokenagent/vault"
)

// The auth methods of Auth.Method.
const (
	// AuthToken uses a Vault token: the contents of Auth.TokenFile, else $VAULT_TOKEN.
	AuthToken = "token"
	// AuthAppRole logs in with a role id (Auth.RoleID or Auth.RoleIDFile) and the secret id in
	// Auth.SecretIDFile.
	AuthAppRole = "approle"
	// AuthKubernetes logs in with Auth.Role and the service account token in Auth.TokenFile.
	AuthKubernetes = "kubernetes"
)

// Defaults of Options.
const (
	DefaultMount   = "secret"
	DefaultPrefix  = "tokenagent"
	DefaultTimeout = 5 * time.Second
	// DefaultServiceAccountTokenFile is where Kubernetes mounts a pod's service account token.
	DefaultServiceAccountTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

// Options configure a Source. Empty fields take their defaults; Address, Namespace and the
// token fall back to VAULT_ADDR, VAULT_NAMESPACE and VAULT_TOKEN.
type Options struct {
	// Address is Vault's URL (default $VAULT_ADDR, else https://127.0.0.1:8200). TLS settings
	// come from the usual VAULT_CACERT, VAULT_CLIENT_CERT, … variables.
	Address string
	// Namespace is the Vault Enterprise namespace (default $VAULT_NAMESPACE; none).
	Namespace string
	// Mount is the KV v2 mount (default "secret").
	Mount string
	// Prefix is the folder under the mount that holds "sites/" (default "tokenagent").
	Prefix string
	// Auth is how the agent logs in.
	Auth Auth
	// Timeout bounds one Vault request (default 5 s).
	Timeout time.Duration
	// Logger receives login, renewal and failure reports (default slog.Default()).
	Logger *slog.Logger
	// Metrics counts the source's requests and shows its login state (default: unregistered
	// collectors). Build them once per process with NewMetrics.
	Metrics *Metrics

	// backoff bounds of the login retry (tests shorten them).
	minBackoff, maxBackoff time.Duration
}

// Auth is how the agent logs in to Vault.
type Auth struct {
	// Method is AuthToken (default), AuthAppRole or AuthKubernetes.
	Method string
	// RoleID is the AppRole role id (not a secret). RoleIDFile is read instead when RoleID is
	// empty.
	RoleID     string
	RoleIDFile string
	// SecretIDFile holds the AppRole secret id; it is read at every login, so it may be
	// rotated on disk.
	SecretIDFile string
	// Role is the Kubernetes auth role.
	Role string
	// TokenFile is, for AuthToken, a file holding the Vault token (read at every login; empty:
	// $VAULT_TOKEN), and for AuthKubernetes the service account token (default
	// DefaultServiceAccountTokenFile).
	TokenFile string
	// MountPath is where the auth method is mounted (default "approle" or "kubernetes").
	MountPath string
}

// Source is the Vault KV v2 key source. Create it with New.
type Source struct {
	client *api.Client // reads and writes; its token is replaced at each login
	mount  string
	prefix string
	method string
	opts   Options
	log    *slog.Logger
	m      *Metrics

	ready     atomic.Bool
	readyCh   chan struct{}
	errMu     sync.Mutex
	lastErr   error
	recheck   chan struct{}
	lastCheck atomic.Int64 // unix nanos of the last token check asked for by a 403

	ownToken atomic.Bool        // the token came from a login (approle, kubernetes): revoke on Close
	started  sync.Once          // Start's, and Close's when it comes first
	cancel   context.CancelFunc // set by Start
	done     chan struct{}      // closed when run returns
	closed   sync.Once
}

var (
	_ vault.Source = (*Source)(nil)
	_ vault.Writer = (*Source)(nil)
)

// Validate fills opts' defaults and checks them, with no I/O: the mount and prefix, the
// timeout, and the auth method with what it needs (AppRole: a role id and a secret id file;
// Kubernetes: a role, and the service account token file and mount path by default). Its
// errors name the config field at fault (keys.vault.…). New calls it; a config is checked with
// it before any Source exists.
func (opts *Options) Validate() error {
	if opts.Mount == "" {
		opts.Mount = DefaultMount
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	opts.Mount = strings.Trim(opts.Mount, "/")
	opts.Prefix = strings.Trim(opts.Prefix, "/")
	if opts.Mount == "" || checkPath(opts.Mount) != nil {
		return fmt.Errorf("keys.vault.mount: %q is not a mount path", opts.Mount)
	}
	if checkPath(opts.Prefix) != nil {
		return fmt.Errorf("keys.vault.prefix: %q is not a path", opts.Prefix)
	}
	if opts.Timeout < 0 {
		return fmt.Errorf("keys.vault.timeout: %v is negative", opts.Timeout)
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	a := &opts.Auth
	if a.Method == "" {
		a.Method = AuthToken
	}
	switch a.Method {
	case AuthToken:
	case AuthAppRole:
		if a.RoleID == "" && a.RoleIDFile == "" {
			return errors.New("keys.vault.auth.role_id: approle auth needs role_id or role_id_file")
		}
		if a.SecretIDFile == "" {
			return errors.New("keys.vault.auth.secret_id_file: approle auth needs secret_id_file")
		}
		if a.MountPath == "" {
			a.MountPath = "approle"
		}
	case AuthKubernetes:
		if a.Role == "" {
			return errors.New("keys.vault.auth.role: kubernetes auth needs role")
		}
		if a.TokenFile == "" {
			a.TokenFile = DefaultServiceAccountTokenFile
		}
		if a.MountPath == "" {
			a.MountPath = "kubernetes"
		}
	default:
		return fmt.Errorf("keys.vault.auth.method: %q is not token, approle or kubernetes", a.Method)
	}
	a.MountPath = strings.Trim(a.MountPath, "/")
	return nil
}

// New checks opts (Validate, and the address) and returns a Source that is not logged in:
// Start begins the login. The error names the option at fault; New never talks to Vault.
func New(opts Options) (*Source, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.minBackoff <= 0 {
		opts.minBackoff = 250 * time.Millisecond
	}
	if opts.maxBackoff <= 0 {
		opts.maxBackoff = 30 * time.Second
	}
	a := &opts.Auth

	cfg := api.DefaultConfig() // reads VAULT_ADDR, VAULT_CACERT, … from the environment
	if cfg.Error != nil {
		return nil, fmt.Errorf("keys.vault: Vault client settings from the environment: %w", cfg.Error)
	}
	if opts.Address != "" {
		cfg.Address = opts.Address
	}
	if u, err := url.Parse(cfg.Address); err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "unix") || (u.Host == "" && u.Scheme != "unix") {
		return nil, fmt.Errorf("keys.vault.address: %q is not an http(s) URL", vault.RedactURL(cfg.Address))
	}
	cfg.Timeout = opts.Timeout
	// Fail fast: the Store serves stale records and retries on its own schedule, so a long
	// retry here would only hold a request. VAULT_MAX_RETRIES still wins when set.
	if os.Getenv(api.EnvVaultMaxRetries) == "" {
		cfg.MaxRetries = 1
	}
	cfg.MinRetryWait = 50 * time.Millisecond
	cfg.MaxRetryWait = 250 * time.Millisecond
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("keys.vault.address: %w", vault.RedactURLError(err))
	}
	client.ClearToken() // NewClient took VAULT_TOKEN; the token is set only by a login
	ns := opts.Namespace
	if ns == "" {
		ns = os.Getenv("VAULT_NAMESPACE")
	}
	if ns != "" {
		client.SetNamespace(ns)
	} else {
		client.ClearNamespace()
	}
	opts.Address = cfg.Address
	opts.Namespace = ns

	m := opts.Metrics
	if m == nil {
		m, _ = NewMetrics(nil) // nil registry: cannot fail
	}
	s := &Source{
		client:  client,
		mount:   opts.Mount,
		prefix:  opts.Prefix,
		method:  a.Method,
		opts:    opts,
		log:     opts.Logger.With("component", "vault", "address", vault.RedactURL(opts.Address)),
		m:       m,
		readyCh: make(chan struct{}),
		recheck: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	s.setErr(errors.New("not logged in yet (Start not called)"))
	m.setState(stateLoggingIn)
	m.loginFailures.WithLabelValues(s.method) // exported as 0 until a login fails, for alerts
	return s, nil
}

// Start begins the login, and from then on the token's renewal, in a goroutine that runs until
// ctx is done or Close is called. Only the first call starts it; it returns at once.
func (s *Source) Start(ctx context.Context) {
	s.started.Do(func() {
		ctx, s.cancel = context.WithCancel(ctx)
		s.setErr(errors.New("not logged in yet"))
		go s.run(ctx)
	})
}

// Name implements vault.Source.
func (s *Source) Name() string { return "vault" }

// Ready implements vault.Source: nil from the first successful login on, otherwise an error
// naming the auth method and the last failure.
func (s *Source) Ready() error {
	if s.ready.Load() {
		return nil
	}
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return fmt.Errorf("vault at %s (auth method %s): %w", vault.RedactURL(s.opts.Address), s.method, s.lastErr)
}

// WaitReady blocks until the first login succeeds or ctx is done; it returns Ready's error in
// the latter case.
func (s *Source) WaitReady(ctx context.Context) error {
	select {
	case <-s.readyCh:
		return nil
	case <-ctx.Done():
		return s.Ready()
	}
}

// Close stops the login and renewal work and, for a token this source logged in for
// (approle, kubernetes), revokes it (best effort). It is safe to call more than once.
func (s *Source) Close() {
	s.closed.Do(func() {
		started := true
		s.started.Do(func() { started = false }) // never started: nothing runs, and Start does nothing from now on
		if started {
			s.cancel()
			<-s.done
		}
		if s.ownToken.Load() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = s.client.Auth().Token().RevokeSelfWithContext(ctx, "")
		}
		s.client.ClearToken()
	})
}

func (s *Source) setErr(err error) {
	s.errMu.Lock()
	s.lastErr = vault.RedactURLError(err)
	s.errMu.Unlock()
}

// Paths.

func (s *Source) dataPath(p string) string { return s.join("data", p) }
func (s *Source) metaPath(p string) string { return s.join("metadata", p) }

func (s *Source) join(kind, p string) string {
	if s.prefix == "" {
		return s.mount + "/" + kind + "/" + p
	}
	return s.mount + "/" + kind + "/" + s.prefix + "/" + p
}

// checkPath refuses paths that cannot name a record.
func checkPath(p string) error {
	if p == "" {
		return errors.New("empty path")
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("path %q has an empty or dot segment", p)
		}
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c < 0x20 || c == 0x7f, c == '?', c == '#', c == '%', c == '\\':
			return fmt.Errorf("path %q holds a character not allowed in a key path", p)
		}
	}
	return nil
}

// notFound wraps vault.ErrNotFound with the path.
func notFound(p string) error { return fmt.Errorf("vault kv %s: %w", p, vault.ErrNotFound) }

// Error is a Vault request that failed: the operation, the Vault path and the cause. It never
// holds a token.
type Error struct {
	// Op is the operation: "read", "read_version", "metadata", "list", "write".
	Op string
	// Path is the Vault API path (for example "secret/data/tokenagent/sites/docs/authtoken").
	Path string
	// StatusCode is Vault's HTTP status, 0 when no answer came.
	StatusCode int
	// Err is the cause.
	Err error
}

// Error implements error: the operation, the path, and Vault's status and messages.
func (e *Error) Error() string {
	var re *api.ResponseError
	if errors.As(e.Err, &re) {
		msg := strings.Join(re.Errors, "; ")
		if msg == "" {
			msg = http.StatusText(re.StatusCode)
		}
		return fmt.Sprintf("vault %s %s: status %d: %s", e.Op, e.Path, re.StatusCode, msg)
	}
	return fmt.Sprintf("vault %s %s: %v", e.Op, e.Path, e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

func (s *Source) wrap(op, path string, err error) error {
	if err == nil {
		return nil
	}
	e := &Error{Op: op, Path: path, Err: err}
	var re *api.ResponseError
	if errors.As(err, &re) {
		e.StatusCode = re.StatusCode
		if re.StatusCode == http.StatusForbidden {
			s.askTokenCheck()
		}
	}
	return e
}

// call runs one Vault request and records it in the metrics.
func (s *Source) call(op string, f func() error) error {
	start := time.Now()
	err := f()
	s.m.observe(op, err, time.Since(start))
	return err
}

// Read implements vault.Source: the latest version of the record at path.
func (s *Source) Read(ctx context.Context, path string) (vault.Raw, error) {
	if checkPath(path) != nil {
		return vault.Raw{}, notFound(path)
	}
	return s.readVersion(ctx, path, 0)
}

// readVersion reads version v of path (0: the latest).
func (s *Source) readVersion(ctx context.Context, path string, v int) (vault.Raw, error) {
	p := s.dataPath(path)
	op := "read"
	var q map[string][]string
	if v > 0 {
		op = "read_version"
		q = map[string][]string{"version": {strconv.Itoa(v)}}
	}
	var raw vault.Raw
	err := s.call(op, func() error {
		sec, err := s.client.Logical().ReadWithDataWithContext(ctx, p, q)
		if err != nil {
			return s.wrap(op, p, err)
		}
		raw, err = decodeData(path, sec)
		return err
	})
	return raw, err
}

// decodeData turns a KV v2 read into a Raw; no secret, or null data (a soft-deleted or
// destroyed version), is ErrNotFound.
func decodeData(path string, sec *api.Secret) (vault.Raw, error) {
	if sec == nil || sec.Data == nil {
		return vault.Raw{}, notFound(path)
	}
	data, ok := sec.Data["data"].(map[string]any)
	if !ok || data == nil {
		return vault.Raw{}, notFound(path)
	}
	raw := vault.Raw{Data: data}
	if md, ok := sec.Data["metadata"].(map[string]any); ok {
		raw.Version = intOf(md["version"])
		raw.Created = timeOf(md["created_time"])
	}
	return raw, nil
}

// version is one entry of a record's KV v2 metadata.
type version struct {
	n       int
	created time.Time
	deleted bool
}

// metadata reads the record's KV v2 metadata: its versions (newest first) and current version.
// A record without metadata is ErrNotFound.
func (s *Source) metadata(ctx context.Context, path string) ([]version, int, error) {
	p := s.metaPath(path)
	var vs []version
	current := 0
	err := s.call("metadata", func() error {
		sec, err := s.client.Logical().ReadWithContext(ctx, p)
		if err != nil {
			return s.wrap("metadata", p, err)
		}
		if sec == nil || sec.Data == nil {
			return notFound(path)
		}
		current = intOf(sec.Data["current_version"])
		m, _ := sec.Data["versions"].(map[string]any)
		now := time.Now()
		for k, e := range m {
			n, err := strconv.Atoi(k)
			if err != nil {
				continue
			}
			em, _ := e.(map[string]any)
			v := version{n: n, created: timeOf(em["created_time"])}
			if d := timeOf(em["deletion_time"]); !d.IsZero() && !d.After(now) {
				v.deleted = true
			}
			if b, _ := em["destroyed"].(bool); b {
				v.deleted = true
			}
			vs = append(vs, v)
		}
		sort.Slice(vs, func(i, j int) bool { return vs[i].n > vs[j].n })
		return nil
	})
	return vs, current, err
}

// Versions implements vault.Source: the latest version and each older, readable one whose
// successor (the KV version written after it) was created at or after since, newest first.
func (s *Source) Versions(ctx context.Context, path string, since time.Time) ([]vault.Raw, error) {
	if checkPath(path) != nil {
		return nil, notFound(path)
	}
	vs, current, err := s.metadata(ctx, path)
	if err != nil {
		return nil, err
	}
	if len(vs) == 0 || current == 0 {
		return nil, notFound(path)
	}
	i := 0
	for i < len(vs) && vs[i].n > current {
		i++ // versions above current cannot exist; be safe
	}
	if i == len(vs) || vs[i].n != current || vs[i].deleted {
		return nil, notFound(path) // the latest version has no readable data
	}
	cur, err := s.readVersion(ctx, path, current)
	if err != nil {
		return nil, err
	}
	out := []vault.Raw{cur}
	succ := vs[i]
	for _, v := range vs[i+1:] {
		if succ.created.Before(since) {
			break // v was replaced before since, and every older one earlier still
		}
		replaced := succ.created // v's real successor, even if that one was deleted since
		succ = v
		if v.deleted {
			continue
		}
		raw, err := s.readVersion(ctx, path, v.n)
		if errors.Is(err, vault.ErrNotFound) {
			continue // deleted between the metadata read and now
		}
		if err != nil {
			return nil, err
		}
		raw.Replaced = replaced
		out = append(out, raw)
	}
	return out, nil
}

// List implements vault.Source: the names under dir (KV v2 metadata LIST), sorted, without
// trailing slashes; a name that is both a record and a folder appears once. A missing dir is
// an empty list.
func (s *Source) List(ctx context.Context, dir string) ([]string, error) {
	dir = strings.TrimSuffix(dir, "/")
	if checkPath(dir) != nil {
		return nil, nil
	}
	p := s.metaPath(dir)
	var names []string
	err := s.call("list", func() error {
		sec, err := s.client.Logical().ListWithContext(ctx, p)
		if err != nil {
			return s.wrap("list", p, err)
		}
		if sec == nil || sec.Data == nil {
			return nil
		}
		keys, _ := sec.Data["keys"].([]any)
		seen := make(map[string]bool, len(keys))
		for _, k := range keys {
			n, ok := k.(string)
			if !ok {
				continue
			}
			n = strings.TrimSuffix(n, "/")
			if n == "" || seen[n] {
				continue
			}
			seen[n] = true
			names = append(names, n)
		}
		sort.Strings(names)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return names, nil
}

// WriteCAS implements vault.Writer with KV v2's check-and-set (`options.cas`): cas 0 writes
// only a new record, cas N only over version N. A lost race is vault.ErrCASMismatch.
func (s *Source) WriteCAS(ctx context.Context, path string, data map[string]any, cas int) error {
	if err := checkPath(path); err != nil {
		return fmt.Errorf("vault kv write: %w", err)
	}
	if cas < 0 {
		return fmt.Errorf("vault kv write %s: cas %d is negative", path, cas)
	}
	p := s.dataPath(path)
	return s.call("write", func() error {
		_, err := s.client.Logical().WriteWithContext(ctx, p, map[string]any{
			"data":    data,
			"options": map[string]any{"cas": cas},
		})
		if err == nil {
			return nil
		}
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest {
			// Vault answers a stale cas with 400 and a message; rather than match the message,
			// look at the record's current version.
			_, current, merr := s.metadata(ctx, path)
			if errors.Is(merr, vault.ErrNotFound) {
				current, merr = 0, nil
			}
			if merr == nil && current != cas {
				return fmt.Errorf("vault kv write %s (cas %d, current version %d): %w", path, cas, current, vault.ErrCASMismatch)
			}
		}
		return s.wrap("write", p, err)
	})
}

// Helpers for Vault's JSON (numbers arrive as json.Number).

func intOf(v any) int {
	switch n := v.(type) {
	case interface{ Int64() (int64, error) }:
		i, err := n.Int64()
		if err != nil {
			return 0
		}
		return int(i)
	case float64:
		return int(n)
	case int:
		return n
	case string:
		i, _ := strconv.Atoi(n)
		return i
	}
	return 0
}

func timeOf(v any) time.Time {
	s, _ := v.(string)
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// jitter spreads d by ±20 %.
func jitter(d time.Duration) time.Duration {
	return d - d/5 + time.Duration(rand.Int64N(int64(d)*2/5+1))
}
