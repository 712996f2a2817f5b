// Command maintenance is a site policy that refuses writes during maintenance windows, except
// for a list of users. A refused write gets 503 with Retry-After (seconds until the window, or
// a run of overlapping windows, ends). Reads (GET, HEAD, OPTIONS, TRACE) always pass.
//
// # Configuration
//
// A module has no filesystem or environment, so the configuration is compiled in: two string
// variables, set at build time with -ldflags -X (the defaults below configure no window, which
// makes the policy allow everything):
//
//   - main.windows: comma-separated windows, each either
//     "HH:MM-HH:MM", every day in UTC (may cross midnight: "22:00-02:00"), or
//     "START/END", two RFC 3339 times (a one-off window: "2026-12-01T22:00:00Z/2026-12-02T02:00:00Z").
//     A window includes its start and excludes its end.
//   - main.exempt: comma-separated users who may write anyway, spelt as the agent names them
//     (x-auth-user): a decimal id or "=" and a URL-encoded username, e.g. "1,=admin".
//
// For example:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o maintenance.wasm \
//	  -ldflags "-X 'main.windows=22:00-02:00,2026-12-24T00:00:00Z/2026-12-27T00:00:00Z' -X main.exempt=1,=ops" .
//
// A configuration that does not parse stops the module in _initialize, so the agent refuses to
// load it (or, on a hot reload, keeps the previous module) with the reason in the error.
package main

import (
	"time"

	"github.com/tokenagent/tokenagent/plugins/guest"
)

// Set with -ldflags -X; see the package documentation.
var (
	windows = ""
	exempt  = ""
)

var cfg config

func main() {}

func init() {
	c, err := parseConfig(windows, exempt)
	if err != nil {
		panic("maintenance: bad configuration: " + err.Error())
	}
	cfg = c
	guest.Handle(policy)
}

// retryAfter is reused for every refusal (the host copies the output before the next call).
var retryAfter = []guest.Header{{Name: "retry-after"}}

func policy(in *guest.Input) guest.Output {
	switch in.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return guest.Allow()
	}
	endNano, ok := cfg.activeUntilNano(in.TimeUnixNano)
	if !ok || in.User != "" && cfg.exempt[in.User] {
		return guest.Allow()
	}
	end := time.Unix(0, endNano).UTC()
	retryAfter[0].Value = retrySeconds(in.Time(), end)
	return guest.Output{
		Status:          503,
		Reason:          "the site is in maintenance until " + end.Format("2006-01-02 15:04 UTC") + ": changes are refused",
		ResponseHeaders: retryAfter,
	}
}
