package wasmbin

import (
	"bytes"
	"context"
	"testing"

	"github.com/tetratelabs/wazero"
)

// A hand-assembled module importing its memory (min 2, max 10) and exporting it, like OPA's:
//
//	(module (import "env" "memory" (memory 2 10)) (func (export "f") (result i32) (i32.const 7))
//	        (export "memory" (memory 0)))
var importsMemory = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
	0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type: () -> i32
	0x02, 0x10, 0x01, 0x03, 'e', 'n', 'v', 0x06, 'm', 'e', 'm', 'o', 'r', 'y', 0x02, 0x01, 0x02, 0x0a, // import memory 2..10
	0x03, 0x02, 0x01, 0x00, // function 0: type 0
	0x07, 0x0e, 0x02, 0x01, 'f', 0x00, 0x00, 0x06, 'm', 'e', 'm', 'o', 'r', 'y', 0x02, 0x00, // exports
	0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x07, 0x0b, // code: i32.const 7
}

// The imported memory becomes a defined one with the same limits: the module compiles without
// any import and runs, twice at once (two instances, two memories).
func TestDefineImportedMemory(t *testing.T) {
	out, minPages, imported, err := DefineImportedMemory(importsMemory)
	if err != nil || !imported || minPages != 2 {
		t.Fatalf("defineImportedMemory: %v, imported %v, min %d", err, imported, minPages)
	}
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	cm, err := r.CompileModule(ctx, out)
	if err != nil {
		t.Fatalf("the rewritten module does not compile: %v", err)
	}
	if len(cm.ImportedMemories()) != 0 || len(cm.ImportedFunctions()) != 0 {
		t.Fatal("imports left")
	}
	mem := cm.ExportedMemories()["memory"]
	if mem == nil || mem.Min() != 2 {
		t.Fatalf("exported memory %v", mem)
	}
	if max, ok := mem.Max(); !ok || max != 10 {
		t.Fatalf("max %d %v, want 10", max, ok)
	}
	for range 2 {
		m, err := r.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName(""))
		if err != nil {
			t.Fatal(err)
		}
		res, err := m.ExportedFunction("f").Call(ctx)
		if err != nil || res[0] != 7 {
			t.Fatalf("f() = %v, %v", res, err)
		}
	}
	// A module importing no memory is left as it is.
	same, _, imported, err := DefineImportedMemory(out)
	if err != nil || imported || !bytes.Equal(same, out) {
		t.Fatalf("a module with its own memory: changed=%v imported=%v err=%v", !bytes.Equal(same, out), imported, err)
	}
	for _, bad := range [][]byte{nil, []byte("\x00asm"), importsMemory[:20], append(append([]byte{}, importsMemory[:8]...), 0x02, 0xff)} {
		if _, _, _, err := DefineImportedMemory(bad); err == nil {
			t.Errorf("%x accepted", bad)
		}
	}
}

// FuzzDefineImportedMemory: any bytes are refused or rewritten into a module that still parses
// the same way; never a panic.
func FuzzDefineImportedMemory(f *testing.F) {
	f.Add(importsMemory)
	f.Fuzz(func(t *testing.T, b []byte) {
		out, _, imported, err := DefineImportedMemory(b)
		if err != nil {
			return
		}
		if imported {
			if _, _, again, err := DefineImportedMemory(out); err != nil || again {
				t.Fatalf("the rewritten module still imports a memory (%v)", err)
			}
		}
	})
}
