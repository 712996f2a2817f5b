package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The bridge serves a request the server does not answer itself with the fallback
// http.Handler, as net/http's HTTP/2 server would: on a goroutine of its own, with the body
// read as DATA arrives (the stream's window given back as the handler reads it) and the answer
// written as HEADERS, DATA and trailers under the peer's flow control.

var (
	errStreamReset = errors.New("h2: stream reset")
	errBodyClosed  = errors.New("h2: request body closed")
	errConnClosed  = errors.New("h2: connection closed")
)

// bridgeStream is one bridged request; its fields are guarded by the connection's mutex.
type bridgeStream struct {
	s       *stream
	body    []byte // received, not yet read
	unacked int64  // read by the handler, not yet given back to the stream's window
	eof     bool
	err     error
	cancel  context.CancelFunc

	header      http.Header
	status      int
	wroteHeader bool // WriteHeader was called (or implied)
	sentHeader  bool // the HEADERS frame is written
	declared    []string
}

// startBridgeLocked starts the fallback handler on a request.
func (c *conn) startBridgeLocked(s *stream, h *reqHeaders, fields []hpack.HeaderField) error {
	b := &bridgeStream{s: s, header: http.Header{}}
	s.bridge = b
	s.contentType = h.contentType
	handler := c.srv.opts.Fallback
	if handler == nil {
		handler = http.HandlerFunc(notServed)
	}
	req, err := bridgeRequest(c, s, h, fields)
	if err != nil {
		handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		})
		req = &http.Request{Method: h.method, URL: &url.URL{}, Header: http.Header{}, ProtoMajor: 2, Proto: "HTTP/2.0", Body: http.NoBody}
	}
	ctx, cancel := context.WithCancel(c.ctx)
	b.cancel = cancel
	req = req.WithContext(context.WithValue(ctx, http.LocalAddrContextKey, c.nc.LocalAddr()))
	if s.recvEnd {
		b.eof = true
	}
	c.srv.connWG.Add(1)
	go c.runBridge(b, handler, req)
	return nil
}

// notServed answers what no fallback serves: UNIMPLEMENTED for a gRPC request, 404 otherwise.
func notServed(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", strconv.Itoa(codeUnimplemented))
		w.Header().Set("Grpc-Message", encodeGrpcMessage("unknown method "+r.URL.Path))
		w.WriteHeader(http.StatusOK)
		return
	}
	http.NotFound(w, r)
}

// bridgeRequest builds the http.Request of a bridged stream.
func bridgeRequest(c *conn, s *stream, h *reqHeaders, fields []hpack.HeaderField) (*http.Request, error) {
	u, err := url.ParseRequestURI(h.path)
	if h.method == "CONNECT" {
		u, err = &url.URL{Host: h.authority}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the :path does not parse: %w", err)
	}
	hdr := make(http.Header, len(fields))
	for _, f := range fields {
		if strings.HasPrefix(f.Name, ":") {
			continue
		}
		k := http.CanonicalHeaderKey(f.Name)
		if k == "Cookie" && len(hdr[k]) > 0 { // RFC 9113 §8.2.3: cookie crumbs join with "; "
			hdr[k][0] += "; " + f.Value
			continue
		}
		hdr[k] = append(hdr[k], f.Value)
	}
	host := h.authority
	if host == "" {
		host = h.host
	}
	cl := h.contentLength
	if s.recvEnd {
		cl = 0
	}
	return &http.Request{Method: h.method, URL: u, Proto: "HTTP/2.0", ProtoMajor: 2, Header: hdr, Host: host,
		RemoteAddr: c.remote, RequestURI: h.path, TLS: c.tls, ContentLength: cl, Body: bridgeBody{s.bridge, c}}, nil
}

// runBridge runs the handler and ends the stream with what it wrote.
func (c *conn) runBridge(b *bridgeStream, h http.Handler, req *http.Request) {
	defer c.srv.connWG.Done()
	defer b.cancel()
	w := bridgeWriter{b, c}
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				c.srv.log.Error("fallback handler panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
			c.resetStream(b.s.id, http2.ErrCodeInternal)
			return
		}
		w.finish()
	}()
	h.ServeHTTP(w, req)
}

// bridgeBody is a bridged request's body.
type bridgeBody struct {
	b *bridgeStream
	c *conn
}

func (r bridgeBody) Read(p []byte) (int, error) {
	b, c := r.b, r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(b.body) == 0 && !b.eof && b.err == nil {
		c.cond.Wait()
	}
	if len(b.body) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		return 0, io.EOF
	}
	n := copy(p, b.body)
	b.body = b.body[n:]
	if len(b.body) == 0 {
		b.body = nil
	}
	if !b.s.ended && !b.s.recvEnd { // the stream's window comes back as the handler reads
		if b.unacked += int64(n); b.unacked >= int64(c.lim.StreamWindow)/2 {
			_ = c.w.fr.WriteWindowUpdate(b.s.id, uint32(b.unacked))
			b.s.recvWindow += b.unacked
			b.unacked = 0
			if err := c.w.flush(); err != nil {
				c.closeLocked(err)
			}
		}
	}
	return n, nil
}

// Close ends the body: a Read blocked on it returns (gRPC-Go's handler waits for its body
// reader to end before it returns).
func (r bridgeBody) Close() error {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	if r.b.err == nil {
		r.b.err = errBodyClosed
	}
	r.b.body = nil
	r.c.cond.Broadcast()
	return nil
}

// push appends received body bytes (under the connection's mutex).
func (b *bridgeStream) push(data []byte) {
	if b.err == nil {
		b.body = append(b.body, data...)
	}
	b.s.c.cond.Broadcast()
}

// endBody marks the end of the request body.
func (b *bridgeStream) endBody() {
	b.eof = true
	b.s.c.cond.Broadcast()
}

// fail ends the bridge: the stream was reset or the connection ended.
func (b *bridgeStream) fail(err error) {
	if b.err == nil || b.err == errBodyClosed {
		b.err = err
	}
	if b.cancel != nil {
		b.cancel()
	}
	b.s.c.cond.Broadcast()
}

// bridgeWriter is a bridged request's http.ResponseWriter (and http.Flusher).
type bridgeWriter struct {
	b *bridgeStream
	c *conn
}

func (w bridgeWriter) Header() http.Header { return w.b.header }

func (w bridgeWriter) WriteHeader(code int) {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	w.writeHeaderLocked(code)
}

func (w bridgeWriter) writeHeaderLocked(code int) {
	b := w.b
	if b.wroteHeader || code < 100 || code > 999 {
		return
	}
	if code < 200 { // informational answers are not sent
		return
	}
	b.wroteHeader, b.status = true, code
	b.declared = nil
	for _, v := range b.header["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				b.declared = append(b.declared, http.CanonicalHeaderKey(k))
			}
		}
	}
}

// sendHeaderLocked writes the HEADERS frame of the answer once.
func (w bridgeWriter) sendHeaderLocked(endStream bool) error {
	b, c := w.b, w.c
	if b.sentHeader {
		return nil
	}
	w.writeHeaderLocked(http.StatusOK)
	b.sentHeader = true
	fields := []hpack.HeaderField{{Name: ":status", Value: strconv.Itoa(b.status)}}
	for k, vv := range b.header {
		lk := strings.ToLower(k)
		if skipAnswerHeader(lk) || strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		for _, v := range vv {
			fields = append(fields, hpack.HeaderField{Name: lk, Value: v})
		}
	}
	return c.w.writeHeaders(b.s.id, endStream, fields...)
}

// skipAnswerHeader: fields HTTP/2 does not carry, and the trailer declaration.
func skipAnswerHeader(k string) bool {
	switch k {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "trailer":
		return true
	}
	return false
}

func (w bridgeWriter) Write(p []byte) (int, error) {
	b, c := w.b, w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := w.usableLocked(); err != nil {
		return 0, err
	}
	if err := w.sendHeaderLocked(false); err != nil {
		c.closeLocked(err)
		return 0, err
	}
	written := 0
	for len(p) > 0 {
		rest, err := c.w.sendData(b.s, p)
		written += len(p) - len(rest)
		p = rest
		if err != nil {
			c.closeLocked(err)
			return written, err
		}
		if len(p) == 0 {
			break
		}
		// The window is closed: wait for WINDOW_UPDATE (what is written so far goes out first).
		if err := c.w.flush(); err != nil {
			c.closeLocked(err)
			return written, err
		}
		c.cond.Wait()
		if err := w.usableLocked(); err != nil {
			return written, err
		}
	}
	return written, nil
}

func (w bridgeWriter) usableLocked() error {
	switch {
	case w.c.closed:
		return errConnClosed
	case w.b.s.reset:
		return errStreamReset
	case w.b.s.sentEnd:
		return errors.New("h2: the answer is complete")
	}
	return nil
}

// Flush implements http.Flusher.
func (w bridgeWriter) Flush() {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.usableLocked() != nil {
		return
	}
	if err := w.sendHeaderLocked(false); err == nil {
		err = c.w.flush()
		if err != nil {
			c.closeLocked(err)
		}
	}
}

// finish ends the answer after the handler returns: the headers if none went out, the
// trailers (declared with "Trailer" or set with http.TrailerPrefix), END_STREAM.
func (w bridgeWriter) finish() {
	b, c := w.b, w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.usableLocked() != nil {
		return
	}
	var trailers []hpack.HeaderField
	add := func(k string, vv []string) {
		lk := strings.ToLower(k)
		if skipAnswerHeader(lk) || strings.HasPrefix(lk, ":") {
			return
		}
		for _, v := range vv {
			trailers = append(trailers, hpack.HeaderField{Name: lk, Value: v})
		}
	}
	if b.sentHeader {
		for _, k := range b.declared {
			add(k, b.header[k])
		}
	}
	for k, vv := range b.header {
		if tk, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			add(tk, vv)
		}
	}
	var err error
	switch {
	case !b.sentHeader && len(trailers) == 0:
		err = w.sendHeaderLocked(true)
	case len(trailers) == 0:
		err = c.w.fr.WriteData(b.s.id, true, nil)
	default:
		if err = w.sendHeaderLocked(false); err == nil {
			err = c.w.writeHeaders(b.s.id, true, trailers...)
		}
	}
	if err == nil {
		err = c.w.flush()
	}
	if err != nil {
		c.closeLocked(err)
		return
	}
	b.s.sentEnd = true
	c.answeredLocked(b.s)
}
