//go:build tokenagent_keyuse

package vault

import "sync"

// This file exists only in the build with the tokenagent_keyuse tag, which the timing tests of
// package token use (.ci/test runs them): they prove timing safety by the code path each case
// takes — which key is used, how and how often — rather than by measuring time, which a loaded
// machine cannot do. Production builds have neither Observe nor its cost.

// KeyUse names how a Secret's key was used, for Observe.
type KeyUse = keyUse

// How a key is used.
const (
	KeyUseMAC    = useMAC    // an HMAC computed: MAC, HexMAC, VerifyHex
	KeyUseEqual  = useEqual  // Equal
	KeyUseBytes  = useBytes  // Bytes
	KeyUseAppend = useAppend // AppendKey
)

type keyUse uint8

const (
	useMAC keyUse = iota + 1
	useEqual
	useBytes
	useAppend
)

// observers holds the function Observe installed for each observed Secret (test builds only).
var observers sync.Map // *Secret -> func(KeyUse)

func (s *Secret) noteUse(u keyUse) {
	if f, ok := observers.Load(s); ok {
		f.(func(KeyUse))(u)
	}
}

// Observe calls f with every use of this secret's key, and how, until stop is called. f must be
// safe for concurrent use.
func (s *Secret) Observe(f func(KeyUse)) (stop func()) {
	observers.Store(s, f)
	return func() { observers.Delete(s) }
}
