package h2

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

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

// peer is a raw HTTP/2 client connection.
type peer struct {
	t    testing.TB
	nc   net.Conn
	fr   *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer
	hdec *hpack.Decoder
	// fields collects the last decoded header block.
	fields []hpack.HeaderField
	// noWindowUpdates: the peer does not give back the windows of what it reads.
	noWindowUpdates bool
}

// dial connects and exchanges the prefaces and SETTINGS (settings are the client's).
func dial(t testing.TB, addr string, settings ...http2.Setting) *peer {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	p := &peer{t: t, nc: nc}
	p.fr = http2.NewFramer(nc, bufio.NewReader(nc))
	p.fr.SetMaxReadFrameSize(1 << 20)
	p.henc = hpack.NewEncoder(&p.hbuf)
	p.hdec = hpack.NewDecoder(4096, func(f hpack.HeaderField) { p.fields = append(p.fields, f) })
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	p.must(p.fr.WriteSettings(settings...))
	// The server's SETTINGS (and its WINDOW_UPDATE), then our settings' ACK.
	f := p.read()
	if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		t.Fatalf("the server's first frame is %v, not SETTINGS", f)
	}
	p.must(p.fr.WriteSettingsAck())
	return p
}

func (p *peer) must(err error) {
	p.t.Helper()
	if err != nil {
		p.t.Fatal(err)
	}
}

// read returns the next frame, with a generous deadline (a liveness bound, not a timing).
func (p *peer) read() http2.Frame {
	p.t.Helper()
	_ = p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := p.fr.ReadFrame()
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	return f
}

// tryRead is read that returns the error instead of failing.
func (p *peer) tryRead() (http2.Frame, error) {
	_ = p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	return p.fr.ReadFrame()
}

// block encodes a header block.
func (p *peer) block(fields ...string) []byte {
	p.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		p.must(p.henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]}))
	}
	return append([]byte(nil), p.hbuf.Bytes()...)
}

// grpcHeaders are a unary call's request headers to path, with more fields appended.
func grpcHeaders(path string, more ...string) []string {
	return append([]string{":method", "POST", ":scheme", "http", ":path", path, ":authority", "ext-authz",
		"content-type", "application/grpc", "te", "trailers"}, more...)
}

// frame is a message framed as gRPC frames it (flag 0).
func frame(msg []byte) []byte {
	b := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// call sends a whole unary call on stream id in one HEADERS and one DATA frame.
func (p *peer) call(id uint32, path string, msg []byte) {
	p.t.Helper()
	p.must(p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.block(grpcHeaders(path)...), EndHeaders: true}))
	p.must(p.fr.WriteData(id, true, frame(msg)))
}

// answer is what came back on one stream.
type answer struct {
	headers  map[string]string // the first header block
	trailers map[string]string // the last (the same as headers for a trailers-only answer)
	data     []byte
	reset    http2.ErrCode
	wasReset bool
}

// grpcStatus is the answer's grpc-status ("" when none).
func (a *answer) grpcStatus() string { return a.trailers["grpc-status"] }

// message is the answer's gRPC message.
func (a *answer) message() []byte {
	if len(a.data) < 5 {
		return nil
	}
	return a.data[5:]
}

// answers reads frames until every stream in ids has ended (END_STREAM or RST_STREAM); other
// frames are answered (PING, SETTINGS) or returned in other.
func (p *peer) answers(ids ...uint32) (map[uint32]*answer, []http2.Frame) {
	p.t.Helper()
	out := map[uint32]*answer{}
	open := map[uint32]bool{}
	for _, id := range ids {
		out[id], open[id] = &answer{}, true
	}
	var other []http2.Frame
	for len(open) > 0 {
		f := p.read()
		a := out[f.Header().StreamID]
		switch f := f.(type) {
		case *http2.HeadersFrame:
			fields := p.decode(f.HeaderBlockFragment(), f.HeadersEnded())
			if a == nil {
				p.t.Fatalf("HEADERS on unexpected stream %d", f.StreamID)
			}
			if a.headers == nil {
				a.headers = fields
			}
			a.trailers = fields
			if f.StreamEnded() {
				delete(open, f.StreamID)
			}
		case *http2.DataFrame:
			if a == nil {
				p.t.Fatalf("DATA on unexpected stream %d", f.StreamID)
			}
			a.data = append(a.data, f.Data()...)
			if f.StreamEnded() {
				delete(open, f.StreamID)
			}
			if n := f.Length; n > 0 && !p.noWindowUpdates { // a well-behaved peer gives the window back
				p.must(p.fr.WriteWindowUpdate(0, n))
				if !f.StreamEnded() {
					p.must(p.fr.WriteWindowUpdate(f.StreamID, n))
				}
			}
		case *http2.RSTStreamFrame:
			if a != nil {
				a.wasReset, a.reset = true, f.ErrCode
				delete(open, f.StreamID)
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				p.must(p.fr.WritePing(true, f.Data))
			}
		case *http2.WindowUpdateFrame, *http2.SettingsFrame:
		default:
			other = append(other, f)
		}
	}
	return out, other
}

// decode decodes a header block that fits one frame.
func (p *peer) decode(frag []byte, end bool) map[string]string {
	p.t.Helper()
	if !end {
		p.t.Fatal("a header block in CONTINUATION frames: not expected from this server in these tests")
	}
	p.fields = p.fields[:0]
	if _, err := p.hdec.Write(frag); err != nil {
		p.t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range p.fields {
		out[f.Name] = f.Value
	}
	return out
}

// goAway reads until a GOAWAY (answering PINGs), returning it; the connection must then end.
func (p *peer) goAway() *http2.GoAwayFrame {
	p.t.Helper()
	for {
		f, err := p.tryRead()
		if err != nil {
			p.t.Fatalf("the connection ended without GOAWAY: %v", err)
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			return f
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = p.fr.WritePing(true, f.Data)
			}
		}
	}
}

// closed reports whether the server ends the connection (EOF, reset) after what was read.
func (p *peer) closed() bool {
	for {
		if _, err := p.tryRead(); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

func TestUnaryRoundTrip(t *testing.T) {
	ts := startServer(t, Limits{})
	p := dial(t, ts.addr)
	p.call(1, echoPath, []byte("hello"))
	p.call(3, failPath, nil)
	got, _ := p.answers(1, 3)
	a := got[1]
	if a.headers[":status"] != "200" || a.headers["content-type"] != "application/grpc" || a.grpcStatus() != "0" ||
		string(a.message()) != "hello" || a.wasReset {
		t.Errorf("echo: %+v", a)
	}
	f := got[3]
	if f.grpcStatus() != "3" || f.trailers["grpc-message"] != "bad request: 100%25 %C3%A9" || len(f.data) != 0 ||
		f.headers[":status"] != "200" {
		t.Errorf("a status that is not OK, trailers-only and percent-encoded: %+v", f)
	}
}

// A header block in many CONTINUATION fragments, a body in many padded DATA frames and the
// request's trailers read as one request.
func TestFragmentedRequest(t *testing.T) {
	ts := startServer(t, Limits{})
	p := dial(t, ts.addr)
	blk := p.block(grpcHeaders(echoPath, "x-custom", strings.Repeat("v", 100))...)
	step := len(blk)/30 + 1 // about 30 frames, under MaxHeaderFrames
	p.must(p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:step], PadLength: 7}))
	for i := step; i < len(blk); i += step {
		p.must(p.fr.WriteContinuation(1, i+step >= len(blk), blk[i:min(i+step, len(blk))]))
	}
	body := frame([]byte("a message in many frames"))
	for i := 0; i < len(body); i += 3 {
		p.must(p.fr.WriteDataPadded(1, false, body[i:min(i+3, len(body))], make([]byte, i%5)))
	}
	p.must(p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.block("x-trailer", "1"), EndStream: true, EndHeaders: true}))
	got, _ := p.answers(1)
	if a := got[1]; a.grpcStatus() != "0" || string(a.message()) != "a message in many frames" {
		t.Fatalf("%+v", a)
	}
}

// The gRPC statuses of requests the server cannot serve, as gRPC-Go answers them.
func TestUnaryRequestErrors(t *testing.T) {
	ts := startServer(t, Limits{MaxRecvMsgSize: 1024})
	p := dial(t, ts.addr)
	var gz bytes.Buffer
	tests := []struct {
		name    string
		headers []string
		body    []byte
		status  string
		code    string
	}{
		{"no message", grpcHeaders(echoPath), nil, "200", "13"},
		{"two messages", grpcHeaders(echoPath), append(frame([]byte("a")), frame([]byte("b"))...), "200", "12"},
		{"truncated frame", grpcHeaders(echoPath), []byte{0, 0, 0}, "200", "13"},
		{"message over the limit", grpcHeaders(echoPath), frame(make([]byte, 2048)), "200", "8"},
		{"compressed flag, identity", grpcHeaders(echoPath), append([]byte{1}, frame(nil)[1:]...), "200", "13"},
		{"unknown flag", grpcHeaders(echoPath), append([]byte{2}, frame(nil)[1:]...), "200", "13"},
		{"bad gzip", grpcHeaders(echoPath, "grpc-encoding", "gzip"), append([]byte{1}, frame([]byte("nope"))[1:]...), "200", "13"},
		{"unknown grpc-encoding", grpcHeaders(echoPath, "grpc-encoding", "br"), frame(nil), "200", "12"},
		{"malformed grpc-timeout", grpcHeaders(echoPath, "grpc-timeout", "1x"), frame(nil), "400", "13"},
		{"zero grpc-timeout", grpcHeaders(echoPath, "grpc-timeout", "0S"), frame(nil), "200", "4"},
		{"no authority", []string{":method", "POST", ":scheme", "http", ":path", echoPath, "content-type", "application/grpc"}, frame(nil), "400", "13"},
		{"gzip", grpcHeaders(echoPath, "grpc-encoding", "gzip"), gzipFrame(t, &gz, "zipped"), "200", "0"},
	}
	for i, tc := range tests {
		id := uint32(2*i + 1)
		p.must(p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.block(tc.headers...), EndHeaders: true,
			EndStream: tc.body == nil}))
		if tc.body != nil {
			p.must(p.fr.WriteData(id, true, tc.body))
		}
		got, _ := p.answers(id)
		a := got[id]
		if a.headers[":status"] != tc.status || a.grpcStatus() != tc.code {
			t.Errorf("%s: :status %s grpc-status %s (%s), want %s %s", tc.name, a.headers[":status"], a.grpcStatus(),
				a.trailers["grpc-message"], tc.status, tc.code)
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
	b := frame(buf.Bytes())
	b[0] = 1
	return b
}

// A peer whose stream window is closed gets its answer once it opens it; the connection's other
// streams are not held up.
func TestSendFlowControl(t *testing.T) {
	ts := startServer(t, Limits{})
	p := dial(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	msg := bytes.Repeat([]byte("x"), 100)
	p.call(1, echoPath, msg)
	var data []byte
	for len(data) < 10 {
		switch f := p.read().(type) {
		case *http2.DataFrame:
			data = append(data, f.Data()...)
		case *http2.HeadersFrame:
			_ = p.decode(f.HeaderBlockFragment(), f.HeadersEnded())
			if f.StreamEnded() {
				t.Fatal("the answer ended inside a 10-byte window")
			}
		}
	}
	if len(data) != 10 {
		t.Fatalf("%d bytes sent in a 10-byte window", len(data))
	}
	p.call(3, failPath, nil) // a trailers-only answer needs no window
	got, _ := p.answers(3)
	if got[3].grpcStatus() != "3" {
		t.Fatalf("the other stream: %+v", got[3])
	}
	p.must(p.fr.WriteWindowUpdate(1, 1000))
	got, _ = p.answers(1)
	if all := append(data, got[1].data...); got[1].grpcStatus() != "0" || string(all[5:]) != string(msg) {
		t.Fatalf("after WINDOW_UPDATE: %+v", got[1])
	}
}

// Data over the stream's window is a stream FLOW_CONTROL_ERROR. (The connection's window is
// given back as the server reads, so a peer cannot run it out: h2spec checks the rest.)
func TestReceiveFlowControl(t *testing.T) {
	ts := startServer(t, Limits{StreamWindow: 1000})
	p := dial(t, ts.addr)
	p.must(p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.block(grpcHeaders(echoPath)...), EndHeaders: true}))
	p.must(p.fr.WriteData(1, false, make([]byte, 1001)))
	p.call(3, echoPath, []byte("next"))
	got, _ := p.answers(1, 3)
	if !got[1].wasReset || got[1].reset != http2.ErrCodeFlowControl {
		t.Fatalf("over the stream window: %+v", got[1])
	}
	if string(got[3].message()) != "next" {
		t.Fatalf("the next call: %+v", got[3])
	}
}

// A stream reset in the middle of its request is forgotten; the connection goes on.
func TestResetMidRequest(t *testing.T) {
	ts := startServer(t, Limits{})
	p := dial(t, ts.addr)
	p.must(p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.block(grpcHeaders(echoPath)...), EndHeaders: true}))
	p.must(p.fr.WriteData(1, false, frame([]byte("half"))[:4]))
	p.must(p.fr.WriteRSTStream(1, http2.ErrCodeCancel))
	p.must(p.fr.WriteData(1, true, []byte("late"))) // after the peer's own reset: STREAM_CLOSED
	p.call(3, echoPath, []byte("next"))
	got, _ := p.answers(1, 3)
	if !got[1].wasReset || got[1].reset != http2.ErrCodeStreamClosed {
		t.Errorf("DATA after the peer reset its stream: %+v", got[1])
	}
	if string(got[3].message()) != "next" {
		t.Errorf("the next call: %+v", got[3])
	}
}

// A call that is about to wait hands the connection to a new goroutine: the calls behind it
// are answered while it waits, and its own answer comes when it is done.
func TestHandOff(t *testing.T) {
	ts := startServer(t, Limits{})
	p := dial(t, ts.addr)
	p.call(1, blockPath, []byte("slow"))
	<-ts.entered
	for id := uint32(3); id <= 21; id += 2 {
		p.call(id, echoPath, []byte("fast"))
		got, _ := p.answers(id)
		if string(got[id].message()) != "fast" {
			t.Fatalf("call %d behind a waiting one: %+v", id, got[id])
		}
	}
	ts.release <- struct{}{}
	got, _ := p.answers(1)
	if string(got[1].message()) != "slow" {
		t.Fatalf("the waiting call: %+v", got[1])
	}
}

// A peer's reset cancels a waiting call's context.
func TestResetCancelsWaitingCall(t *testing.T) {
	ts := startServer(t, Limits{})
	p := dial(t, ts.addr)
	p.call(1, blockPath, nil)
	<-ts.entered
	p.must(p.fr.WriteRSTStream(1, http2.ErrCodeCancel))
	p.call(3, blockPath, nil) // the connection still serves
	<-ts.entered
	ts.release <- struct{}{}
	got, _ := p.answers(3)
	if got[3].grpcStatus() != "0" {
		t.Fatalf("%+v", got[3])
	}
}

// PINGs are answered with their payload.
func TestPing(t *testing.T) {
	ts := startServer(t, Limits{})
	p := dial(t, ts.addr)
	data := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	p.must(p.fr.WritePing(false, data))
	for {
		if f, ok := p.read().(*http2.PingFrame); ok {
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
	p := dial(t, ts.addr)
	p.call(1, blockPath, nil)
	<-ts.entered
	p.call(3, blockPath, nil)
	<-ts.entered
	p.call(5, echoPath, nil)
	got, _ := p.answers(5)
	if !got[5].wasReset || got[5].reset != http2.ErrCodeRefusedStream {
		t.Fatalf("a third stream: %+v", got[5])
	}
	ts.release <- struct{}{}
	ts.release <- struct{}{}
	got, _ = p.answers(1, 3)
	if got[1].grpcStatus() != "0" || got[3].grpcStatus() != "0" {
		t.Fatalf("%+v %+v", got[1], got[3])
	}
}

// A header list over the limit is refused on its stream (the HPACK state stays right: the
// next call decodes); one field longer than the whole limit ends the connection
// (COMPRESSION_ERROR, as x/net's server).
func TestHeaderListLimit(t *testing.T) {
	ts := startServer(t, Limits{MaxHeaderListSize: 1024})
	p := dial(t, ts.addr)
	var many []string
	for i := range 10 {
		many = append(many, fmt.Sprintf("x-big-%d", i), strings.Repeat("b", 200))
	}
	p.must(p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true, EndStream: true,
		BlockFragment: p.block(grpcHeaders(echoPath, many...)...)}))
	p.call(3, echoPath, []byte("ok"))
	got, _ := p.answers(1, 3)
	if !got[1].wasReset || got[1].reset != http2.ErrCodeFrameSize {
		t.Errorf("an oversized header list: %+v", got[1])
	}
	if string(got[3].message()) != "ok" {
		t.Errorf("the next call: %+v", got[3])
	}
	p.must(p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, EndHeaders: true, EndStream: true,
		BlockFragment: p.block(grpcHeaders(echoPath, "x-huge", strings.Repeat("h", 2000))...)}))
	if g := p.goAway(); g.ErrCode != http2.ErrCodeCompression {
		t.Errorf("one field over the limit: GOAWAY %v", g.ErrCode)
	}
}

// Shutdown drains: GOAWAY with the largest stream id and a PING; after the PING's ACK, GOAWAY
// with the last stream served; the call in flight is answered, a new stream refused, and the
// connection ends.
func TestShutdownDrains(t *testing.T) {
	ts := startServer(t, Limits{})
	p := dial(t, ts.addr)
	p.noWindowUpdates = true // the server stops reading once drained
	p.call(1, blockPath, []byte("in flight"))
	<-ts.entered
	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(context.Background()) }()
	var first *http2.GoAwayFrame
	for first == nil {
		if g, ok := p.read().(*http2.GoAwayFrame); ok {
			first = g
		}
	}
	if first.LastStreamID != maxWindow || first.ErrCode != http2.ErrCodeNo {
		t.Fatalf("first GOAWAY: %v %d", first.ErrCode, first.LastStreamID)
	}
	final := p.goAway() // answers the PING
	if final.LastStreamID != 1 || final.ErrCode != http2.ErrCodeNo {
		t.Fatalf("final GOAWAY: %v %d, want NO_ERROR 1", final.ErrCode, final.LastStreamID)
	}
	p.call(3, echoPath, nil)
	got, _ := p.answers(3)
	if !got[3].wasReset || got[3].reset != http2.ErrCodeRefusedStream {
		t.Errorf("a stream after the final GOAWAY: %+v", got[3])
	}
	ts.release <- struct{}{}
	got, _ = p.answers(1)
	if string(got[1].message()) != "in flight" {
		t.Errorf("the call in flight: %+v", got[1])
	}
	if !p.closed() {
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
	p := dial(t, ts.addr)
	body := bytes.Repeat([]byte("0123456789"), 10_000)
	p.must(p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true,
		BlockFragment: p.block(":method", "PUT", ":scheme", "http", ":path", "/upload", ":authority", "x")}))
	a := &answer{}
	window, sent := 16<<10, 0
	for sent < len(body) { // send what the stream's window allows, then wait for WINDOW_UPDATE
		n := min(window, 8000, len(body)-sent)
		if n > 0 {
			p.must(p.fr.WriteData(1, sent+n == len(body), body[sent:sent+n]))
			sent, window = sent+n, window-n
			continue
		}
		switch f := p.read().(type) {
		case *http2.WindowUpdateFrame:
			if f.StreamID == 1 {
				window += int(f.Increment)
			}
		case *http2.HeadersFrame, *http2.DataFrame, *http2.RSTStreamFrame:
			t.Fatalf("the answer (%v) came before the body was read", f)
		}
	}
	got, _ := p.answers(1)
	a = got[1]
	if a.headers[":status"] != "200" || !bytes.Equal(a.data, body) || a.trailers["x-length"] != fmt.Sprint(len(body)) {
		t.Fatalf("fallback: status %s, %d bytes, trailers %v, reset %v", a.headers[":status"], len(a.data), a.trailers, a.reset)
	}
}

// Without a fallback, a gRPC call to another method is UNIMPLEMENTED and anything else 404.
func TestNoFallback(t *testing.T) {
	ts := startServer(t, Limits{}, func(o *Options) { o.Fallback = nil })
	p := dial(t, ts.addr)
	p.call(1, "/other.Service/Call", nil)
	p.must(p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, EndHeaders: true, EndStream: true,
		BlockFragment: p.block(":method", "GET", ":scheme", "http", ":path", "/", ":authority", "x")}))
	got, _ := p.answers(1, 3)
	if got[1].grpcStatus() != "12" {
		t.Errorf("unknown method: %+v", got[1])
	}
	if got[3].headers[":status"] != "404" {
		t.Errorf("GET /: %+v", got[3])
	}
}
