// Command role-header is a site policy that tells the upstream the caller's role in the
// x-site-role header, from the credential kind and the OAuth scopes. It always allows (route
// rules do the refusing) and always sets the header, so a client-sent x-site-role never reaches
// the upstream.
//
//	OAuth token with scope admin          admin
//	OAuth token with scope write          editor
//	OAuth token with scope read           viewer
//	OAuth application token, none above   application
//	OAuth user token, none above          restricted
//	Site API Key (legacy, elevated)       admin
//	anonymous (or Browser API Token alone) anonymous
//	any other credential naming a user    member   (the user's own permissions apply)
//
// Build:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o role-header.wasm .
package main

import "github.com/tokenagent/tokenagent/plugins/guest"

func main() {}

func init() { guest.Handle(policy) }

// header is reused for every call (the host copies the output before the next one), so the
// policy does not allocate.
var header = []guest.Header{{Name: "x-site-role"}}

func policy(in *guest.Input) guest.Output {
	header[0].Value = role(in)
	return guest.Output{Allow: true, Headers: header}
}

func role(in *guest.Input) string {
	switch {
	case in.Kind == "oauth":
		switch {
		case in.HasScope("admin"):
			return "admin"
		case in.HasScope("write"):
			return "editor"
		case in.HasScope("read"):
			return "viewer"
		case in.User == "":
			return "application"
		default:
			return "restricted"
		}
	case in.Kind == "apikey":
		return "admin"
	case in.Anonymous():
		return "anonymous"
	default:
		return "member"
	}
}
