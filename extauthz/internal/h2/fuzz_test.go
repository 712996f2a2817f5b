package h2

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/tokenagent/tokenagent/extauthz/internal/h2/h2test"
)

// FuzzConn feeds a connection any sequence of frames (after a valid preface and SETTINGS):
// the server must not panic, must not hang (the connection ends when the input does), and must
// keep its buffers within their limits.
func FuzzConn(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	lim := Limits{MaxRecvMsgSize: 64 << 10, MaxBufferedRequest: 256 << 10, MaxPendingWrite: 64 << 10,
		AbuseBudget: 100, AbuseRefill: 10, MaxHeaderFrames: 16, MaxHeaderListSize: 8 << 10, WriteTimeout: 2 * time.Second}
	s := New(Options{Unary: map[string]UnaryFunc{echoPath: echoUnary, failPath: failUnary},
		Fallback: echoFallback{}, Limits: lim})
	f.Fuzz(func(t *testing.T, frames []byte) {
		client, server := net.Pipe()
		c := newConn(s, server)
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.connWG.Add(1)
		done := make(chan struct{})
		go func() { defer close(done); c.serve() }()
		go func() { _, _ = io.Copy(io.Discard, client) }() // the peer reads whatever comes
		_, _ = client.Write([]byte(http2.ClientPreface))
		_, _ = client.Write([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0}) // an empty SETTINGS frame
		_, _ = client.Write(frames)
		_ = client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the connection did not end when its peer closed")
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.buffered > lim.MaxBufferedRequest || c.w.pending > lim.MaxPendingWrite {
			t.Fatalf("buffers over their limits: %d request bytes, %d pending", c.buffered, c.w.pending)
		}
		if !c.closed {
			t.Fatal("the connection is not closed")
		}
	})
}

// fuzzSeeds are frame sequences from the transport's tests: a call, a fragmented call,
// trailers, a reset in the middle, a closed window, a flood.
func fuzzSeeds() [][]byte {
	var out [][]byte
	build := func(fn func(fr *http2.Framer, blk func(...string) []byte)) {
		var b bytes.Buffer
		fr := http2.NewFramer(&b, nil)
		fr.AllowIllegalWrites = true
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		blk := func(fields ...string) []byte {
			hb.Reset()
			for i := 0; i+1 < len(fields); i += 2 {
				_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
			}
			return append([]byte(nil), hb.Bytes()...)
		}
		fn(fr, blk)
		out = append(out, b.Bytes())
	}
	build(func(fr *http2.Framer, blk func(...string) []byte) { // a call
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk(h2test.GRPCHeaders(echoPath)...), EndHeaders: true})
		_ = fr.WriteData(1, true, h2test.Frame([]byte("hello")))
	})
	build(func(fr *http2.Framer, blk func(...string) []byte) { // fragmented, padded, trailers
		b := blk(h2test.GRPCHeaders(echoPath)...)
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:3], PadLength: 4})
		_ = fr.WriteContinuation(1, true, b[3:])
		_ = fr.WriteDataPadded(1, false, h2test.Frame([]byte("abc"))[:4], []byte{0, 0})
		_ = fr.WriteData(1, false, h2test.Frame([]byte("abc"))[4:])
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk("x-t", "1"), EndHeaders: true, EndStream: true})
	})
	build(func(fr *http2.Framer, blk func(...string) []byte) { // reset mid-request, then a call
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk(h2test.GRPCHeaders(echoPath)...), EndHeaders: true})
		_ = fr.WriteData(1, false, []byte{0, 0})
		_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: blk(h2test.GRPCHeaders(failPath)...), EndHeaders: true})
		_ = fr.WriteData(3, true, h2test.Frame(nil))
	})
	build(func(fr *http2.Framer, blk func(...string) []byte) { // a closed window, then opened
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk(h2test.GRPCHeaders(echoPath)...), EndHeaders: true})
		_ = fr.WriteData(1, true, h2test.Frame(bytes.Repeat([]byte("w"), 100)))
		_ = fr.WriteWindowUpdate(1, 50)
		_ = fr.WriteWindowUpdate(0, 50)
	})
	build(func(fr *http2.Framer, blk func(...string) []byte) { // the fallback, with a body
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk(":method", "PUT", ":scheme", "http", ":path", "/x", ":authority", "a"), EndHeaders: true})
		_ = fr.WriteData(1, true, []byte("body"))
	})
	build(func(fr *http2.Framer, _ func(...string) []byte) { // a PING flood
		for i := range 150 {
			_ = fr.WritePing(false, [8]byte{byte(i)})
		}
	})
	return out
}

func echoUnary(_ context.Context, req, dst []byte) ([]byte, Status) {
	return append(dst, req...), Status{}
}

func failUnary(_ context.Context, _, dst []byte) ([]byte, Status) {
	return dst, Status{Code: codeInvalidArgument, Message: "no"}
}

type echoFallback struct{}

func (echoFallback) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	_, _ = w.Write(b)
}

// TestWriteFuzzSeeds writes the seeds into testdata/fuzz (run with TOKENAGENT_WRITE_SEEDS=1).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("TOKENAGENT_WRITE_SEEDS") == "" {
		t.Skip("set TOKENAGENT_WRITE_SEEDS=1 to rewrite testdata/fuzz/FuzzConn")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzConn")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds() {
		body := "go test fuzz v1\n[]byte(" + quoteBytes(s) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, "seed-"+itoa(i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func quoteBytes(b []byte) string {
	const hex = "0123456789abcdef"
	out := []byte{'"'}
	for _, c := range b {
		out = append(out, '\\', 'x', hex[c>>4], hex[c&15])
	}
	return string(append(out, '"'))
}
