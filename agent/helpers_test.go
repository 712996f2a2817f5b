package agent

import (
	"context"
	"encoding/base64"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file/filetest"
)

// The agent tests' clock, keys and config: site docs (routes of SPEC §7's example and more),
// site other (same host suffix family, its own keys).
var (
	testNow      = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	testAuthKey  = []byte("docs-current-auth-token-key-32by")
	testOtherKey = []byte("other-site-auth-token-key-32byte")
)

const testConfig = `
keys: {source: file, file: keys.yaml}
sites:
  - id: docs
    hosts: [docs.example.com, "*.docs.example.com"]
    routes:
      - {methods: [POST, PUT, DELETE], path: "/@api/deki/pages/*", require: user, scopes: [write]}
      - {path: "/@api/deki/site/*", require: authenticated}
      - {path: "/admin", require: user}
  - id: other
    hosts: [other.example.com]
    server_token_single_use: true
    legacy: {unprefixed_server_tokens: true}
`

func testKeysYAML() string {
	return `
sites:
  docs:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(testAuthKey) + `", created: "2026-11-01T00:00:00Z"}
    server-tokens:
      k1: {secret: "s3cret"}
  other:
    authtoken:
      - {key: "` + base64.StdEncoding.EncodeToString(testOtherKey) + `", created: "2026-11-01T00:00:00Z"}
    server-tokens:
      k1: {secret: "other-secret"}
`
}

// newTestAgent builds an agent over a real file key source from the config and keys above.
func newTestAgent(t testing.TB) *Agent {
	t.Helper()
	cfg, err := config.Parse([]byte(testConfig), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clock := func() time.Time { return testNow }
	store := filetest.Store(t, testKeysYAML(), vault.StoreOptions{Now: clock, Logger: slog.New(slog.DiscardHandler)})
	a, err := New(newRuntime(t, RuntimeOptions{Keys: store, Now: clock, Logger: slog.New(slog.DiscardHandler)}), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func authToken(user string, at time.Time) string {
	return token.MintAuthToken(vault.NewSecret(testAuthKey), user, at)
}

func serverToken(secret, user string, at time.Time) string {
	return token.MintServerToken("k1", vault.NewSecret([]byte(secret)), user, at)
}

func check(t testing.TB, a *Agent, method, host, path string, headers map[string]string) *Decision {
	t.Helper()
	if headers == nil {
		headers = map[string]string{}
	}
	return a.Check(context.Background(), &Request{Method: method, Scheme: "https", Host: host, Path: path, Headers: headers})
}

func header(hs []token.Header, name string) (string, bool) {
	for _, h := range hs {
		if h.Name == name {
			return h.Value, true
		}
	}
	return "", false
}

type secretAlias = vault.Secret

func newSecret(s string) *vault.Secret { return vault.NewSecret([]byte(s)) }

// newRuntime builds a Runtime for a test, closed when the test ends. Policy modules compile
// into plugintest's shared cache, so only the first test compiles each.
func newRuntime(tb testing.TB, opts RuntimeOptions) *Runtime {
	tb.Helper()
	if opts.PolicyCacheDir == "" {
		opts.PolicyCacheDir = filepath.Join(plugintest.CacheDir(), "wazero")
	}
	rt, err := NewRuntime(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = rt.Close(context.Background()) })
	return rt
}
