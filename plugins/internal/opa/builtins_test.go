package opa

import (
	"slices"
	"strings"
	"testing"

	"github.com/tokenagent/tokenagent/plugins/internal/output"
)

// TestInternalPrint: one line per combination of operand values, <undefined> for an empty set,
// strings as they are and other values as JSON, bounded in lines and length, always defined.
func TestInternalPrint(t *testing.T) {
	long := strings.Repeat("x", 2*output.MaxLogBytes)
	many := make([]any, 40)
	for i := range many {
		many[i] = float64(i)
	}
	tests := []struct {
		name     string
		operands any
		want     []string
	}{
		{"strings and values", []any{[]any{"user"}, []any{"42"}, []any{[]any{"a", "b"}}, []any{map[string]any{"k": true}}}, []string{`user 42 ["a","b"] {"k":true}`}},
		{"undefined", []any{[]any{"x"}, []any{}}, []string{"x <undefined>"}},
		{"cross product", []any{[]any{"a", "b"}, []any{1.0, 2.0}}, []string{"a 1", "a 2", "b 1", "b 2"}},
		{"no operands", []any{}, []string{""}},
		{"not an array", "x", nil},
		{"control characters", []any{[]any{"a\nb"}}, []string{"a\uFFFDb"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := &Evaluation{}
			res, err := internalPrint(o, []any{tc.operands})
			if err != nil || res != true {
				t.Fatalf("internalPrint = %v, %v; want true (always defined)", res, err)
			}
			if !slices.Equal(o.Printed, tc.want) {
				t.Errorf("lines = %q, want %q", o.Printed, tc.want)
			}
		})
	}
	o := &Evaluation{}
	_, _ = internalPrint(o, []any{[]any{many, many}})
	if len(o.Printed) != maxPrintLines {
		t.Errorf("a 40×40 cross product made %d lines, want the bound %d", len(o.Printed), maxPrintLines)
	}
	o = &Evaluation{}
	_, _ = internalPrint(o, []any{[]any{[]any{long}}})
	if len(o.Printed) != 1 || len(o.Printed[0]) > output.MaxLogBytes+3 {
		t.Errorf("a long line is not cut: %d bytes", len(o.Printed[0]))
	}
}
