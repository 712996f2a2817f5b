package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/agent/agenttest"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/vault"
)

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("keys: {source: file, file: k}\nsites: [{id: a, hosts: [a.b], routes: [{path: /, require: admin}]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badTLS := filepath.Join(dir, "tls.yaml")
	if err := os.WriteFile(badTLS, []byte("keys: {source: file, file: k}\ngrpc_tls: {cert_file: none.crt, key_file: none.key}\nsites: [{id: a, hosts: [a.b]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, 2, "Usage"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
		{"unknown flag", []string{"serve", "--bogus"}, 2, "unknown flag: --bogus"},
		{"serve without config", []string{"serve"}, 2, "--config is required"},
		{"missing config file", []string{"serve", "--config", filepath.Join(dir, "none.yaml")}, 1, "none.yaml"},
		{"bad config", []string{"serve", "--config", bad}, 1, "routes[0].require"},
		{"mint without kind", []string{"mint"}, 2, "give a kind"},
		{"mint unknown kind", []string{"mint", "cookie", "--site", "a", "--user", "1", "--secret", "x"}, 2, "unknown kind"},
		{"mint without site", []string{"mint", "server", "--user", "1"}, 2, "--site and --user"},
		{"check bad header", []string{"check", "-H", "nocolon"}, 2, "want 'Name: value'"},
		{"serve with a missing certificate", []string{"serve", "--config", badTLS}, 1, "grpc_tls"},
		{"check with a missing CA file", []string{"check", "--cacert", filepath.Join(dir, "none.crt")}, 2, "--cacert"},
		{"check with a client cert but no CA", []string{"check", "--cert", "c.crt", "--key", "c.key"}, 2, "need --cacert"},
		{"check with a cert but no key", []string{"check", "--cacert", bad, "--cert", "c.crt"}, 2, "--cacert"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(tc.args...)
			if code != tc.code {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tc.code, stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q does not say %q", stderr, tc.want)
			}
			if tc.code == 1 && strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Errorf("error is not one line: %q", stderr)
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, cmd := range []string{"serve", "check"} {
		code, _, stderr := runCLI(cmd, "--help")
		if code != 0 || !strings.Contains(stderr, "Example") || !strings.Contains(stderr, "--") {
			t.Errorf("%s --help: code %d, %q", cmd, code, stderr)
		}
	}
	if code, _, stderr := runCLI("mint", "server", "--help"); code != 0 || !strings.Contains(stderr, "--secret") {
		t.Errorf("mint --help: code %d, %q", code, stderr)
	}
	if code, out, _ := runCLI("version"); code != 0 || !strings.HasPrefix(out, "tokenagent ") {
		t.Errorf("version: %d %q", code, out)
	}
}

// TestHelpPages: every command's --help is a manual page with every section and every flag.
func TestHelpPages(t *testing.T) {
	tests := []struct {
		args  []string
		flags []string
	}{
		{[]string{"serve", "--help"}, []string{"--config", "--grpc-addr", "--http-addr", "--authz-http-addr",
			"--log-level", "--config-poll", "--pprof"}},
		{[]string{"mint", "--help"}, []string{"--config", "--site", "--user", "--key", "--secret", "--key-b64", "--unprefixed", "--at"}},
		{[]string{"mint", "authtoken", "--help"}, []string{"--key-b64"}},
		{[]string{"check", "--help"}, []string{"--addr", "--host", "--method", "--path", "--header", "--cookie",
			"--body", "--json", "--timeout"}},
		{[]string{"version", "--help"}, nil},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(tc.args...)
			if code != 0 || stdout != "" {
				t.Fatalf("exit %d, stdout %q", code, stdout)
			}
			sections := []string{"NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "ENVIRONMENT", "EXAMPLES"}
			if len(tc.flags) > 0 {
				sections = append(sections, "FLAGS")
			}
			for _, s := range sections {
				if !strings.Contains(stderr, "\n"+s+"\n") && !strings.HasPrefix(stderr, s+"\n") {
					t.Errorf("no %s section", s)
				}
			}
			for _, v := range []string{"VAULT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE", "0   ", "Example 1"} {
				if !strings.Contains(stderr, v) {
					t.Errorf("the page does not mention %q", v)
				}
			}
			for _, f := range tc.flags {
				if !strings.Contains(stderr, f) {
					t.Errorf("the page does not describe %s", f)
				}
			}
			if strings.Count(stderr, "NAME\n") != 1 {
				t.Errorf("the page is printed %d times", strings.Count(stderr, "NAME\n"))
			}
		})
	}
	// `tokenagent help COMMAND` prints the same page on stdout, for a pager.
	code, stdout, _ := runCLI("help", "serve")
	if _, _, page := runCLI("serve", "--help"); code != 0 || stdout != page {
		t.Errorf("help serve: exit %d, page on stdout differs from serve --help", code)
	}
	if code, _, stderr := runCLI("serve", "--config", "x.yaml", "--config-poll", "-1s"); code != 2 || !strings.Contains(stderr, "--config-poll") {
		t.Errorf("a negative --config-poll: exit %d %q", code, stderr)
	}
}

func TestMintWithGivenSecret(t *testing.T) {
	code, out, _ := runCLI("mint", "server", "--site", "a", "--key", "k1", "--user", "=a b", "--secret", "s", "--at", "1700000000")
	if code != 0 || !strings.HasPrefix(out, "tkn_k1_1700000000_=a+b_") {
		t.Fatalf("mint server: %d %q", code, out)
	}
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	code, out, _ = runCLI("mint", "authtoken", "--site", "a", "--user", "5", "--key-b64", key, "--at", "2023-11-14T22:13:20Z")
	if code != 0 || !strings.HasPrefix(out, "5_638355968000000000_") {
		t.Fatalf("mint authtoken: %d %q", code, out)
	}
}

// TestServeEndToEnd runs the real binary (daemontest.StartProcess) on the dev example: it
// answers checks, reloads its config on SIGHUP, and exits cleanly on SIGTERM.
func TestServeEndToEnd(t *testing.T) {
	dir := t.TempDir()
	keys, err := os.ReadFile("../../../examples/dev/keys.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "tokenagent.yaml")
	writeConfig := func(extraRoute string) {
		cfg := "keys: {source: file, file: keys.yaml}\nsites:\n  - id: demo\n    hosts: [localhost]\n    routes:\n" +
			"      - {methods: [POST], path: \"/@api/deki/pages/*\", require: user}\n" + extraRoute
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("")
	if err := os.WriteFile(filepath.Join(dir, "keys.yaml"), keys, 0o600); err != nil {
		t.Fatal(err)
	}
	p := daemontest.StartProcess(t, cfgPath, nil, "--authz-http-addr", "127.0.0.1:0", "--pprof", "--config-poll", "100ms")
	addr, httpAddr, authzAddr := p.GRPC, p.HTTP, p.AuthzHTTP
	if addr == "" || httpAddr == "" || authzAddr == "" {
		t.Fatal("the agent never said it was serving on all three addresses")
	}

	code, tok, errOut := runCLI("mint", "server", "--config", cfgPath, "--site", "demo", "--key", "k1", "--user", "42")
	if code != 0 {
		t.Fatalf("mint: %d %s", code, errOut)
	}
	tok = strings.TrimSpace(tok)
	if code, out, _ := runCLI("check", "--addr", addr, "--host", "localhost", "--method", "POST",
		"--path", "/@api/deki/pages/home", "-H", "X-Deki-Token: "+tok); code != 0 || !strings.Contains(out, "x-auth-user: 42") {
		t.Fatalf("allowed check: %d %q", code, out)
	}
	if code, out, _ := runCLI("check", "--addr", addr, "--host", "localhost", "--method", "POST",
		"--path", "/@api/deki/pages/home"); code != 1 || !strings.Contains(out, "authentication_required") {
		t.Fatalf("denied check: %d %q", code, out)
	}

	// The HTTP front answers nginx's auth_request, and --pprof serves the profiler.
	req, _ := http.NewRequest("GET", "http://"+authzAddr+"/nginx", nil)
	req.Header.Set("X-Original-URI", "/@api/deki/pages/home")
	req.Header.Set("X-Original-Method", "POST")
	req.Header.Set("X-Original-Host", "localhost")
	req.Header.Set("X-Deki-Token", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Auth-User") != "42" {
		t.Fatalf("nginx endpoint: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, err := http.Get("http://" + httpAddr + "/debug/pprof/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("pprof: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// SIGHUP: a new rule takes effect.
	writeConfig("      - {path: /private, require: authenticated}\n")
	if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	daemontest.Eventually(t, "the config reloaded (log line)", func() bool { return len(p.Logs("config reloaded")) > 0 })
	if code, out, _ := runCLI("check", "--addr", addr, "--host", "localhost", "--path", "/private"); code != 1 {
		t.Fatalf("after reload, /private: %d %q", code, out)
	}

	// A changed file is reloaded without a signal.
	writeConfig("      - {path: /private, require: authenticated}\n      - {path: /other, require: user}\n")
	daemontest.Eventually(t, "the changed config file reloaded", func() bool {
		code, _, _ := runCLI("check", "--addr", addr, "--host", "localhost", "--path", "/other")
		return code == 1
	})

	// SIGTERM: a clean exit.
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.Exited():
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("no exit within a minute of SIGTERM")
	}
}

// TestMintLegacyAndJWT mints the other kinds and has a real agent verify each.
func TestMintLegacyAndJWT(t *testing.T) {
	dir := t.TempDir()
	priv, pub := testJWK(t)
	if err := os.WriteFile(filepath.Join(dir, "issuer.jwk.json"), priv, 0o600); err != nil {
		t.Fatal(err)
	}
	keys := "sites:\n  demo:\n    oauth: {issuer: \"https://demo.example\", audience: \"demo\", jwks: {keys: [" + string(pub) + "]}}\n" +
		"    legacy: {apikey: \"legacy-key-0123456789\"}\n"
	cfg := "keys: {source: file, file: keys.yaml}\nsites:\n  - id: demo\n    hosts: [localhost]\n" +
		"    legacy: {impersonation: true, apikey: true}\n"
	for name, body := range map[string]string{"keys.yaml": keys, "tokenagent.yaml": cfg} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfgPath := filepath.Join(dir, "tokenagent.yaml")
	a := testAgent(t, cfgPath)

	mint := func(args ...string) string {
		t.Helper()
		code, out, errOut := runCLI(append([]string{"mint"}, args...)...)
		if code != 0 {
			t.Fatalf("mint %v: %d %s", args, code, errOut)
		}
		return strings.TrimSpace(out)
	}
	jwt := mint("jwt", "--config", cfgPath, "--site", "demo", "--private-key", filepath.Join(dir, "issuer.jwk.json"),
		"--user", "jane", "--client-id", "portal", "--scope", "read write")
	imp := mint("impersonation", "--config", cfgPath, "--site", "demo", "--user", "=jane_doe")
	query := mint("apikey", "--config", cfgPath, "--site", "demo", "--user", "7")

	tests := []struct {
		name, path string
		headers    map[string]string
		kind, user string
	}{
		{"jwt", "/", map[string]string{"authorization": "Bearer " + jwt}, "oauth", "jane"},
		{"impersonation", "/", map[string]string{"x-authtoken": imp}, "impersonation", "=jane_doe"},
		{"apikey", "/?" + query, nil, "apikey", "7"},
	}
	for _, tc := range tests {
		d := a.Check(context.Background(), &agent.Request{Method: "GET", Host: "localhost", Path: tc.path, Headers: orEmpty(tc.headers)})
		if !d.Allowed || string(d.Identity.Kind) != tc.kind || d.Identity.User != tc.user {
			t.Errorf("%s: allowed %v kind %s user %q (%s), want %s %q", tc.name, d.Allowed, d.Identity.Kind, d.Identity.User, d.Body, tc.kind, tc.user)
		}
	}
	if code, _, errOut := runCLI("mint", "jwt", "--site", "demo", "--user", "x"); code != 1 || !strings.Contains(errOut, "--private-key") {
		t.Errorf("jwt without a key: %d %q", code, errOut)
	}
}

func orEmpty(h map[string]string) map[string]string {
	if h == nil {
		return map[string]string{}
	}
	return h
}

// testJWK returns a fresh ES256 private JWK and its public half, as JSON.
func testJWK(t *testing.T) (priv, pub []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwk := jose.JSONWebKey{Key: k, KeyID: "k1", Algorithm: "ES256", Use: "sig"}
	priv, err = jwk.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	pub, err = jwk.Public().MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// testAgent builds an in-process agent from a config file.
func testAgent(t *testing.T, cfgPath string) *agent.Agent {
	t.Helper()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	src, closer, err := daemon.OpenSource(context.Background(), cfg, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closer)
	store, err := vault.NewStore(src, vault.StoreOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	a := agenttest.New(t, cfg, agent.RuntimeOptions{Keys: store, Logger: log})
	return a
}

// check talks to an agent that serves mutual TLS with --cacert, --cert and --key, and is
// refused without its client certificate.
func TestCheckOverMutualTLS(t *testing.T) {
	ca := daemontest.NewCA(t, "agents CA")
	cert, key := ca.Issue(t, "agent", false)
	ccert, ckey := ca.Issue(t, "envoy", true)
	files := map[string]string{"tls.crt": string(cert), "tls.key": string(key), "ca.crt": string(ca.PEM()),
		"envoy.crt": string(ccert), "envoy.key": string(ckey), "keys.yaml": "sites: {}\n"}
	pair, err := tls.X509KeyPair(ccert, ckey)
	if err != nil {
		t.Fatal(err)
	}
	e := daemontest.Start(t, "keys: {source: file, file: keys.yaml}\ngrpc_tls: {cert_file: tls.crt, key_file: tls.key, client_ca_file: ca.crt}\n"+
		"sites: [{id: demo, hosts: [localhost]}]\n", daemontest.Options{Files: files,
		Daemon:    daemon.Options{Logger: slog.New(slog.DiscardHandler)},
		ClientTLS: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}}})
	at := func(name string) string { return filepath.Join(e.Dir, name) }
	code, out, stderr := runCLI("check", "--addr", e.D.GRPCAddr(), "--cacert", at("ca.crt"), "--cert", at("envoy.crt"), "--key", at("envoy.key"))
	if code != 0 || !strings.HasPrefix(out, "ALLOW") {
		t.Fatalf("check over mutual TLS: exit %d, %q %q", code, out, stderr)
	}
	if code, o, se := runCLI("check", "--addr", e.D.GRPCAddr(), "--cacert", at("ca.crt"), "--timeout", "2s"); code != 2 {
		t.Fatalf("check without a client certificate: exit %d, want 2 (refused) %s %s", code, o, se)
	}
	if code, _, _ := runCLI("check", "--addr", e.D.GRPCAddr(), "--timeout", "2s"); code != 2 {
		t.Fatalf("plaintext check of a TLS agent: exit %d, want 2", code)
	}
}
