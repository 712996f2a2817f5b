package vault

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"hash"
	"sync"
	"unsafe"
)

// Secret is key material that never prints: its String and GoString are "[redacted]". It
// verifies HMAC-SHA256 signatures with a pool of keyed hashes, so a verification allocates
// nothing and never re-derives the HMAC pads.
//
// # Notes
//
//   - A Secret is immutable and safe for concurrent use.
//   - Comparisons are constant-time in the signature.
type Secret struct {
	key  []byte
	pool sync.Pool
}

// NewSecret returns a Secret holding a copy of key.
func NewSecret(key []byte) *Secret {
	s := &Secret{key: append([]byte(nil), key...)}
	s.pool.New = func() any { return &keyedHash{h: hmac.New(sha256.New, s.key)} }
	return s
}

// String implements fmt.Stringer without revealing the key.
func (s *Secret) String() string { return "[redacted]" }

// GoString implements fmt.GoStringer without revealing the key.
func (s *Secret) GoString() string { return "[redacted]" }

// Len is the key's length in bytes.
func (s *Secret) Len() int { return len(s.key) }

// Equal reports, in constant time, whether the secret equals candidate.
func (s *Secret) Equal(candidate string) bool {
	s.noteUse(useEqual)
	return subtle.ConstantTimeCompare(s.key, []byte(candidate)) == 1
}

// Bytes returns a copy of the key, for the rare caller that must hand it to another library
// (for example an MD5 digest for the legacy impersonation token).
func (s *Secret) Bytes() []byte {
	s.noteUse(useBytes)
	return append([]byte(nil), s.key...)
}

// keyedHash is a pooled HMAC with a scratch buffer for its digest: hash.Hash.Sum's argument
// escapes through the interface, so summing into a caller's stack array would allocate.
type keyedHash struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

// mac computes HMAC-SHA256(key, msg...) into kh.sum.
func (s *Secret) mac(msg []string) *keyedHash {
	s.noteUse(useMAC)
	kh := s.pool.Get().(*keyedHash)
	kh.h.Reset()
	for _, m := range msg {
		kh.h.Write(bytesView(m))
	}
	kh.h.Sum(kh.sum[:0])
	return kh
}

// MAC appends HMAC-SHA256(key, msg) to dst.
func (s *Secret) MAC(dst []byte, msg ...string) []byte {
	kh := s.mac(msg)
	dst = append(dst, kh.sum[:]...)
	s.pool.Put(kh)
	return dst
}

// VerifyHex reports whether sigHex is the hex HMAC-SHA256 of the concatenation of msg, with
// the hex digits compared case-insensitively and the MAC in constant time.
func (s *Secret) VerifyHex(sigHex string, msg ...string) bool {
	var got [sha256.Size]byte
	kh := s.mac(msg)
	defer s.pool.Put(kh)
	if len(sigHex) != 2*sha256.Size {
		return false // the MAC was still computed, so a wrong length does not answer faster
	}
	ok := DecodeHex(got[:], sigHex)
	return subtle.ConstantTimeCompare(kh.sum[:], got[:]) == 1 && ok
}

// DecodeHex decodes the hex digits of src (either case) into dst, which must be exactly half
// as long, and reports whether src was that long and every digit valid. It reads every digit
// whatever their values, so decoding a signature tells nothing of it by its timing.
func DecodeHex(dst []byte, src string) bool {
	if len(src) != 2*len(dst) {
		return false
	}
	ok := 1
	for i := range dst {
		hi, okh := fromHex(src[2*i])
		lo, okl := fromHex(src[2*i+1])
		dst[i] = hi<<4 | lo
		ok &= okh & okl
	}
	return ok == 1
}

// AppendKey appends the key to dst, for a caller that must feed it to another digest (the
// legacy impersonation token's MD5) without a heap copy; the caller clears dst after use.
func (s *Secret) AppendKey(dst []byte) []byte {
	s.noteUse(useAppend)
	return append(dst, s.key...)
}

func fromHex(c byte) (byte, int) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', 1
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, 1
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, 1
	}
	return 0, 0
}

// HexMAC returns the lower-case hex HMAC-SHA256(key, msg...), for minting tokens.
func (s *Secret) HexMAC(msg ...string) string {
	var sum [sha256.Size]byte
	return hex.EncodeToString(s.MAC(sum[:0], msg...))
}

// bytesView returns the bytes of s without copying. The hash only reads them, and never keeps
// them, so no write can reach the string's immutable memory; this keeps verification free of
// allocations (a []byte(s) conversion escapes through the hash.Hash interface).
func bytesView(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
