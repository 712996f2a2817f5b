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
	token.Site
	Routes []Route
	// Policy is the path of the site's WebAssembly policy module ("" for none).
	Policy string
	// PolicyDeadline is the per-call deadline of the site's policy (0: the engine default).
	PolicyDeadline int64
}

// siteIndex finds the site of a host: exact names first, then the longest "*.suffix".
type siteIndex struct {
	exact    map[string]*Site
	suffixes []suffixSite // longest suffix first
}

type suffixSite struct {
	suffix string // ".docs.example.com"
	site   *Site
}

func buildSites(cfgs []config.Site) (*siteIndex, []*Site) {
	idx := &siteIndex{exact: map[string]*Site{}}
	sites := make([]*Site, 0, len(cfgs))
	for i := range cfgs {
		c := &cfgs[i]
		s := &Site{
			Site: token.Site{
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
			Policy:         c.Policy,
			PolicyDeadline: int64(c.PolicyDeadline),
		}
		for _, r := range c.Routes {
			s.Routes = append(s.Routes, compileRoute(r))
		}
		for _, h := range c.Hosts {
			if suffix, ok := strings.CutPrefix(h, "*"); ok {
				idx.suffixes = append(idx.suffixes, suffixSite{suffix: suffix, site: s})
			} else {
				idx.exact[h] = s
			}
		}
		sites = append(sites, s)
	}
	// Longest suffix first, so the most specific wildcard wins.
	for i := 1; i < len(idx.suffixes); i++ {
		for j := i; j > 0 && len(idx.suffixes[j].suffix) > len(idx.suffixes[j-1].suffix); j-- {
			idx.suffixes[j], idx.suffixes[j-1] = idx.suffixes[j-1], idx.suffixes[j]
		}
	}
	return idx, sites
}

// lookup returns the site serving authority (the request's :authority or Host), or nil when
// none does. An authority that is not a plain host[:port] (user info, a path, spaces, a bad
// port; see hostname.ParseAuthority) names no site (SPEC §1).
func (x *siteIndex) lookup(authority string) *Site {
	h, _, err := hostname.ParseAuthority(authority)
	if err != nil {
		return nil
	}
	if s, ok := x.exact[h]; ok {
		return s
	}
	if hostname.IsIP(h) {
		return nil // an IP address is only ever matched exactly
	}
	for _, ss := range x.suffixes {
		if len(h) > len(ss.suffix) && strings.HasSuffix(h, ss.suffix) {
			return ss.site
		}
	}
	return nil
}

// requestHost returns the canonical host of an authority (lower case, no port, no trailing
// dot), or "" when it does not parse.
func requestHost(authority string) string {
	h, _, err := hostname.ParseAuthority(authority)
	if err != nil {
		return ""
	}
	return h
}
