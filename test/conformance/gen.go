package conformance

import (
	"fmt"
	"net/netip"

	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
)

// The generator: scenarios are written as Go code against a small builder
// that knows both ends' addresses and tracks TCP sequence numbers, and
// produces exact bytes with packet/packettest.

// sb builds one scenario.
type sb struct {
	s  *Scenario
	v6 bool
}

func newSB(name, section string, v6 bool, rules Ruleset, doc string) *sb {
	return &sb{s: &Scenario{Name: name, Section: section, Doc: doc, Rules: rules}, v6: v6}
}

// addr returns a host address on side's link: host 2 is the client or the
// server, others are extra hosts (routers on the path, bounce targets).
func (b *sb) addr(side Side, host uint8) netip.Addr {
	if b.v6 {
		a := Router6[side].Addr().As16()
		a[15] = host
		return netip.AddrFrom16(a)
	}
	a := Router4[side].Addr().As4()
	a[3] = host
	return netip.AddrFrom4(a)
}

func (b *sb) ep(side Side, host uint8, port uint16) string {
	return netip.AddrPortFrom(b.addr(side, host), port).String()
}

func (b *sb) host(side Side, host uint8) string { return b.addr(side, host).String() }

// add appends a packet.
func (b *sb) add(from Side, pkt []byte, note, want string) []byte {
	b.s.Packets = append(b.s.Packets, Packet{From: from, Bytes: pkt, Note: note, Want: want})
	return pkt
}

func (b *sb) sysctls(s Sysctls) *sb { b.s.Sysctls = s; return b }

// tcpEnd is one end's sending state.
type tcpEnd struct {
	port   uint16
	host   uint8
	isn    uint32
	nxt    uint32 // next sequence number to send
	win    uint16
	wscale int // window scale option sent on SYN (NoWScale: none)
}

// tcpConn is a TCP connection between the client and the server.
type tcpConn struct {
	b   *sb
	end [2]*tcpEnd
}

// tcp starts a connection from client port cport to server port sport.
func (b *sb) tcp(cport, sport uint16) *tcpConn {
	return &tcpConn{b: b, end: [2]*tcpEnd{
		{port: cport, host: 2, isn: 1000000, nxt: 1000000, win: 64000, wscale: pt.NoWScale},
		{port: sport, host: 2, isn: 5000000, nxt: 5000000, win: 64000, wscale: pt.NoWScale},
	}}
}

// seg builds a segment from side with explicit fields (seq/ack are taken
// as given).
func (c *tcpConn) seg(from Side, o pt.TCPOpts) []byte {
	e, r := c.end[from], c.end[from.Other()]
	if o.Win == 0 && o.Flags&packet.RST == 0 {
		o.Win = e.win
	}
	if o.WScale == 0 && o.Flags&packet.SYN != 0 {
		o.WScale = e.wscale
	} else if o.Flags&packet.SYN == 0 {
		o.WScale = pt.NoWScale
	}
	return pt.TCP(c.b.ep(from, e.host, e.port), c.b.ep(from.Other(), r.host, r.port), o)
}

// send builds a segment with the current sequence numbers (seq = sender's
// next, ack = peer's next when ACK is set), advances the sender and adds
// it to the scenario.
func (c *tcpConn) send(from Side, flags packet.TCPFlags, payload string, note, want string) []byte {
	e, r := c.end[from], c.end[from.Other()]
	o := pt.TCPOpts{Flags: flags, Seq: e.nxt, Payload: []byte(payload)}
	if flags&packet.ACK != 0 {
		o.Ack = r.nxt
	}
	if flags&packet.SYN != 0 {
		o.MSS = 1460
	}
	pkt := c.seg(from, o)
	e.nxt += uint32(len(payload))
	if flags&(packet.SYN|packet.FIN) != 0 {
		e.nxt++
	}
	return c.b.add(from, pkt, note, want)
}

// raw adds a segment built with explicit fields without advancing anything.
func (c *tcpConn) raw(from Side, o pt.TCPOpts, note, want string) []byte {
	return c.b.add(from, c.seg(from, o), note, want)
}

const (
	fSYN    = packet.SYN
	fACK    = packet.ACK
	fFIN    = packet.FIN
	fRST    = packet.RST
	fPSH    = packet.PSH
	fURG    = packet.URG
	fSYNACK = packet.SYN | packet.ACK
	fPA     = packet.PSH | packet.ACK
	fFA     = packet.FIN | packet.ACK
	fRA     = packet.RST | packet.ACK
)

// handshake adds SYN, SYN/ACK, ACK from the client.
func (c *tcpConn) handshake() *tcpConn { return c.handshakeFrom(Client, StateNew) }

// handshakeFrom adds SYN, SYN/ACK, ACK with init as the initiator; the SYN
// is built to be synWant (new, or related for an expected connection).
func (c *tcpConn) handshakeFrom(init Side, synWant string) *tcpConn {
	c.send(init, fSYN, "", init.String()+" SYN", synWant)
	c.send(init.Other(), fSYNACK, "", init.Other().String()+" SYN/ACK", StateEstablished)
	c.send(init, fACK, "", init.String()+" ACK", StateEstablished)
	return c
}

// data sends payload from side with PSH+ACK.
func (c *tcpConn) data(from Side, payload, note string) []byte {
	if note == "" {
		note = fmt.Sprintf("%v data %d bytes", from, len(payload))
	}
	return c.send(from, fPA, payload, note, "")
}

// ack sends a pure ACK from side.
func (c *tcpConn) ack(from Side) []byte {
	return c.send(from, fACK, "", from.String()+" ACK", "")
}

// exchange sends payload from side and the peer's ACK.
func (c *tcpConn) exchange(from Side, payload string) {
	c.data(from, payload, "")
	c.ack(from.Other())
}

// finish assigns every packet its mark (unique over the whole catalogue,
// starting at base) and validates the scenario.
func finish(s *Scenario, base *uint32) *Scenario {
	for i := range s.Packets {
		*base++
		m := *base
		if s.Packets[i].Bytes[0]>>4 == 4 {
			m &= 0xffff
		} else {
			m &= 0xfffff
		}
		if m == 0 {
			m = 1
		}
		s.Packets[i].Mark = m
		setMark(s.Packets[i].Bytes, m)
	}
	return s
}
