package agent

import (
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
	if v, ok := queryValue("x=1&apikey=a%2Bb+c", "apikey"); !ok || v != "a+b c" {
		t.Fatalf("apikey = %q, %v", v, ok)
	}
	if v, ok := queryValue("%61pikey=k", "apikey"); !ok || v != "k" {
		t.Fatalf("encoded name: %q, %v", v, ok)
	}
	if _, ok := queryValue("apikeys=k", "apikey"); ok {
		t.Fatal("matched a longer name")
	}
}
