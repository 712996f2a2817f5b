// Package wasmbin rewrites WebAssembly binaries where the policy engine needs it: OPA's modules
// import their linear memory, and each pooled instance needs one of its own.
package wasmbin

import (
	"errors"
	"fmt"
)

// OPA's modules import their linear memory (env.memory) instead of defining it. wazero links
// an import to one module instance by name, and every pooled instance needs a memory of its
// own, so before compiling the host turns the import into a definition with the same limits:
// the import entry is removed from the import section and a memory section with those limits
// is added. Memory index 0 stays memory index 0 (the module has no other memory), so no
// instruction changes; the module's "memory" export (ABI 1.1 and later) now exports its own
// memory. Nothing else is touched.

// wasm section ids and import kinds (WebAssembly core specification, 5.5).
const (
	secCustom   = 0
	secImport   = 2
	secMemory   = 5
	importMem   = 2
	importFunc  = 0
	importTable = 1
	importGlob  = 3
	importTag   = 4
)

// DefineImportedMemory returns bin with its imported memory (any module and name) defined
// instead, the memory's minimum pages, and whether there was one to define. A module that
// imports no memory is returned as it is; one that imports a memory and defines one too is
// refused.
func DefineImportedMemory(bin []byte) (out []byte, minPages uint32, imported bool, err error) {
	out, minPages, err = defineMemory(bin)
	return out, minPages, err == nil && len(out) != len(bin), err
}

func defineMemory(bin []byte) ([]byte, uint32, error) {
	if len(bin) < 8 || string(bin[:4]) != "\x00asm" {
		return nil, 0, errors.New("not a WebAssembly binary")
	}
	type section struct {
		id         byte
		start, end int // the whole section, id byte included
		body       int // where its contents start
	}
	var secs []section
	for off := 8; off < len(bin); {
		id := bin[off]
		size, n, err := readU32(bin, off+1)
		if err != nil {
			return nil, 0, fmt.Errorf("section at %d: %w", off, err)
		}
		body := off + 1 + n
		end := body + int(size)
		if end > len(bin) || end < body {
			return nil, 0, fmt.Errorf("section %d at %d runs past the end", id, off)
		}
		secs = append(secs, section{id, off, end, body})
		off = end
	}
	imp := -1
	for i, s := range secs {
		if s.id == secImport {
			imp = i
		}
	}
	if imp < 0 {
		return bin, 0, nil
	}
	// Walk the import entries, find the memory one.
	s := secs[imp]
	count, n, err := readU32(bin, s.body)
	if err != nil {
		return nil, 0, fmt.Errorf("import section: %w", err)
	}
	off := s.body + n
	memStart, memEnd := -1, -1
	var limits []byte
	var minPages uint32
	for i := uint32(0); i < count; i++ {
		entry := off
		for range 2 { // module and field names
			l, n, err := readU32(bin, off)
			if err != nil || off+n+int(l) > s.end {
				return nil, 0, fmt.Errorf("import %d: bad name", i)
			}
			off += n + int(l)
		}
		if off >= s.end {
			return nil, 0, fmt.Errorf("import %d: truncated", i)
		}
		kind := bin[off]
		off++
		switch kind {
		case importFunc:
			_, n, err := readU32(bin, off)
			if err != nil {
				return nil, 0, fmt.Errorf("import %d: %w", i, err)
			}
			off += n
		case importTable:
			off++ // reference type
			if off, err = skipLimits(bin, off); err != nil {
				return nil, 0, fmt.Errorf("import %d: %w", i, err)
			}
		case importMem:
			if memStart >= 0 {
				return nil, 0, errors.New("the module imports two memories")
			}
			l := off
			if off, err = skipLimits(bin, off); err != nil {
				return nil, 0, fmt.Errorf("import %d: %w", i, err)
			}
			if bin[l]&^1 != 0 {
				return nil, 0, errors.New("the imported memory is shared or 64-bit, which the host does not support")
			}
			limits = bin[l:off]
			minPages, _, _ = readU32(bin, l+1)
			memStart, memEnd = entry, off
		case importGlob:
			off += 2 // value type, mutability
		case importTag:
			off++ // attribute
			if _, n, err := readU32(bin, off); err == nil {
				off += n
			} else {
				return nil, 0, fmt.Errorf("import %d: %w", i, err)
			}
		default:
			return nil, 0, fmt.Errorf("import %d: unknown kind %d", i, kind)
		}
		if off > s.end {
			return nil, 0, fmt.Errorf("import %d: truncated", i)
		}
	}
	if memStart < 0 {
		return bin, 0, nil
	}
	for _, s := range secs {
		if s.id == secMemory {
			return nil, 0, errors.New("the module imports a memory and defines another")
		}
	}
	// The new import section: the count one less, the memory entry gone.
	var newImp []byte
	newImp = appendU32(newImp, count-1)
	newImp = append(newImp, bin[s.body+n:memStart]...)
	newImp = append(newImp, bin[memEnd:s.end]...)
	// The memory section: one memory with the import's limits.
	memBody := append(appendU32(nil, 1), limits...)

	out := make([]byte, 0, len(bin)+16)
	out = append(out, bin[:8]...)
	inserted := false
	for _, sec := range secs {
		// Sections come in order by id (the data count section, 12, sits between 9 and 10):
		// the memory section goes before the first one after it.
		if !inserted && sec.id != secCustom && sec.id > secMemory {
			out = appendSection(out, secMemory, memBody)
			inserted = true
		}
		if sec.id == secImport {
			out = appendSection(out, secImport, newImp)
			continue
		}
		out = append(out, bin[sec.start:sec.end]...)
	}
	if !inserted {
		out = appendSection(out, secMemory, memBody)
	}
	return out, minPages, nil
}

func appendSection(out []byte, id byte, body []byte) []byte {
	out = append(out, id)
	out = appendU32(out, uint32(len(body)))
	return append(out, body...)
}

// skipLimits skips a limits encoding (flags, min, [max]) at off.
func skipLimits(b []byte, off int) (int, error) {
	if off >= len(b) {
		return 0, errors.New("truncated limits")
	}
	flags := b[off]
	off++
	_, n, err := readU32(b, off)
	if err != nil {
		return 0, err
	}
	off += n
	if flags&1 != 0 {
		_, n, err := readU32(b, off)
		if err != nil {
			return 0, err
		}
		off += n
	}
	return off, nil
}

// readU32 reads an unsigned LEB128 u32 at off: the value and its length.
func readU32(b []byte, off int) (uint32, int, error) {
	var v uint32
	for i := 0; i < 5; i++ {
		if off+i >= len(b) {
			return 0, 0, errors.New("truncated integer")
		}
		c := b[off+i]
		if i == 4 && c > 0x0f {
			return 0, 0, errors.New("integer too large")
		}
		v |= uint32(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("integer too long")
}

func appendU32(b []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}
