// Command readonly-anonymous is a site policy: anonymous users may only read (GET and HEAD),
// and never under the site API, /@api/deki/site/. Everyone else is left to the route rules.
//
// "Anonymous" is what guest.Input.Anonymous says: no credential, or a Browser API Token without
// an Auth Token. A refused request gets 401, since signing in is the way forward.
//
// Build:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o readonly-anonymous.wasm .
package main

import (
	"net/url"
	"path"
	"strings"

	"github.com/tokenagent/tokenagent/plugins/guest"
)

func main() {}

func init() { guest.Handle(policy) }

const siteAPI = "/@api/deki/site"

func policy(in *guest.Input) guest.Output {
	if !in.Anonymous() {
		return guest.Allow()
	}
	if in.Method != "GET" && in.Method != "HEAD" {
		return guest.Deny(401, "anonymous users may only read (GET, HEAD): sign in to make changes")
	}
	if underSiteAPI(in.Path) {
		return guest.Deny(401, "anonymous users may not use the site API (/@api/deki/site/)")
	}
	return guest.Allow()
}

// underSiteAPI reports whether p is /@api/deki/site or below it. The agent passes the path
// normalised as for route rules, but a refusal rule must not be dodged by spelling, so this
// also decodes every percent-escape (the upstream may), removes dot segments, merges slashes
// and ignores case. A path that does not decode is treated as under the site API.
func underSiteAPI(p string) bool {
	if strings.IndexByte(p, '%') >= 0 {
		d, err := url.PathUnescape(p)
		if err != nil {
			return true
		}
		p = d
	}
	if strings.Contains(p, "//") || strings.Contains(p, "/.") || strings.IndexByte(p, '\\') >= 0 {
		p = path.Clean("/" + strings.ReplaceAll(p, "\\", "/"))
	}
	return len(p) >= len(siteAPI) && strings.EqualFold(p[:len(siteAPI)], siteAPI) &&
		(len(p) == len(siteAPI) || p[len(siteAPI)] == '/')
}
