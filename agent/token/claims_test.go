package token

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestParseClaims(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload string
		ok      bool
		check   func(c *accessClaims) bool
	}{
		{"minimal", `{"iss":"a","exp":1}`, true, func(c *accessClaims) bool { return c.Iss == "a" && c.Exp.set && c.Exp.secs == 1 }},
		{"whitespace everywhere", " \t\n{ \"iss\" : \"a\" ,\r\n \"aud\" : [ \"x\" , \"y\" ] } \n", true,
			func(c *accessClaims) bool { return c.Iss == "a" && slices.Equal(c.Aud.many, []string{"x", "y"}) }},
		{"escaped key names the claim", `{"\u0069ss":"a"}`, true, func(c *accessClaims) bool { return c.Iss == "a" }},
		{"escaped value", `{"sub":"a\"b\\c\/d\u00e9\ud83d\ude00"}`, true, func(c *accessClaims) bool { return c.Sub == "a\"b\\c/dé😀" }},
		{"unknown members of every type", `{"x":{"y":[1,-2.5e+3,true,false,null,"s",{}],"z":[]},"iss":"a"}`, true, func(c *accessClaims) bool { return c.Iss == "a" }},
		{"null claims are absent", `{"iss":null,"sub":null,"client_id":null,"scope":null,"aud":null,"scp":null}`, true,
			func(c *accessClaims) bool { return c.Iss == "" && c.Scope == nil && !c.Aud.set && !c.Scp.set }},
		{"fractional and exponent dates", `{"exp":1.5e9,"nbf":-0,"iat":1700000000.25}`, true,
			func(c *accessClaims) bool { return c.Exp.secs == 1.5e9 && c.Nbf.set && c.Iat.secs == 1700000000.25 }},
		{"case-variant names are other members", `{"ISS":"x","Aud":"y","EXP":1}`, true,
			func(c *accessClaims) bool { return c.Iss == "" && !c.Aud.set && !c.Exp.set }},
		{"duplicate unknown member", `{"x":1,"x":2}`, false, nil}, // go-jose's JSON refuses every duplicate
		{"empty object", `{}`, true, nil},
		{"duplicate iss", `{"iss":"a","iss":"b"}`, false, nil},
		{"duplicate via escape", `{"iss":"a","\u0069ss":"b"}`, false, nil},
		{"duplicate exp", `{"exp":1,"exp":2}`, false, nil},
		{"array", `["iss"]`, false, nil},
		{"string", `"iss"`, false, nil},
		{"empty", ``, false, nil},
		{"trailing garbage", `{"iss":"a"}x`, false, nil},
		{"two objects", `{}{}`, false, nil},
		{"trailing comma", `{"iss":"a",}`, false, nil},
		{"leading comma", `{,"iss":"a"}`, false, nil},
		{"missing colon", `{"iss" "a"}`, false, nil},
		{"single quotes", `{'iss':'a'}`, false, nil},
		{"bare key", `{iss:"a"}`, false, nil},
		{"unterminated", `{"iss":"a"`, false, nil},
		{"unterminated string", `{"iss":"a}`, false, nil},
		{"raw control character", "{\"iss\":\"a\tb\"}", false, nil},
		{"bad escape", `{"iss":"\x41"}`, false, nil},
		{"short unicode escape", `{"iss":"\u12"}`, false, nil},
		{"invalid UTF-8", "{\"iss\":\"\xff\"}", false, nil},
		{"invalid UTF-8 in an unknown member", "{\"x\":\"\xc3\x28\"}", false, nil},
		{"iss a number", `{"iss":1}`, false, nil},
		{"sub an object", `{"sub":{}}`, false, nil},
		{"aud a number", `{"aud":1}`, false, nil},
		{"aud list of numbers", `{"aud":[1]}`, false, nil},
		{"aud list with null", `{"aud":["a",null]}`, false, nil},
		{"aud list trailing comma", `{"aud":["a",]}`, false, nil},
		{"exp a string", `{"exp":"1"}`, false, nil},
		{"exp null", `{"exp":null}`, false, nil},
		{"exp true", `{"exp":true}`, false, nil},
		{"exp leading zero", `{"exp":01}`, false, nil},
		{"exp plus sign", `{"exp":+1}`, false, nil},
		{"exp bare dot", `{"exp":1.}`, false, nil},
		{"exp leading dot", `{"exp":.5}`, false, nil},
		{"exp bare exponent", `{"exp":1e}`, false, nil},
		{"exp hex", `{"exp":0x10}`, false, nil},
		{"exp NaN", `{"exp":NaN}`, false, nil},
		{"exp beyond 2^62", `{"exp":5e18}`, false, nil},
		{"exp below -2^62", `{"exp":-5e18}`, false, nil},
		{"deep nesting is only bounded by the token's size", `{"x":` + strings.Repeat("[", 400) + strings.Repeat("]", 400) + `}`, true, nil},
		{"bad literal", `{"x":nul}`, false, nil},
		{"NUL after the object", "{}\x00", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c accessClaims
			ok := decodeClaims([]byte(tc.payload), &c)
			if ok != tc.ok {
				t.Fatalf("parseClaims = %v, want %v", ok, tc.ok)
			}
			if ok && tc.check != nil && !tc.check(&c) {
				t.Fatalf("claims %+v", c)
			}
		})
	}
}

// FuzzOAuthClaims checks decodeClaims against encoding/json: whatever it accepts is valid JSON
// whose claims (matched case-sensitively, as a map does) have the values it read.
func FuzzOAuthClaims(f *testing.F) {
	for _, s := range []string{`{"iss":"a","sub":"b","aud":["x","y"],"exp":1.5,"nbf":0,"iat":-1,"scope":"r w","client_id":"c"}`,
		`{"\u0069ss":"a","x":{"y":[null,true]}}`, `{"scp":["a","b"]}`, `{"scp":"a b"}`, `{"aud":"x"}`, `{}`, `[]`,
		`{"exp":1e3}`, `{"sub":"\ud83d\ude00"}`, `{"scope":"read\u00a0write"}`, "{\"scope\":\"read\u00a0write \u2003admin\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c accessClaims
		if !decodeClaims(b, &c) {
			return
		}
		if !json.Valid(b) {
			t.Fatalf("accepted invalid JSON %q", b)
		}
		var m map[string]any
		d := json.NewDecoder(strings.NewReader(string(b)))
		d.UseNumber()
		if err := d.Decode(&m); err != nil {
			t.Fatalf("accepted %q that encoding/json cannot read as an object: %v", b, err)
		}
		str := func(k string) string { s, _ := m[k].(string); return s }
		if c.Iss != str("iss") || c.Sub != str("sub") || c.ClientID != str("client_id") || (c.Scope == nil) != (m["scope"] == nil) || (c.Scope != nil && *c.Scope != str("scope")) {
			t.Fatalf("strings differ: %+v vs %v", c, m)
		}
		for _, d := range []struct {
			k string
			n numericDate
		}{{"exp", c.Exp}, {"nbf", c.Nbf}, {"iat", c.Iat}} {
			v, present := m[d.k]
			if present != d.n.set {
				t.Fatalf("%s presence differs", d.k)
			}
			if present {
				f, err := v.(json.Number).Float64()
				if err != nil || f != d.n.secs {
					t.Fatalf("%s: %v vs %v", d.k, v, d.n.secs)
				}
			}
		}
		for _, a := range []struct {
			k string
			v audience
		}{{"aud", c.Aud}, {"scp", c.Scp}} {
			var want []string
			switch v := m[a.k].(type) {
			case string:
				want = []string{v}
			case []any:
				for _, e := range v {
					want = append(want, e.(string))
				}
			}
			got := a.v.many
			if a.v.one != "" || (a.v.set && a.v.many == nil && m[a.k] != nil && len(want) == 1) {
				got = []string{a.v.one}
			}
			if len(got) != len(want) || (len(want) > 0 && !slices.Equal(got, want)) {
				t.Fatalf("%s: %q vs %q", a.k, got, want)
			}
		}
	})
}
