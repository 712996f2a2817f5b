package daemon_test

import (
	"context"
	"encoding/base64"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/tokenagent/tokenagent/agent/cmd/daemon"
	"github.com/tokenagent/tokenagent/agent/cmd/daemon/daemontest"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/vaulttest"
)

// TestVaultEndToEnd runs the real daemon with keys in a real Vault dev server and checks over
// gRPC: tokens verify, a disabled key is refused within the refresh interval, and while Vault
// is down cached keys keep serving and an unseen key is 503 keys_unavailable, until Vault is
// back.
func TestVaultEndToEnd(t *testing.T) {
	v := vaulttest.Start(t)
	ctx := context.Background()
	seed := func() {
		kv := v.Client.KVv2("secret")
		for path, data := range map[string]map[string]any{
			"tokenagent/sites/docs/authtoken":        {"key": base64.StdEncoding.EncodeToString(authKey)},
			"tokenagent/sites/docs/server-tokens/k1": {"secret": "s3cret"},
			"tokenagent/sites/docs/server-tokens/k2": {"secret": "second"},
		} {
			if _, err := kv.Put(ctx, path, data); err != nil {
				t.Fatalf("seed %s: %v", path, err)
			}
		}
	}
	seed()

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "vault-token")
	daemontest.WriteFile(t, tokenFile, v.Token)
	cfgPath := filepath.Join(dir, "tokenagent.yaml")
	daemontest.WriteFile(t, cfgPath, `
grpc_addr: 127.0.0.1:0
http_addr: 127.0.0.1:0
keys:
  source: vault
  refresh: 500ms
  max_stale: 1h
  vault: {address: "`+v.Addr+`", auth: {method: token, token_file: vault-token}}
sites:
  - id: docs
    hosts: [docs.example.com]
`)
	t.Setenv("VAULT_TOKEN", "")
	e := daemontest.StartFile(t, cfgPath, daemontest.Options{Daemon: daemon.Options{Logger: slog.New(slog.DiscardHandler)}})
	d, client := e.D, e.Client
	checkCode := func(headers map[string]string) (codes.Code, *authv3.CheckResponse) {
		resp, err := client.Check(ctx, daemontest.CheckRequest("GET", "docs.example.com", "/", headers))
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return codes.Code(resp.GetStatus().GetCode()), resp
	}
	daemontest.Eventually(t, "ready after the Vault login", func() bool { return d.Ready().Ready })

	srv := map[string]string{"x-deki-token": serverToken("s3cret", "42")}
	auth := map[string]string{"cookie": "authtoken=" + token.MintAuthToken(vault.NewSecret(authKey), "7", time.Now())}
	if c, r := checkCode(srv); c != codes.OK {
		t.Fatalf("server token through Vault: %v %v", c, r)
	}
	if c, r := checkCode(auth); c != codes.OK {
		t.Fatalf("auth token through Vault: %v %v", c, r)
	}

	// Revocation: disable k1 in Vault; refused within the refresh interval.
	if _, err := v.Client.KVv2("secret").Put(ctx, "tokenagent/sites/docs/server-tokens/k1",
		map[string]any{"secret": "s3cret", "disabled": true}); err != nil {
		t.Fatal(err)
	}
	daemontest.Eventually(t, "the disabled key is refused", func() bool {
		_, r := checkCode(map[string]string{"x-deki-token": serverToken("s3cret", "42")})
		return daemontest.DeniedHeader(r, "x-auth-reason") == "revoked_key"
	})

	// Outage: cached keys serve, an unseen key is 503 with Retry-After.
	v.Stop()
	if c, r := checkCode(auth); c != codes.OK {
		t.Fatalf("cached auth token key during the outage: %v %v", c, r)
	}
	unseen := map[string]string{"x-deki-token": token.MintServerToken("k2", vault.NewSecret([]byte("second")), "1", time.Now())}
	c, r := checkCode(unseen)
	if c != codes.Unavailable || r.GetDeniedResponse().GetStatus().GetCode() != 503 ||
		daemontest.DeniedHeader(r, "x-auth-reason") != "keys_unavailable" || daemontest.DeniedHeader(r, "retry-after") == "" {
		t.Fatalf("unseen key during the outage: %v %v", c, r)
	}

	// Recovery without restarting the agent (a dev server restarts empty: seed it again).
	v.RestartT(t)
	seed()
	daemontest.Eventually(t, "the unseen key verifies once Vault is back", func() bool {
		c, _ := checkCode(map[string]string{"x-deki-token": token.MintServerToken("k2", vault.NewSecret([]byte("second")), "1", time.Now())})
		return c == codes.OK
	})
}
