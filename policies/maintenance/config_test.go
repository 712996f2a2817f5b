package main

import (
	"strings"
	"testing"
	"time"
)

// The configuration parser and the window arithmetic, natively (the policy itself is tested
// through the host in main_test.go).
func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, windows, exempt string
		wantErr               string
	}{
		{name: "empty", windows: ""},
		{name: "daily", windows: "22:00-02:00, 12:00-12:30"},
		{name: "absolute", windows: "2026-12-01T22:00:00Z/2026-12-02T02:00:00+01:00"},
		{name: "exempt", windows: "01:00-02:00", exempt: "1, =ops"},
		{name: "bad clock", windows: "25:00-02:00", wantErr: `"25:00" is not HH:MM`},
		{name: "one digit", windows: "2:00-03:00", wantErr: "is not HH:MM"},
		{name: "same start and end", windows: "02:00-02:00", wantErr: "the same time"},
		{name: "no dash", windows: "tonight", wantErr: "want HH:MM-HH:MM or START/END"},
		{name: "bad RFC 3339", windows: "2026-12-01/2026-12-02", wantErr: "start:"},
		{name: "end before start", windows: "2026-12-02T00:00:00Z/2026-12-01T00:00:00Z", wantErr: "not after the start"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig(tt.windows, tt.exempt)
			if tt.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// The default build (no -ldflags) configures no window: every write passes.
func TestDefaultHasNoWindow(t *testing.T) {
	c, err := parseConfig(windows, exempt)
	if err != nil {
		t.Fatal(err)
	}
	for h := 0; h < 24; h++ {
		if end, ok := c.activeUntil(time.Date(2026, 11, 21, h, 30, 0, 0, time.UTC)); ok {
			t.Fatalf("default configuration is in maintenance at %02d:30 until %v", h, end)
		}
	}
}

func TestActiveUntil(t *testing.T) {
	c, err := parseConfig("22:00-02:00,01:30-03:00,12:00-12:30,2026-12-24T10:00:00Z/2026-12-24T12:10:00Z", "")
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		now     string
		wantEnd string // "" for no window
	}{
		{"2026-11-21T21:59:59Z", ""},
		{"2026-11-21T22:00:00Z", "2026-11-22T03:00:00Z"}, // runs on through the overlapping 01:30-03:00
		{"2026-11-21T23:59:00Z", "2026-11-22T03:00:00Z"},
		{"2026-11-22T01:00:00Z", "2026-11-22T03:00:00Z"},
		{"2026-11-22T02:30:00Z", "2026-11-22T03:00:00Z"},
		{"2026-11-22T03:00:00Z", ""},
		{"2026-11-22T12:15:00Z", "2026-11-22T12:30:00Z"},
		{"2026-12-24T11:00:00Z", "2026-12-24T12:30:00Z"}, // absolute window, then the daily 12:00-12:30
		{"2026-12-24T12:40:00Z", ""},
	}
	for _, tt := range tests {
		end, ok := c.activeUntil(at(tt.now))
		switch {
		case tt.wantEnd == "" && ok:
			t.Errorf("%s: in maintenance until %v, want none", tt.now, end)
		case tt.wantEnd != "" && (!ok || !end.Equal(at(tt.wantEnd))):
			t.Errorf("%s: until %v (%v), want %s", tt.now, end, ok, tt.wantEnd)
		}
	}
	if got := retrySeconds(at("2026-11-22T02:59:59Z").Add(-time.Millisecond), at("2026-11-22T03:00:00Z")); got != "2" {
		t.Errorf("retrySeconds rounds %q, want 2", got)
	}
}
