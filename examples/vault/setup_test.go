// Package vaultexample_test proves the Vault example works: setup.sh runs against a real Vault
// dev server, and the agent's Vault source logs in with the AppRole it made, using the settings
// of tokenagent.yaml.
package vaultexample_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/kv"
	"github.com/tokenagent/tokenagent/vault/vaulttest"
)

func TestSetupScript(t *testing.T) {
	srv := vaulttest.Start(t)
	secrets := t.TempDir()
	run := func() string {
		t.Helper()
		cmd := exec.Command("sh", "setup.sh")
		cmd.Env = append(os.Environ(), "VAULT_ADDR="+srv.Addr, "VAULT_TOKEN="+srv.Token,
			"VAULT_BIN="+vaulttest.BinaryPath(), "TOKENAGENT_SECRETS_DIR="+secrets)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("setup.sh: %v\n%s\n%s", err, out, srv.Logs())
		}
		return string(out)
	}
	// Start without a secret/ mount, so the script has to enable KV version 2 itself.
	if err := srv.Client.Sys().Unmount("secret"); err != nil {
		t.Fatal(err)
	}
	out := run()
	if !strings.Contains(out, "enabling KV version 2 at secret/") {
		t.Errorf("setup.sh did not enable KV v2:\n%s", out)
	}
	t.Logf("setup.sh:\n%s", out)
	if again := run(); !strings.Contains(again, "kept secret/tokenagent/sites/demo/authtoken") {
		t.Errorf("a second run rewrote the demo records:\n%s", again)
	}

	// The example config, pointed at the test's files and server.
	cfg, err := config.Load("tokenagent.yaml")
	if err != nil {
		t.Fatalf("tokenagent.yaml: %v", err)
	}
	v := cfg.Keys.Vault
	if cfg.Keys.Source != "vault" || v.Auth.Method != "approle" {
		t.Fatalf("tokenagent.yaml: keys.source %q, auth method %q", cfg.Keys.Source, v.Auth.Method)
	}
	roleID, err := os.ReadFile(filepath.Join(secrets, "role-id"))
	if err != nil || strings.TrimSpace(string(roleID)) != v.Auth.RoleID {
		t.Fatalf("role-id file %q (%v), config role_id %q", roleID, err, v.Auth.RoleID)
	}
	if st, err := os.Stat(filepath.Join(secrets, "secret-id")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret-id file: %v %v", st, err)
	}

	opts := v.KV() // the config's settings, with the files where this test wrote them
	opts.Address, opts.Auth.SecretIDFile = srv.Addr, filepath.Join(secrets, "secret-id")
	src, err := kv.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	src.Start(context.Background())
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := src.WaitReady(ctx); err != nil {
		t.Fatalf("AppRole login: %v\nsetup.sh said:\n%s", err, out)
	}
	st, err := vault.NewStore(src, vault.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.AuthTokenKeys(ctx, "demo", time.Hour); err != nil {
		t.Errorf("demo auth token key: %v", err)
	}
	if k, err := st.ServerKey(ctx, "demo", "k1"); err != nil || k.Disabled {
		t.Errorf("demo server key k1: %+v %v", k, err)
	}
	if k, err := st.BrowserKey(ctx, "demo", "pub1"); err != nil || len(k.Origins) == 0 {
		t.Errorf("demo browser key pub1: %+v %v", k, err)
	}
	if err := src.WriteCAS(ctx, vault.SitePath("demo", "users", "probe"), map[string]any{"id": "1"}, 0); err != nil {
		t.Errorf("the policy lets the agent write its user directory: %v", err)
	}
	if err := src.WriteCAS(ctx, vault.SitePath("demo", "server-tokens", "k2"), map[string]any{"secret": "x"}, 0); err == nil {
		t.Error("the policy lets the agent write a server key")
	}
	if strings.Contains(out, readSecret(t, secrets)) {
		t.Error("setup.sh printed the secret id")
	}
}

func readSecret(t *testing.T, dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "secret-id"))
	if err != nil || len(strings.TrimSpace(string(b))) < 8 {
		t.Fatalf("secret-id: %q %v", b, err)
	}
	return strings.TrimSpace(string(b))
}
