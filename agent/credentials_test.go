package agent

import (
	"slices"
	"strings"
	"testing"

	"github.com/tokenagent/tokenagent/agent/reason"
	"github.com/tokenagent/tokenagent/agent/token"
)

func TestFindCredentials(t *testing.T) {
	long := strings.Repeat("a", 256)
	tests := []struct {
		name     string
		headers  map[string]string
		query    string
		wantKind token.Kind
		want     reason.Reason
	}{
		{"none", nil, "", token.KindAnonymous, ""},
		{"server token", map[string]string{"x-deki-token": "tkn_k_1_2_s"}, "", token.KindServer, ""},
		{"unprefixed server token", map[string]string{"x-deki-token": "k_1_2_s"}, "", token.KindServer, ""},
		{"browser token", map[string]string{"x-deki-token": "pub1"}, "", token.KindBrowser, ""},
		{"bearer", map[string]string{"authorization": "Bearer a.b.c"}, "", token.KindOAuth, ""},
		{"bearer, any case", map[string]string{"authorization": "bEaReR a.b.c"}, "", token.KindOAuth, ""},
		{"basic auth is not ours", map[string]string{"authorization": "Basic dTpw"}, "", token.KindAnonymous, ""},
		{"auth token cookie", map[string]string{"cookie": "a=1; authtoken=42_x; b=2"}, "", token.KindAuthToken, ""},
		{"auth token quoted cookie", map[string]string{"cookie": `authtoken="42_x"`}, "", token.KindAuthToken, ""},
		{"cookie name is exact", map[string]string{"cookie": "myauthtoken=1"}, "", token.KindAnonymous, ""},
		{"auth token header", map[string]string{"x-authtoken": "42_x"}, "", token.KindAuthToken, ""},
		{"auth token query", nil, "a=1&authtoken=42_x", token.KindAuthToken, ""},
		{"auth token query, encoded", nil, "authtoken=42%5Fx", token.KindAuthToken, ""},
		{"same auth token twice", map[string]string{"cookie": "authtoken=42_x", "x-authtoken": "42_x"}, "authtoken=42_x", token.KindAuthToken, ""},
		{"impersonation", map[string]string{"cookie": "authtoken=imp_1_2_3"}, "", token.KindImpersonation, ""},
		{"api key", nil, "apikey=k&impersonateuserid=5", token.KindAPIKey, ""},
		{"browser and auth token", map[string]string{"x-deki-token": "pub1", "cookie": "authtoken=42_x"}, "", token.KindBrowser, ""},
		{"browser and impersonation", map[string]string{"x-deki-token": "pub1"}, "authtoken=imp_1_2_3", token.KindBrowser, ""},
		{"two different auth tokens", map[string]string{"cookie": "authtoken=42_x", "x-authtoken": "43_y"}, "", token.KindAuthToken, reason.MultipleCredentials},
		{"server and auth token", map[string]string{"x-deki-token": "tkn_k_1_2_s", "cookie": "authtoken=42_x"}, "", token.KindServer, reason.MultipleCredentials},
		{"unprefixed server and auth token", map[string]string{"x-deki-token": "k_1_2_s", "cookie": "authtoken=42_x"}, "", token.KindServer, reason.MultipleCredentials},
		{"bearer and auth token", map[string]string{"authorization": "Bearer a.b.c", "x-authtoken": "1"}, "", token.KindOAuth, reason.MultipleCredentials},
		{"bearer and server", map[string]string{"authorization": "Bearer a.b.c", "x-deki-token": "tkn_a"}, "", token.KindServer, reason.MultipleCredentials},
		{"browser and bearer", map[string]string{"authorization": "Bearer a.b.c", "x-deki-token": "pub1"}, "", token.KindBrowser, reason.MultipleCredentials},
		{"api key and auth token", nil, "apikey=k&authtoken=1", token.KindAuthToken, reason.MultipleCredentials},
		{"browser, auth token and api key", map[string]string{"x-deki-token": "pub1", "x-authtoken": "1"}, "apikey=k", token.KindBrowser, reason.MultipleCredentials},
		{"empty deki token", map[string]string{"x-deki-token": ""}, "", token.KindBrowser, reason.MalformedToken},
		{"empty auth token query", nil, "authtoken=", token.KindAuthToken, reason.MalformedToken},
		{"empty auth token cookie", map[string]string{"cookie": "authtoken="}, "", token.KindAuthToken, reason.MalformedToken},
		{"empty api key", nil, "apikey=", token.KindAPIKey, reason.MalformedToken},
		{"empty bearer", map[string]string{"authorization": "Bearer "}, "", token.KindOAuth, reason.MalformedToken},
		{"bearer without token", map[string]string{"authorization": "Bearer"}, "", token.KindOAuth, reason.MalformedToken},
		{"deki token over 255", map[string]string{"x-deki-token": long}, "", token.KindBrowser, reason.MalformedToken},
		{"auth token over 255", map[string]string{"x-authtoken": long}, "", token.KindAuthToken, reason.MalformedToken},
		{"api key over 255", nil, "apikey=" + long, token.KindAPIKey, reason.MalformedToken},
		{"jwt over 8 KiB", map[string]string{"authorization": "Bearer " + strings.Repeat("a", 8<<10+1)}, "", token.KindOAuth, reason.MalformedToken},
		{"jwt of 8 KiB", map[string]string{"authorization": "Bearer " + strings.Repeat("a", 8<<10)}, "", token.KindOAuth, ""},
		// Two different values of one credential are two credentials (SPEC §2); the same
		// value repeated counts once.
		{"two authtoken cookies (cookie tossing)", map[string]string{"cookie": "authtoken=42_x; lang=en; authtoken=43_y"}, "", token.KindAuthToken, reason.MultipleCredentials},
		{"the same authtoken cookie twice", map[string]string{"cookie": "authtoken=42_x; authtoken=42_x"}, "", token.KindAuthToken, ""},
		{"two authtoken parameters", nil, "authtoken=42_x&authtoken=43_y", token.KindAuthToken, reason.MultipleCredentials},
		{"the same authtoken parameter twice", nil, "authtoken=42_x&authtoken=42%5Fx", token.KindAuthToken, ""},
		{"two apikey parameters", nil, "apikey=a&apikey=b", token.KindAPIKey, reason.MultipleCredentials},
		{"the same apikey parameter twice", nil, "apikey=a&apikey=a", token.KindAPIKey, ""},
		{"two impersonateuserid parameters", nil, "apikey=a&impersonateuserid=1&impersonateuserid=2", token.KindAPIKey, reason.MultipleCredentials},
		{"two X-Deki-Token values", map[string]string{"x-deki-token": "tkn_k_1_2_s,tkn_k_1_3_s"}, "", token.KindServer, reason.MultipleCredentials},
		{"the same X-Deki-Token twice", map[string]string{"x-deki-token": "pub1, pub1"}, "", token.KindBrowser, ""},
		{"an X-Deki-Token and an empty one", map[string]string{"x-deki-token": "pub1,"}, "", token.KindBrowser, reason.MultipleCredentials},
		{"two Bearer values", map[string]string{"authorization": "Bearer a.b.c, Bearer d.e.f"}, "", token.KindOAuth, reason.MultipleCredentials},
		{"the same Bearer twice", map[string]string{"authorization": "Bearer a.b.c,Bearer a.b.c"}, "", token.KindOAuth, ""},
		{"a Bearer after Basic", map[string]string{"authorization": "Basic dTpw, Bearer a.b.c"}, "", token.KindOAuth, ""},
		{"Digest parameters are not credentials", map[string]string{"authorization": `Digest username="u", realm="r", nonce="n"`}, "", token.KindAnonymous, ""},
		{"two X-Authtoken values", map[string]string{"x-authtoken": "42_x,43_y"}, "", token.KindAuthToken, reason.MultipleCredentials},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.headers
			if h == nil {
				h = map[string]string{}
			}
			c, err := findCredentials(h, tc.query)
			var got reason.Reason
			if err != nil {
				got = err.Reason
			}
			if got != tc.want {
				t.Fatalf("reason = %q, want %q", got, tc.want)
			}
			if k := c.kind(); k != tc.wantKind {
				t.Fatalf("kind = %q, want %q", k, tc.wantKind)
			}
		})
	}
}

func TestQueryValueDecodes(t *testing.T) {
	values := func(q, name string) []string {
		var out []string
		eachQueryValue(q, name, func(v string) { out = append(out, v) })
		return out
	}
	tests := []struct {
		q, name string
		want    []string
	}{
		{"x=1&apikey=a%2Bb+c", "apikey", []string{"a+b c"}},
		{"%61pikey=k", "apikey", []string{"k"}},
		{"apikeys=k", "apikey", nil},
		{"authtoken=A&x=1&authtoken=B", "authtoken", []string{"A", "B"}},
		{"authtoken=%zz", "authtoken", []string{"\x00invalid"}},
	}
	for _, tc := range tests {
		if got := values(tc.q, tc.name); !slices.Equal(got, tc.want) {
			t.Errorf("values of %s in %q = %q, want %q", tc.name, tc.q, got, tc.want)
		}
	}
}
