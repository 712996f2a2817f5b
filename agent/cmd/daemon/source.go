package daemon

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file"
	"github.com/tokenagent/tokenagent/vault/kv"
	"github.com/tokenagent/tokenagent/vault/users"
)

// openSource opens the key source of cfg: the embedded key file, or Vault KV v2. The Vault
// source logs in in the background (retrying with backoff), so the agent starts even while
// Vault is down and /readyz says so.
func openSource(ctx context.Context, cfg *config.Config, reg prometheus.Registerer, log *slog.Logger) (vault.Source, func(), error) {
	switch cfg.Keys.Source {
	case "file":
		src, err := file.Open(cfg.Keys.File)
		if err != nil {
			return nil, nil, err
		}
		return src, func() {}, nil
	case "vault":
		v := cfg.Keys.Vault
		m, err := kv.NewMetrics(reg)
		if err != nil {
			return nil, nil, err
		}
		opts := v.KV()
		opts.Logger, opts.Metrics = log, m
		src, err := kv.New(opts)
		if err != nil {
			return nil, nil, fmt.Errorf("keys.vault: %w", err)
		}
		src.Start(ctx)
		return src, src.Close, nil
	}
	return nil, nil, fmt.Errorf("keys.source: %q is not file or vault", cfg.Keys.Source)
}

// openUsers opens the just-in-time user directory of the identity token exchange beside the
// key source: the users file for the file source, the sites' users/ folders in Vault for the
// Vault source (written with check-and-set, so agents sharing one Vault agree on ids). The
// returned func closes it.
func openUsers(cfg *config.Config, src vault.Source) (users.Directory, func(), error) {
	switch s := src.(type) {
	case *kv.Source:
		return users.NewVault(s, users.VaultOptions{}), func() {}, nil
	case *file.Source:
		f, err := users.OpenFile(cfg.Keys.UsersFile, users.FileOptions{})
		if err != nil {
			return nil, nil, fmt.Errorf("keys.users_file: %w", err)
		}
		return f, func() { _ = f.Close() }, nil
	}
	return nil, func() {}, nil
}
