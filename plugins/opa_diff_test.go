package plugins_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/plugins"
	"github.com/tokenagent/tokenagent/plugins/opatest"
	"github.com/tokenagent/tokenagent/plugins/plugintest"
)

// regoBuiltins exercises the built-ins a module carries (base64url.decode, json.unmarshal,
// regex.match) and those the host provides (io.jwt.decode, sprintf, urlquery, RFC 3339 times),
// without time.now_ns (OPA's own clock would differ).
const regoBuiltins = `package envoy.authz

import rego.v1

claims := payload if {
	[_, payload, _] := io.jwt.decode(input.attributes.request.http.headers["x-jwt"])
}

default result := {"allowed": false, "http_status": 403, "body": "no"}

result := {"allowed": true, "headers": {
	"x-who": sprintf("%s/%d/%v/%.2f", [claims.sub, claims.n, claims.roles, claims.ratio]),
	"x-q": urlquery.encode(object.get(input.parsed_query, "q", [""])[0]),
	"x-raw": urlquery.decode("a%20b+c"),
	"x-exp": sprintf("%d", [time.parse_rfc3339_ns(claims.iat)]),
	"x-meta": json.unmarshal(base64url.decode(input.attributes.request.http.headers["x-meta"])).team,
}} if {
	regex.match("^/api/v[0-9]+/", input.attributes.request.http.path)
	claims.sub != ""
}
`

// TestOPADifferential evaluates the same Rego and the same inputs with `opa eval` (OPA's own
// evaluator, on the input document tokenagent builds) and with tokenagent's host running the
// compiled bundle: the decisions are the same.
func TestOPADifferential(t *testing.T) {
	e := plugintest.NewEngine(t)
	claims := `{"sub":"alice","n":42,"roles":["admin","dev"],"ratio":0.5,"iat":"2026-12-05T10:00:00Z"}`
	meta := "eyJ0ZWFtIjoiZG9jcyJ9" // base64url of {"team":"docs"}
	inputs := []*plugins.Input{
		get("GET", "/", ""),
		get("POST", "/pages/home", "redirects=0"),
		{Site: "docs", Kind: "server", User: "=jane", Scopes: []string{"write"}, Method: "PUT", Path: "/pages/a b", Query: "x=1&x=2",
			Host: "docs.example.com", Scheme: "https", Time: time.Unix(1700000000, 0)},
		{Site: "api", Kind: "oauth", User: "7", ClientID: "app", Scopes: []string{"read"}, Method: "GET", Path: "/api/v2/items",
			Query: "q=hello world&debug", Host: "api.example.com", Scheme: "http", Time: time.Unix(1700000000, 0),
			Headers: [][2]string{{"x-jwt", jwt(t, claims)}, {"x-meta", meta}, {"accept", "application/json"}}},
		{Site: "api", Kind: "oauth", User: "7", Method: "GET", Path: "/api/v1/x", Host: "api.example.com", Scheme: "https",
			Headers: [][2]string{{"x-jwt", "garbage"}}, Time: time.Unix(1700000000, 0)},
		{Site: "docs", Kind: "authtoken", User: "42", Method: "GET", Path: "/", Query: "debug=1", Host: "docs.example.com", Scheme: "https", Time: time.Unix(1700000000, 0)},
	}
	for _, tc := range []struct {
		name, entry string
		files       map[string]string
	}{
		{"boolean", "envoy/authz/allow", map[string]string{"policy.rego": regoBool}},
		{"object+data", "envoy/authz/result", map[string]string{"policy.rego": regoObject, "data.json": tenants}},
		{"built-ins", "envoy/authz/result", map[string]string{"policy.rego": regoBuiltins}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := load(t, e, opatest.Build(t, tc.files, tc.entry), "")
			for i, in := range inputs {
				doc, err := plugins.OPAInputJSON(in)
				if err != nil {
					t.Fatal(err)
				}
				wantSet := opatest.Eval(t, tc.files, json.RawMessage(doc), "data."+dots(tc.entry))
				want, werr := plugins.OPADecision(wantSet)
				got, gerr := m.Evaluate(context.Background(), in)
				if fmt.Sprint(werr) != fmt.Sprint(gerr) && !(werr != nil && gerr != nil) {
					t.Fatalf("input %d: opa eval %v (%s), tokenagent %v", i, werr, wantSet, gerr)
				}
				if !reflect.DeepEqual(want, got) {
					t.Errorf("input %d (%s):\n opa eval   %+v\n tokenagent %+v", i, doc, want, got)
				}
			}
		})
	}
}

func dots(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '/' {
			b[i] = '.'
		}
	}
	return string(b)
}
