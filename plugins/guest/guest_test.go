package guest_test

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/tokenagent/tokenagent/plugins/guest"
)

// record builds an input record: version, time, the nine strings, scopes, headers.
func record(version uint32, strs [9]string, scopes []string, headers [][2]string) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, version)
	b = le.AppendUint64(b, 1700000000000000000)
	str := func(s string) { b = le.AppendUint32(b, uint32(len(s))); b = append(b, s...) }
	for _, s := range strs {
		str(s)
	}
	b = le.AppendUint32(b, uint32(len(scopes)))
	for _, s := range scopes {
		str(s)
	}
	b = le.AppendUint32(b, uint32(len(headers)))
	for _, h := range headers {
		str(h[0])
		str(h[1])
	}
	return b
}

var full = record(1, [9]string{"docs", "oauth", "sub", "app", "GET", "/p", "q=1", "docs.example.com", "https://o"},
	[]string{"read", "write"}, [][2]string{{"accept", "*/*"}, {"x-a", "1"}})

func TestDecodeInput(t *testing.T) {
	var in guest.Input
	if err := guest.DecodeInput(full, &in); err != nil {
		t.Fatal(err)
	}
	if in.Site != "docs" || in.Kind != "oauth" || in.User != "sub" || in.ClientID != "app" || in.Method != "GET" ||
		in.Path != "/p" || in.Query != "q=1" || in.Host != "docs.example.com" || in.Origin != "https://o" ||
		len(in.Scopes) != 2 || len(in.Headers) != 2 || in.TimeUnixNano != 1700000000000000000 {
		t.Fatalf("decoded %+v", in)
	}
	if v, ok := in.Header("x-a"); !ok || v != "1" {
		t.Errorf("Header(x-a) = %q, %v", v, ok)
	}
	if _, ok := in.Header("x-b"); ok {
		t.Error("Header(x-b) found")
	}
	if !in.HasScope("write") || in.HasScope("admin") {
		t.Error("HasScope")
	}
	if in.Time().Unix() != 1700000000 || in.Time().Location().String() != "UTC" {
		t.Errorf("Time() = %v", in.Time())
	}
	// Decoding again into the same Input reuses its slices: no allocation.
	if n := testing.AllocsPerRun(100, func() { _ = guest.DecodeInput(full, &in) }); n != 0 {
		t.Errorf("DecodeInput allocates %v times per call", n)
	}
}

// Every truncation and any trailing byte is an error, never a panic or a wrong decode.
func TestDecodeInputMalformed(t *testing.T) {
	var in guest.Input
	for n := 0; n < len(full); n++ {
		if err := guest.DecodeInput(full[:n], &in); !errors.Is(err, guest.ErrInput) {
			t.Fatalf("%d of %d bytes: err = %v, want ErrInput", n, len(full), err)
		}
	}
	if err := guest.DecodeInput(append(full[:len(full):len(full)], 0), &in); err == nil || !strings.Contains(err.Error(), "trailing") {
		t.Errorf("trailing byte: %v", err)
	}
	v2 := record(2, [9]string{}, nil, nil)
	if err := guest.DecodeInput(v2, &in); err == nil || !strings.Contains(err.Error(), "layout version 2") {
		t.Errorf("version 2: %v", err)
	}
	huge := record(1, [9]string{}, nil, nil)
	binary.LittleEndian.PutUint32(huge[len(huge)-4:], 1<<31) // a header count no record can hold
	if err := guest.DecodeInput(huge, &in); !errors.Is(err, guest.ErrInput) {
		t.Errorf("huge count: %v", err)
	}
}

func TestAnonymous(t *testing.T) {
	tests := []struct {
		kind, user string
		want       bool
	}{
		{"anonymous", "", true},
		{"", "", true},
		{"browser", "", true},
		{"browser", "7", false},
		{"authtoken", "7", false},
		{"oauth", "", false}, // an application
		{"apikey", "", false},
	}
	for _, tt := range tests {
		in := guest.Input{Kind: tt.kind, User: tt.user}
		if got := in.Anonymous(); got != tt.want {
			t.Errorf("Anonymous() for kind %q user %q = %v, want %v", tt.kind, tt.user, got, tt.want)
		}
	}
}

func TestHandleTwicePanics(t *testing.T) {
	fn := func(*guest.Input) guest.Output { return guest.Allow() }
	guest.Handle(fn)
	defer func() {
		if recover() == nil {
			t.Error("a second Handle did not panic")
		}
	}()
	guest.Handle(fn)
}

// A policy is a plain function registered from init; build the package with
// GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared.
func ExampleHandle() {
	policy := func(in *guest.Input) guest.Output {
		if in.Anonymous() && in.Method != "GET" && in.Method != "HEAD" {
			return guest.Deny(401, "anonymous users may only read")
		}
		if in.HasScope("write") {
			return guest.Allow(guest.Header{Name: "x-site-role", Value: "editor"})
		}
		return guest.Allow()
	}
	_ = policy // in a policy's package: func init() { guest.Handle(policy) }
}
