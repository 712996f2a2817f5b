// Command scale checks the scale model of agent/cmd/daemon/README.md against real agents: it starts a Vault dev
// server, writes Server API Token keys for some sites, runs several tokenagent processes on it
// (keys.source: vault), sends them checks spread over every key (and a few unknown keys, which
// the agents cache as absent), and compares each agent's Vault requests per second with what
// the model predicts:
//
//	Vault reads per agent per second ≈ records in use × 2 / keys.refresh
//
// (a record read in the background when a lookup finds it past half its refresh interval; each
// Server API Token key, known or not, is one record and one read).
//
//	go run ./bench/cmd/scale --sites 4 --keys 50 --unknown 5 --refresh 2s --duration 20s
//
// It needs the Vault binary of vault/devserver/build.sh and builds tokenagent with `go build`.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/vault"
	"github.com/tokenagent/tokenagent/vault/vaulttest"
)

// Options are one measurement's settings.
type Options struct {
	Sites, Keys, Unknown, Agents, Concurrency int
	Refresh, Duration                         time.Duration
	// Bin is the tokenagent binary (empty: built with go build).
	Bin string
}

// Result is what one agent did, beside the model's prediction.
type Result struct {
	Agent               int
	Checks              float64 // per second
	VaultRequests       float64 // per second, measured
	Model               float64 // per second, predicted
	CheckErrors, Denied int64
}

func main() {
	var o Options
	fs := pflag.NewFlagSet("scale", pflag.ContinueOnError)
	fs.IntVar(&o.Sites, "sites", 4, "sites")
	fs.IntVar(&o.Keys, "keys", 50, "Server API Token keys per site")
	fs.IntVar(&o.Unknown, "unknown", 5, "unknown key names per site that requests use (cached as absent)")
	fs.IntVar(&o.Agents, "agents", 2, "agent processes on the one Vault")
	fs.IntVar(&o.Concurrency, "concurrency", 16, "concurrent checks per agent")
	fs.DurationVar(&o.Refresh, "refresh", 2*time.Second, "keys.refresh of the agents")
	fs.DurationVar(&o.Duration, "duration", 20*time.Second, "how long to measure (after a warm-up of one refresh interval)")
	fs.StringVar(&o.Bin, "bin", "", "the tokenagent binary (default: go build)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	res, err := Run(context.Background(), o, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
	Report(os.Stdout, o, res)
}

// Report prints the results as a Markdown table.
func Report(w io.Writer, o Options, res []Result) {
	fmt.Fprintf(w, "%d agents, %d sites × (%d keys + %d unknown), keys.refresh %v, %v measured\n\n",
		o.Agents, o.Sites, o.Keys, o.Unknown, o.Refresh, o.Duration)
	fmt.Fprintln(w, "| agent | checks/s | Vault requests/s measured | model | measured/model |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, r := range res {
		fmt.Fprintf(w, "| %d | %.0f | %.1f | %.1f | %.2f |\n", r.Agent, r.Checks, r.VaultRequests, r.Model, r.VaultRequests/r.Model)
	}
}

// Run does one measurement.
func Run(ctx context.Context, o Options, log io.Writer) ([]Result, error) {
	v, err := vaulttest.New()
	if err != nil {
		return nil, err
	}
	defer v.Close()
	dir, err := os.MkdirTemp("", "tokenagent-scale-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	secret := vault.NewSecret([]byte("scale-secret"))
	kv := v.Client.KVv2("secret")
	var hosts []string
	for s := range o.Sites {
		for k := range o.Keys {
			if _, err := kv.Put(ctx, fmt.Sprintf("tokenagent/sites/s%d/server-tokens/k%d", s, k),
				map[string]any{"secret": "scale-secret"}); err != nil {
				return nil, fmt.Errorf("seeding Vault: %w", err)
			}
		}
		hosts = append(hosts, fmt.Sprintf("  - {id: s%d, hosts: [s%d.example.com]}", s, s))
	}
	if err := os.WriteFile(filepath.Join(dir, "vault-token"), []byte(v.Token), 0o600); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "tokenagent.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`keys:
  source: vault
  refresh: %s
  max_stale: 1h
  vault: {address: %q, auth: {method: token, token_file: vault-token}}
log: {level: info}
sites:
%s
`, o.Refresh, v.Addr, strings.Join(hosts, "\n"))), 0o600); err != nil {
		return nil, err
	}
	bin := o.Bin
	if bin == "" {
		bin = filepath.Join(dir, "tokenagent")
		if out, err := exec.Command("go", "build", "-o", bin, "github.com/tokenagent/tokenagent/agent/cmd/tokenagent").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	agents := make([]*agentProc, o.Agents)
	for i := range agents {
		a, err := startAgent(bin, cfg)
		if err != nil {
			return nil, err
		}
		defer a.stop()
		agents[i] = a
	}

	// Load: every agent gets checks spread over every key of every site, known and unknown.
	type counters struct{ checks, errs, denied atomic.Int64 }
	stats := make([]*counters, len(agents))
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var user atomic.Int64
	for i, a := range agents {
		stats[i] = &counters{}
		conn, err := grpc.NewClient(a.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			stopLoad()
			return nil, err
		}
		defer conn.Close()
		client := authv3.NewAuthorizationClient(conn)
		for range o.Concurrency {
			wg.Go(func() {
				for loadCtx.Err() == nil {
					s := rand.IntN(o.Sites)
					key := fmt.Sprintf("k%d", rand.IntN(o.Keys))
					if o.Unknown > 0 && rand.IntN(10) == 0 {
						key = fmt.Sprintf("unknown%d", rand.IntN(o.Unknown))
					}
					tok := token.MintServerToken(key, secret, strconv.FormatInt(user.Add(1), 10), time.Now())
					cctx, cancel := context.WithTimeout(loadCtx, 5*time.Second)
					resp, err := client.Check(cctx, checkRequest(fmt.Sprintf("s%d.example.com", s),
						map[string]string{"x-deki-token": tok}))
					cancel()
					switch {
					case err != nil:
						if loadCtx.Err() == nil {
							stats[i].errs.Add(1)
						}
					case resp.GetOkResponse() == nil && !strings.HasPrefix(key, "unknown"):
						stats[i].denied.Add(1)
					}
					stats[i].checks.Add(1)
				}
			})
		}
	}
	fmt.Fprintf(log, "scale: warming up for %v (one refresh interval)\n", o.Refresh)
	time.Sleep(o.Refresh) // a measurement's warm-up, not a synchronisation
	before := make([]float64, len(agents))
	checksBefore := make([]int64, len(agents))
	for i, a := range agents {
		if before[i], err = a.vaultRequests(); err != nil {
			stopLoad()
			wg.Wait()
			return nil, err
		}
		checksBefore[i] = stats[i].checks.Load()
	}
	fmt.Fprintf(log, "scale: measuring for %v\n", o.Duration)
	time.Sleep(o.Duration)
	res := make([]Result, len(agents))
	records := float64(o.Sites * (o.Keys + o.Unknown))
	for i, a := range agents {
		after, err := a.vaultRequests()
		if err != nil {
			stopLoad()
			wg.Wait()
			return nil, err
		}
		secs := o.Duration.Seconds()
		res[i] = Result{Agent: i + 1, Checks: float64(stats[i].checks.Load()-checksBefore[i]) / secs,
			VaultRequests: (after - before[i]) / secs, Model: records * 2 / o.Refresh.Seconds()}
	}
	stopLoad()
	wg.Wait()
	for i := range res {
		res[i].CheckErrors, res[i].Denied = stats[i].errs.Load(), stats[i].denied.Load()
		if res[i].CheckErrors > 0 || res[i].Denied > 0 {
			return res, fmt.Errorf("agent %d: %d failed and %d denied checks of known keys", i+1, res[i].CheckErrors, res[i].Denied)
		}
	}
	return res, nil
}

type agentProc struct {
	cmd        *exec.Cmd
	grpc, http string
}

func startAgent(bin, cfg string) (*agentProc, error) {
	cmd := exec.Command(bin, "serve", "--config", cfg, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "VAULT_TOKEN=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	a := &agentProc{cmd: cmd}
	lines := bufio.NewScanner(stderr)
	for lines.Scan() {
		var rec map[string]any
		if json.Unmarshal(lines.Bytes(), &rec) == nil && rec["msg"] == "tokenagent serving" {
			a.grpc, _ = rec["grpc"].(string)
			a.http, _ = rec["http"].(string)
			break
		}
	}
	if a.grpc == "" {
		a.stop()
		return nil, errors.New("the agent exited before serving")
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	// Ready once Vault has answered.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get("http://" + a.http + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return a, nil
			}
		}
		if time.Now().After(deadline) {
			a.stop()
			return nil, errors.New("the agent never became ready")
		}
	}
}

func (a *agentProc) stop() {
	_ = a.cmd.Process.Kill()
	_ = a.cmd.Wait()
}

// vaultRequests sums the agent's tokenagent_vault_requests_total.
func (a *agentProc) vaultRequests() (float64, error) {
	resp, err := http.Get("http://" + a.http + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	sum := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "tokenagent_vault_requests_total{") {
			continue
		}
		f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("%q: %w", line, err)
		}
		sum += f
	}
	return sum, nil
}

// checkRequest is a GET / CheckRequest for host with headers, as Envoy's ext_authz filter sends
// it (lower-case names, the pseudo-headers).
func checkRequest(host string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":authority": host, ":method": "GET", ":path": "/", ":scheme": "https"}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Headers: h, Path: "/", Host: host, Scheme: "https"}}}}
}
