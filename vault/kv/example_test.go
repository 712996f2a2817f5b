package kv_test

import (
	"context"
	"log"
	"time"

	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/kv"
)

// A Vault source logging in with AppRole, behind the caching Store that verifiers read.
func ExampleNew() {
	ctx := context.Background()
	src, err := kv.New(kv.Options{
		Address: "https://vault.example.com:8200", // or VAULT_ADDR
		Mount:   "secret",
		Prefix:  "tokenagent",
		Auth: kv.Auth{
			Method:       kv.AuthAppRole,
			RoleID:       "tokenagent",
			SecretIDFile: "/etc/tokenagent/secret-id",
		},
	})
	if err != nil {
		log.Fatal(err) // a bad option; an unreachable Vault is retried in the background
	}
	src.Start(ctx) // the login, retried in the background until Vault answers
	defer src.Close()

	store, err := vault.NewStore(src, vault.StoreOptions{Refresh: 30 * time.Second, MaxStale: time.Hour})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	// Readiness (for /readyz): nil once logged in.
	if err := src.Ready(); err != nil {
		log.Print(err)
	}
	if k, err := store.ServerKey(ctx, "docs", "k1"); err == nil {
		_ = k.Disabled
	}
}
