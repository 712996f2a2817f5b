package faulttest

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Proxy is a TCP fault injector on 127.0.0.1: it forwards connections to a real server (a
// Vault dev server, a JWKS endpoint) and, on command, stalls them, slows them, or refuses them,
// so a test can put the agent in front of a misbehaving dependency without faking the
// dependency itself.
//
//	p, err := faulttest.NewProxy(vaultAddr) // "127.0.0.1:8200"
//	defer p.Close()
//	// point the agent at p.Addr() ...
//	p.Stall()       // bytes in both directions are held from now on
//	<-p.Holding()   // the agent sent something that is now held
//	p.Release()     // held bytes flow again
//	p.Down()        // new connections are refused, open ones cut
//	p.Up()
//
// # Notes
//
//   - Safe for concurrent use.
//   - Stall holds every chunk read from either side until Release; it never closes a
//     connection itself, so a client gives up only on its own timeout. Abandoned counts the
//     connections a client closed while one of their chunks was held.
//   - Down closes the listener (new connections are refused, as from a stopped server) and
//     every open connection; Up listens again on the same address.
type Proxy struct {
	target string
	addr   string

	mu      sync.Mutex
	lis     net.Listener
	conns   map[net.Conn]struct{}
	gate    chan struct{} // closed: bytes flow; open: held until closed (Release)
	delay   time.Duration
	holding chan struct{} // closed at the first held chunk after Stall
	closed  bool
	wg      sync.WaitGroup

	conns0    atomic.Int64
	abandoned atomic.Int64
}

// NewProxy listens on a free port of 127.0.0.1 and forwards to target (host:port).
func NewProxy(target string) (*Proxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	open := make(chan struct{})
	close(open)
	p := &Proxy{target: target, addr: lis.Addr().String(), lis: lis, conns: map[net.Conn]struct{}{},
		gate: open, holding: make(chan struct{})}
	p.wg.Add(1)
	go p.accept(lis)
	return p, nil
}

// Addr is the proxy's address, host:port.
func (p *Proxy) Addr() string { return p.addr }

// URL is "http://" + Addr.
func (p *Proxy) URL() string { return "http://" + p.addr }

// Connections is the number of connections accepted so far.
func (p *Proxy) Connections() int64 { return p.conns0.Load() }

// Abandoned is the number of connections whose client closed them while a chunk of theirs was
// held by Stall: a client that gave up waiting.
func (p *Proxy) Abandoned() int64 { return p.abandoned.Load() }

// Stall holds every chunk read from now on, in both directions, until Release.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
		p.gate = make(chan struct{})
		p.holding = make(chan struct{})
	default: // already stalled
	}
}

// Holding is closed once a chunk is held by the current Stall.
func (p *Proxy) Holding() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.holding
}

// Release lets held and later chunks flow.
func (p *Proxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

// Slow delays every chunk by d (0: no delay).
func (p *Proxy) Slow(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Down refuses new connections and cuts the open ones.
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lis != nil {
		p.lis.Close()
		p.lis = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

// Up listens again on the proxy's address after Down.
func (p *Proxy) Up() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lis != nil || p.closed {
		return nil
	}
	var lis net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port may linger for a moment
		if lis, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	p.lis = lis
	p.wg.Add(1)
	go p.accept(lis)
	return nil
}

// Close stops the proxy and cuts every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.Release()
	p.Down()
	p.wg.Wait()
}

func (p *Proxy) accept(lis net.Listener) {
	defer p.wg.Done()
	for {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		p.conns0.Add(1)
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			// The dependency itself is down: answer like it, by cutting the connection.
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		var abandoned atomic.Bool
		p.wg.Add(2)
		go p.pipe(up, c, c, &abandoned)
		go p.pipe(c, up, c, &abandoned)
	}
}

// pipe copies src to dst chunk by chunk through the gate; client is the side the proxy
// accepted (the agent), whose closing while a chunk is held counts as abandoned.
func (p *Proxy) pipe(dst, src, client net.Conn, abandoned *atomic.Bool) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, src)
		delete(p.conns, dst)
		p.mu.Unlock()
		src.Close()
		dst.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate, delay, holding := p.gate, p.delay, p.holding
			p.mu.Unlock()
			select {
			case <-gate:
			default:
				p.noteHolding(holding)
				if !p.waitGate(gate, client) {
					if abandoned.CompareAndSwap(false, true) {
						p.abandoned.Add(1)
					}
					return
				}
			}
			if delay > 0 {
				time.Sleep(delay)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // either side closing ends the pair (HTTP clients and servers need no half-close)
		}
	}
}

// noteHolding closes holding (once) to tell the test that a chunk is held.
func (p *Proxy) noteHolding(holding chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-holding:
	default:
		close(holding)
	}
}

// waitGate waits for the gate to open and reports true; it reports false when the client
// closed its connection first (or Down cut it).
func (p *Proxy) waitGate(gate chan struct{}, client net.Conn) bool {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-gate:
			return true
		case <-t.C:
			if closedByPeer(client) {
				return false
			}
		}
	}
}

// closedByPeer reports whether c's peer closed it (or c was closed here), without consuming
// any data: a non-blocking MSG_PEEK read that answers 0 bytes is the end of the stream.
func closedByPeer(c net.Conn) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	var b [1]byte
	if err := raw.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = n == 0 && rerr == nil || rerr == syscall.ECONNRESET
		return true // never wait for readiness
	}); err != nil {
		return true // closed here (Down, Close)
	}
	return closed
}
