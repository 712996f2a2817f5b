package vault_test

import (
	"context"
	"testing"
)

// BenchmarkStoreHit is the cost every verifier pays per check: one cached record lookup.
func BenchmarkStoreHit(b *testing.B) {
	s, _, _, _ := newStoreTB(b, keysYAML)
	ctx := context.Background()
	if _, err := s.ServerKey(ctx, "docs", "k1"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.ServerKey(ctx, "docs", "k1"); err != nil {
			b.Fatal(err)
		}
	}
}
