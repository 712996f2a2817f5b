// Package h2client is a small unary gRPC client over raw HTTP/2 frames, for benchmarks that
// want to see the server's cost alone: like Envoy's client it keeps static windows and sends no
// BDP pings, and once warm a call allocates nothing, so a benchmark's allocs/op are the
// server's. It speaks just enough HTTP/2 for that: one connection, many calls in flight.
package h2client

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Window is the client's receive window for the connection and each stream, as Envoy's.
const Window = 64 << 20

// Result is the outcome of one call.
type Result struct {
	// Status is the grpc-status (0: OK).
	Status int
	// Bytes is the length of the answer's message.
	Bytes int
}

// Client is one HTTP/2 connection. Call is safe for concurrent use.
type Client struct {
	nc net.Conn

	wmu    sync.Mutex
	bw     *bufio.Writer
	fr     *http2.Framer
	hbuf   hpackBuf // the request's header block
	henc   *hpack.Encoder
	next   uint32
	calls  map[uint32]*call
	free   []*call
	closed error

	rfr      *http2.Framer
	hdec     *hpack.Decoder
	hstream  uint32 // the stream of the header block being read
	hstatus  string // its :status
	hgrpc    int    // its grpc-status (-1: none)
	consumed int64
	done     chan struct{}
}

type call struct {
	ch     chan struct{}
	status int
	bytes  int
}

// Dial connects to addr ("host:port" or "unix:///path") and does the HTTP/2 handshake.
func Dial(addr string) (*Client, error) {
	network, a := "tcp", addr
	if p, ok := strings.CutPrefix(addr, "unix://"); ok {
		network, a = "unix", p
	}
	nc, err := net.Dial(network, a)
	if err != nil {
		return nil, err
	}
	c := &Client{nc: nc, next: 1, calls: map[uint32]*call{}, done: make(chan struct{})}
	c.bw = bufio.NewWriterSize(nc, 64<<10)
	c.fr = http2.NewFramer(c.bw, nil)
	c.rfr = http2.NewFramer(nil, bufio.NewReaderSize(nc, 64<<10))
	c.rfr.SetReuseFrames()
	c.hdec = hpack.NewDecoder(4096, c.field)
	c.henc = hpack.NewEncoder(&c.hbuf)
	_, _ = c.bw.WriteString(http2.ClientPreface)
	_ = c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: Window},
		http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	_ = c.fr.WriteWindowUpdate(0, Window-65535)
	if err := c.bw.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	go c.read()
	return c, nil
}

type hpackBuf struct{ b []byte }

func (h *hpackBuf) Write(p []byte) (int, error) { h.b = append(h.b, p...); return len(p), nil }

// Close ends the connection.
func (c *Client) Close() error {
	err := c.nc.Close()
	<-c.done
	return err
}

// Call sends one unary call of method (":path") with the serialized message msg on
// :authority authority, and waits for its answer.
func (c *Client) Call(authority, method string, msg []byte) (Result, error) {
	c.wmu.Lock()
	if c.closed != nil {
		err := c.closed
		c.wmu.Unlock()
		return Result{}, err
	}
	id := c.next
	c.next += 2
	var k *call
	if n := len(c.free); n > 0 {
		k, c.free = c.free[n-1], c.free[:n-1]
	} else {
		k = &call{ch: make(chan struct{}, 1)}
	}
	k.status, k.bytes = -1, 0
	c.calls[id] = k
	c.hbuf.b = c.hbuf.b[:0]
	for _, f := range [...]hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: method},
		{Name: ":authority", Value: authority}, {Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"}, {Name: "grpc-timeout", Value: "10S"},
	} {
		_ = c.henc.WriteField(f) // HPACK's dynamic table, as Envoy's client: indexed once warm
	}
	err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.b, EndHeaders: true})
	if err == nil {
		var prefix [5]byte
		prefix[1], prefix[2], prefix[3], prefix[4] = byte(len(msg)>>24), byte(len(msg)>>16), byte(len(msg)>>8), byte(len(msg))
		err = c.fr.WriteData(id, false, prefix[:])
		if err == nil {
			err = c.fr.WriteData(id, true, msg)
		}
	}
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		return Result{}, err
	}
	<-k.ch
	r := Result{Status: k.status, Bytes: k.bytes}
	c.wmu.Lock()
	c.free = append(c.free, k)
	closed := c.closed
	c.wmu.Unlock()
	if r.Status < 0 {
		if closed == nil {
			closed = errors.New("h2client: stream reset")
		}
		return r, closed
	}
	return r, nil
}

// field reads one field of an answer's header block.
func (c *Client) field(f hpack.HeaderField) {
	switch f.Name {
	case ":status":
		c.hstatus = f.Value
	case "grpc-status":
		c.hgrpc, _ = strconv.Atoi(f.Value)
	}
}

// headerBlock reads a fragment; at the end of the block it completes the call the block ends.
func (c *Client) headerBlock(frag []byte, end bool) error {
	if _, err := c.hdec.Write(frag); err != nil {
		return err
	}
	if !end {
		return nil
	}
	if err := c.hdec.Close(); err != nil {
		return err
	}
	switch {
	case c.hstatus != "" && c.hstatus != "200":
		c.finish(c.hstream, 2, 0) // UNKNOWN, as gRPC reads a non-200 answer
	case c.hgrpc >= 0:
		c.finish(c.hstream, c.hgrpc, -1)
	}
	return nil
}

// read reads the answers and completes the calls.
func (c *Client) read() {
	defer close(c.done)
	var err error
	for {
		var f http2.Frame
		if f, err = c.rfr.ReadFrame(); err != nil {
			break
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			c.hstream, c.hstatus, c.hgrpc = f.StreamID, "", -1
			err = c.headerBlock(f.HeaderBlockFragment(), f.HeadersEnded())
		case *http2.ContinuationFrame:
			err = c.headerBlock(f.HeaderBlockFragment(), f.HeadersEnded())
		case *http2.DataFrame:
			n := len(f.Data())
			c.wmu.Lock()
			if k := c.calls[f.StreamID]; k != nil {
				k.bytes += n
			}
			if c.consumed += int64(f.Length); c.consumed > Window/2 {
				_ = c.fr.WriteWindowUpdate(0, uint32(c.consumed))
				_ = c.bw.Flush()
				c.consumed = 0
			}
			c.wmu.Unlock()
		case *http2.RSTStreamFrame:
			c.finish(f.StreamID, -1, 0)
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.wmu.Lock()
				_ = c.fr.WriteSettingsAck()
				_ = c.bw.Flush()
				c.wmu.Unlock()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				c.wmu.Lock()
				_ = c.fr.WritePing(true, f.Data)
				_ = c.bw.Flush()
				c.wmu.Unlock()
			}
		case *http2.GoAwayFrame:
			err = fmt.Errorf("h2client: GOAWAY %v", f.ErrCode)
		}
		if err != nil {
			break
		}
	}
	c.wmu.Lock()
	c.closed = err
	for id, k := range c.calls {
		delete(c.calls, id)
		k.ch <- struct{}{}
	}
	c.wmu.Unlock()
}

// finish completes call id with status (bytes < 0: keep the counted bytes).
func (c *Client) finish(id uint32, status, bytes int) {
	c.wmu.Lock()
	k := c.calls[id]
	delete(c.calls, id)
	c.wmu.Unlock()
	if k == nil {
		return
	}
	k.status = status
	if bytes >= 0 {
		k.bytes = bytes
	}
	k.ch <- struct{}{}
}
