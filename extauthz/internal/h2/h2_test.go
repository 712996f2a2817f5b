package h2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/http2"

	"github.com/tokenagent/tokenagent/extauthz/internal/h2/h2test"
	"github.com/tokenagent/tokenagent/vault/blocking"
)

// The server's tests drive it with raw frames (a Framer and HPACK on a real loopback
// connection), as a peer that follows the protocol, or one that does not.

const (
	echoPath  = "/test.Echo/Call"
	blockPath = "/test.Block/Call"
	failPath  = "/test.Fail/Call"
)

// testServer runs a Server on 127.0.0.1 with three unary methods: echo (the request message
// back), block (calls blocking.Ahead, then waits for release), fail (a status that is not OK);
// and a fallback that echoes the body with a trailer.
type testServer struct {
	srv     *Server
	addr    string
	release chan struct{} // one receive per blocked call
	entered chan struct{} // one send per blocked call
}

func startServer(t testing.TB, lim Limits, mutate ...func(*Options)) *testServer {
	t.Helper()
	ts := &testServer{release: make(chan struct{}, 1000), entered: make(chan struct{}, 1000)}
	opts := Options{
		Unary: map[string]UnaryFunc{
			echoPath: func(_ context.Context, req, dst []byte) ([]byte, Status) { return append(dst, req...), Status{} },
			blockPath: func(ctx context.Context, req, dst []byte) ([]byte, Status) {
				blocking.Ahead(ctx)
				ts.entered <- struct{}{}
				select {
				case <-ts.release:
				case <-ctx.Done():
					return dst, Status{Code: codeCanceled, Message: ctx.Err().Error()}
				}
				return append(dst, req...), Status{}
			},
			failPath: func(_ context.Context, _, dst []byte) ([]byte, Status) {
				return dst, Status{Code: codeInvalidArgument, Message: "bad request: 100% \u00e9"}
			},
		},
		Fallback: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Trailer", "X-Length")
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write(b)
			w.Header().Set("X-Length", fmt.Sprint(len(b)))
		}),
		Limits: lim,
		Logger: slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, m := range mutate {
		m(&opts)
	}
	ts.srv = New(opts)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = l.Addr().String()
	done := make(chan error, 1)
	go func() { done <- ts.srv.Serve(l) }()
	t.Cleanup(func() {
		ts.srv.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return ts
}

// testLog writes the server's log into the test's.
type testLog struct{ t testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestUnaryRoundTrip(t *testing.T) {
	ts := startServer(t, Limits{})
	p := h2test.Dial(t, ts.addr)
	p.Call(1, echoPath, []byte("hello"))
	p.Call(3, failPath, nil)
	got, _ := p.Answers(1, 3)
	a := got[1]
	if a.Headers[":status"] != "200" || a.Headers["content-type"] != "application/grpc" || a.GRPCStatus() != "0" ||
		string(a.Message()) != "hello" || a.WasReset {
		t.Errorf("echo: %+v", a)
	}
	f := got[3]
	if f.GRPCStatus() != "3" || f.Trailers["grpc-message"] != "bad request: 100%25 %C3%A9" || len(f.Data) != 0 ||
		f.Headers[":status"] != "200" {
		t.Errorf("a status that is not OK, trailers-only and percent-encoded: %+v", f)
	}
}

// A header block in many CONTINUATION fragments, a body in many padded DATA frames and the
// request's trailers read as one request.
func TestFragmentedRequest(t *testing.T) {
	ts := startServer(t, Limits{})
	p := h2test.Dial(t, ts.addr)
	blk := p.Block(h2test.GRPCHeaders(echoPath, "x-custom", strings.Repeat("v", 100))...)
	step := len(blk)/30 + 1 // about 30 frames, under MaxHeaderFrames
	p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:step], PadLength: 7}))
	for i := step; i < len(blk); i += step {
		p.Must(p.Fr.WriteContinuation(1, i+step >= len(blk), blk[i:min(i+step, len(blk))]))
	}
	body := h2test.Frame([]byte("a message in many frames"))
	for i := 0; i < len(body); i += 3 {
		p.Must(p.Fr.WriteDataPadded(1, false, body[i:min(i+3, len(body))], make([]byte, i%5)))
	}
	p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.Block("x-trailer", "1"), EndStream: true, EndHeaders: true}))
	got, _ := p.Answers(1)
	if a := got[1]; a.GRPCStatus() != "0" || string(a.Message()) != "a message in many frames" {
		t.Fatalf("%+v", a)
	}
}

// The gRPC statuses of requests the server cannot serve, as gRPC-Go answers them.
func TestUnaryRequestErrors(t *testing.T) {
	ts := startServer(t, Limits{MaxRecvMsgSize: 1024})
	p := h2test.Dial(t, ts.addr)
	var gz bytes.Buffer
	tests := []struct {
		name    string
		headers []string
		body    []byte
		status  string
		code    string
	}{
		{"no message", h2test.GRPCHeaders(echoPath), nil, "200", "13"},
		{"two messages", h2test.GRPCHeaders(echoPath), append(h2test.Frame([]byte("a")), h2test.Frame([]byte("b"))...), "200", "12"},
		{"truncated frame", h2test.GRPCHeaders(echoPath), []byte{0, 0, 0}, "200", "13"},
		{"message over the limit", h2test.GRPCHeaders(echoPath), h2test.Frame(make([]byte, 2048)), "200", "8"},
		{"compressed flag, identity", h2test.GRPCHeaders(echoPath), append([]byte{1}, h2test.Frame(nil)[1:]...), "200", "13"},
		{"unknown flag", h2test.GRPCHeaders(echoPath), append([]byte{2}, h2test.Frame(nil)[1:]...), "200", "13"},
		{"bad gzip", h2test.GRPCHeaders(echoPath, "grpc-encoding", "gzip"), append([]byte{1}, h2test.Frame([]byte("nope"))[1:]...), "200", "13"},
		{"unknown grpc-encoding", h2test.GRPCHeaders(echoPath, "grpc-encoding", "br"), h2test.Frame(nil), "200", "12"},
		{"malformed grpc-timeout", h2test.GRPCHeaders(echoPath, "grpc-timeout", "1x"), h2test.Frame(nil), "400", "13"},
		{"zero grpc-timeout", h2test.GRPCHeaders(echoPath, "grpc-timeout", "0S"), h2test.Frame(nil), "200", "4"},
		{"no authority", []string{":method", "POST", ":scheme", "http", ":path", echoPath, "content-type", "application/grpc"}, h2test.Frame(nil), "400", "13"},
		{"gzip", h2test.GRPCHeaders(echoPath, "grpc-encoding", "gzip"), gzipFrame(t, &gz, "zipped"), "200", "0"},
	}
	for i, tc := range tests {
		id := uint32(2*i + 1)
		p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.Block(tc.headers...), EndHeaders: true,
			EndStream: tc.body == nil}))
		if tc.body != nil {
			p.Must(p.Fr.WriteData(id, true, tc.body))
		}
		got, _ := p.Answers(id)
		a := got[id]
		if a.Headers[":status"] != tc.status || a.GRPCStatus() != tc.code {
			t.Errorf("%s: :status %s grpc-status %s (%s), want %s %s", tc.name, a.Headers[":status"], a.GRPCStatus(),
				a.Trailers["grpc-message"], tc.status, tc.code)
		}
	}
}

func gzipFrame(t *testing.T, buf *bytes.Buffer, msg string) []byte {
	buf.Reset()
	zw := gzipWriter(buf)
	if _, err := zw.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	b := h2test.Frame(buf.Bytes())
	b[0] = 1
	return b
}

// A peer whose stream window is closed gets its answer once it opens it; the connection's other
// streams are not held up.
func TestSendFlowControl(t *testing.T) {
	ts := startServer(t, Limits{})
	p := h2test.Dial(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	msg := bytes.Repeat([]byte("x"), 100)
	p.Call(1, echoPath, msg)
	var data []byte
	for len(data) < 10 {
		switch f := p.Read().(type) {
		case *http2.DataFrame:
			data = append(data, f.Data()...)
		case *http2.HeadersFrame:
			_ = p.Decode(f.HeaderBlockFragment(), f.HeadersEnded())
			if f.StreamEnded() {
				t.Fatal("the answer ended inside a 10-byte window")
			}
		}
	}
	if len(data) != 10 {
		t.Fatalf("%d bytes sent in a 10-byte window", len(data))
	}
	p.Call(3, failPath, nil) // a trailers-only answer needs no window
	got, _ := p.Answers(3)
	if got[3].GRPCStatus() != "3" {
		t.Fatalf("the other stream: %+v", got[3])
	}
	p.Must(p.Fr.WriteWindowUpdate(1, 1000))
	got, _ = p.Answers(1)
	if all := append(data, got[1].Data...); got[1].GRPCStatus() != "0" || string(all[5:]) != string(msg) {
		t.Fatalf("after WINDOW_UPDATE: %+v", got[1])
	}
}

// Data over the stream's window is a stream FLOW_CONTROL_ERROR. (The connection's window is
// given back as the server reads, so a peer cannot run it out: h2spec checks the rest.)
func TestReceiveFlowControl(t *testing.T) {
	ts := startServer(t, Limits{StreamWindow: 1000})
	p := h2test.Dial(t, ts.addr)
	p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.Block(h2test.GRPCHeaders(echoPath)...), EndHeaders: true}))
	p.Must(p.Fr.WriteData(1, false, make([]byte, 1001)))
	p.Call(3, echoPath, []byte("next"))
	got, _ := p.Answers(1, 3)
	if !got[1].WasReset || got[1].Reset != http2.ErrCodeFlowControl {
		t.Fatalf("over the stream window: %+v", got[1])
	}
	if string(got[3].Message()) != "next" {
		t.Fatalf("the next call: %+v", got[3])
	}
}

// A stream reset in the middle of its request is forgotten; the connection goes on.
func TestResetMidRequest(t *testing.T) {
	ts := startServer(t, Limits{})
	p := h2test.Dial(t, ts.addr)
	p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.Block(h2test.GRPCHeaders(echoPath)...), EndHeaders: true}))
	p.Must(p.Fr.WriteData(1, false, h2test.Frame([]byte("half"))[:4]))
	p.Must(p.Fr.WriteRSTStream(1, http2.ErrCodeCancel))
	p.Must(p.Fr.WriteData(1, true, []byte("late"))) // after the peer's own reset: STREAM_CLOSED
	p.Call(3, echoPath, []byte("next"))
	got, _ := p.Answers(1, 3)
	if !got[1].WasReset || got[1].Reset != http2.ErrCodeStreamClosed {
		t.Errorf("DATA after the peer reset its stream: %+v", got[1])
	}
	if string(got[3].Message()) != "next" {
		t.Errorf("the next call: %+v", got[3])
	}
}

// A call that is about to wait hands the connection to a new goroutine: the calls behind it
// are answered while it waits, and its own answer comes when it is done.
func TestHandOff(t *testing.T) {
	ts := startServer(t, Limits{})
	p := h2test.Dial(t, ts.addr)
	p.Call(1, blockPath, []byte("slow"))
	<-ts.entered
	for id := uint32(3); id <= 21; id += 2 {
		p.Call(id, echoPath, []byte("fast"))
		got, _ := p.Answers(id)
		if string(got[id].Message()) != "fast" {
			t.Fatalf("call %d behind a waiting one: %+v", id, got[id])
		}
	}
	ts.release <- struct{}{}
	got, _ := p.Answers(1)
	if string(got[1].Message()) != "slow" {
		t.Fatalf("the waiting call: %+v", got[1])
	}
}

// A peer's reset cancels a waiting call's context.
func TestResetCancelsWaitingCall(t *testing.T) {
	ts := startServer(t, Limits{})
	p := h2test.Dial(t, ts.addr)
	p.Call(1, blockPath, nil)
	<-ts.entered
	p.Must(p.Fr.WriteRSTStream(1, http2.ErrCodeCancel))
	p.Call(3, blockPath, nil) // the connection still serves
	<-ts.entered
	ts.release <- struct{}{}
	got, _ := p.Answers(3)
	if got[3].GRPCStatus() != "0" {
		t.Fatalf("%+v", got[3])
	}
}

// PINGs are answered with their payload.
func TestPing(t *testing.T) {
	ts := startServer(t, Limits{})
	p := h2test.Dial(t, ts.addr)
	data := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	p.Must(p.Fr.WritePing(false, data))
	for {
		if f, ok := p.Read().(*http2.PingFrame); ok {
			if !f.IsAck() || f.Data != data {
				t.Fatalf("PING answer %+v", f)
			}
			return
		}
	}
}

// More streams than MAX_CONCURRENT_STREAMS are refused; the open ones are served.
func TestConcurrentStreamsCap(t *testing.T) {
	ts := startServer(t, Limits{MaxConcurrentStreams: 2})
	p := h2test.Dial(t, ts.addr)
	p.Call(1, blockPath, nil)
	<-ts.entered
	p.Call(3, blockPath, nil)
	<-ts.entered
	p.Call(5, echoPath, nil)
	got, _ := p.Answers(5)
	if !got[5].WasReset || got[5].Reset != http2.ErrCodeRefusedStream {
		t.Fatalf("a third stream: %+v", got[5])
	}
	ts.release <- struct{}{}
	ts.release <- struct{}{}
	got, _ = p.Answers(1, 3)
	if got[1].GRPCStatus() != "0" || got[3].GRPCStatus() != "0" {
		t.Fatalf("%+v %+v", got[1], got[3])
	}
}

// A header list over the limit is refused on its stream (the HPACK state stays right: the
// next call decodes); one field longer than the whole limit ends the connection
// (COMPRESSION_ERROR, as x/net's server).
func TestHeaderListLimit(t *testing.T) {
	ts := startServer(t, Limits{MaxHeaderListSize: 1024})
	p := h2test.Dial(t, ts.addr)
	var many []string
	for i := range 10 {
		many = append(many, fmt.Sprintf("x-big-%d", i), strings.Repeat("b", 200))
	}
	p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true, EndStream: true,
		BlockFragment: p.Block(h2test.GRPCHeaders(echoPath, many...)...)}))
	p.Call(3, echoPath, []byte("ok"))
	got, _ := p.Answers(1, 3)
	if !got[1].WasReset || got[1].Reset != http2.ErrCodeFrameSize {
		t.Errorf("an oversized header list: %+v", got[1])
	}
	if string(got[3].Message()) != "ok" {
		t.Errorf("the next call: %+v", got[3])
	}
	p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, EndHeaders: true, EndStream: true,
		BlockFragment: p.Block(h2test.GRPCHeaders(echoPath, "x-huge", strings.Repeat("h", 2000))...)}))
	if g := p.GoAway(); g.ErrCode != http2.ErrCodeCompression {
		t.Errorf("one field over the limit: GOAWAY %v", g.ErrCode)
	}
}

// Shutdown drains: GOAWAY with the largest stream id and a PING; after the PING's ACK, GOAWAY
// with the last stream served; the call in flight is answered, a new stream refused, and the
// connection ends.
func TestShutdownDrains(t *testing.T) {
	ts := startServer(t, Limits{})
	p := h2test.Dial(t, ts.addr)
	p.NoWindowUpdates = true // the server stops reading once drained
	p.Call(1, blockPath, []byte("in flight"))
	<-ts.entered
	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(context.Background()) }()
	var first *http2.GoAwayFrame
	for first == nil {
		if g, ok := p.Read().(*http2.GoAwayFrame); ok {
			first = g
		}
	}
	if first.LastStreamID != maxWindow || first.ErrCode != http2.ErrCodeNo {
		t.Fatalf("first GOAWAY: %v %d", first.ErrCode, first.LastStreamID)
	}
	final := p.GoAway() // answers the PING
	if final.LastStreamID != 1 || final.ErrCode != http2.ErrCodeNo {
		t.Fatalf("final GOAWAY: %v %d, want NO_ERROR 1", final.ErrCode, final.LastStreamID)
	}
	p.Call(3, echoPath, nil)
	got, _ := p.Answers(3)
	if !got[3].WasReset || got[3].Reset != http2.ErrCodeRefusedStream {
		t.Errorf("a stream after the final GOAWAY: %+v", got[3])
	}
	ts.release <- struct{}{}
	got, _ = p.Answers(1)
	if string(got[1].Message()) != "in flight" {
		t.Errorf("the call in flight: %+v", got[1])
	}
	if !p.Closed() {
		t.Error("the connection stays open after the drain")
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// The fallback handler gets what the server does not answer itself (another path, a method
// that is not POST, a content type that is not gRPC), with its body read as it comes (a body
// over the stream's window goes through as the handler reads it); its trailers come back.
func TestFallback(t *testing.T) {
	ts := startServer(t, Limits{StreamWindow: 16 << 10})
	p := h2test.Dial(t, ts.addr)
	body := bytes.Repeat([]byte("0123456789"), 10_000)
	p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true,
		BlockFragment: p.Block(":method", "PUT", ":scheme", "http", ":path", "/upload", ":authority", "x")}))
	a := &h2test.Answer{}
	window, sent := 16<<10, 0
	for sent < len(body) { // send what the stream's window allows, then wait for WINDOW_UPDATE
		n := min(window, 8000, len(body)-sent)
		if n > 0 {
			p.Must(p.Fr.WriteData(1, sent+n == len(body), body[sent:sent+n]))
			sent, window = sent+n, window-n
			continue
		}
		switch f := p.Read().(type) {
		case *http2.WindowUpdateFrame:
			if f.StreamID == 1 {
				window += int(f.Increment)
			}
		case *http2.HeadersFrame, *http2.DataFrame, *http2.RSTStreamFrame:
			t.Fatalf("the answer (%v) came before the body was read", f)
		}
	}
	got, _ := p.Answers(1)
	a = got[1]
	if a.Headers[":status"] != "200" || !bytes.Equal(a.Data, body) || a.Trailers["x-length"] != fmt.Sprint(len(body)) {
		t.Fatalf("fallback: status %s, %d bytes, trailers %v, reset %v", a.Headers[":status"], len(a.Data), a.Trailers, a.Reset)
	}
}

// A SETTINGS_INITIAL_WINDOW_SIZE that opens the window wakes a fallback handler blocked on a
// closed one (RFC 9113 §6.9.2; h2spec http2/6.9.2/1). The peer sees the answer's HEADERS only
// once the handler holds the connection's lock and waits, so the SETTINGS always finds it
// waiting: without the wake-up the answer would never go on.
func TestSettingsWindowWakesWriter(t *testing.T) {
	ts := startServer(t, Limits{}, func(o *Options) {
		o.Fallback = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("hello"))
		})
	})
	p := h2test.Dial(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true, EndStream: true,
		BlockFragment: p.Block(":method", "GET", ":scheme", "http", ":path", "/x", ":authority", "x")}))
	for {
		f := p.Read()
		if _, ok := f.(*http2.DataFrame); ok {
			t.Fatal("DATA in a window of 0")
		}
		if h, ok := f.(*http2.HeadersFrame); ok && h.StreamID == 1 {
			break
		}
	}
	p.Must(p.Fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 3}))
	for {
		if d, ok := p.Read().(*http2.DataFrame); ok {
			if string(d.Data()) != "hel" {
				t.Fatalf("DATA %q, want the window's 3 bytes", d.Data())
			}
			return
		}
	}
}

// A peer that sends a PING after every answer (gRPC-Go's client does, for its BDP estimate)
// never runs out of the abuse budget, also when its calls had to wait and were answered off the
// reader's goroutine: each answered call gives a frame back.
func TestPingPerAnsweredCall(t *testing.T) {
	ts := startServer(t, Limits{AbuseBudget: 10, AbuseRefill: 1})
	p := h2test.Dial(t, ts.addr)
	for i := range 40 {
		id := uint32(2*i + 1)
		path := echoPath
		if i%2 == 0 {
			path = blockPath // answered by the goroutine that waited
			ts.release <- struct{}{}
		}
		p.Call(id, path, []byte("x"))
		got, _ := p.Answers(id)
		if got[id].GRPCStatus() != "0" {
			t.Fatalf("call %d: %+v", i, got[id])
		}
		p.Must(p.Fr.WritePing(false, [8]byte{byte(i)}))
		for {
			f := p.Read()
			if g, ok := f.(*http2.GoAwayFrame); ok {
				t.Fatalf("GOAWAY %v after %d calls", g.ErrCode, i+1)
			}
			if pf, ok := f.(*http2.PingFrame); ok && pf.IsAck() {
				break
			}
		}
	}
}

// Without a fallback, a gRPC call to another method is UNIMPLEMENTED and anything else 404.
func TestNoFallback(t *testing.T) {
	ts := startServer(t, Limits{}, func(o *Options) { o.Fallback = nil })
	p := h2test.Dial(t, ts.addr)
	p.Call(1, "/other.Service/Call", nil)
	p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, EndHeaders: true, EndStream: true,
		BlockFragment: p.Block(":method", "GET", ":scheme", "http", ":path", "/", ":authority", "x")}))
	got, _ := p.Answers(1, 3)
	if got[1].GRPCStatus() != "12" {
		t.Errorf("unknown method: %+v", got[1])
	}
	if got[3].Headers[":status"] != "404" {
		t.Errorf("GET /: %+v", got[3])
	}
}
