package agent

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tokenagent/tokenagent/agent/internal/tracing"
	"github.com/tokenagent/tokenagent/agent/policy"
	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
	"github.com/tokenagent/tokenagent/plugins"
)

func (a *Agent) policyDeadline(s *Site) time.Duration {
	if s.PolicyDeadline > 0 {
		return time.Duration(s.PolicyDeadline)
	}
	return a.cfg.Policies.Deadline.D() // 0: the engine's default (5 ms)
}

// policyKeys names the modules this agent uses.
func (a *Agent) policyKeys() map[policy.Key]bool {
	keep := map[policy.Key]bool{}
	for _, e := range a.policies {
		keep[e.Key()] = true
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
	e := a.policies[s.ID]
	var m *plugins.Module
	if e != nil {
		m = e.Module()
	}
	if m == nil {
		return policyResult{}, &reason.Error{Reason: reason.PolicyError,
			Detail: "the site's policy module is not loaded", Cause: fmt.Errorf("policy %s not loaded", s.Policy)}
	}
	in := plugins.Input{Site: s.ID, Kind: string(id.Kind), User: id.User, ClientID: id.ClientID,
		Scopes: id.Scopes, Method: tg.method, Scheme: req.Scheme, Path: tg.path, Query: cleanQuery(tg.query),
		Host: requestHost(req.Host), Origin: req.Headers["origin"], Headers: policyHeaders(req.Headers),
		Time: a.rt.now()}
	start := time.Now()
	out, err := m.Evaluate(ctx, &in)
	if sp := tracing.Recording(ctx); sp != nil {
		sp.SetAttributes(tracing.PolicyTime.Int64(int64(time.Since(start))))
	}
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
	for site, e := range a.policies {
		if e.Module() == nil {
			msg := "policy of site " + site + " (" + e.Key().Path + ") is not loaded"
			if err := e.Err(); err != nil {
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
	for site, e := range a.policies {
		if m := e.Module(); m != nil {
			if st := m.Status(); st.ReloadError != "" {
				out = append(out, "policy of site "+site+": reload failed, the previous module keeps serving: "+st.ReloadError)
			}
		}
	}
	sort.Strings(out)
	return out
}
