package agent

import (
	"strings"

	"github.com/tokenagent/tokenagent/agent/config"
	"github.com/tokenagent/tokenagent/agent/internal/hostname"
	"github.com/tokenagent/tokenagent/agent/token"
)

// Site is a site compiled from its config once, at load: its token settings, route rules and
// policy.
type Site struct {
	token.SiteSettings
	Routes []Route
	// Policy is the path of the site's WebAssembly policy module ("" for none).
	Policy string
	// PolicyDeadline is the per-call deadline of the site's policy (0: the engine default).
	PolicyDeadline int64
	// PolicyEntrypoint is the rule an OPA bundle policy evaluates ("": its only one).
	PolicyEntrypoint string
	// Shadow is the site's shadow mode (SPEC §8): a would-be denial is allowed, without
	// identity, and logged and counted.
	Shadow bool
}

// siteIndex finds the site of a host: exact names first, then the longest "*.suffix". Both are
// map lookups, so a lookup costs at most one per label of the host however many sites there are.
type siteIndex struct {
	exact    map[string]*Site
	suffixes map[string]*Site // "docs.example.com" for "*.docs.example.com"
	byID     map[string]*Site
}

func buildSites(cfgs []config.Site) (*siteIndex, []*Site) {
	idx := &siteIndex{exact: map[string]*Site{}, suffixes: map[string]*Site{}, byID: map[string]*Site{}}
	sites := make([]*Site, 0, len(cfgs))
	for i := range cfgs {
		c := &cfgs[i]
		s := &Site{
			SiteSettings: token.SiteSettings{
				ID:                          c.ID,
				Hosts:                       append([]string(nil), c.Hosts...),
				AuthTokenTTL:                c.AuthTokenTTL.D(),
				AuthTokenRotationGrace:      c.AuthTokenRotationGrace.D(),
				ServerTokenWindow:           c.ServerTokenWindow.D(),
				ServerTokenSingleUse:        c.ServerTokenSingleUse,
				LegacyImpersonation:         c.Legacy.Impersonation,
				LegacyAPIKey:                c.Legacy.APIKey,
				LegacyUnprefixedServerToken: c.Legacy.UnprefixedServerTokens,
			},
			Policy:           c.Policy,
			PolicyDeadline:   int64(c.PolicyDeadline),
			PolicyEntrypoint: c.PolicyEntrypoint,
			Shadow:           c.Mode == config.ModeShadow,
		}
		for _, r := range c.Routes {
			s.Routes = append(s.Routes, compileRoute(r))
		}
		for _, h := range c.Hosts {
			if suffix, ok := strings.CutPrefix(h, "*."); ok {
				idx.suffixes[suffix] = s
			} else {
				idx.exact[h] = s
			}
		}
		sites = append(sites, s)
		idx.byID[s.ID] = s
	}
	return idx, sites
}

// find reads a request's authority (its :authority or Host) once and returns its canonical host
// (lower case, no port, no trailing dot: what every later step compares) and the site serving
// it, or a nil site. An authority that is not a plain host[:port] (user info, a path, spaces, a
// bad port, a byte ≥ 0x80; see hostname.ParseAuthority) names no site and no host (SPEC §1).
func (x *siteIndex) find(authority string) (string, *Site) {
	h, _, err := hostname.ParseAuthority(authority)
	if err != nil {
		return "", nil
	}
	return h, x.lookup(h)
}

// lookup returns the site serving h, a canonical host, or nil when none does.
func (x *siteIndex) lookup(h string) *Site {
	if s, ok := x.exact[h]; ok {
		return s
	}
	if hostname.IsIP(h) {
		return nil // an IP address is only ever matched exactly
	}
	// Every proper suffix that starts after a dot, longest first: "a.eu.docs.example.com" looks
	// up "eu.docs.example.com", then "docs.example.com", …, never the host itself, so the most
	// specific wildcard wins and "*.suffix" never matches the bare suffix.
	if len(x.suffixes) > 0 {
		for i := 0; i < len(h); i++ {
			if h[i] == '.' {
				if s, ok := x.suffixes[h[i+1:]]; ok {
					return s
				}
			}
		}
	}
	return nil
}
