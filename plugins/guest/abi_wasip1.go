//go:build wasip1

//lint:file-ignore U1000 the functions here are called by the host through //go:wasmexport

package guest

import "unsafe"

// The module's reused buffers: one input buffer (the region tokenagent_alloc hands out) and
// one output buffer, per instance. Package-level, so they stay reachable (Go's collector does
// not move objects, so their addresses stay valid for the host).
var (
	inBuf  []byte
	outBuf []byte
	input  Input
)

// abiV1 is the ABI marker: its presence tells the host this module speaks ABI v1.
//
//go:wasmexport tokenagent_abi_v1
func abiV1() {}

// alloc returns the module's input buffer, grown to at least size bytes. The host writes each
// input there and may reuse it for later inputs until it calls alloc again.
//
//go:wasmexport tokenagent_alloc
func alloc(size int32) int32 {
	if size <= 0 {
		size = 1
	}
	if int(size) > cap(inBuf) {
		inBuf = make([]byte, size)
	}
	inBuf = inBuf[:cap(inBuf)]
	return int32(uintptr(unsafe.Pointer(&inBuf[0])))
}

// evaluate decodes the input at ptr (which must be the buffer alloc returned), runs the
// registered policy and returns the output's address and length as ptr<<32 | len. It returns 0
// (an empty output, which the host reports as an error) when the input or the module is wrong.
//
//go:wasmexport tokenagent_evaluate
func evaluate(ptr, n int32) int64 {
	if len(inBuf) == 0 || ptr != int32(uintptr(unsafe.Pointer(&inBuf[0]))) || n < 0 || int(n) > len(inBuf) {
		Log(LevelError, "guest: tokenagent_evaluate called with a region tokenagent_alloc did not return")
		return 0
	}
	if handler == nil {
		Log(LevelError, "guest: no policy registered: call guest.Handle(fn) from an init function")
		return 0
	}
	if err := DecodeInput(inBuf[:n], &input); err != nil {
		Log(LevelError, err.Error())
		return 0
	}
	out := handler(&input)
	outBuf = AppendOutput(outBuf[:0], &out)
	return int64(uintptr(unsafe.Pointer(&outBuf[0])))<<32 | int64(len(outBuf))
}

//go:wasmimport tokenagent log
func hostLog(level int32, ptr unsafe.Pointer, n int32)

// Log sends msg to the agent's log at level, attributed to this policy. The host rate-limits
// it (lines over the limit are counted and dropped) and cuts long messages.
func Log(level Level, msg string) {
	if len(msg) == 0 {
		return
	}
	hostLog(int32(level), unsafe.Pointer(unsafe.StringData(msg)), int32(len(msg)))
}
