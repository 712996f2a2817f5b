package h2

import (
	"context"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/tokenagent/tokenagent/vault/blocking"
)

// stream is one request. Its fields are guarded by the connection's mutex, except what the
// goroutine running its call owns while the call runs (msg, out, the call's context).
type stream struct {
	c  *conn
	id uint32

	unary  UnaryFunc     // a call the server answers itself; nil: bridged to the fallback
	bridge *bridgeStream // a request served by the fallback handler

	// the request
	recvEnd       bool  // END_STREAM received
	recvWindow    int64 // receive window left
	contentLength int64 // -1: none given
	received      int64
	msg           []byte // the unary request body, as framed by gRPC
	encoding      string // grpc-encoding
	contentType   string
	deadline      time.Time // from grpc-timeout (zero: none)
	running       bool      // the unary call is running (it owns msg and out)

	// the answer
	sendWindow int64
	sentEnd    bool // the answer is complete (or given up): nothing more is written
	reset      bool // ended by RST_STREAM (either side) or the connection's end
	ended      bool // out of the connection's table
	out        []byte
	pendData   []byte // answer data waiting for a window
	pendStatus Status // the trailers to send after pendData

	cctx callCtx // the call's context
}

// callCtx is a unary call's context: the connection's context, the grpc-timeout deadline,
// the blocking hook and cancellation on RST_STREAM, made without allocating (it lives in the
// stream). Its done channel and deadline timer are made only when someone asks for Done.
type callCtx struct {
	s        *stream
	parent   context.Context
	deadline time.Time

	mu     sync.Mutex
	done   chan struct{}
	err    error
	timer  *time.Timer
	unhook func() bool // stops the parent's cancellation hook
}

func (x *callCtx) Deadline() (time.Time, bool) { return x.deadline, !x.deadline.IsZero() }

func (x *callCtx) Value(key any) any {
	if _, ok := key.(blocking.HookKey); ok {
		return blocking.Hook(x.s)
	}
	return x.parent.Value(key)
}

func (x *callCtx) Done() <-chan struct{} {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done == nil {
		x.done = make(chan struct{})
		if x.err != nil {
			close(x.done)
			return x.done
		}
		if !x.deadline.IsZero() {
			x.timer = time.AfterFunc(time.Until(x.deadline), func() { x.cancel(context.DeadlineExceeded) })
		}
		x.unhook = context.AfterFunc(x.parent, func() { x.cancel(context.Canceled) })
	}
	return x.done
}

func (x *callCtx) Err() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.err == nil && x.done == nil { // nobody waits on Done: tell the deadline by the clock
		if !x.deadline.IsZero() && !time.Now().Before(x.deadline) {
			return context.DeadlineExceeded
		}
		if x.parent.Err() != nil {
			return context.Canceled
		}
	}
	return x.err
}

// cancel ends the context with err (the first cause wins).
func (x *callCtx) cancel(err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.err != nil {
		return
	}
	x.err = err
	if x.done != nil {
		close(x.done)
	}
}

// release stops the timer and the parent hook once the call has returned.
func (x *callCtx) release() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.timer != nil {
		x.timer.Stop()
	}
	if x.unhook != nil {
		x.unhook()
	}
}

func (s *stream) respContentType() string {
	if s.contentType != "" && s.contentType != "application/grpc" && grpcContentType(s.contentType) &&
		len(s.contentType) >= len("application/grpc+proto") && s.contentType[:len("application/grpc+proto")] == "application/grpc+proto" {
		return "application/grpc+proto"
	}
	return "application/grpc"
}

// processHeaders starts a header block (its CONTINUATION frames follow).
func (c *conn) processHeaders(f *http2.HeadersFrame) error {
	if f.StreamID%2 == 0 {
		return connErr(http2.ErrCodeProtocol, "HEADERS on even stream %d", f.StreamID)
	}
	c.hb.start(f.StreamID, f.StreamEnded(), f.HasPriority() && f.Priority.StreamDep == f.StreamID)
	return c.headerFragment(f.HeaderBlockFragment(), f.HeadersEnded())
}

func (c *conn) processContinuation(f *http2.ContinuationFrame) error {
	return c.headerFragment(f.HeaderBlockFragment(), f.HeadersEnded())
}

// headerFragment decodes one fragment of the block; the last one processes the block.
func (c *conn) headerFragment(frag []byte, end bool) error {
	hb := &c.hb
	if hb.frames++; hb.frames > c.lim.MaxHeaderFrames {
		return abuseErr("continuation", "a header block in more frames than the limit")
	}
	if len(frag) == 0 && !end {
		if err := c.abuse.spend("empty"); err != nil {
			return err
		}
	}
	// An encoded block more than twice the decoded limit is not worth decoding.
	if hb.encoded += len(frag); hb.encoded > 2*int(c.lim.MaxHeaderListSize)+1024 {
		return abuseErr("continuation", "a header block over twice the header list limit")
	}
	if _, err := c.hdec.Write(frag); err != nil {
		return connErr(http2.ErrCodeCompression, "HPACK: %v", err)
	}
	if !end {
		return nil
	}
	if err := c.hdec.Close(); err != nil {
		return connErr(http2.ErrCodeCompression, "HPACK: %v", err)
	}
	return c.headersDone()
}

// headersDone acts on a complete header block: a new request, or a request's trailers.
func (c *conn) headersDone() error {
	hb := &c.hb
	id := hb.streamID
	c.mu.Lock()
	s := c.streams[id]
	if s != nil {
		run, err := c.trailersLocked(s)
		c.mu.Unlock()
		if run {
			return c.runUnary(s)
		}
		return err
	}
	if id <= c.maxClientStream {
		kind := c.closedHow(id)
		c.mu.Unlock()
		if kind == closedByServerReset {
			return nil // a stream the server reset: late frames are ignored (RFC 9113 §5.4.2)
		}
		return connErr(http2.ErrCodeStreamClosed, "HEADERS on closed stream %d", id)
	}
	c.maxClientStream = id
	switch {
	case c.drain == drainFinal:
		c.mu.Unlock()
		return streamError{id, http2.ErrCodeRefusedStream} // over the GOAWAY's last stream
	case hb.selfDep:
		c.mu.Unlock()
		return streamError{id, http2.ErrCodeProtocol}
	case hb.truncated:
		c.mu.Unlock()
		return streamError{id, http2.ErrCodeFrameSize} // as gRPC-Go answers a header list over its limit
	case uint32(c.active) >= c.lim.MaxConcurrentStreams:
		c.mu.Unlock()
		return streamError{id, http2.ErrCodeRefusedStream}
	}
	var h reqHeaders
	if !readRequest(hb.fields, &h) {
		c.mu.Unlock()
		return streamError{id, http2.ErrCodeProtocol}
	}
	s = &stream{c: c, id: id, contentLength: h.contentLength, recvEnd: hb.endStream,
		recvWindow: int64(c.lim.StreamWindow), sendWindow: c.w.streamInit}
	c.streams[id] = s
	c.active++
	if h.contentLength > 0 && hb.endStream {
		c.mu.Unlock()
		return streamError{id, http2.ErrCodeProtocol} // a body was announced, none came
	}
	unary := c.srv.opts.Unary[h.path]
	if unary == nil || h.method != "POST" || !grpcContentType(h.contentType) {
		err := c.startBridgeLocked(s, &h, hb.fields)
		c.mu.Unlock()
		return err
	}
	s.unary, s.contentType, s.encoding = unary, h.contentType, h.grpcEncoding
	if st, httpStatus := c.checkUnaryHeaders(s, &h); st != nil {
		c.earlyAnswerLocked(s, *st, httpStatus)
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	if s.recvEnd {
		return c.runUnary(s)
	}
	return nil
}

// checkUnaryHeaders refuses, as gRPC-Go does, a call whose headers the server cannot serve;
// it returns the status and the HTTP status of the answer (nil when the call may go on).
func (c *conn) checkUnaryHeaders(s *stream, h *reqHeaders) (*Status, int) {
	if h.authorities > 1 || h.hosts > 1 {
		return &Status{codeInternal, "num values of :authority or host over 1"}, 400
	}
	if h.authorities == 0 && h.hosts == 0 {
		return &Status{codeInternal, "no host or :authority header present"}, 400
	}
	if h.timeouts > 0 {
		d, err := decodeTimeout(h.grpcTimeout)
		if err != nil {
			return &Status{codeInternal, "malformed grpc-timeout: " + err.Error()}, 400
		}
		if d <= 0 {
			return &Status{codeDeadlineExceeded, context.DeadlineExceeded.Error()}, 200
		}
		s.deadline = time.Now().Add(d)
	}
	if e := h.grpcEncoding; e != "" && e != "identity" && e != "gzip" {
		return &Status{codeUnimplemented, "grpc: Decompressor is not installed for grpc-encoding \"" + e + "\""}, 200
	}
	return nil, 0
}

// trailersLocked handles a second header block on a stream: the request's trailers. It
// reports whether the stream's unary call is now complete and must run.
func (c *conn) trailersLocked(s *stream) (run bool, err error) {
	hb := &c.hb
	if s.recvEnd {
		return false, streamError{s.id, http2.ErrCodeStreamClosed} // half-closed (remote)
	}
	if !hb.endStream || hb.truncated || !readTrailers(hb.fields) {
		return false, streamError{s.id, http2.ErrCodeProtocol}
	}
	if err := c.requestEndedLocked(s); err != nil {
		return false, err
	}
	return s.unary != nil && !s.sentEnd, nil
}

// processData takes a DATA frame: flow control, then the body of its stream.
func (c *conn) processData(f *http2.DataFrame) error {
	id, n := f.StreamID, int64(f.Length)
	data := f.Data()
	c.mu.Lock()
	if n > c.recvConn {
		c.mu.Unlock()
		return connErr(http2.ErrCodeFlowControl, "DATA over the connection's window")
	}
	c.recvConn -= n
	s := c.streams[id]
	if s == nil {
		if id > c.maxClientStream {
			c.mu.Unlock()
			return connErr(http2.ErrCodeProtocol, "DATA on idle stream %d", id)
		}
		c.consumedLocked(nil, n)
		kind := c.closedHow(id)
		c.mu.Unlock()
		if kind == closedByServerReset {
			return nil
		}
		return streamError{id, http2.ErrCodeStreamClosed}
	}
	if s.recvEnd {
		c.consumedLocked(nil, n)
		c.mu.Unlock()
		return streamError{id, http2.ErrCodeStreamClosed}
	}
	if n > s.recvWindow {
		c.consumedLocked(nil, n)
		c.mu.Unlock()
		return streamError{id, http2.ErrCodeFlowControl}
	}
	s.recvWindow -= n
	if s.received += int64(len(data)); s.contentLength >= 0 && s.received > s.contentLength {
		c.consumedLocked(nil, n)
		c.mu.Unlock()
		return streamError{id, http2.ErrCodeProtocol}
	}
	var err error
	switch {
	case s.sentEnd: // answered early: the rest of the request is dropped
		c.consumedLocked(s, n)
	case s.bridge != nil:
		c.consumedLocked(nil, n) // the connection's window comes back now, the stream's as the handler reads
		s.bridge.push(data)
	default:
		err = c.bufferLocked(s, data, n)
	}
	if err == nil && f.StreamEnded() {
		err = c.requestEndedLocked(s)
		if err == nil && s.unary != nil && !s.sentEnd {
			c.mu.Unlock()
			return c.runUnary(s)
		}
	}
	c.mu.Unlock()
	if err == nil && len(data) == 0 && !f.StreamEnded() {
		return c.abuse.spend("empty")
	}
	return err
}

// bufferLocked appends a unary request's data, answering RESOURCE_EXHAUSTED when the message
// or the connection's held bytes would go over their limits.
func (c *conn) bufferLocked(s *stream, data []byte, n int64) error {
	if len(s.msg) < 5 && len(s.msg)+len(data) >= 5 { // the message's length is known: refuse early
		var hdr [5]byte
		copy(hdr[:], s.msg)
		copy(hdr[len(s.msg):], data)
		if l := uint32(hdr[1])<<24 | uint32(hdr[2])<<16 | uint32(hdr[3])<<8 | uint32(hdr[4]); uint64(l) > uint64(c.lim.MaxRecvMsgSize) {
			c.consumedLocked(s, n)
			c.earlyAnswerLocked(s, Status{codeResourceExhausted, "grpc: received message larger than max (" +
				itoa(int(l)) + " vs. " + itoa(c.lim.MaxRecvMsgSize) + ")"}, 200)
			return nil
		}
	}
	if len(s.msg)+len(data) > c.lim.MaxRecvMsgSize+5 || c.buffered+len(data) > c.lim.MaxBufferedRequest {
		c.consumedLocked(s, n)
		c.earlyAnswerLocked(s, Status{codeResourceExhausted, "grpc: the request is larger than the server holds"}, 200)
		return nil
	}
	s.msg = append(s.msg, data...)
	c.buffered += len(data)
	c.consumedLocked(s, n)
	return nil
}

// consumedLocked gives n received bytes back to the connection's window, and to s's when s
// is still receiving, with WINDOW_UPDATE frames once half a window is due.
func (c *conn) consumedLocked(s *stream, n int64) {
	c.recvConnUnacked += n
	if c.recvConnUnacked >= int64(c.lim.ConnWindow)/2 {
		_ = c.w.fr.WriteWindowUpdate(0, uint32(c.recvConnUnacked))
		c.recvConn += c.recvConnUnacked
		c.recvConnUnacked = 0
	}
	if s != nil && !s.recvEnd {
		if due := int64(c.lim.StreamWindow) - s.recvWindow; due >= int64(c.lim.StreamWindow)/2 {
			_ = c.w.fr.WriteWindowUpdate(s.id, uint32(due))
			s.recvWindow += due
		}
	}
}

// requestEndedLocked marks the end of a request: the content-length is checked and a bridged
// request's body ends.
func (c *conn) requestEndedLocked(s *stream) error {
	s.recvEnd = true
	if s.contentLength >= 0 && s.received != s.contentLength {
		return streamError{s.id, http2.ErrCodeProtocol}
	}
	if s.bridge != nil {
		s.bridge.endBody()
	}
	if s.sentEnd { // answered before the request ended: now it is done both ways
		c.endStreamLocked(s, closedNormally)
	}
	return nil
}

// runUnary answers a complete unary request. It runs the call inline on the reader
// goroutine; if the call hands the reader role on (it is about to wait, or ran past the
// inline budget), this goroutine answers the call, flushes and returns errHandedOff.
func (c *conn) runUnary(s *stream) error {
	c.mu.Lock()
	if s.reset || c.closed {
		c.mu.Unlock()
		return nil
	}
	s.running = true
	c.mu.Unlock()
	msg, st := requestMessage(s.msg, s.encoding, c.lim.MaxRecvMsgSize)
	out := s.out[:0]
	inline := true
	if st == nil {
		s.cctx.s, s.cctx.parent, s.cctx.deadline = s, c.ctx, s.deadline
		if cap(out) < 5 {
			out = make([]byte, 5, 512)
		}
		c.inline.Store(s)
		var res Status
		out, res = s.unary(&s.cctx, msg, out[:5])
		st = &res
		inline = c.inline.CompareAndSwap(s, nil)
		s.cctx.release()
	}
	c.mu.Lock()
	s.running = false
	s.out = out
	c.answerLocked(s, *st)
	if !inline {
		if err := c.w.flush(); err != nil {
			c.closeLocked(err)
		}
	}
	c.mu.Unlock()
	if !inline {
		c.abuse.creditHandedOff()
		return errHandedOff
	}
	c.abuse.credit()
	return nil
}

// answerLocked writes a unary call's answer: the message in s.out (after its 5-byte prefix)
// and the status, or a trailers-only answer for a status that is not OK.
func (c *conn) answerLocked(s *stream, st Status) {
	if s.sentEnd || s.reset || c.closed {
		c.releaseLocked(s)
		return
	}
	if st.Code != codeOK {
		c.earlyAnswerLocked(s, st, 200)
		return
	}
	n := len(s.out) - 5
	s.out[0] = 0
	s.out[1], s.out[2], s.out[3], s.out[4] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	if err := c.w.writeHeaders(s.id, false, status200, hpack.HeaderField{Name: "content-type", Value: s.respContentType()}); err != nil {
		c.closeLocked(err)
		return
	}
	rest, err := c.w.sendData(s, s.out)
	if err != nil {
		c.closeLocked(err)
		return
	}
	s.sentEnd = true
	if len(rest) > 0 { // the peer's window is closed: the rest waits for WINDOW_UPDATE
		if c.w.pending+len(rest) > c.lim.MaxPendingWrite {
			err := abuseErr("unread", "answers the peer does not read are over the pending-write limit")
			c.srv.opts.Metrics.refused(err)
			_ = c.w.fr.WriteGoAway(c.maxClientStream, http2.ErrCodeEnhanceYourCalm, nil)
			_ = c.w.flush()
			c.closeLocked(err)
			return
		}
		s.pendData, s.pendStatus = rest, st
		c.w.pending += len(rest)
		c.w.waiting = append(c.w.waiting, s)
		return
	}
	if err := c.w.writeStatus(s, st, false, 0); err != nil {
		c.closeLocked(err)
		return
	}
	c.answeredLocked(s)
}

// earlyAnswerLocked sends a trailers-only answer (a refusal from the headers, or a call's
// status that is not OK); a request still being sent is then reset with NO_ERROR, as gRPC-Go
// does.
func (c *conn) earlyAnswerLocked(s *stream, st Status, httpStatus int) {
	if s.sentEnd || s.reset || c.closed {
		return
	}
	s.sentEnd = true
	if err := c.w.writeStatus(s, st, true, httpStatus); err != nil {
		c.closeLocked(err)
		return
	}
	c.answeredLocked(s)
}

// answeredLocked: the whole answer is written. A stream whose request has ended is done. A
// unary call whose request is still coming is reset (NO_ERROR: stop sending, as gRPC-Go does)
// and its late frames ignored; a bridged request stays half-closed (local) until the peer ends
// it, its late body dropped (as an HTTP/2 server that answers before reading the body does).
func (c *conn) answeredLocked(s *stream) {
	if s.recvEnd {
		c.endStreamLocked(s, closedNormally)
		return
	}
	if s.bridge != nil {
		c.cond.Broadcast()
		return
	}
	_ = c.w.fr.WriteRSTStream(s.id, http2.ErrCodeNo)
	c.endStreamLocked(s, closedByServerReset)
}

// endStreamLocked takes a stream out of the table.
func (c *conn) endStreamLocked(s *stream, kind closeKind) {
	if s.ended {
		return
	}
	s.ended = true
	if kind != closedNormally {
		s.reset = true
	}
	if s.id > c.lastAnswered {
		c.lastAnswered = s.id
	}
	delete(c.streams, s.id)
	c.rememberLocked(s.id, kind)
	c.active--
	c.w.drop(s)
	if s.reset {
		s.cctx.cancelIfStarted()
		if s.bridge != nil {
			s.bridge.fail(errStreamReset)
		}
	}
	c.releaseLocked(s)
	c.cond.Broadcast()
	c.closeIfDrainedLocked()
}

// releaseLocked gives a stream's request bytes back to the connection's budget once no call
// holds them.
func (c *conn) releaseLocked(s *stream) {
	if s.running || !s.ended {
		return
	}
	c.buffered -= len(s.msg)
	s.msg = nil
}

// cancelIfStarted cancels a call's context that a call is using (its stream was reset).
func (x *callCtx) cancelIfStarted() {
	if x.s != nil {
		x.cancel(context.Canceled)
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	if n == 0 {
		return "0"
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
