package h2

import (
	"bytes"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/tokenagent/tokenagent/extauthz/internal/h2/h2test"
)

// The attacks HTTP/2 servers have met, each from a peer that keeps at it: the connection must
// end with GOAWAY ENHANCE_YOUR_CALM (or the error RFC 9113 names) within a bounded number of
// frames, counted on the abuse metric, while another connection keeps being answered.
func TestFloods(t *testing.T) {
	const budget = 200
	lim := Limits{AbuseBudget: budget, AbuseRefill: 1, MaxHeaderFrames: 16}
	tests := []struct {
		name string
		// send writes one unit of the attack (n counts from 0); it returns the frames written.
		send func(p *h2test.Peer, n int) int
		// setup runs once before the attack.
		setup func(p *h2test.Peer)
		code  http2.ErrCode
		bound int // the most frames that may go out before GOAWAY
	}{
		{name: "PING flood (CVE-2019-9512)", code: http2.ErrCodeEnhanceYourCalm, bound: budget + 2,
			send: func(p *h2test.Peer, n int) int { _ = p.Fr.WritePing(false, [8]byte{byte(n)}); return 1 }},
		{name: "SETTINGS flood (CVE-2019-9515)", code: http2.ErrCodeEnhanceYourCalm, bound: budget + 2,
			send: func(p *h2test.Peer, _ int) int { _ = p.Fr.WriteSettings(); return 1 }},
		{name: "Rapid Reset (CVE-2023-44487)", code: http2.ErrCodeEnhanceYourCalm, bound: 2 * (budget + 2),
			send: func(p *h2test.Peer, n int) int {
				id := uint32(2*n + 1)
				_ = p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.Block(h2test.GRPCHeaders(blockPath)...), EndHeaders: true})
				_ = p.Fr.WriteRSTStream(id, http2.ErrCodeCancel)
				return 2
			}},
		{name: "empty DATA flood (CVE-2019-9518)", code: http2.ErrCodeEnhanceYourCalm, bound: budget + 4,
			setup: func(p *h2test.Peer) {
				_ = p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.Block(h2test.GRPCHeaders(echoPath)...), EndHeaders: true})
			},
			send: func(p *h2test.Peer, _ int) int { _ = p.Fr.WriteData(1, false, nil); return 1 }},
		{name: "CONTINUATION flood (CVE-2023-45288)", code: http2.ErrCodeEnhanceYourCalm, bound: 16 + 2,
			setup: func(p *h2test.Peer) {
				_ = p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.Block(h2test.GRPCHeaders(echoPath)...)})
			},
			send: func(p *h2test.Peer, _ int) int { _ = p.Fr.WriteContinuation(1, false, []byte{0x82}); return 1 }},
		{name: "empty CONTINUATION flood", code: http2.ErrCodeEnhanceYourCalm, bound: 16 + 2,
			setup: func(p *h2test.Peer) {
				_ = p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.Block(h2test.GRPCHeaders(echoPath)...)})
			},
			send: func(p *h2test.Peer, _ int) int { _ = p.Fr.WriteContinuation(1, false, nil); return 1 }},
		{name: "PRIORITY flood (CVE-2019-9513)", code: http2.ErrCodeEnhanceYourCalm, bound: budget + 2,
			send: func(p *h2test.Peer, n int) int {
				_ = p.Fr.WritePriority(uint32(2*n+1), http2.PriorityParam{StreamDep: 0, Weight: 1})
				return 1
			}},
		{name: "unknown frame flood", code: http2.ErrCodeEnhanceYourCalm, bound: budget + 2,
			send: func(p *h2test.Peer, _ int) int { _ = p.Fr.WriteRawFrame(0xfa, 0, 0, []byte("x")); return 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, lim)
			bystander := h2test.Dial(t, ts.addr)
			p := h2test.Dial(t, ts.addr)
			if tc.setup != nil {
				tc.setup(p)
			}
			// Send exactly bound frames (a goroutine), and read until the GOAWAY: a server whose
			// limit were looser would not send one, and the test would fail.
			sent := make(chan int, 1)
			go func() {
				frames := 0
				for n := 0; frames < tc.bound; n++ {
					frames += tc.send(p, n)
				}
				sent <- frames
			}()
			g := p.GoAway()
			<-sent
			if g.ErrCode != tc.code {
				t.Fatalf("GOAWAY %v (%s), want %v", g.ErrCode, g.DebugData(), tc.code)
			}
			if !p.Closed() {
				t.Fatal("the connection stays open after its GOAWAY")
			}
			bystander.Call(1, echoPath, []byte("still here"))
			got, _ := bystander.Answers(1)
			if string(got[1].Message()) != "still here" {
				t.Fatalf("another connection during the attack: %+v", got[1])
			}
		})
	}
}

// A peer that keeps its flow-control window closed while it sends calls: the answers wait, up
// to MaxPendingWrite bytes; past it the connection ends (ENHANCE_YOUR_CALM), not memory.
func TestUnreadAnswers(t *testing.T) {
	ts := startServer(t, Limits{MaxPendingWrite: 64 << 10})
	p := h2test.Dial(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	msg := bytes.Repeat([]byte("a"), 8<<10)
	go func() {
		for id := uint32(1); id < 400; id += 2 {
			err := p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.Block(h2test.GRPCHeaders(echoPath)...), EndHeaders: true})
			if err != nil || p.Fr.WriteData(id, true, h2test.Frame(msg)) != nil {
				return // the server has closed the connection
			}
		}
	}()
	if g := p.GoAway(); g.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v", g.ErrCode)
	}
}

// A peer that stops reading the socket: the server's writes block until WriteTimeout, then the
// connection ends; another connection is answered meanwhile.
func TestPeerStopsReading(t *testing.T) {
	ts := startServer(t, Limits{WriteTimeout: 300 * time.Millisecond})
	bystander := h2test.Dial(t, ts.addr)
	p := h2test.Dial(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	p.Must(p.Fr.WriteWindowUpdate(0, 1<<30))
	msg := bytes.Repeat([]byte("r"), 1<<20)
	done := make(chan struct{})
	go func() { // never reads: the answers pile up in the socket until the server gives up
		defer close(done)
		for id := uint32(1); id < 1<<30; id += 2 { // until a write fails: the server closed
			must2(p.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.Block(h2test.GRPCHeaders(echoPath)...), EndHeaders: true}))
			if !must2(p.Fr.WriteData(id, true, h2test.Frame(msg[:16000]))) {
				return
			}
		}
	}()
	bystander.Call(1, echoPath, []byte("still here"))
	got, _ := bystander.Answers(1)
	if string(got[1].Message()) != "still here" {
		t.Fatalf("another connection: %+v", got[1])
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second): // a liveness bound: the server must end the connection
		t.Fatal("the server kept a connection whose peer does not read")
	}
}

// must2 is must for a goroutine: it reports the error instead of failing the test.
func must2(err error) bool { return err == nil }
