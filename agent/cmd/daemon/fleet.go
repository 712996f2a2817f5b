package daemon

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/fleet"
)

// RedisOptions are the fleet store options of a config's Redis section (replay.redis,
// revocation.redis).
func RedisOptions(rc *config.Redis) fleet.RedisOptions {
	return fleet.RedisOptions{Address: rc.Address, SentinelMaster: rc.SentinelMaster,
		SentinelPasswordFile: rc.SentinelPasswordFile, Username: rc.Username, PasswordFile: rc.PasswordFile,
		TLS: rc.TLS, KeyPrefix: rc.KeyPrefix}
}

// OpenRevocations builds the revocation list of cfg (revocation.store: redis) for cfg's sites;
// it has not connected yet: Start it to follow the list, or use it to write and list entries
// (the revoke and revocations commands).
func OpenRevocations(cfg *config.Config, reg prometheus.Registerer, log *slog.Logger) (*fleet.RevocationList, error) {
	l, err := fleet.NewRevocationList(fleet.RevocationOptions{Redis: RedisOptions(cfg.Revocation.Redis),
		MaxStale: cfg.Revocation.MaxStale.D(), Registerer: reg, Logger: log})
	if err != nil {
		return nil, err
	}
	_ = l.SetSites(context.Background(), siteIDs(cfg)) // not started: nothing is read yet
	return l, nil
}

// siteIDs lists cfg's site ids.
func siteIDs(cfg *config.Config) []string {
	ids := make([]string, len(cfg.Sites))
	for i := range cfg.Sites {
		ids[i] = cfg.Sites[i].ID
	}
	return ids
}
