package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/plugins"
)

// Policies holds the sites' WebAssembly policy modules (SPEC §5). One Policies serves every
// Agent a daemon builds, across config reloads, so a reload that keeps a site's module keeps
// its compiled code and warm instances.
//
// # Notes
//
//   - Safe for concurrent use.
//   - A module that fails to load is retried in the background; until it loads, its sites
//     deny with policy_error (fail closed) and the agent is not ready. A loaded module that
//     changes on disk is recompiled in the background and swapped in (plugins.Module); a bad
//     new file leaves the old module serving and shows as a warning.
type Policies struct {
	engine *plugins.Engine
	owned  bool // engine made here, closed by Close
	log    *slog.Logger

	mu     sync.Mutex
	mods   map[policyKey]*policyEntry
	closed bool
	done   chan struct{}
}

// policyKey names one loaded module: a file and the options it runs with.
type policyKey struct {
	path     string
	deadline time.Duration
}

type policyEntry struct {
	key  policyKey
	name string // the first site using it: the module's name in metrics and logs

	mu  sync.Mutex
	mod *plugins.Module
	err error
}

// RetireGrace is how long a module no longer used by the current config is kept after a
// reload, so checks that started under the old config finish on it.
const RetireGrace = 30 * time.Second

// loadRetry is how often a module that failed to load is tried again.
const loadRetry = 5 * time.Second

// NewPolicies returns a module registry running on engine.
func NewPolicies(engine *plugins.Engine, log *slog.Logger) *Policies {
	if log == nil {
		log = slog.Default()
	}
	return &Policies{engine: engine, log: log, mods: map[policyKey]*policyEntry{}, done: make(chan struct{})}
}

// Close closes every module (and the engine, when the registry made it).
func (p *Policies) Close(ctx context.Context) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.done)
	mods := p.mods
	p.mods = nil
	p.mu.Unlock()
	for _, e := range mods {
		if m := e.module(); m != nil {
			_ = m.Close(ctx)
		}
	}
	if p.owned {
		_ = p.engine.Close(ctx)
	}
}

// KeepOnly closes, after RetireGrace, every module that a does not use: after a config reload,
// the modules only the replaced config used. Checks that started under the old config finish
// on them meanwhile.
func (p *Policies) KeepOnly(a *Agent) { p.retain(a.policyKeys()) }

func (p *Policies) retain(keep map[policyKey]bool) {
	p.mu.Lock()
	var drop []*policyEntry
	for k, e := range p.mods {
		if !keep[k] {
			drop = append(drop, e)
			delete(p.mods, k)
		}
	}
	p.mu.Unlock()
	if len(drop) == 0 {
		return
	}
	go func() {
		select {
		case <-time.After(RetireGrace):
		case <-p.done:
		}
		for _, e := range drop {
			if m := e.module(); m != nil {
				_ = m.Close(context.Background())
			}
		}
	}()
}

// entry returns the module entry for key, loading it the first time (synchronously, so a
// config's modules are ready when its agent starts serving).
func (p *Policies) entry(ctx context.Context, key policyKey, site string) *policyEntry {
	p.mu.Lock()
	if e, ok := p.mods[key]; ok || p.closed {
		p.mu.Unlock()
		return e
	}
	e := &policyEntry{key: key, name: site}
	p.mods[key] = e
	p.mu.Unlock()
	if err := e.load(ctx, p); err != nil {
		p.log.Error("policy module failed to load; its sites deny with policy_error until it loads",
			"policy", key.path, "site", site, "error", err.Error())
		go p.retry(e)
	}
	return e
}

func (e *policyEntry) load(ctx context.Context, p *Policies) error {
	m, err := p.engine.Load(ctx, e.key.path, plugins.ModuleOptions{Name: e.name, Deadline: e.key.deadline, Watch: true})
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mod, e.err = m, err
	return err
}

// retry loads e again every loadRetry until it loads or the registry closes.
func (p *Policies) retry(e *policyEntry) {
	t := time.NewTicker(loadRetry)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := e.load(ctx, p)
		cancel()
		if err == nil {
			p.log.Info("policy module loaded", "policy", e.key.path)
			return
		}
	}
}

func (e *policyEntry) module() *plugins.Module {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.mod
}

func (e *policyEntry) loadErr() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// policyState is an agent's view of the registry: the entry of each site with a policy.
type policyState struct {
	reg   *Policies
	sites map[string]*policyEntry // site id -> entry
}

func (a *Agent) initPolicy() error {
	a.policy.sites = map[string]*policyEntry{}
	var need bool
	for _, s := range a.list {
		need = need || s.Policy != ""
	}
	if !need {
		return nil
	}
	a.policy.reg = a.policies
	if a.policy.reg == nil {
		e, err := plugins.NewEngine(context.Background(), plugins.EngineOptions{
			CacheDir: a.cfg.Policies.CacheDir, Registerer: a.reg, Logger: a.log})
		if err != nil {
			return fmt.Errorf("policy engine: %w", err)
		}
		a.policy.reg = NewPolicies(e, a.log)
		a.policy.reg.owned = true
		a.policies = a.policy.reg
	}
	for _, s := range a.list {
		if s.Policy == "" {
			continue
		}
		key := policyKey{path: s.Policy, deadline: a.policyDeadline(s)}
		a.policy.sites[s.ID] = a.policy.reg.entry(context.Background(), key, s.ID)
	}
	return nil
}

func (a *Agent) policyDeadline(s *Site) time.Duration {
	if s.PolicyDeadline > 0 {
		return time.Duration(s.PolicyDeadline)
	}
	return a.cfg.Policies.Deadline.D() // 0: the engine's default (5 ms)
}

// policyKeys names the modules this agent uses.
func (a *Agent) policyKeys() map[policyKey]bool {
	keep := map[policyKey]bool{}
	for _, e := range a.policy.sites {
		if e != nil {
			keep[e.key] = true
		}
	}
	return keep
}

// policyResult is what an allowing policy adds to the answer.
type policyResult struct {
	upstream, response []Header
}

// evaluatePolicy runs the site's policy last: an allow with headers to add, or a denial
// (policy_denied with the module's status, or policy_error on any failure: fail closed). The
// module sees the request without its credentials (policyHeaders, cleanQuery).
func (a *Agent) evaluatePolicy(ctx context.Context, s *Site, req *Request, tg *target, id *token.Identity) (policyResult, *reason.Error) {
	e := a.policy.sites[s.ID]
	var m *plugins.Module
	if e != nil {
		m = e.module()
	}
	if m == nil {
		return policyResult{}, &reason.Error{Reason: reason.PolicyError,
			Detail: "the site's policy module is not loaded", Cause: fmt.Errorf("policy %s not loaded", s.Policy)}
	}
	in := plugins.Input{Site: s.ID, Kind: string(id.Kind), User: id.User, ClientID: id.ClientID,
		Scopes: id.Scopes, Method: tg.method, Path: tg.path, Query: cleanQuery(tg.query),
		Host: requestHost(req.Host), Origin: req.Headers["origin"], Headers: policyHeaders(req.Headers),
		Time: a.now()}
	out, err := m.Evaluate(ctx, &in)
	if err != nil {
		return policyResult{}, &reason.Error{Reason: reason.PolicyError, Cause: err}
	}
	if !out.Allow {
		d := &reason.Error{Reason: reason.PolicyDenied, Status: out.Status, Detail: out.Reason,
			Headers: out.ResponseHeaders}
		if d.Status == 0 {
			d.Status = 403
		}
		return policyResult{}, d
	}
	return policyResult{upstream: sortedHeaders(out.Headers), response: sortedHeaders(out.ResponseHeaders)}, nil
}

func sortedHeaders(m map[string]string) []Header {
	if len(m) == 0 {
		return nil
	}
	out := make([]Header, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, Header{strings.ToLower(k), m[k]})
	}
	return out
}

// policyProblems lists policy modules that have not loaded: the agent is not ready.
func (a *Agent) policyProblems() []string {
	var out []string
	for site, e := range a.policy.sites {
		if e.module() == nil {
			msg := "policy of site " + site + " (" + e.key.path + ") is not loaded"
			if err := e.loadErr(); err != nil {
				msg += ": " + err.Error()
			}
			out = append(out, msg)
		}
	}
	sort.Strings(out)
	return out
}

// policyWarnings lists policy reloads that failed while the old module keeps serving.
func (a *Agent) policyWarnings() []string {
	var out []string
	for site, e := range a.policy.sites {
		if m := e.module(); m != nil {
			if st := m.Status(); st.ReloadError != "" {
				out = append(out, "policy of site "+site+": reload failed, the previous module keeps serving: "+st.ReloadError)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Close releases what the agent made itself: the policy engine, when Options.Policies was nil
// and a site has a policy. An agent built over a shared Policies leaves it to its owner.
func (a *Agent) Close(ctx context.Context) {
	if a.policy.reg != nil && a.policy.reg.owned {
		a.policy.reg.Close(ctx)
	}
}
