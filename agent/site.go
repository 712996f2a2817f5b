package agent

import (
	"strings"

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

func buildSites(cfgs []SiteConfig) (*siteIndex, []*Site) {
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

// lookup returns the site serving host (the request's :authority), or nil.
func (x *siteIndex) lookup(authority string) *Site {
	h := hostOnly(authority)
	if h == "" {
		return nil
	}
	if s, ok := x.exact[h]; ok {
		return s
	}
	if lower, changed := toLower(h); changed {
		h = lower
		if s, ok := x.exact[h]; ok {
			return s
		}
	}
	for _, ss := range x.suffixes {
		if len(h) > len(ss.suffix) && strings.HasSuffix(h, ss.suffix) {
			return ss.site
		}
	}
	return nil
}

// hostOnly strips the port (and IPv6 brackets) and a trailing dot from an authority.
func hostOnly(a string) string {
	if a == "" {
		return ""
	}
	if a[0] == '[' {
		if i := strings.IndexByte(a, ']'); i > 0 {
			return a[1:i]
		}
		return ""
	}
	if i := strings.LastIndexByte(a, ':'); i >= 0 && strings.IndexByte(a, ':') == i {
		a = a[:i]
	}
	return strings.TrimSuffix(a, ".")
}

// toLower lower-cases ASCII, allocating only when s has upper-case letters.
func toLower(s string) (string, bool) {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return strings.ToLower(s), true
		}
	}
	return s, false
}
