// Command tokenagent is the per-node auth sidecar: an Envoy ext_authz v3 gRPC server that
// verifies MindTouch / CXone Expert tokens with keys from Vault (or an embedded key file).
//
//	tokenagent serve --config FILE [--grpc-addr ADDR] [--http-addr ADDR]
//	tokenagent mint authtoken|server --config FILE --site ID --user USER ...
//	tokenagent check --addr ADDR --host HOST --path PATH [-H 'name: value']...
//	tokenagent version
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
  tokenagent serve   --config FILE [--grpc-addr ADDR] [--http-addr ADDR]
  tokenagent mint    authtoken|server --config FILE --site ID --user USER [flags]
  tokenagent check   --addr ADDR --host HOST [--path PATH] [-H 'name: value']... [flags]
  tokenagent version

Run 'tokenagent COMMAND --help' for a command's flags.
`

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
		fmt.Fprintf(stdout, "tokenagent %s (%s, %s/%s)\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	case "help", "-h", "--help":
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

// newFlags returns a flag set that reports its own errors in one line.
func newFlags(name, synopsis string, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(stderr, "%s\n\nFlags:\n%s", synopsis, fs.FlagUsages())
	}
	return fs
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
	fs := newFlags("serve", `tokenagent serve — run the agent

Reads the config file (SPEC §7: sites, routes, key source, listen addresses), validates it in
full, then serves Envoy's ext_authz v3 gRPC API on --grpc-addr and /healthz, /readyz and
/metrics on --http-addr. SIGHUP reloads the config (a bad file keeps the old one serving);
SIGTERM or SIGINT stops taking new checks and lets in-flight ones finish.

Example:
  tokenagent serve --config examples/dev/tokenagent.yaml`, stderr)
	configPath := fs.String("config", "", "the config file (YAML; required)")
	grpcAddr := fs.String("grpc-addr", "", "listen address of the ext_authz gRPC server (overrides grpc_addr)")
	httpAddr := fs.String("http-addr", "", "listen address of /healthz, /readyz and /metrics (overrides http_addr)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (overrides log.level)")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *configPath == "" {
		fmt.Fprintln(stderr, "tokenagent serve: --config is required (try examples/dev/tokenagent.yaml)")
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
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	log := newLogger(cfg.Log.Level, stderr)
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	d, err := daemon.New(ctx, cfg, daemon.Options{Logger: log})
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
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "tokenagent mint: give a kind: authtoken or server (see tokenagent mint KIND --help)")
		return errUsage
	}
	kind, args := args[0], args[1:]
	fs := newFlags("mint "+kind, `tokenagent mint — print a token of a kind for a site

Kinds:
  authtoken   {userid}_{ticks}_{sig}, signed with the site's current Auth Token key
  server      tkn_{key}_{epoch}_{user}_{sig}, signed with the server key's secret

Keys are read from the config's key source (file or Vault); --secret / --key-b64 sign with a
given secret instead. For tests and integrations: a minted token is a live credential.

Examples:
  tokenagent mint authtoken --config examples/dev/tokenagent.yaml --site demo --user 42
  tokenagent mint server --config examples/dev/tokenagent.yaml --site demo --key k1 --user =alice`, stderr)
	configPath := fs.String("config", "", "the config file whose key source holds the site's keys")
	site := fs.String("site", "", "the site id (required)")
	user := fs.String("user", "", "the user: a decimal id, or = and a username (server tokens)")
	key := fs.String("key", "", "server tokens: the key name (the token's public part)")
	secret := fs.String("secret", "", "server tokens: sign with this secret instead of reading the key source")
	keyB64 := fs.String("key-b64", "", "auth tokens: sign with this base64 key instead of reading the key source")
	unprefixed := fs.Bool("unprefixed", false, "server tokens: the legacy form without tkn_ and separators in the signature")
	at := fs.String("at", "", "issue time, RFC 3339 or Unix seconds (default: now)")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *site == "" || *user == "" {
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
	store, closeStore, err := mintStore(*configPath, *secret != "" || *keyB64 != "")
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
	default:
		fmt.Fprintf(stderr, "tokenagent mint: unknown kind %q (want authtoken or server)\n", kind)
		return errUsage
	}
	return nil
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
	fs := newFlags("check", `tokenagent check — ask a running agent about one request, as Envoy would

Sends one ext_authz v3 CheckRequest over gRPC and prints the decision: ALLOW with the headers
set upstream, or the status, reason and body of the answer. Exit code 0 when allowed (or
answered by the agent itself), 1 when denied, 2 on a usage error.

Examples:
  tokenagent check --host localhost --path /@api/deki/pages/home -H "X-Deki-Token: $(tokenagent mint server ...)"
  tokenagent check --host localhost --method POST --path /@api/deki/pages/home   # anonymous write: denied`, stderr)
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
