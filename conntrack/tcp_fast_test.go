package conntrack

import (
	"math/rand/v2"
	"testing"

	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
)

// TestTCPFastPathAgrees drives random segments at random established
// connections through the fast path and through the general tracker from
// the same starting state: whenever the fast path takes a packet, the
// general tracker must accept it too, leave exactly the same state and
// choose the same timeout; when it declines, it must not have changed
// anything.
func TestTCPFastPathAgrees(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	cfgs := []TCPConfig{DefaultConfig().TCP, DefaultConfig().TCP}
	cfgs[1].MaxRetrans = 1
	taken, declined := 0, 0
	for round := 0; round < 6000; round++ {
		cfg := &cfgs[round%2]
		// A connection after a handshake and some data, with random
		// scaling and SACK.
		var c tcpConn
		iss, irs := r.Uint32(), r.Uint32()
		syn := tseg(fS, iss, 0, uint16(r.IntN(65536)), 0)
		synack := tseg(fS|fA, irs, iss+1, uint16(r.IntN(65536)), 0)
		if r.IntN(2) == 0 {
			syn, synack = syn.wscale(uint8(r.IntN(15))), synack.wscale(uint8(r.IntN(15)))
		}
		if r.IntN(2) == 0 {
			syn, synack = syn.sackPerm(), synack.sackPerm()
		}
		if c.init(&syn, cfg) != ReasonNone {
			t.Fatal("init")
		}
		status := Status(0)
		step := func(s tcpSeg, d Dir) tcpOut {
			out := c.packet(&s, tcpIn{dir: d, status: status, cfg: cfg})
			if out.assured {
				status |= StatusAssured
			}
			if d == Reply {
				status |= StatusSeenReply
			}
			return out
		}
		step(syn, Original)
		step(synack, Reply)
		step(tseg(fA, iss+1, irs+1, uint16(r.IntN(65536)), 0), Original)
		if c.state != TCPEstablished || status&StatusAssured == 0 {
			t.Fatalf("round %d: handshake left %v %v", round, c.state, status)
		}
		seq := [2]uint32{iss + 1, irs + 1}
		for i := 0; i < 20; i++ {
			d := Dir(r.IntN(2))
			n := uint32(r.IntN(1500))
			if r.IntN(4) == 0 {
				n = 0
			}
			s := seq[d]
			switch r.IntN(6) {
			case 0:
				s += uint32(r.IntN(1 << 20)) // ahead, maybe beyond the window
			case 1:
				s -= uint32(r.IntN(1 << 20)) // old
			}
			a := seq[d^1]
			switch r.IntN(6) {
			case 0:
				a += uint32(r.IntN(1 << 18))
			case 1:
				a -= uint32(r.IntN(1 << 18))
			}
			flags := []packet.TCPFlags{fA, fA | fP, fA | packet.ECE, fA | fF, fA | fU, fA | fR}[r.IntN(6)]
			o := pt.TCPOpts{Flags: flags, Seq: s, Ack: a, Win: uint16(r.IntN(65536)), Payload: make([]byte, n)}
			if r.IntN(3) == 0 {
				o.SACK = [][2]uint32{{a + 100, a + uint32(r.IntN(5000))}}
			}
			src, dst := "10.0.0.1:1000", "10.0.0.2:80"
			if d == Reply {
				src, dst = dst, src
			}
			p := pt.MustDecode(pt.TCP4(src, dst, o))

			fast, slow := c, c
			to, ok := fast.fastEstablished(p, d, cfg)
			seg := segOf(p)
			out := slow.packet(&seg, tcpIn{dir: d, status: status, cfg: cfg})
			if ok {
				taken++
				if out.action != tcpAccept || !out.refresh || out.timeout != to || fast != slow || out.assured {
					t.Fatalf("round %d packet %d (%v seq=%d ack=%d len=%d dir=%v): fast path took it (timeout %v) but the tracker says %v timeout %v refresh %v\nfast %+v\nslow %+v",
						round, i, flags, s, a, n, d, to, out.action, out.timeout, out.refresh, fast, slow)
				}
			} else {
				declined++
				if fast != c {
					t.Fatalf("round %d packet %d: the fast path declined but changed the state", round, i)
				}
			}
			// Continue from the general tracker's result.
			c = slow
			if out.action == tcpAccept || out.action == tcpIgnore {
				if seqAfter(p.Seq+uint32(p.PayloadLen()), seq[d]) && out.action == tcpAccept {
					seq[d] = p.Seq + uint32(p.PayloadLen())
				}
			}
			if c.state != TCPEstablished {
				break
			}
		}
	}
	if taken < 5000 || declined < 5000 {
		t.Fatalf("fast path taken %d, declined %d: the test does not exercise both sides", taken, declined)
	}
}

func BenchmarkTCPFastPath(b *testing.B) {
	cfg := DefaultConfig().TCP
	var c tcpConn
	syn := tseg(fS, 1000, 0, 65535, 0)
	c.init(&syn, &cfg)
	status := Status(0)
	for _, x := range []struct {
		s tcpSeg
		d Dir
	}{{syn, Original}, {tseg(fS|fA, 5000, 1001, 65535, 0), Reply}, {tseg(fA, 1001, 5001, 65535, 0), Original}} {
		out := c.packet(&x.s, tcpIn{dir: x.d, status: status, cfg: &cfg})
		if out.assured {
			status |= StatusAssured
		}
		if x.d == Reply {
			status |= StatusSeenReply
		}
	}
	data := pt.MustDecode(pt.TCP4("10.0.0.1:1000", "10.0.0.2:80", pt.TCPOpts{Flags: fA | fP, Seq: 1001, Ack: 5001, Win: 65535, Payload: make([]byte, 100)}))
	ack := pt.MustDecode(pt.TCP4("10.0.0.2:80", "10.0.0.1:1000", pt.TCPOpts{Flags: fA, Seq: 5001, Ack: 1101, Win: 65535}))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if i&1 == 0 {
			if _, ok := c.fastEstablished(data, Original, &cfg); !ok {
				b.Fatal("declined")
			}
			data.Seq += 100
		} else {
			ack.Ack = data.Seq
			if _, ok := c.fastEstablished(ack, Reply, &cfg); !ok {
				b.Fatal("declined")
			}
		}
	}
}
