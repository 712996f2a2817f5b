// Package h2test is a raw HTTP/2 peer for the transport's tests: it writes the frames a test
// scripts (valid or not) on a real connection and reads the answers, so the same sequences can
// be sent to tokenagent's server and to gRPC-Go's.
package h2test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Peer is a raw HTTP/2 client connection: a Framer and HPACK on a real connection, writing
// frames as a test scripts them, following the protocol or not.
type Peer struct {
	T    testing.TB
	NC   net.Conn
	Fr   *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer
	hdec *hpack.Decoder
	// fields collects the last decoded header block.
	fields []hpack.HeaderField
	// NoWindowUpdates: the peer does not give back the windows of what it reads.
	NoWindowUpdates bool
}

// dial connects and exchanges the prefaces and SETTINGS (settings are the client's).
func Dial(t testing.TB, addr string, settings ...http2.Setting) *Peer {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return DialConn(t, nc, settings...)
}

// dialConn is dial on a connection made already (TLS).
func DialConn(t testing.TB, nc net.Conn, settings ...http2.Setting) *Peer {
	t.Helper()
	t.Cleanup(func() { nc.Close() })
	p := &Peer{T: t, NC: nc}
	p.Fr = http2.NewFramer(nc, bufio.NewReader(nc))
	p.Fr.SetMaxReadFrameSize(1 << 20)
	p.henc = hpack.NewEncoder(&p.hbuf)
	p.hdec = hpack.NewDecoder(4096, func(f hpack.HeaderField) { p.fields = append(p.fields, f) })
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	p.Must(p.Fr.WriteSettings(settings...))
	// The server's SETTINGS (and its WINDOW_UPDATE), then our settings' ACK.
	f := p.Read()
	if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		t.Fatalf("the server's first frame is %v, not SETTINGS", f)
	}
	p.Must(p.Fr.WriteSettingsAck())
	return p
}

func (p *Peer) Must(err error) {
	p.T.Helper()
	if err != nil {
		p.T.Fatal(err)
	}
}

// read returns the next frame, with a generous deadline (a liveness bound, not a timing).
func (p *Peer) Read() http2.Frame {
	p.T.Helper()
	_ = p.NC.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := p.Fr.ReadFrame()
	if err != nil {
		p.T.Fatalf("read: %v", err)
	}
	return f
}

// tryRead is read that returns the error instead of failing.
func (p *Peer) TryRead() (http2.Frame, error) {
	_ = p.NC.SetReadDeadline(time.Now().Add(10 * time.Second))
	return p.Fr.ReadFrame()
}

// block encodes a header block.
func (p *Peer) Block(fields ...string) []byte {
	p.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		p.Must(p.henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]}))
	}
	return append([]byte(nil), p.hbuf.Bytes()...)
}

// grpcHeaders are a unary call's request headers to path, with more fields appended.
func GRPCHeaders(path string, more ...string) []string {
	return append([]string{":method", "POST", ":scheme", "http", ":path", path, ":authority", "ext-authz",
		"content-type", "application/grpc", "te", "trailers"}, more...)
}

// frame is a message framed as gRPC frames it (flag 0).
func Frame(msg []byte) []byte {
	b := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// call sends a whole unary call on stream id in one HEADERS and one DATA frame.
func (p *Peer) Call(id uint32, path string, msg []byte) {
	p.T.Helper()
	p.Must(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.Block(GRPCHeaders(path)...), EndHeaders: true}))
	p.Must(p.Fr.WriteData(id, true, Frame(msg)))
}

// answer is what came back on one stream.
type Answer struct {
	Headers  map[string]string // the first header block
	Trailers map[string]string // the last (the same as headers for a trailers-only answer)
	Data     []byte
	Reset    http2.ErrCode
	WasReset bool
}

// grpcStatus is the answer's grpc-status ("" when none).
func (a *Answer) GRPCStatus() string { return a.Trailers["grpc-status"] }

// message is the answer's gRPC message.
func (a *Answer) Message() []byte {
	if len(a.Data) < 5 {
		return nil
	}
	return a.Data[5:]
}

// answers reads frames until every stream in ids has ended (END_STREAM or RST_STREAM); other
// frames are answered (PING, SETTINGS) or returned in other.
func (p *Peer) Answers(ids ...uint32) (map[uint32]*Answer, []http2.Frame) {
	p.T.Helper()
	out, other, err := p.TryAnswers(ids...)
	if err != nil {
		p.T.Fatalf("answers: %v", err)
	}
	return out, other
}

// TryAnswers is Answers that returns an error when the connection ends (a GOAWAY, EOF) first.
func (p *Peer) TryAnswers(ids ...uint32) (map[uint32]*Answer, []http2.Frame, error) {
	p.T.Helper()
	out := map[uint32]*Answer{}
	open := map[uint32]bool{}
	for _, id := range ids {
		out[id], open[id] = &Answer{}, true
	}
	var other []http2.Frame
	for len(open) > 0 {
		f, err := p.TryRead()
		if err != nil {
			return out, other, err
		}
		a := out[f.Header().StreamID]
		switch f := f.(type) {
		case *http2.HeadersFrame:
			fields := p.Decode(f.HeaderBlockFragment(), f.HeadersEnded())
			if a == nil {
				p.T.Fatalf("HEADERS on unexpected stream %d", f.StreamID)
			}
			if a.Headers == nil {
				a.Headers = fields
			}
			a.Trailers = fields
			if f.StreamEnded() {
				delete(open, f.StreamID)
			}
		case *http2.DataFrame:
			if a == nil {
				p.T.Fatalf("DATA on unexpected stream %d", f.StreamID)
			}
			a.Data = append(a.Data, f.Data()...)
			if f.StreamEnded() {
				delete(open, f.StreamID)
			}
			if n := f.Length; n > 0 && !p.NoWindowUpdates { // a well-behaved peer gives the window back
				p.Must(p.Fr.WriteWindowUpdate(0, n))
				if !f.StreamEnded() {
					p.Must(p.Fr.WriteWindowUpdate(f.StreamID, n))
				}
			}
		case *http2.RSTStreamFrame:
			if a != nil {
				a.WasReset, a.Reset = true, f.ErrCode
				delete(open, f.StreamID)
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				p.Must(p.Fr.WritePing(true, f.Data))
			}
		case *http2.WindowUpdateFrame, *http2.SettingsFrame:
		case *http2.GoAwayFrame:
			return out, other, fmt.Errorf("GOAWAY %v", f.ErrCode)
		default:
			other = append(other, f)
		}
	}
	return out, other, nil
}

// decode decodes a header block that fits one frame.
func (p *Peer) Decode(frag []byte, end bool) map[string]string {
	p.T.Helper()
	if !end {
		p.T.Fatal("a header block in CONTINUATION frames: not expected from this server in these tests")
	}
	p.fields = p.fields[:0]
	if _, err := p.hdec.Write(frag); err != nil {
		p.T.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range p.fields {
		out[f.Name] = f.Value
	}
	return out
}

// goAway reads until a GOAWAY (answering PINGs), returning it; the connection must then end.
func (p *Peer) GoAway() *http2.GoAwayFrame {
	p.T.Helper()
	for {
		f, err := p.TryRead()
		if err != nil {
			p.T.Fatalf("the connection ended without GOAWAY: %v", err)
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			return f
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = p.Fr.WritePing(true, f.Data)
			}
		}
	}
}

// closed reports whether the server ends the connection (EOF, reset) after what was read.
func (p *Peer) Closed() bool {
	for {
		if _, err := p.TryRead(); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}
