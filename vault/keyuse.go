//go:build !tokenagent_keyuse

package vault

// keyUse is how a Secret's key is used; only the build with the tokenagent_keyuse tag records
// it (keyuse_observe.go). In every other build noteUse does nothing and costs nothing.
type keyUse uint8

// How a key is used.
const (
	useMAC    keyUse = iota + 1 // an HMAC computed: MAC, HexMAC, VerifyHex
	useEqual                    // Equal
	useBytes                    // Bytes
	useAppend                   // AppendKey
)

func (s *Secret) noteUse(keyUse) {}
