package h2

import (
	"bufio"
	"bytes"
	"net"
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// writer is a connection's writing half: frames go into a buffered writer that the reader
// flushes before a read that would block (and a goroutine other than the reader flushes after
// its own writes). It keeps the peer's settings and the send windows. Every method runs under
// the connection's mutex.
type writer struct {
	dw         deadlineWriter
	bw         *bufio.Writer
	fr         *http2.Framer
	hbuf       bytes.Buffer
	henc       *hpack.Encoder
	maxFrame   uint32 // the peer's SETTINGS_MAX_FRAME_SIZE
	streamInit int64  // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	sendConn   int64  // the connection's send window
	pending    int    // answer bytes waiting for a window
	waiting    []*stream
}

// deadlineWriter writes to the socket with a write deadline that is never older than half
// the timeout: a peer that stops reading loses its connection after between half the timeout
// and the timeout, and a write costs no deadline update.
type deadlineWriter struct {
	nc       net.Conn
	timeout  time.Duration
	deadline time.Time
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	if now := time.Now(); d.deadline.Sub(now) < d.timeout/2 {
		d.deadline = now.Add(d.timeout)
		if err := d.nc.SetWriteDeadline(d.deadline); err != nil {
			return 0, err
		}
	}
	return d.nc.Write(p)
}

func (w *writer) init(nc net.Conn, timeout time.Duration) {
	w.dw = deadlineWriter{nc: nc, timeout: timeout}
	w.bw = bufio.NewWriterSize(&w.dw, writeBufSize)
	w.fr = http2.NewFramer(w.bw, nil)
	w.henc = hpack.NewEncoder(&w.hbuf)
	w.maxFrame, w.streamInit, w.sendConn = minMaxFrameSize, initialWindow, initialWindow
}

// flush writes what is buffered.
func (w *writer) flush() error {
	if w.bw.Buffered() == 0 {
		return nil
	}
	return w.bw.Flush()
}

// setStreamWindow applies a new SETTINGS_INITIAL_WINDOW_SIZE to every open stream (RFC 9113
// §6.9.2: the difference is added, and may make a window negative).
func (w *writer) setStreamWindow(c *conn, v int32) error {
	delta := int64(v) - w.streamInit
	w.streamInit = int64(v)
	for _, s := range c.streams {
		if s.sendWindow+delta > maxWindow {
			return connErr(http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE takes stream %d over 2^31-1", s.id)
		}
		s.sendWindow += delta
	}
	return nil
}

// header fields of answers.
var (
	status200     = hpack.HeaderField{Name: ":status", Value: "200"}
	grpcStatusOK  = hpack.HeaderField{Name: "grpc-status", Value: "0"}
	grpcCodeNames = func() (out [17]string) {
		for i := range out {
			out[i] = strconv.Itoa(i)
		}
		return
	}()
)

// writeHeaders encodes fields and writes them as HEADERS (and CONTINUATION) frames.
func (w *writer) writeHeaders(id uint32, endStream bool, fields ...hpack.HeaderField) error {
	w.hbuf.Reset()
	for _, f := range fields {
		if err := w.henc.WriteField(f); err != nil {
			return err
		}
	}
	block := w.hbuf.Bytes()
	n := min(len(block), int(w.maxFrame))
	err := w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block[:n],
		EndStream: endStream, EndHeaders: n == len(block)})
	for block = block[n:]; err == nil && len(block) > 0; block = block[n:] {
		n = min(len(block), int(w.maxFrame))
		err = w.fr.WriteContinuation(id, n == len(block), block[:n])
	}
	return err
}

// writeStatus writes a gRPC status as trailers (after a message) or as a trailers-only
// answer (with :status and content-type, when nothing was sent before).
func (w *writer) writeStatus(s *stream, st Status, trailersOnly bool, httpStatus int) error {
	code := grpcStatusOK
	if st.Code != 0 {
		code = hpack.HeaderField{Name: "grpc-status", Value: codeString(st.Code)}
	}
	var fields [5]hpack.HeaderField
	f := fields[:0]
	if trailersOnly {
		hs := status200
		if httpStatus != 0 && httpStatus != 200 {
			hs = hpack.HeaderField{Name: ":status", Value: strconv.Itoa(httpStatus)}
		}
		f = append(f, hs, hpack.HeaderField{Name: "content-type", Value: s.respContentType()})
	}
	f = append(f, code)
	if st.Message != "" {
		f = append(f, hpack.HeaderField{Name: "grpc-message", Value: encodeGrpcMessage(st.Message)})
	}
	return w.writeHeaders(s.id, true, f...)
}

func codeString(c uint32) string {
	if int(c) < len(grpcCodeNames) {
		return grpcCodeNames[c]
	}
	return strconv.FormatUint(uint64(c), 10)
}

// sendData writes as much of data on stream s as the windows and the peer's frame size let
// through, and returns the rest.
func (w *writer) sendData(s *stream, data []byte) ([]byte, error) {
	for len(data) > 0 {
		n := min(int64(len(data)), int64(w.maxFrame), w.sendConn, s.sendWindow)
		if n <= 0 {
			break
		}
		if err := w.fr.WriteData(s.id, false, data[:n]); err != nil {
			return data, err
		}
		w.sendConn -= n
		s.sendWindow -= n
		data = data[n:]
	}
	return data, nil
}

// resume sends the answers that were waiting for a window, oldest first, as far as the
// windows now allow.
func (w *writer) resume(c *conn) {
	if len(w.waiting) == 0 {
		return
	}
	kept := w.waiting[:0]
	for i, s := range w.waiting {
		if s.reset || c.closed {
			continue
		}
		if w.sendConn <= 0 {
			kept = append(kept, w.waiting[i:]...)
			break
		}
		before := len(s.pendData)
		rest, err := w.sendData(s, s.pendData)
		w.pending -= before - len(rest)
		s.pendData = rest
		if err != nil {
			return
		}
		if len(rest) > 0 {
			kept = append(kept, s)
			continue
		}
		_ = w.writeStatus(s, s.pendStatus, false, 0)
		c.answeredLocked(s)
	}
	clear(w.waiting[len(kept):])
	w.waiting = kept
}

// drop forgets the waiting answer of a stream that ended.
func (w *writer) drop(s *stream) {
	if len(s.pendData) == 0 {
		return
	}
	w.pending -= len(s.pendData)
	s.pendData = nil
	for i, x := range w.waiting {
		if x == s {
			w.waiting = append(w.waiting[:i], w.waiting[i+1:]...)
			break
		}
	}
}
