// Package h2 is tokenagent's own HTTP/2 server for unary gRPC calls: one goroutine per
// connection reads frames and answers a call inline, on that goroutine, writing the answer
// into a buffered writer that is flushed just before the next read that would block. Many
// answers then go out in one write under load, and a call at a low rate costs one wake-up.
//
// A call that must wait (its code calls blocking.Ahead on the call's context before it waits)
// keeps its goroutine and hands the connection to a new one, so one slow call never stalls
// the others on its connection. There is no timer per call: arming one costs more than the
// call at the rates a node sees (each leaves a wake-up behind in the runtime's timer heap). Paths the server does not serve itself go to
// a fallback http.Handler (gRPC-Go's ServeHTTP: reflection, health Watch, any other service),
// bridged stream by stream.
//
// Framing and HPACK are golang.org/x/net/http2's Framer and hpack; the connection's state
// machine, flow control, limits and the gRPC framing are this package's. It is held to
// h2spec, to gRPC-Go's answers on the same frames (extauthz's differential tests), and to the
// attacks HTTP/2 servers met: Rapid Reset (CVE-2023-44487), CONTINUATION floods
// (CVE-2023-45288), PING, SETTINGS, empty-frame and reset floods (CVE-2019-9512/9514/9515/9518),
// peers that stop reading, HPACK and header-list limits, and a cap on concurrent streams.
package h2

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// UnaryFunc answers one unary call inline: req is the request message (valid only during the
// call), and the answer message is appended to dst. A status that is not OK sends no message.
type UnaryFunc func(ctx context.Context, req []byte, dst []byte) ([]byte, Status)

// Status is a call's gRPC status.
type Status struct {
	Code    uint32 // a google.golang.org/grpc/codes.Code
	Message string
}

// Options configure a Server.
type Options struct {
	// Unary are the methods the server answers itself, by :path
	// ("/envoy.service.auth.v3.Authorization/Check").
	Unary map[string]UnaryFunc
	// Fallback serves every other request (nil: gRPC UNIMPLEMENTED for a gRPC request, 404
	// for anything else). It is called on a goroutine of its own per stream, with a request
	// and a ResponseWriter that behave as net/http's HTTP/2 server's do (trailers, Flush).
	Fallback http.Handler
	// TLS, when set, serves TLS: ALPN "h2" (or none) is accepted, any other refused. Its
	// certificates may change between handshakes (GetConfigForClient, GetCertificate).
	TLS *tls.Config
	// Limits bound what a peer may make the server do (zero fields take the defaults).
	Limits Limits
	// Logger receives connection-level problems (floods, protocol errors) at debug or warn
	// level (default: discard).
	Logger *slog.Logger
	// Metrics counts connections, streams, hand-offs and refusals (nil: none).
	Metrics *Metrics
}

// Limits bound a connection. The defaults suit an ext_authz service reached by Envoy.
type Limits struct {
	// MaxConcurrentStreams is SETTINGS_MAX_CONCURRENT_STREAMS; a stream over it is refused
	// (RST_STREAM REFUSED_STREAM). Default 1024.
	MaxConcurrentStreams uint32
	// MaxRecvMsgSize is the largest request message (gRPC-Go's default: 4 MiB); a larger one
	// is answered RESOURCE_EXHAUSTED.
	MaxRecvMsgSize int
	// MaxHeaderListSize is SETTINGS_MAX_HEADER_LIST_SIZE, the decoded size of a header block
	// (default 64 KiB); a larger block is refused without being stored.
	MaxHeaderListSize uint32
	// MaxHeaderFrames is the most frames (HEADERS and CONTINUATION) one header block may span
	// (default 64): CONTINUATION floods end the connection.
	MaxHeaderFrames int
	// StreamWindow is the receive window of each stream (SETTINGS_INITIAL_WINDOW_SIZE,
	// default 1 MiB); ConnWindow the connection's (default 16 MiB).
	StreamWindow, ConnWindow uint32
	// MaxBufferedRequest bounds the request bytes held for unfinished streams of one
	// connection (default 32 MiB); a stream that would go over is answered RESOURCE_EXHAUSTED.
	MaxBufferedRequest int
	// MaxPendingWrite bounds the answer bytes held for a peer whose flow-control window is
	// closed (default 4 MiB); over it, the connection ends (ENHANCE_YOUR_CALM).
	MaxPendingWrite int
	// WriteTimeout bounds one write to the socket (default 10 s): a peer that does not read
	// loses its connection.
	WriteTimeout time.Duration
	// HandshakeTimeout bounds TLS, the preface and the first SETTINGS (default 10 s).
	HandshakeTimeout time.Duration
	// AbuseBudget is how many frames that cost the server without serving a call (PING,
	// SETTINGS, RST_STREAM of an unanswered stream, empty DATA, PRIORITY, unknown frames) a
	// connection may send in a burst; the budget refills by AbuseRefill a second and by one
	// for every answered call. Over it: GOAWAY ENHANCE_YOUR_CALM. Defaults 1000 and 100.
	AbuseBudget, AbuseRefill int
}

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def32 := func(v *uint32, d uint32) {
		if *v == 0 {
			*v = d
		}
	}
	def32(&l.MaxConcurrentStreams, 1024)
	def(&l.MaxRecvMsgSize, 4<<20)
	def32(&l.MaxHeaderListSize, 64<<10)
	def(&l.MaxHeaderFrames, 64)
	def32(&l.StreamWindow, 1<<20)
	def32(&l.ConnWindow, 16<<20)
	l.StreamWindow = min(l.StreamWindow, maxWindow)
	l.ConnWindow = min(max(l.ConnWindow, initialWindow), maxWindow)
	def(&l.MaxBufferedRequest, 32<<20)
	def(&l.MaxPendingWrite, 4<<20)
	def(&l.AbuseBudget, 1000)
	def(&l.AbuseRefill, 100)
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = 10 * time.Second
	}
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = 10 * time.Second
	}
	return l
}

// Server serves connections. Build it with New; it starts nothing until Serve.
//
// # Notes
//
//   - Safe for concurrent use: Serve may be called for several listeners.
//   - Shutdown drains (GOAWAY, in-flight calls answered), Close ends at once.
type Server struct {
	opts   Options
	limits Limits
	log    *slog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	draining  bool
	closed    bool
	idle      chan struct{} // closed when draining and the last connection ends

	connWG sync.WaitGroup // connection goroutines (readers and hand-offs)
}

// New returns a server with opts.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.TLS != nil {
		opts.TLS = requireH2(opts.TLS)
	}
	return &Server{opts: opts, limits: opts.Limits.withDefaults(), log: opts.Logger,
		listeners: map[net.Listener]struct{}{}, conns: map[*conn]struct{}{}}
}

// requireH2 refuses, in the handshake, a client that offers ALPN protocols none of which is h2
// (Go's TLS server lets one that offers only http/1.1 through with no protocol). A client that
// offers none is served: it speaks HTTP/2 with prior knowledge.
func requireH2(cfg *tls.Config) *tls.Config {
	cfg = cfg.Clone()
	if !slices.Contains(cfg.NextProtos, "h2") {
		cfg.NextProtos = append(cfg.NextProtos, "h2")
	}
	next := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if len(hello.SupportedProtos) > 0 && !slices.Contains(hello.SupportedProtos, "h2") {
			return nil, errors.New("h2: the client's ALPN protocols do not include h2")
		}
		if next != nil {
			return next(hello)
		}
		return nil, nil
	}
	return cfg
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("h2: server closed")

// Serve accepts connections on l until Shutdown or Close (then it returns ErrServerClosed) or
// until l fails. Each connection is served by a goroutine of its own.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed || s.draining {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			done := s.closed || s.draining
			s.mu.Unlock()
			if done {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() { // a temporary failure (EMFILE): back off
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "error", err.Error(), "in", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := s.newConn(nc)
		if c == nil {
			continue
		}
		s.connWG.Add(1)
		go c.serve()
	}
}

// newConn registers a connection; nil when the server no longer takes any.
func (s *Server) newConn(nc net.Conn) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.draining {
		_ = nc.Close()
		return nil
	}
	c := newConn(s, nc)
	s.conns[c] = struct{}{}
	s.opts.Metrics.connOpened()
	return c
}

// connDone forgets a connection that has ended.
func (s *Server) connDone(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	s.opts.Metrics.connClosed()
	if s.draining && len(s.conns) == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// Shutdown stops accepting, tells every connection to go away (GOAWAY after a PING round
// trip, so no call the peer already sent is lost), waits for the calls in flight to be
// answered and the connections to end, or for ctx to end (then it closes what is left and
// returns ctx's error).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.draining = true
	for l := range s.listeners {
		_ = l.Close()
	}
	idle := make(chan struct{})
	if len(s.conns) == 0 {
		close(idle)
	} else {
		s.idle = idle
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.startDrain()
	}
	select {
	case <-idle:
		s.connWG.Wait()
		return nil
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// Close closes the listeners and every connection at once.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		_ = l.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close(errServerClosing)
	}
	s.connWG.Wait()
}

// Conns is the number of open connections.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
