package daemon

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenagent/tokenagent/agent"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/file"
)

func openSource(_ context.Context, cfg *agent.Config, _ prometheus.Registerer, _ *slog.Logger) (vault.Source, func(), error) {
	switch cfg.Keys.Source {
	case "file":
		src, err := file.Open(cfg.Keys.File)
		if err != nil {
			return nil, nil, err
		}
		return src, func() {}, nil
	}
	return nil, nil, fmt.Errorf("keys.source: %q is not available in this build", cfg.Keys.Source)
}
