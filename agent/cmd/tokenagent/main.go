// Command tokenagent is the per-node auth sidecar: an Envoy ext_authz v3 gRPC server (and an
// HTTP front for nginx, Traefik and Envoy's HTTP ext_authz) that verifies MindTouch / CXone
// Expert tokens with keys from Vault (or an embedded key file).
//
//	tokenagent serve --config FILE [--grpc-addr ADDR] [--http-addr ADDR] [--authz-http-addr ADDR] [--pprof]
//	tokenagent mint authtoken|server --config FILE --site ID --user USER ...
//	tokenagent check --addr ADDR --host HOST --path PATH [-H 'name: value']...
//	tokenagent version
//
// Every command prints a manual page with --help (or `tokenagent help COMMAND`).
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/daemon"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `tokenagent — an Envoy ext_authz sidecar for MindTouch / CXone Expert tokens

Usage:
  tokenagent serve   --config FILE [--grpc-addr ADDR] [--http-addr ADDR] [--authz-http-addr ADDR] [flags]
  tokenagent mint    authtoken|server --config FILE --site ID --user USER [flags]
  tokenagent check   --addr ADDR --host HOST [--path PATH] [-H 'name: value']... [flags]
  tokenagent version

Commands:
  serve     run the agent (gRPC ext_authz, HTTP front, /healthz, /readyz, /metrics)
  mint      print a token of a kind for a site
  check     ask a running agent about one request, as Envoy would
  version   print the version

Run 'tokenagent COMMAND --help' (or 'tokenagent help COMMAND') for a command's manual page.
`

// helpPage is a command's manual page; the FLAGS section comes from its flag set.
type helpPage struct {
	name, synopsis, description, exitStatus, environment, examples, extra string
}

// vaultEnvironment is the ENVIRONMENT section of the commands that read the key source.
const vaultEnvironment = `VAULT_ADDR        Vault's address, when keys.vault.address is empty.
VAULT_TOKEN       the Vault token of auth method token, when keys.vault.auth.token_file is empty.
VAULT_NAMESPACE   the Vault Enterprise namespace, when keys.vault.namespace is empty.
VAULT_CACERT, VAULT_CAPATH, VAULT_CLIENT_CERT, VAULT_CLIENT_KEY, VAULT_SKIP_VERIFY
                  TLS to Vault, as for the vault CLI.
None of them is read with keys.source: file.`

// write prints the page with the flag set's flags.
func (h helpPage) write(w io.Writer, fs *pflag.FlagSet) {
	section := func(title, body string) {
		if body == "" {
			return
		}
		fmt.Fprintf(w, "%s\n", title)
		for _, line := range strings.Split(strings.TrimRight(body, "\n"), "\n") {
			if line == "" {
				fmt.Fprintln(w)
				continue
			}
			fmt.Fprintf(w, "    %s\n", line)
		}
		fmt.Fprintln(w)
	}
	section("NAME", h.name)
	section("SYNOPSIS", h.synopsis)
	section("DESCRIPTION", h.description)
	if fs != nil && fs.HasFlags() {
		fmt.Fprintf(w, "FLAGS\n%s\n", fs.FlagUsagesWrapped(100))
	}
	section("EXIT STATUS", h.exitStatus)
	section("ENVIRONMENT", h.environment)
	if h.extra != "" {
		fmt.Fprint(w, strings.TrimRight(h.extra, "\n")+"\n\n")
	}
	section("EXAMPLES", h.examples)
}

var serveHelp = helpPage{
	name: "tokenagent serve — run the authorization agent",
	synopsis: `tokenagent serve --config FILE [--grpc-addr ADDR] [--http-addr ADDR] [--authz-http-addr ADDR]
                 [--log-level LEVEL] [--config-poll DURATION] [--pprof]`,
	description: `Reads the config file (sites, route rules, key source, listen addresses), validates it in full,
opens the key source, and only then listens:

  grpc_addr        Envoy's ext_authz v3 gRPC API (envoy.service.auth.v3.Authorization/Check)
                   and the gRPC health service.
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

var mintHelp = helpPage{
	name: "tokenagent mint — print a token of a kind for a site",
	synopsis: `tokenagent mint authtoken     --site ID --user DECIMAL_ID (--config FILE | --key-b64 KEY) [--at TIME]
tokenagent mint server        --site ID --key NAME --user USER (--config FILE | --secret S)
                              [--unprefixed] [--at TIME]
tokenagent mint jwt           --site ID --private-key JWK_FILE --user SUB [--client-id ID] [--scope S]
                              [--issuer URL] [--audience AUD] [--ttl D] [--config FILE] [--at TIME]
tokenagent mint impersonation --site ID --user USER (--config FILE | --secret APIKEY) [--at TIME]
tokenagent mint apikey        --site ID [--user DECIMAL_ID] (--config FILE | --secret APIKEY)`,
	description: `Prints one token on stdout, for tests and integrations:

  authtoken   {userid}_{ticks}_{sig}, an Auth Token signed with the site's current Auth Token
              key generation (the newest in the key source).
  server      tkn_{key}_{epoch}_{user}_{sig}, a Server API Token signed with the server key's
              secret; --user is a decimal id or = and a username (URL-encoded as it goes).
  jwt         an OAuth access token (RFC 9068) signed with a private JWK (RSA, EC P-256,
              Ed25519, or a 32-byte oct key for HS256) whose public half the site trusts; sub is
              --user, --client-id defaults to it (give the same value for an application token);
              iss and aud default to the site's own issuer record (--config).
  impersonation  imp_{epoch}_{md5}_{user}, the legacy Impersonation Auth Token, digested with
              the site's legacy API key (the site must turn it on: legacy.impersonation).
  apikey      the query string presenting the legacy Site API Key (apikey=…[&impersonateuserid=…]).

Keys are read from the config's key source (the key file or Vault); --secret and --key-b64 sign
with a given secret instead and need no config. A minted token is a live credential: treat it
as a secret.`,
	exitStatus: `0   the token was printed.
1   the config or key source could not be read, or the site has no such key.
2   usage error: no kind, an unknown kind, a missing --site, --user or --key, an unknown flag.`,
	environment: vaultEnvironment,
	examples: `Example 1 — an Auth Token cookie for user 42 of site demo:
    tokenagent mint authtoken --config examples/dev/tokenagent.yaml --site demo --user 42

Example 2 — a Server API Token acting as the user alice:
    tokenagent mint server --config examples/dev/tokenagent.yaml --site demo --key k1 --user =alice

Example 3 — sign with a known secret, at a fixed time (no config needed):
    tokenagent mint server --site demo --key k1 --secret s3cret --user 42 --at 2026-11-21T12:00:00Z

Example 4 — an OAuth token with the write scope, signed with the issuer's private JWK:
    tokenagent mint jwt --config tokenagent.yaml --site docs --private-key issuer.jwk.json \
        --user jane --client-id portal --scope "read write" --ttl 10m`,
}

var checkHelp = helpPage{
	name: "tokenagent check — ask a running agent about one request, as Envoy would",
	synopsis: `tokenagent check [--addr ADDR] [--host HOST] [--method M] [--path PATH] [-H 'Name: value']...
                 [--cookie C] [--body B] [--scheme S] [--json] [--timeout D]`,
	description: `Sends one ext_authz v3 CheckRequest over gRPC to a running agent and prints the decision: ALLOW
with the headers set upstream (and those removed), or DENY / ANSWER with the status, headers and
body the client would get. --json prints the whole CheckResponse, including the dynamic
metadata (site, kind, user, decision_id).`,
	exitStatus: `0   allowed, or answered by the agent itself (CORS preflight, token exchange).
1   denied.
2   usage error, or the agent could not be reached.`,
	environment: `check reads no environment variables: it talks to the agent, never to Vault, so VAULT_ADDR,
VAULT_TOKEN and VAULT_NAMESPACE do not matter here (they do to serve and mint).`,
	examples: `Example 1 — a Server API Token write, as Envoy would ask:
    tokenagent check --host localhost --method POST --path /@api/deki/pages/home \
        -H "X-Deki-Token: $(tokenagent mint server --config examples/dev/tokenagent.yaml --site demo --key k1 --user 42)"

Example 2 — an anonymous write (denied: 401 authentication_required, exit status 1):
    tokenagent check --host localhost --method POST --path /@api/deki/pages/home

Example 3 — an Auth Token cookie, the answer as JSON:
    tokenagent check --host localhost --cookie "authtoken=$tok" --json`,
}

var versionHelp = helpPage{
	name:     "tokenagent version — print the version",
	synopsis: "tokenagent version",
	description: `Prints the build's version (set at build time, else the module version), the Go version, and the
platform. The same version is in the metric tokenagent_build_info{version,go_version}.`,
	exitStatus:  "0   always.",
	environment: "version reads no environment variables (VAULT_ADDR, VAULT_TOKEN and VAULT_NAMESPACE matter to\nserve and mint only).",
	examples: `Example 1:
    tokenagent version`,
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks an error already explained; exit code 2.
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(args[1:], stderr)
	case "mint":
		err = cmdMint(args[1:], stdout, stderr)
	case "check":
		var code int
		code, err = cmdCheck(args[1:], stdout, stderr)
		if err == nil {
			return code
		}
	case "version", "--version":
		err = cmdVersion(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		if len(args) > 1 && args[0] == "help" {
			// `tokenagent help COMMAND` prints the page on stdout, for a pager.
			return run([]string{args[1], "--help"}, stdout, stdout)
		}
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "tokenagent: unknown command %q (want serve, mint, check or version)\n", args[0])
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "tokenagent: %v\n", err)
	return 1
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

// newFlags returns a flag set that reports its own errors in one line and prints page for
// --help.
func newFlags(name string, page helpPage, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.Usage = func() { page.write(fs.Output(), fs) }
	return fs
}

func cmdVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", versionHelp, stderr)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "tokenagent %s (%s, %s/%s)\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

func parseFlags(fs *pflag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(io.Discard) // one line on error, full usage only for --help
	err := fs.Parse(args)
	if errors.Is(err, pflag.ErrHelp) {
		fs.SetOutput(stderr)
		fs.Usage()
		return err
	}
	if err != nil {
		fmt.Fprintf(stderr, "tokenagent %s: %v (see --help)\n", fs.Name(), err)
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tokenagent %s: unexpected argument %q (see --help)\n", fs.Name(), fs.Arg(0))
		return errUsage
	}
	return nil
}

func newLogger(level string, w io.Writer) *slog.Logger {
	var l slog.Level
	switch level {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

func cmdServe(args []string, stderr io.Writer) error {
	fs := newFlags("serve", serveHelp, stderr)
	configPath := fs.String("config", "", "the config file (YAML; required)")
	grpcAddr := fs.String("grpc-addr", "", "listen address of the ext_authz gRPC server (overrides grpc_addr)")
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
	cfg, err := agent.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	if *grpcAddr != "" {
		cfg.GRPCAddr = *grpcAddr
	}
	if *httpAddr != "" {
		cfg.HTTPAddr = *httpAddr
	}
	if *authzHTTPAddr != "" {
		cfg.AuthzHTTPAddr = *authzHTTPAddr
	}
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	log := newLogger(cfg.Log.Level, stderr)
	slog.SetDefault(log)

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

func cmdMint(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
		mintHelp.write(stderr, mintFlags(newFlags("mint", mintHelp, stderr)).fs)
		return pflag.ErrHelp
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "tokenagent mint: give a kind: authtoken or server (see tokenagent mint KIND --help)")
		return errUsage
	}
	kind, args := args[0], args[1:]
	mf := mintFlags(newFlags("mint "+kind, mintHelp, stderr))
	fs := mf.fs
	configPath, site, user, key, secret, keyB64, unprefixed, at :=
		mf.configPath, mf.site, mf.user, mf.key, mf.secret, mf.keyB64, mf.unprefixed, mf.at
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *site == "" || (*user == "" && kind != "apikey") {
		fmt.Fprintln(stderr, "tokenagent mint: --site and --user are required")
		return errUsage
	}
	when := time.Now()
	if *at != "" {
		t, err := parseTime(*at)
		if err != nil {
			return fmt.Errorf("--at: %v", err)
		}
		when = t
	}
	if kind == "jwt" && *mf.privateKey == "" {
		return fmt.Errorf("--private-key: required for jwt (a private JWK file)")
	}
	given := *secret != "" || *keyB64 != "" || (kind == "jwt" && *mf.issuer != "" && *mf.audience != "")
	store, closeStore, err := mintStore(*configPath, given)
	if err != nil {
		return err
	}
	defer closeStore()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch kind {
	case "authtoken":
		if !isDigits(*user) {
			return fmt.Errorf("--user: an Auth Token names a decimal user id, got %q", *user)
		}
		var sec *vault.Secret
		if *keyB64 != "" {
			b, err := base64.StdEncoding.DecodeString(*keyB64)
			if err != nil {
				return fmt.Errorf("--key-b64: not base64")
			}
			sec = vault.NewSecret(b)
		} else {
			keys, err := store.AuthTokenKeys(ctx, *site, 0)
			if err != nil {
				return fmt.Errorf("site %q: auth token key: %v", *site, err)
			}
			sec = keys.Current().Secret
		}
		fmt.Fprintln(stdout, token.MintAuthToken(sec, *user, when))
	case "server":
		if *key == "" {
			fmt.Fprintln(stderr, "tokenagent mint server: --key is required")
			return errUsage
		}
		var sec *vault.Secret
		if *secret != "" {
			sec = vault.NewSecret([]byte(*secret))
		} else {
			rec, err := store.ServerKey(ctx, *site, *key)
			if err != nil {
				return fmt.Errorf("site %q: server key %q: %v", *site, *key, err)
			}
			sec = rec.Secret
		}
		if *unprefixed {
			fmt.Fprintln(stdout, token.MintUnprefixedServerToken(*key, sec, *user, when))
		} else {
			fmt.Fprintln(stdout, token.MintServerToken(*key, sec, *user, when))
		}
	case "jwt":
		tok, err := mintJWT(ctx, store, *site, mf, when)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, tok)
	case "impersonation", "apikey":
		var apiKey *vault.Secret
		if *secret != "" {
			apiKey = vault.NewSecret([]byte(*secret))
		} else {
			leg, err := store.Legacy(ctx, *site)
			if err != nil {
				return fmt.Errorf("site %q: legacy api key: %v", *site, err)
			}
			apiKey = leg.APIKey
		}
		if kind == "impersonation" {
			fmt.Fprintln(stdout, token.MintImpersonationToken(apiKey, *user, when))
			break
		}
		if *user != "" && !isDigits(*user) {
			return fmt.Errorf("--user: impersonateuserid is a decimal user id, got %q", *user)
		}
		var key []byte
		key = apiKey.AppendKey(key)
		fmt.Fprintln(stdout, token.APIKeyQuery(string(key), *user))
		clear(key)
	default:
		fmt.Fprintf(stderr, "tokenagent mint: unknown kind %q (want authtoken, server, jwt, impersonation or apikey)\n", kind)
		return errUsage
	}
	return nil
}

// mintJWT signs an OAuth access token with the private JWK of --private-key.
func mintJWT(ctx context.Context, store *vault.Store, site string, mf mintFlagSet, when time.Time) (string, error) {
	b, err := os.ReadFile(*mf.privateKey)
	if err != nil {
		return "", fmt.Errorf("--private-key: %v", err)
	}
	var key jose.JSONWebKey
	if err := key.UnmarshalJSON(b); err != nil {
		return "", fmt.Errorf("--private-key %s: not a JWK: %v", *mf.privateKey, err)
	}
	iss, aud := *mf.issuer, *mf.audience
	if iss == "" || aud == "" {
		if store == nil {
			return "", fmt.Errorf("--issuer and --audience, or --config to read the site's issuer, are required")
		}
		rec, err := store.OAuthIssuer(ctx, site)
		if err != nil {
			return "", fmt.Errorf("site %q: oauth issuer record: %v (or give --issuer and --audience)", site, err)
		}
		if iss == "" {
			iss = rec.Issuer
		}
		if aud == "" {
			aud = rec.Audience
		}
	}
	clientID := *mf.clientID
	if clientID == "" {
		clientID = *mf.user
	}
	claims := map[string]any{"iss": iss, "aud": aud, "sub": *mf.user, "client_id": clientID,
		"iat": when.Unix(), "exp": when.Add(*mf.ttl).Unix()}
	if *mf.scope != "" {
		claims["scope"] = *mf.scope
	}
	return token.MintJWT(key, claims)
}

// mintFlagSet is mint's flags.
type mintFlagSet struct {
	fs                                          *pflag.FlagSet
	configPath, site, user, key, secret, keyB64 *string
	unprefixed                                  *bool
	at                                          *string
	// jwt
	privateKey, issuer, audience, clientID, scope *string
	ttl                                           *time.Duration
}

func mintFlags(fs *pflag.FlagSet) mintFlagSet {
	return mintFlagSet{fs: fs,
		configPath: fs.String("config", "", "the config file whose key source holds the site's keys"),
		site:       fs.String("site", "", "the site id (required)"),
		user:       fs.String("user", "", "the user: a decimal id, or = and a username (server tokens) (required)"),
		key:        fs.String("key", "", "server tokens: the key name (the token's public part) (required)"),
		secret:     fs.String("secret", "", "server tokens: sign with this secret instead of reading the key source"),
		keyB64:     fs.String("key-b64", "", "auth tokens: sign with this base64 key instead of reading the key source"),
		unprefixed: fs.Bool("unprefixed", false, "server tokens: the legacy form without tkn_ and separators in the signature"),
		at:         fs.String("at", "", "issue time, RFC 3339 or Unix seconds (default: now)"),
		privateKey: fs.String("private-key", "", "jwt: the issuer's private key, a JWK file (its kid goes into the header)"),
		issuer:     fs.String("issuer", "", "jwt: the iss claim (default: the site's oauth record)"),
		audience:   fs.String("audience", "", "jwt: the aud claim (default: the site's oauth record)"),
		clientID:   fs.String("client-id", "", "jwt: the client_id claim (default: --user; equal to --user means an application token)"),
		scope:      fs.String("scope", "", "jwt: the scope claim, space-separated"),
		ttl:        fs.Duration("ttl", 10*time.Minute, "jwt: lifetime (exp = issue time + ttl)"),
	}
}

// mintStore opens the config's key source, unless the secret was given on the command line.
func mintStore(configPath string, secretGiven bool) (*vault.Store, func(), error) {
	if configPath == "" {
		if secretGiven {
			return nil, func() {}, nil
		}
		return nil, nil, fmt.Errorf("--config is required to read the site's keys (or give --secret / --key-b64)")
	}
	cfg, err := agent.LoadConfig(configPath)
	if err != nil {
		return nil, nil, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	src, closer, err := daemon.OpenSource(context.Background(), cfg, nil, log)
	if err != nil {
		return nil, nil, err
	}
	// Vault logs in in the background: wait for it, so the first read is not refused.
	if w, ok := src.(interface{ WaitReady(context.Context) error }); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := w.WaitReady(ctx)
		cancel()
		if err != nil {
			closer()
			return nil, nil, fmt.Errorf("key source: not ready: %v (%v)", err, src.Ready())
		}
	}
	store, err := vault.NewStore(src, vault.StoreOptions{Logger: log})
	if err != nil {
		closer()
		return nil, nil, err
	}
	return store, func() { store.Close(); closer() }, nil
}

func parseTime(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 nor Unix seconds", s)
	}
	return t, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// cmdCheck sends one CheckRequest and prints the decision. Exit code: 0 allowed or answered
// by the agent, 1 denied.
func cmdCheck(args []string, stdout, stderr io.Writer) (int, error) {
	fs := newFlags("check", checkHelp, stderr)
	addr := fs.String("addr", agent.DefaultGRPCAddr, "the agent's gRPC address")
	host := fs.String("host", "localhost", "the request's host (:authority)")
	method := fs.String("method", "GET", "the request's method")
	path := fs.String("path", "/", "the request's path, with its query")
	scheme := fs.String("scheme", "https", "the request's scheme")
	headers := fs.StringArrayP("header", "H", nil, "a request header 'Name: value' (repeatable)")
	cookie := fs.String("cookie", "", "the Cookie header")
	body := fs.String("body", "", "the request body (for the token exchange)")
	asJSON := fs.Bool("json", false, "print the CheckResponse as JSON")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	if err := parseFlags(fs, args, stderr); err != nil {
		return 2, err
	}
	h := map[string]string{}
	for _, hv := range *headers {
		k, v, ok := strings.Cut(hv, ":")
		if !ok {
			fmt.Fprintf(stderr, "tokenagent check: --header %q: want 'Name: value'\n", hv)
			return 2, errUsage
		}
		h[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	if *cookie != "" {
		h["cookie"] = *cookie
	}
	h[":authority"], h[":method"], h[":path"] = *host, *method, *path
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 2, fmt.Errorf("--addr %s: %v", *addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: *method, Host: *host, Path: *path,
			Scheme: *scheme, Headers: h, Body: *body, Size: int64(len(*body)), Protocol: "HTTP/1.1"}}}}
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
	if err != nil {
		return 2, fmt.Errorf("check %s: %v", *addr, err)
	}
	if *asJSON {
		b, _ := json.MarshalIndent(resp, "", "  ")
		fmt.Fprintln(stdout, string(b))
	} else {
		printDecision(stdout, resp)
	}
	if resp.GetOkResponse() != nil {
		return 0, nil
	}
	if d := resp.GetDeniedResponse(); d != nil {
		if c := d.GetStatus().GetCode(); c == 200 || c == 204 {
			return 0, nil
		}
	}
	return 1, nil
}

func printDecision(w io.Writer, r *authv3.CheckResponse) {
	if ok := r.GetOkResponse(); ok != nil {
		fmt.Fprintln(w, "ALLOW")
		for _, h := range ok.GetHeaders() {
			fmt.Fprintf(w, "  upstream header  %s: %s\n", h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		for _, h := range ok.GetHeadersToRemove() {
			fmt.Fprintf(w, "  removed header   %s\n", h)
		}
		for _, h := range ok.GetResponseHeadersToAdd() {
			fmt.Fprintf(w, "  response header  %s: %s\n", h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		return
	}
	d := r.GetDeniedResponse()
	verdict := "DENY"
	if c := d.GetStatus().GetCode(); c == 200 || c == 204 {
		verdict = "ANSWER"
	}
	fmt.Fprintf(w, "%s %d (gRPC %s)\n", verdict, d.GetStatus().GetCode(), grpcCodeName(r.GetStatus().GetCode()))
	for _, h := range d.GetHeaders() {
		fmt.Fprintf(w, "  header  %s: %s\n", h.GetHeader().GetKey(), h.GetHeader().GetValue())
	}
	if d.GetBody() != "" {
		fmt.Fprintf(w, "  body    %s\n", d.GetBody())
	}
}

func grpcCodeName(c int32) string {
	names := map[int32]string{0: "OK", 3: "INVALID_ARGUMENT", 5: "NOT_FOUND", 7: "PERMISSION_DENIED",
		14: "UNAVAILABLE", 16: "UNAUTHENTICATED"}
	if n, ok := names[c]; ok {
		return n
	}
	return strconv.Itoa(int(c))
}
