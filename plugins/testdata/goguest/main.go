// Command goguest is the Go test module of package plugins: by default it echoes its input
// back as upstream headers (so the tests see the ABI round trip through a real Go guest); some
// paths make it misbehave on purpose.
package main

import (
	"strconv"
	"strings"
	"time"

	"github.com/tokenagent/tokenagent/plugins/guest"
)

func main() {}

func init() { guest.Handle(policy) }

var (
	hoard [][]byte
	calls int
)

func policy(in *guest.Input) guest.Output {
	calls++
	switch in.Path {
	case "/allow": // nothing but the ABI round trip: the floor of a Go module's cost
		return guest.Allow()
	case "/panic":
		panic("boom: " + in.User)
	case "/oom":
		for {
			hoard = append(hoard, make([]byte, 1<<20))
		}
	case "/loop":
		for {
			calls++
		}
	case "/sleep":
		time.Sleep(time.Hour)
	case "/logloop":
		for {
			guest.Log(guest.LevelWarn, "flood")
		}
	case "/deny":
		return guest.Output{Status: 429, Reason: "slow down",
			ResponseHeaders: []guest.Header{{Name: "retry-after", Value: "7"}}}
	case "/reserved":
		return guest.Allow(guest.Header{Name: "x-auth-user", Value: "1"})
	case "/log":
		guest.Log(guest.LevelInfo, "hello from "+in.User)
	case "/logrequest":
		// Logs everything it sees of the request: the agent must never give it a credential.
		var b strings.Builder
		b.WriteString(in.Method + " " + in.Path + "?" + in.Query)
		for _, h := range in.Headers {
			b.WriteString(" " + h.Name + "=" + h.Value)
		}
		guest.Log(guest.LevelInfo, b.String())
	}
	var hs []string
	for _, h := range in.Headers {
		hs = append(hs, h.Name+"="+h.Value)
	}
	return guest.Allow(
		guest.Header{Name: "x-site", Value: in.Site},
		guest.Header{Name: "x-kind", Value: in.Kind},
		guest.Header{Name: "x-user", Value: in.User},
		guest.Header{Name: "x-client-id", Value: in.ClientID},
		guest.Header{Name: "x-scopes", Value: strings.Join(in.Scopes, " ")},
		guest.Header{Name: "x-method", Value: in.Method},
		guest.Header{Name: "x-path", Value: in.Path},
		guest.Header{Name: "x-query", Value: in.Query},
		guest.Header{Name: "x-host", Value: in.Host},
		guest.Header{Name: "x-origin", Value: in.Origin},
		guest.Header{Name: "x-headers", Value: strings.Join(hs, ";")},
		guest.Header{Name: "x-time", Value: in.Time().Format(time.RFC3339Nano)},
		guest.Header{Name: "x-calls", Value: strconv.Itoa(calls)},
	)
}
