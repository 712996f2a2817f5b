package h2

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	clientPreface   = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	frameHeaderLen  = 9
	initialWindow   = 65535
	maxWindow       = 1<<31 - 1
	minMaxFrameSize = 16384
	maxMaxFrameSize = 1<<24 - 1
	readBufSize     = 32 << 10
	writeBufSize    = 32 << 10
	// drainPing is the PING payload of a graceful shutdown's round trip.
	drainPing = "h2drain!"
	// recentClosed is how many closed streams are remembered, to tell a stream the server
	// reset (whose late frames are ignored) from one the peer closed (STREAM_CLOSED).
	recentClosed = 64
)

var (
	errServerClosing = errors.New("h2: server closing")
	errDrained       = errors.New("h2: drained")
	// errHandedOff ends a goroutine that gave the reader role to another while it waited.
	errHandedOff = errors.New("h2: reader role handed on")
)

// connError is an error that ends the connection with a GOAWAY carrying code.
type connError struct {
	code   http2.ErrCode
	reason string
	kind   string // for ENHANCE_YOUR_CALM: what the peer overdid (a metric label)
}

func (e connError) Error() string { return fmt.Sprintf("connection error %v: %s", e.code, e.reason) }

func connErr(code http2.ErrCode, format string, args ...any) error {
	return connError{code: code, reason: fmt.Sprintf(format, args...)}
}

// streamError ends one stream with RST_STREAM code.
type streamError struct {
	id   uint32
	code http2.ErrCode
}

func (e streamError) Error() string { return fmt.Sprintf("stream %d error %v", e.id, e.code) }

type drainState uint8

const (
	notDraining drainState = iota
	drainPinged            // GOAWAY(max) and a PING sent; waiting for the PING's ACK
	drainFinal             // GOAWAY(last stream) sent: no new stream is taken
)

// closeKind says how a stream that is no longer in the table ended.
type closeKind uint8

const (
	closedNormally closeKind = iota + 1
	closedByPeerReset
	closedByServerReset
)

type closedStream struct {
	id   uint32
	kind closeKind
}

// conn is one HTTP/2 connection.
type conn struct {
	srv    *Server
	lim    *Limits
	nc     net.Conn
	remote string
	tls    *tls.ConnectionState

	ctx    context.Context // ends with the connection
	cancel context.CancelCauseFunc

	// The reader's state: only the goroutine that holds the reader role touches it (the role
	// moves with a `go` statement, which orders the two goroutines' accesses).
	br    *bufio.Reader
	fr    *http2.Framer
	hdec  *hpack.Decoder
	hb    headerBlock
	abuse abuse

	// inline is the stream whose call runs inline on the reader goroutine now (nil: none);
	// handing the reader role on takes it (see stream.handOff).
	inline atomic.Pointer[stream]
	// lingering: drained; the writing half is closed and the reader waits for the peer's close.
	lingering atomic.Bool

	mu              sync.Mutex
	cond            *sync.Cond // window changes, stream ends, close: wakes bridge writers
	streams         map[uint32]*stream
	recent          [recentClosed]closedStream
	recentNext      int
	maxClientStream uint32 // highest stream id the peer opened
	lastAnswered    uint32 // highest stream id served (the final GOAWAY's last stream)
	active          int    // streams not yet ended
	buffered        int    // request bytes held for unfinished streams
	recvConn        int64  // connection receive window left
	recvConnUnacked int64  // received and consumed, not yet given back by WINDOW_UPDATE
	w               writer
	drain           drainState
	ready           bool // the handshake is done
	closed          bool
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, lim: &s.limits, nc: nc, remote: nc.RemoteAddr().String(),
		streams: map[uint32]*stream{}}
	c.cond = sync.NewCond(&c.mu)
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	return c
}

// serve runs the connection: handshake, preface, settings, then the read loop.
func (c *conn) serve() {
	defer c.srv.connWG.Done()
	if err := c.handshake(); err != nil {
		c.srv.log.Debug("http2 handshake failed", "remote", c.remote, "error", err.Error())
		c.close(err)
		return
	}
	c.readLoop()
}

// handshake does TLS (when configured), reads the client preface and sends the server's
// SETTINGS, all within HandshakeTimeout.
func (c *conn) handshake() error {
	_ = c.nc.SetDeadline(time.Now().Add(c.lim.HandshakeTimeout))
	if c.srv.opts.TLS != nil {
		tc := tls.Server(c.nc, c.srv.opts.TLS)
		if err := tc.HandshakeContext(c.ctx); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		st := tc.ConnectionState()
		if p := st.NegotiatedProtocol; p != "" && p != "h2" {
			return fmt.Errorf("tls: ALPN protocol %q is not h2", p)
		}
		c.nc, c.tls = tc, &st
	} else {
		c.nc = newRawIO(c.nc)
	}
	c.br = bufio.NewReaderSize(c.nc, readBufSize)
	c.mu.Lock()
	c.w.init(c.nc, c.lim.WriteTimeout)
	c.mu.Unlock()
	var p [len(clientPreface)]byte
	if _, err := io.ReadFull(c.br, p[:]); err != nil {
		return fmt.Errorf("reading the client preface: %w", err)
	}
	if string(p[:]) != clientPreface {
		return errors.New("not an HTTP/2 client preface")
	}
	c.fr = http2.NewFramer(nil, c.br)
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(minMaxFrameSize)
	c.hdec = hpack.NewDecoder(4096, c.hb.emit)
	c.hdec.SetMaxStringLength(int(c.lim.MaxHeaderListSize))
	c.hb.init(c.hdec, c.lim.MaxHeaderListSize)
	c.abuse.init(c.lim.AbuseBudget, c.lim.AbuseRefill)
	c.recvConn = int64(c.lim.ConnWindow)

	c.mu.Lock()
	err := c.w.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.lim.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: c.lim.StreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.lim.MaxHeaderListSize},
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
	)
	if err == nil && c.lim.ConnWindow > initialWindow {
		err = c.w.fr.WriteWindowUpdate(0, c.lim.ConnWindow-initialWindow)
	}
	if err == nil {
		err = c.w.flush()
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	// The peer's first frame must be SETTINGS (RFC 9113 §3.4).
	f, err := c.fr.ReadFrame()
	if err != nil {
		return err
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		c.goAway(connErr(http2.ErrCodeProtocol, "the first frame is %T, not SETTINGS", f))
		return errors.New("the client's first frame is not SETTINGS")
	}
	if err := c.processSettings(sf); err != nil {
		c.goAway(err)
		return err
	}
	c.mu.Lock()
	_ = c.nc.SetDeadline(time.Time{})
	c.w.dw.deadline = time.Time{} // the writer's next write sets its own deadline again
	c.ready = true
	c.mu.Unlock()
	return nil
}

// readLoop reads and processes frames until the connection ends or the reader role is
// handed on.
func (c *conn) readLoop() {
	for {
		if c.wouldBlock() {
			c.mu.Lock()
			err := c.w.flush()
			c.mu.Unlock()
			if err != nil {
				c.close(err)
				return
			}
		}
		f, err := c.fr.ReadFrame()
		if err == nil && c.lingering.Load() {
			continue // drained: what the peer still sends is dropped until it closes
		}
		if err == nil {
			err = c.process(f)
		}
		if err == nil {
			continue
		}
		if err == errHandedOff {
			return
		}
		var se streamError
		var h2se http2.StreamError
		switch {
		case errors.As(err, &se):
			c.resetStream(se.id, se.code)
			continue
		case errors.As(err, &h2se):
			c.resetStream(h2se.StreamID, h2se.Code)
			continue
		}
		c.goAway(err)
		c.close(err)
		return
	}
}

// wouldBlock reports whether the next frame is not all in the read buffer yet, so reading it
// may wait on the socket: the writer is flushed first.
func (c *conn) wouldBlock() bool {
	n := c.br.Buffered()
	if n < frameHeaderLen {
		return true
	}
	h, _ := c.br.Peek(frameHeaderLen)
	return n < frameHeaderLen+(int(h[0])<<16|int(h[1])<<8|int(h[2]))
}

// process handles one frame read by the reader.
func (c *conn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.HeadersFrame:
		return c.processHeaders(f)
	case *http2.ContinuationFrame:
		return c.processContinuation(f)
	case *http2.DataFrame:
		return c.processData(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := c.abuse.spend("settings"); err != nil {
			return err
		}
		return c.processSettings(f)
	case *http2.PingFrame:
		return c.processPing(f)
	case *http2.WindowUpdateFrame:
		return c.processWindowUpdate(f)
	case *http2.RSTStreamFrame:
		return c.processReset(f)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			return streamError{f.StreamID, http2.ErrCodeProtocol} // RFC 9113 §5.3.1
		}
		return c.abuse.spend("priority")
	case *http2.GoAwayFrame:
		c.peerGoAway()
		return nil
	case *http2.PushPromiseFrame:
		return connErr(http2.ErrCodeProtocol, "a client sent PUSH_PROMISE")
	default: // unknown frame types are ignored (RFC 9113 §4.1), and counted
		return c.abuse.spend("unknown")
	}
}

// processSettings applies the peer's settings and acknowledges them.
func (c *conn) processSettings(f *http2.SettingsFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				return connErr(http2.ErrCode(ce), "setting %v", s)
			}
			return connErr(http2.ErrCodeProtocol, "setting %v", s)
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			return c.w.setStreamWindow(c, int32(s.Val))
		case http2.SettingMaxFrameSize:
			c.w.maxFrame = s.Val
		case http2.SettingHeaderTableSize:
			c.w.henc.SetMaxDynamicTableSizeLimit(s.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := c.w.fr.WriteSettingsAck(); err != nil {
		return err
	}
	c.w.resume(c)      // a larger window may let pending answers go,
	c.cond.Broadcast() // and fallback handlers waiting for one go on
	return nil
}

func (c *conn) processPing(f *http2.PingFrame) error {
	if f.StreamID != 0 {
		return connErr(http2.ErrCodeProtocol, "PING on stream %d", f.StreamID)
	}
	if f.IsAck() {
		if string(f.Data[:]) == drainPing {
			c.finishDrain()
		}
		return nil
	}
	if err := c.abuse.spend("ping"); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.fr.WritePing(true, f.Data)
}

func (c *conn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		if f.Increment == 0 {
			return connErr(http2.ErrCodeProtocol, "WINDOW_UPDATE of 0 on the connection")
		}
		if c.w.sendConn+int64(f.Increment) > maxWindow {
			return connErr(http2.ErrCodeFlowControl, "connection window over 2^31-1")
		}
		c.w.sendConn += int64(f.Increment)
		c.w.resume(c)
		c.cond.Broadcast()
		return nil
	}
	s := c.streams[f.StreamID]
	if s == nil {
		if f.StreamID > c.maxClientStream {
			return connErr(http2.ErrCodeProtocol, "WINDOW_UPDATE on idle stream %d", f.StreamID)
		}
		return nil // closed: ignored
	}
	if f.Increment == 0 {
		return streamError{f.StreamID, http2.ErrCodeProtocol}
	}
	if s.sendWindow+int64(f.Increment) > maxWindow {
		return streamError{f.StreamID, http2.ErrCodeFlowControl}
	}
	s.sendWindow += int64(f.Increment)
	c.w.resume(c)
	c.cond.Broadcast()
	return nil
}

func (c *conn) processReset(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	s := c.streams[f.StreamID]
	if s == nil {
		idle := f.StreamID > c.maxClientStream
		c.mu.Unlock()
		if idle {
			return connErr(http2.ErrCodeProtocol, "RST_STREAM on idle stream %d", f.StreamID)
		}
		return nil
	}
	answered := s.sentEnd
	c.endStreamLocked(s, closedByPeerReset)
	c.mu.Unlock()
	if !answered { // a stream reset before its answer: what Rapid Reset is made of
		return c.abuse.spend("reset")
	}
	return nil
}

// peerGoAway: the peer will open no more streams; the connection ends once the streams in
// flight are answered.
func (c *conn) peerGoAway() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.drain < drainFinal {
		c.drain = drainFinal
		_ = c.w.fr.WriteGoAway(c.maxClientStream, http2.ErrCodeNo, nil)
	}
	c.closeIfDrainedLocked()
}

// startDrain begins a graceful shutdown: GOAWAY with the largest stream id (no new streams,
// please) and a PING; its ACK proves the peer saw the GOAWAY, and finishDrain then sends the
// real last stream id (gRPC's two-step drain, so no stream the peer sent is lost).
func (c *conn) startDrain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.drain != notDraining || !c.ready {
		if !c.ready && !c.closed { // still in its handshake: nothing to drain
			c.closeLocked(errDrained)
		}
		return
	}
	c.drain = drainPinged
	_ = c.w.fr.WriteGoAway(maxWindow, http2.ErrCodeNo, nil)
	_ = c.w.fr.WritePing(false, [8]byte([]byte(drainPing)))
	if err := c.w.flush(); err != nil {
		c.closeLocked(err)
	}
}

func (c *conn) finishDrain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.drain != drainPinged {
		return
	}
	c.drain = drainFinal
	_ = c.w.fr.WriteGoAway(c.maxClientStream, http2.ErrCodeNo, nil)
	c.closeIfDrainedLocked()
}

// closeIfDrainedLocked ends a draining connection with no stream left: the answers are
// flushed, the writing half closed (FIN, or TLS close_notify), and the reader discards what the
// peer still sends until it closes or lingerTimeout passes. Closing outright could make the
// kernel reset the connection over frames the peer sent meanwhile, and a reset can destroy the
// last answers before the peer reads them.
func (c *conn) closeIfDrainedLocked() {
	if c.drain == drainFinal && c.active == 0 && !c.closed && !c.lingering.Load() {
		if err := c.w.flush(); err != nil {
			c.closeLocked(err)
			return
		}
		c.lingering.Store(true)
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_ = c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
	}
}

// lingerTimeout bounds how long a drained connection waits for its peer to close.
const lingerTimeout = time.Second

// goAway sends GOAWAY for a connection error (best effort: the socket may be gone).
func (c *conn) goAway(err error) {
	code := http2.ErrCodeProtocol
	var ce connError
	var h2ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		code = ce.code
	case errors.As(err, &h2ce):
		code = http2.ErrCode(h2ce)
	case errors.Is(err, http2.ErrFrameTooLarge), errors.Is(err, io.ErrUnexpectedEOF):
		code = http2.ErrCodeFrameSize
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), isNetError(err):
		return // the peer is gone
	}
	if code == http2.ErrCodeEnhanceYourCalm {
		c.srv.opts.Metrics.refused(err)
		c.srv.log.Warn("http2 connection closed: the peer abused it", "remote", c.remote, "reason", err.Error())
	} else {
		c.srv.log.Debug("http2 connection error", "remote", c.remote, "code", code.String(), "error", err.Error())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	var debug []byte
	if ce.reason != "" && len(ce.reason) < 256 {
		debug = []byte(ce.reason)
	}
	_ = c.w.fr.WriteGoAway(c.maxClientStream, code, debug)
	_ = c.w.flush()
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// resetStream sends RST_STREAM and forgets the stream.
func (c *conn) resetStream(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	_ = c.w.fr.WriteRSTStream(id, code)
	if s := c.streams[id]; s != nil {
		c.endStreamLocked(s, closedByServerReset)
	} else {
		c.rememberLocked(id, closedByServerReset)
	}
}

// close ends the connection.
func (c *conn) close(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(err)
}

func (c *conn) closeLocked(err error) {
	if c.closed {
		return
	}
	c.closed = true
	c.cancel(err)
	_ = c.nc.Close()
	for _, s := range c.streams {
		s.reset = true
		if s.bridge != nil {
			s.bridge.fail(err)
		}
	}
	c.cond.Broadcast()
	c.srv.connDone(c)
}

// rememberLocked records how a stream that leaves the table ended.
func (c *conn) rememberLocked(id uint32, kind closeKind) {
	c.recent[c.recentNext] = closedStream{id, kind}
	c.recentNext = (c.recentNext + 1) % recentClosed
}

// closedHow says how a stream no longer in the table ended (0: not remembered).
func (c *conn) closedHow(id uint32) closeKind {
	for _, r := range c.recent {
		if r.id == id {
			return r.kind
		}
	}
	return 0
}

// Ahead implements blocking.Hook for a call's context: the call is about to wait. If it runs
// inline, the reader role goes to a new goroutine: the call keeps its goroutine (which answers
// it and ends) and the connection goes on reading.
func (s *stream) Ahead() {
	c := s.c
	if c.inline.CompareAndSwap(s, nil) {
		c.srv.opts.Metrics.handoff()
		c.srv.connWG.Add(1)
		go func() {
			defer c.srv.connWG.Done()
			c.readLoop()
		}()
	}
}
