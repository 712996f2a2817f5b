package plugins

import (
	"encoding/binary"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenagent/tokenagent/plugins/guest"
	"github.com/tokenagent/tokenagent/plugins/internal/output"
)

// The host's encoder and the Go guest's decoder must agree on every field.
func TestInputRoundTrip(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 30, 0, 123456789, time.UTC)
	tests := []struct {
		name        string
		in          Input
		wantQuery   string
		wantHeaders []guest.Header
	}{
		{name: "empty", in: Input{}, wantHeaders: nil},
		{
			name: "full",
			in: Input{Site: "docs", Kind: "oauth", User: "=jane%20doe", ClientID: "app1",
				Scopes: []string{"read", "write"}, Method: "POST", Path: "/@api/deki/pages/1",
				Query: "a=1&b=2", Host: "docs.example.com", Origin: "https://app.example.org",
				Headers: [][2]string{{"accept", "*/*"}, {"x-forwarded-for", "10.0.0.1"}, {"empty", ""}}},
			wantQuery:   "a=1&b=2",
			wantHeaders: []guest.Header{{Name: "accept", Value: "*/*"}, {Name: "x-forwarded-for", Value: "10.0.0.1"}, {Name: "empty", Value: ""}},
		},
		{
			name:        "unicode and long values",
			in:          Input{User: "=Zoë", Path: "/" + strings.Repeat("p", 5000), Headers: [][2]string{{"x-big", strings.Repeat("v", 70000)}}},
			wantHeaders: []guest.Header{{Name: "x-big", Value: strings.Repeat("v", 70000)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := make([]byte, inputSize(&tt.in))
			encodeInput(b, &tt.in, now)
			var got guest.Input
			if err := guest.DecodeInput(b, &got); err != nil {
				t.Fatalf("DecodeInput: %v", err)
			}
			want := guest.Input{Site: tt.in.Site, Kind: tt.in.Kind, User: tt.in.User, ClientID: tt.in.ClientID,
				Scopes: tt.in.Scopes, Method: tt.in.Method, Path: tt.in.Path, Query: tt.wantQuery,
				Host: tt.in.Host, Origin: tt.in.Origin, Headers: tt.wantHeaders, TimeUnixNano: now.UnixNano()}
			if !slices.Equal(got.Scopes, want.Scopes) || !slices.Equal(got.Headers, want.Headers) {
				t.Errorf("decoded scopes %.200q, headers %.200q; want %.200q, %.200q", got.Scopes, got.Headers, want.Scopes, want.Headers)
			}
			got.Scopes, got.Headers, want.Scopes, want.Headers = nil, nil, nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Errorf("decoded\n%.300v\nwant\n%.300v", got, want)
			}
			if !got.Time().Equal(now) {
				t.Errorf("Time() = %v, want %v", got.Time(), now)
			}
		})
	}
}

// rawOutput builds an output record field by field, so tests can break one rule at a time.
type rawOutput struct {
	version, flags, status uint32
	reason                 string
	headers, resp          [][2]string
	trailing               []byte
}

func (o rawOutput) bytes() []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, o.version)
	b = le.AppendUint32(b, o.flags)
	b = le.AppendUint32(b, o.status)
	str := func(s string) { b = le.AppendUint32(b, uint32(len(s))); b = append(b, s...) }
	str(o.reason)
	for _, hs := range [][][2]string{o.headers, o.resp} {
		b = le.AppendUint32(b, uint32(len(hs)))
		for _, h := range hs {
			str(h[0])
			str(h[1])
		}
	}
	return append(b, o.trailing...)
}

func TestDecodeOutput(t *testing.T) {
	many := make([][2]string, MaxOutputHeaders+1)
	for i := range many {
		many[i] = [2]string{"x-h" + strings.Repeat("a", i), "v"}
	}
	tests := []struct {
		name    string
		b       []byte
		want    Output
		wantErr string
	}{
		{name: "allow", b: rawOutput{version: 1, flags: 1}.bytes(), want: Output{Allow: true}},
		{name: "allow with headers", b: rawOutput{version: 1, flags: 1, reason: "ok",
			headers: [][2]string{{"x-site-role", "editor"}}, resp: [][2]string{{"x-trace", "1"}}}.bytes(),
			want: Output{Allow: true, Reason: "ok", Headers: map[string]string{"x-site-role": "editor"},
				ResponseHeaders: map[string]string{"x-trace": "1"}}},
		{name: "deny default status", b: rawOutput{version: 1}.bytes(), want: Output{Status: 403}},
		{name: "deny 503 with retry-after", b: rawOutput{version: 1, status: 503, reason: "maintenance until 02:00 UTC",
			resp: [][2]string{{"retry-after", "120"}}}.bytes(),
			want: Output{Status: 503, Reason: "maintenance until 02:00 UTC", ResponseHeaders: map[string]string{"retry-after": "120"}}},
		{name: "tab in value", b: rawOutput{version: 1, flags: 1, headers: [][2]string{{"x-a", "a\tb"}}}.bytes(),
			want: Output{Allow: true, Headers: map[string]string{"x-a": "a\tb"}}},

		{name: "empty", b: nil, wantErr: "empty output"},
		{name: "short prefix", b: []byte{1, 0, 0, 0, 1}, wantErr: "shorter than its 12-byte prefix"},
		{name: "version", b: rawOutput{version: 2, flags: 1}.bytes(), wantErr: "layout version 2"},
		{name: "unknown flags", b: rawOutput{version: 1, flags: 3}.bytes(), wantErr: "unknown bits"},
		{name: "allow with status", b: rawOutput{version: 1, flags: 1, status: 200}.bytes(), wantErr: "must be 0 when allowing"},
		{name: "deny 200", b: rawOutput{version: 1, status: 200}.bytes(), wantErr: "outside 400..599"},
		{name: "deny 600", b: rawOutput{version: 1, status: 600}.bytes(), wantErr: "outside 400..599"},
		{name: "reason too long", b: rawOutput{version: 1, reason: strings.Repeat("r", MaxReasonBytes+1)}.bytes(), wantErr: "over 256"},
		{name: "reason control", b: rawOutput{version: 1, reason: "a\nb"}.bytes(), wantErr: "control character"},
		{name: "reason invalid utf-8", b: rawOutput{version: 1, reason: "\xff"}.bytes(), wantErr: "UTF-8"},
		{name: "truncated reason", b: rawOutput{version: 1, reason: "abc"}.bytes()[:17], wantErr: "truncated in its reason"},
		{name: "truncated header count", b: rawOutput{version: 1}.bytes()[:18], wantErr: "truncated in its header count"},
		{name: "truncated header value", b: rawOutput{version: 1, headers: [][2]string{{"x-a", "value"}}}.bytes()[:33], wantErr: "truncated in its header value"},
		{name: "too many headers", b: rawOutput{version: 1, flags: 1, headers: many}.bytes(), wantErr: "65 headers, over 64"},
		{name: "huge header count", b: append(rawOutput{version: 1, flags: 1}.bytes()[:16], 0xff, 0xff, 0xff, 0xff), wantErr: "over 64"},
		{name: "upper-case name", b: rawOutput{version: 1, flags: 1, headers: [][2]string{{"X-Role", "a"}}}.bytes(), wantErr: "not a lower-case token"},
		{name: "empty name", b: rawOutput{version: 1, flags: 1, headers: [][2]string{{"", "a"}}}.bytes(), wantErr: "want 1..256"},
		{name: "name with colon", b: rawOutput{version: 1, flags: 1, headers: [][2]string{{":path", "/"}}}.bytes(), wantErr: "not a lower-case token"},
		{name: "x-auth reserved", b: rawOutput{version: 1, flags: 1, headers: [][2]string{{"x-auth-user", "1"}}}.bytes(), wantErr: "reserved for the agent"},
		{name: "framing reserved", b: rawOutput{version: 1, flags: 1, headers: [][2]string{{"content-length", "1"}}}.bytes(), wantErr: "reserved"},
		{name: "reserved response header", b: rawOutput{version: 1, resp: [][2]string{{"set-cookie", "a=b"}}}.bytes(), wantErr: "response header \"set-cookie\""},
		{name: "CRLF in value", b: rawOutput{version: 1, flags: 1, headers: [][2]string{{"x-a", "a\r\nx-auth-user: 1"}}}.bytes(), wantErr: "control character"},
		{name: "value too long", b: rawOutput{version: 1, flags: 1, headers: [][2]string{{"x-a", strings.Repeat("v", MaxHeaderValueBytes+1)}}}.bytes(), wantErr: "over 8192"},
		{name: "duplicate", b: rawOutput{version: 1, flags: 1, headers: [][2]string{{"x-a", "1"}, {"x-a", "2"}}}.bytes(), wantErr: "given twice"},
		{name: "trailing bytes", b: rawOutput{version: 1, flags: 1, trailing: []byte{0}}.bytes(), wantErr: "1 trailing bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeOutput(tt.b)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("decodeOutput error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeOutput: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("decodeOutput = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// The example in ABI.md decodes as it says.
func TestABIExample(t *testing.T) {
	b := []byte{
		0x01, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00,
		0xf7, 0x01, 0x00, 0x00,
		0x0b, 0x00, 0x00, 0x00, 'm', 'a', 'i', 'n', 't', 'e', 'n', 'a', 'n', 'c', 'e',
		0x00, 0x00, 0x00, 0x00,
		0x01, 0x00, 0x00, 0x00,
		0x0b, 0x00, 0x00, 0x00, 'r', 'e', 't', 'r', 'y', '-', 'a', 'f', 't', 'e', 'r',
		0x03, 0x00, 0x00, 0x00, '1', '2', '0',
	}
	got, err := decodeOutput(b)
	want := Output{Status: 503, Reason: "maintenance", ResponseHeaders: map[string]string{"retry-after": "120"}}
	if err != nil || !reflect.DeepEqual(got, want) || len(b) != 57 {
		t.Fatalf("decodeOutput(ABI.md example, %d bytes) = %+v, %v; want %+v", len(b), got, err, want)
	}
}

// The Go guest's encoder produces what the host's decoder reads.
func TestGuestOutputRoundTrip(t *testing.T) {
	tests := []guest.Output{
		guest.Allow(),
		guest.Allow(guest.Header{Name: "x-site-role", Value: "admin"}),
		guest.Deny(0, ""),
		guest.Deny(503, "maintenance"),
		{Status: 401, Reason: "log in", ResponseHeaders: []guest.Header{{Name: "retry-after", Value: "5"}}},
	}
	for _, o := range tests {
		got, err := decodeOutput(guest.AppendOutput(nil, &o))
		if err != nil {
			t.Fatalf("decode %+v: %v", o, err)
		}
		if got.Allow != o.Allow || got.Reason != o.Reason || len(got.Headers) != len(o.Headers) ||
			len(got.ResponseHeaders) != len(o.ResponseHeaders) {
			t.Errorf("round trip of %+v gave %+v", o, got)
		}
		want := o.Status
		if want == 0 {
			want = 403
		}
		if !o.Allow && got.Status != want {
			t.Errorf("status of %+v: got %d, want %d", o, got.Status, want)
		}
	}
}

// FuzzDecodeOutput feeds the host's output decoder arbitrary bytes (what a hostile module can
// return). It must never panic, and what it accepts must obey every rule of ABI.md and survive
// a re-encode unchanged.
func FuzzDecodeOutput(f *testing.F) {
	f.Add(rawOutput{version: 1, flags: 1}.bytes())
	f.Add(rawOutput{version: 1, status: 503, reason: "maintenance", resp: [][2]string{{"retry-after", "60"}}}.bytes())
	f.Add(rawOutput{version: 1, flags: 1, headers: [][2]string{{"x-site-role", "editor"}, {"x-b", "2"}}}.bytes())
	f.Add([]byte("garbage!!"))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := decodeOutput(b)
		if err != nil {
			if !reflect.DeepEqual(out, Output{}) {
				t.Fatalf("error %v came with a non-zero Output: %+v", err, out)
			}
			return
		}
		if out.Allow && out.Status != 0 || !out.Allow && (out.Status < 400 || out.Status > 599) {
			t.Fatalf("accepted status %d with allow=%v", out.Status, out.Allow)
		}
		if len(out.Reason) > MaxReasonBytes || len(out.Headers) > MaxOutputHeaders || len(out.ResponseHeaders) > MaxOutputHeaders {
			t.Fatalf("accepted an output over the limits: %+v", out)
		}
		for _, hs := range []map[string]string{out.Headers, out.ResponseHeaders} {
			for name, value := range hs {
				if output.CheckHeaderName([]byte(name)) != nil || strings.ContainsAny(value, "\r\n\x00") {
					t.Fatalf("accepted header %q: %q", name, value)
				}
			}
		}
		// Re-encode (in sorted header order) and decode again: same Output.
		o := guest.Output{Allow: out.Allow, Reason: out.Reason}
		if !out.Allow {
			o.Status = out.Status
		}
		for _, name := range slices.Sorted(maps.Keys(out.Headers)) {
			o.Headers = append(o.Headers, guest.Header{Name: name, Value: out.Headers[name]})
		}
		for _, name := range slices.Sorted(maps.Keys(out.ResponseHeaders)) {
			o.ResponseHeaders = append(o.ResponseHeaders, guest.Header{Name: name, Value: out.ResponseHeaders[name]})
		}
		again, err := decodeOutput(guest.AppendOutput(nil, &o))
		if err != nil || !reflect.DeepEqual(again, out) {
			t.Fatalf("re-encoded output decodes to %+v, %v; want %+v", again, err, out)
		}
	})
}

func BenchmarkEncodeInput(b *testing.B) {
	in := Input{Site: "docs", Kind: "authtoken", User: "42", Method: "GET", Path: "/@api/deki/pages/12/contents",
		Query: "mode=view&format=html", Host: "docs.example.com", Origin: "https://docs.example.com",
		Headers: [][2]string{{"accept", "application/json"}, {"user-agent", "Mozilla/5.0"},
			{"x-forwarded-for", "10.1.2.3"}, {"accept-language", "en-US,en;q=0.9"}}}
	buf := make([]byte, 4096)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		encodeInput(buf[:inputSize(&in)], &in, now)
	}
}
