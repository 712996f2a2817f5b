package agent

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tokenagent/tokenagent/agent/exchange"
	"github.com/tokenagent/tokenagent/agent/reason"
)

// echoSentinel is a text no denial says: a body holding it must not get it back.
const echoSentinel = "Zq~sentinel~7"

// FuzzParseExchangeBody feeds arbitrary bodies to the exchange body parser and the whole
// exchange: nothing panics; a body is either an id_token or an invalid_id_token denial; an
// id_token found is trimmed and non-empty, comes back unchanged from every other body form
// that carries it, and a raw body (no JSON, no form) is its own id_token; the exchange of any
// body is a refusal with a known reason that never echoes the body.
func FuzzParseExchangeBody(f *testing.F) {
	for _, seed := range []string{
		"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln",
		`"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"`,
		`{"id_token":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"}`,
		`{"a":[1,{"id_token":2}],"id_token":"x.y.z","b":null}`,
		"id_token=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln&state=1",
		"id_token=%zz", `{"id_token":"a","id_token":"b"}`, "\u00a0x\u00a0", `"\ud800"`, "",
		"eyJhbGciOiJub25lIn0." + echoSentinel + ".", `{"id_token":"` + echoSentinel + `"}`,
	} {
		f.Add([]byte(seed))
	}
	a := newTestAgent(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, rerr := exchange.ParseBody(body)
		if rerr != nil {
			if rerr.Reason != reason.InvalidIDToken || tok != "" {
				t.Fatalf("refusal %v with %q", rerr, tok)
			}
		} else {
			if tok == "" || strings.TrimSpace(tok) != tok {
				t.Fatalf("id_token %q is empty or not trimmed", tok)
			}
			trimmed := strings.TrimSpace(string(body))
			if c := trimmed[0]; c != '{' && c != '"' && !strings.Contains(trimmed, "=") && tok != trimmed {
				t.Fatalf("raw body %q gave %q", body, tok)
			}
			if utf8.ValidString(tok) {
				js, _ := json.Marshal(tok)
				obj, _ := json.Marshal(map[string]string{"id_token": tok})
				for _, other := range []string{string(js), string(obj), "id_token=" + url.QueryEscape(tok)} {
					if got, err := exchange.ParseBody([]byte(other)); err != nil || got != tok {
						t.Fatalf("%q: got %q, %v; want %q", other, got, err, tok)
					}
				}
			}
		}
		if len(body) > exchange.MaxBody {
			return
		}
		d := a.Check(context.Background(), &Request{Method: "POST", Host: "docs.example.com", Path: exchange.Path,
			Headers: map[string]string{}, Body: body})
		if d.Allowed || d.Answered || d.Status != 401 && d.Status != 503 {
			t.Fatalf("body %q: allowed=%v answered=%v %d %s", body, d.Allowed, d.Answered, d.Status, d.Reason)
		}
		if strings.Contains(string(d.Body), echoSentinel) {
			t.Fatalf("the denial echoes the body: %s", d.Body)
		}
	})
}
