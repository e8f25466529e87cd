package conformance

import (
	"fmt"

	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
)

// Rule sets used by many scenarios.
var (
	// dropInvalid makes INVALID visible as a drop and lets everything
	// else through.
	dropInvalid = Ruleset{Policy: "accept", Rules: []Rule{{States: []string{StateInvalid}, Action: "drop"}}}
	// acceptAll lets everything through, INVALID included (so INVALID
	// packets reach the other end and the state is the only difference).
	acceptAll = Ruleset{Policy: "accept"}
	// gateway is a typical stateful policy: replies and RELATED pass,
	// INVALID is dropped, only some new connections are allowed.
	gateway = Ruleset{Policy: "drop", Rules: []Rule{
		{States: []string{StateEstablished, StateRelated}, Action: "accept"},
		{States: []string{StateInvalid}, Action: "drop"},
		{States: []string{StateNew}, Proto: "tcp", DPort: 80, Action: "accept"},
		{States: []string{StateNew}, Proto: "udp", DPort: 53, Action: "accept"},
		{States: []string{StateNew}, Proto: "icmp", Action: "accept"},
		{States: []string{StateNew}, Proto: "icmpv6", Action: "accept"},
	}}
)

// ftpRules lets the control connection (to port) open and everything
// ESTABLISHED or RELATED through; a data connection that is not RELATED
// meets the drop policy. helper says whether the FTP helper is attached
// to helperPort.
func ftpRules(port uint16, helper bool, helperPort uint16) Ruleset {
	r := Ruleset{Policy: "drop", Rules: []Rule{
		{States: []string{StateEstablished, StateRelated}, Action: "accept"},
		{States: []string{StateInvalid}, Action: "drop"},
		{States: []string{StateNew}, Proto: "tcp", DPort: port, Action: "accept"},
	}}
	if helper {
		r.HelperPorts = []uint16{helperPort}
	}
	return r
}

func sfx(v6 bool) string {
	if v6 {
		return "-v6"
	}
	return "-v4"
}

// Catalogue returns every scenario, with marks assigned.
func Catalogue() []*Scenario {
	var all []*Scenario
	var mark uint32
	add := func(b *sb) { all = append(all, finish(b.s, &mark)) }
	for _, v6 := range []bool{false, true} {
		for _, f := range []func(bool) *sb{
			// 1 state model, 2 TCP
			tcpHandshakeClose, tcpGatewayPolicy, tcpSeqAboveWindow, tcpSeqBelowWindow,
			tcpAckAboveSent, tcpAckBelowWindow, tcpRSTExact, tcpRSTInexact, tcpRSTBelowMaxAck,
			tcpRSTOutOfWindow, tcpRSTClosing, tcpRSTUnreplied, tcpSYNOnEstablished,
			tcpTimeWaitReuse, tcpCloseReuseIgnored, tcpSYNACKRetrans, tcpSYNACKStale,
			tcpSimultaneousOpen, tcpPickupLoose, tcpPickupStrict, tcpWindowScale,
			tcpWindowScaleOneSided, tcpImpossibleFlags, tcpAllowedFlags, tcpInvalidFirst,
			tcpBadChecksum, checksumOff, tcpTruncated, tcpLiberal, tcpIgnoreInvalidRST, tcpAckLossStall,
			tcpSynChallengeAck, tcpNotrack,
			// 3 UDP, ICMP, generic
			udpNewReply, udpBad, icmpEcho, icmpOddTypes, genericProto,
			// 4 ICMP errors
			icmpErrorKnown, icmpErrorUnknown, icmpErrorAboutError, icmpErrorOuterDaddr,
			icmpErrorAboutEcho,
			// 5, 6 FTP
			ftpActive, ftpPassive, ftpEPRT, ftpEPSV, ftpBounce, ftpSplitCommand,
			ftpSecondPort, ftpExpectationReused, ftpWrongDirection, ftpNoHelper,
			ftpNonStandardPort, ftpMalformed, ftpFirstSegment,
		} {
			if b := f(v6); b != nil {
				add(b)
			}
		}
	}
	return all
}

// --- 1, 2: TCP -------------------------------------------------------------

func tcpHandshakeClose(v6 bool) *sb {
	b := newSB("tcp-handshake-data-close"+sfx(v6), "2.5", v6, dropInvalid,
		"handshake (NEW, first reply ESTABLISHED), data both ways, FIN from both sides, last ACK")
	c := b.tcp(40000, 80).handshake()
	c.exchange(Client, "GET / HTTP/1.0\r\n\r\n")
	c.exchange(Server, "HTTP/1.0 200 OK\r\n\r\nhello")
	c.send(Client, fFA, "", "client FIN", StateEstablished)
	c.send(Server, fFA, "", "server FIN", StateEstablished)
	c.send(Client, fACK, "", "client last ACK", StateEstablished)
	c.raw(Client, pt.TCPOpts{Flags: fPA, Seq: c.end[Client].nxt, Ack: c.end[Server].nxt, Payload: []byte("late")}, "data after close", "")
	return b
}

func tcpGatewayPolicy(v6 bool) *sb {
	b := newSB("state-gateway-policy"+sfx(v6), "1.2", v6, gateway,
		"a stateful policy: allowed NEW, refused NEW, replies, an unsolicited SYN/ACK (INVALID)")
	c := b.tcp(40010, 80).handshake()
	c.exchange(Client, "hi")
	d := b.tcp(40011, 81)
	d.send(Client, fSYN, "", "SYN to a refused port", StateNew)
	e := b.tcp(40012, 80)
	e.send(Server, fSYNACK, "", "unsolicited SYN/ACK from the server", StateInvalid)
	f := b.tcp(40013, 8080)
	f.send(Server, fSYN, "", "SYN from the server side", StateNew)
	return b
}

func tcpSeqAboveWindow(v6 bool) *sb {
	b := newSB("tcp-seq-above-window"+sfx(v6), "2.7", v6, dropInvalid,
		"data whose seq is beyond the receiver's window (check I) from both sides is INVALID, unless the excess is within the receiver's max window (overshoot, ignored); the connection goes on")
	c := b.tcp(40020, 80).handshake()
	c.exchange(Client, "hello")
	for _, from := range []Side{Client, Server} {
		e, r := c.end[from], c.end[from.Other()]
		c.raw(from, pt.TCPOpts{Flags: fPA, Seq: e.nxt + 200000, Ack: r.nxt, Payload: []byte("far")}, from.String()+" data 200000 above window", StateInvalid)
		c.raw(from, pt.TCPOpts{Flags: fPA, Seq: e.nxt + 64000 + 10, Ack: r.nxt, Payload: []byte("edge")}, from.String()+" data just above the window (overshoot: ignored)", StateEstablished)
	}
	c.exchange(Server, "still alive")
	return b
}

func tcpSeqBelowWindow(v6 bool) *sb {
	b := newSB("tcp-seq-below-window"+sfx(v6), "2.7", v6, dropInvalid,
		"data far below the sender's lower edge (check II) is ignored, not INVALID; just inside passes")
	c := b.tcp(40030, 80).handshake()
	c.exchange(Client, "hello")
	c.exchange(Server, "world")
	for _, from := range []Side{Client, Server} {
		e, r := c.end[from], c.end[from.Other()]
		c.raw(from, pt.TCPOpts{Flags: fPA, Seq: e.nxt - 300000, Ack: r.nxt, Payload: []byte("ancient")}, from.String()+" data 300000 below", StateEstablished)
		c.raw(from, pt.TCPOpts{Flags: fPA, Seq: e.nxt - 5, Ack: r.nxt, Payload: []byte("12345")}, from.String()+" retransmission of the last bytes", StateEstablished)
	}
	return b
}

func tcpAckAboveSent(v6 bool) *sb {
	b := newSB("tcp-ack-above-sent"+sfx(v6), "2.7", v6, dropInvalid,
		"an ACK for data the peer never sent (check III) is INVALID from both sides")
	c := b.tcp(40040, 80).handshake()
	c.exchange(Client, "hello")
	for _, from := range []Side{Client, Server} {
		e, r := c.end[from], c.end[from.Other()]
		c.raw(from, pt.TCPOpts{Flags: fACK, Seq: e.nxt, Ack: r.nxt + 100000}, from.String()+" ACK 100000 above sent", StateInvalid)
		c.raw(from, pt.TCPOpts{Flags: fACK, Seq: e.nxt, Ack: r.nxt + 1}, from.String()+" ACK one above sent", StateInvalid)
	}
	c.exchange(Client, "ok")
	return b
}

func tcpAckBelowWindow(v6 bool) *sb {
	b := newSB("tcp-ack-below-window"+sfx(v6), "2.7", v6, dropInvalid,
		"an ACK far below the receiver's sent data (check IV) is ignored, not INVALID")
	c := b.tcp(40050, 80).handshake()
	c.exchange(Client, "hello")
	c.exchange(Server, "world")
	for _, from := range []Side{Client, Server} {
		e, r := c.end[from], c.end[from.Other()]
		c.raw(from, pt.TCPOpts{Flags: fACK, Seq: e.nxt, Ack: r.nxt - 200000}, from.String()+" ACK 200000 below", StateEstablished)
		c.raw(from, pt.TCPOpts{Flags: fACK, Seq: e.nxt, Ack: r.nxt - 1}, from.String()+" ACK one below", StateEstablished)
	}
	return b
}

// established builds a connection with some data both ways, acknowledged.
func established(b *sb, cport uint16) *tcpConn {
	c := b.tcp(cport, 80).handshake()
	c.exchange(Client, "request data")
	c.exchange(Server, "response data")
	return c
}

func tcpRSTExact(v6 bool) *sb {
	b := newSB("tcp-rst-exact"+sfx(v6), "2.6", v6, dropInvalid,
		"a RST at exactly the next expected seq closes the connection; a SYN then starts anew")
	c := established(b, 40060)
	c.raw(Client, pt.TCPOpts{Flags: fRA, Seq: c.end[Client].nxt, Ack: c.end[Server].nxt}, "client RST+ACK at the expected seq", StateEstablished)
	c.end[Client].nxt += 77777
	c.send(Client, fSYN, "", "client SYN, same ports (last packet from this side was a RST)", StateNew)
	c.end[Server].nxt += 55555
	c.send(Server, fSYNACK, "", "server SYN/ACK", "")
	c.send(Client, fACK, "", "client ACK", "")
	return b
}

func tcpRSTInexact(v6 bool) *sb {
	b := newSB("tcp-rst-inexact"+sfx(v6), "2.6", v6, dropInvalid,
		"a RST inside the window but not at the expected seq keeps the connection (challenge ACK); then an exact RST")
	c := established(b, 40070)
	c.raw(Client, pt.TCPOpts{Flags: fRST, Seq: c.end[Client].nxt + 1000}, "client RST 1000 into the window", StateEstablished)
	c.raw(Server, pt.TCPOpts{Flags: fACK, Seq: c.end[Server].nxt, Ack: c.end[Client].nxt}, "server challenge ACK", StateEstablished)
	c.exchange(Client, "still open")
	c.raw(Client, pt.TCPOpts{Flags: fRST, Seq: c.end[Client].nxt}, "client RST at the expected seq", StateEstablished)
	c.raw(Server, pt.TCPOpts{Flags: fPA, Seq: c.end[Server].nxt, Ack: c.end[Client].nxt, Payload: []byte("z")}, "server data after the RST", "")
	return b
}

func tcpRSTBelowMaxAck(v6 bool) *sb {
	b := newSB("tcp-rst-below-maxack"+sfx(v6), "2.6", v6, dropInvalid,
		"a RST whose seq is below the highest ACK the peer sent is INVALID (from both sides)")
	c := established(b, 40080)
	c.raw(Server, pt.TCPOpts{Flags: fRST, Seq: c.end[Server].nxt - 5}, "server RST 5 below the client's max ACK", StateInvalid)
	c.raw(Client, pt.TCPOpts{Flags: fRA, Seq: c.end[Client].nxt - 1, Ack: c.end[Server].nxt}, "client RST+ACK 1 below the server's max ACK", StateInvalid)
	c.exchange(Server, "alive")
	return b
}

func tcpRSTOutOfWindow(v6 bool) *sb {
	b := newSB("tcp-rst-out-of-window"+sfx(v6), "2.6", v6, dropInvalid,
		"a RST far above the window is INVALID; the connection survives")
	c := established(b, 40090)
	c.raw(Client, pt.TCPOpts{Flags: fRST, Seq: c.end[Client].nxt + 1000000}, "client RST 1000000 above", StateInvalid)
	c.raw(Server, pt.TCPOpts{Flags: fRA, Seq: c.end[Server].nxt + 3000000, Ack: c.end[Client].nxt}, "server RST+ACK 3000000 above", StateInvalid)
	c.exchange(Client, "alive")
	return b
}

func tcpRSTClosing(v6 bool) *sb {
	b := newSB("tcp-rst-closing"+sfx(v6), "9.2", v6, dropInvalid,
		"conntrack_inexact_rst: once the connection is closing, any RST is accepted (no checks)")
	c := established(b, 40100)
	c.send(Server, fFA, "", "server FIN", StateEstablished)
	c.ack(Client)
	c.raw(Client, pt.TCPOpts{Flags: fRA, Seq: c.end[Client].nxt, Ack: c.end[Server].nxt}, "client RST+ACK (close with unread data)", StateEstablished)
	c.raw(Server, pt.TCPOpts{Flags: fRST, Seq: c.end[Server].nxt - 1000}, "spurious server RST with an old seq", StateEstablished)
	return b
}

func tcpRSTUnreplied(v6 bool) *sb {
	b := newSB("tcp-rst-unreplied"+sfx(v6), "2.8", v6, dropInvalid,
		"a RST on an entry that never saw a reply deletes it: the next packet of the tuple is new again")
	c := b.tcp(40110, 80)
	c.send(Client, fSYN, "", "client SYN", StateNew)
	c.raw(Client, pt.TCPOpts{Flags: fRST, Seq: c.end[Client].nxt}, "client RST (gives up)", StateNew)
	c.raw(Client, pt.TCPOpts{Flags: fACK, Seq: c.end[Client].nxt, Ack: 12345}, "client ACK (picked up as new)", StateNew)
	return b
}

func tcpSYNOnEstablished(v6 bool) *sb {
	b := newSB("tcp-syn-on-established"+sfx(v6), "9.5", v6, dropInvalid,
		"conntrack_synack_reuse: a new SYN on an established tuple is ignored, the challenge ACK passes, an exact RST closes, the next SYN starts anew")
	c := established(b, 40120)
	c.raw(Client, pt.TCPOpts{Flags: fSYN, Seq: c.end[Client].nxt + 2000, MSS: 1460, WScale: pt.NoWScale}, "client SYN on the established tuple", StateEstablished)
	c.raw(Server, pt.TCPOpts{Flags: fACK, Seq: c.end[Server].nxt, Ack: c.end[Client].nxt}, "server challenge ACK", StateEstablished)
	c.raw(Client, pt.TCPOpts{Flags: fRA, Seq: c.end[Client].nxt, Ack: c.end[Server].nxt}, "client RST+ACK at the acked seq", StateEstablished)
	c.end[Client].nxt += 2000
	c.send(Client, fSYN, "", "client SYN again", StateNew)
	c.send(Server, fSYNACK, "", "server SYN/ACK", StateEstablished)
	return b
}

func tcpTimeWaitReuse(v6 bool) *sb {
	b := newSB("tcp-time-wait-reuse"+sfx(v6), "2.6", v6, dropInvalid,
		"after a clean close (TIME_WAIT) a SYN on the same tuple creates a fresh connection")
	c := established(b, 40130)
	c.send(Client, fFA, "", "client FIN", StateEstablished)
	c.send(Server, fFA, "", "server FIN", StateEstablished)
	c.ack(Client)
	c.end[Client].nxt += 100000
	c.send(Client, fSYN, "", "client SYN, same ports, new ISN", StateNew)
	c.end[Server].nxt += 100000
	c.send(Server, fSYNACK, "", "server SYN/ACK", StateEstablished)
	c.send(Client, fACK, "", "client ACK", StateEstablished)
	c.exchange(Client, "second life")
	return b
}

func tcpCloseReuseIgnored(v6 bool) *sb {
	b := newSB("tcp-close-syn-ignored"+sfx(v6), "2.6", v6, dropInvalid,
		"after a RST from the server, a client SYN on the tuple is ignored (no FIN seen, RST from the other side) until the SYN/ACK resynchronises")
	c := established(b, 40140)
	c.raw(Server, pt.TCPOpts{Flags: fRA, Seq: c.end[Server].nxt, Ack: c.end[Client].nxt}, "server RST+ACK", StateEstablished)
	c.end[Client].nxt += 50000
	c.send(Client, fSYN, "", "client SYN on the closed tuple", "")
	c.end[Server].nxt += 70000
	c.send(Server, fSYNACK, "", "server SYN/ACK answering it", "")
	c.send(Client, fACK, "", "client ACK", "")
	c.exchange(Client, "data")
	return b
}

func tcpSYNACKRetrans(v6 bool) *sb {
	b := newSB("tcp-synack-retransmitted"+sfx(v6), "2.5", v6, dropInvalid,
		"retransmitted SYN and SYN/ACK before and after the final ACK")
	c := b.tcp(40150, 80)
	syn := c.send(Client, fSYN, "", "client SYN", StateNew)
	b.add(Client, pt.Clone(syn), "client SYN retransmitted", StateNew)
	sa := c.send(Server, fSYNACK, "", "server SYN/ACK", StateEstablished)
	b.add(Server, pt.Clone(sa), "server SYN/ACK retransmitted", StateEstablished)
	c.send(Client, fACK, "", "client ACK", StateEstablished)
	b.add(Server, pt.Clone(sa), "server SYN/ACK retransmitted after the handshake", StateEstablished)
	b.add(Client, pt.Clone(syn), "client SYN retransmitted after the handshake", StateEstablished)
	c.exchange(Client, "data")
	return b
}

func tcpSYNACKStale(v6 bool) *sb {
	b := newSB("tcp-synack-stale"+sfx(v6), "9.4", v6, dropInvalid,
		"conntrack_synack_old: a SYN/ACK acking a wrong seq is INVALID; the correct SYN/ACK 65535 below it is then accepted")
	c := b.tcp(40160, 80)
	c.end[Client].win = 65535
	syn := c.send(Client, fSYN, "", "client SYN", StateNew)
	c.raw(Server, pt.TCPOpts{Flags: fSYNACK, Seq: c.end[Server].isn + 65535, Ack: c.end[Client].isn + 12345, MSS: 1460, WScale: pt.NoWScale}, "stale server SYN/ACK (wrong ack)", StateInvalid)
	b.add(Client, pt.Clone(syn), "client SYN retransmitted", StateNew)
	c.send(Server, fSYNACK, "", "correct server SYN/ACK", StateEstablished)
	c.send(Client, fACK, "", "client ACK", StateEstablished)
	c.exchange(Client, "data")
	return b
}

func tcpSimultaneousOpen(v6 bool) *sb {
	b := newSB("tcp-simultaneous-open"+sfx(v6), "2.5", v6, dropInvalid,
		"both ends send a SYN; SYN/ACKs cross; the connection becomes established")
	c := b.tcp(40170, 5000)
	c.send(Client, fSYN, "", "client SYN", StateNew)
	srvSyn := c.raw(Server, pt.TCPOpts{Flags: fSYN, Seq: c.end[Server].nxt, MSS: 1460, WScale: pt.NoWScale}, "server SYN (simultaneous)", StateEstablished)
	_ = srvSyn
	c.end[Server].nxt++
	c.raw(Client, pt.TCPOpts{Flags: fSYNACK, Seq: c.end[Client].isn, Ack: c.end[Server].nxt, MSS: 1460, WScale: pt.NoWScale}, "client SYN/ACK", "")
	c.raw(Server, pt.TCPOpts{Flags: fSYNACK, Seq: c.end[Server].isn, Ack: c.end[Client].nxt, MSS: 1460, WScale: pt.NoWScale}, "server SYN/ACK", "")
	c.send(Client, fACK, "", "client ACK", "")
	c.send(Server, fACK, "", "server ACK", "")
	c.exchange(Client, "simul")
	c.exchange(Server, "taneous")
	return b
}

func tcpPickupLoose(v6 bool) *sb {
	b := newSB("tcp-pickup-loose"+sfx(v6), "2.4", v6, dropInvalid,
		"nf_conntrack_tcp_loose=1: a connection first seen mid-stream is picked up (NEW), then ESTABLISHED; windows are liberal")
	c := b.tcp(40180, 80)
	c.raw(Client, pt.TCPOpts{Flags: fPA, Seq: 777000, Ack: 999000, Payload: []byte("mid-stream")}, "client data, mid-stream", StateNew)
	c.raw(Server, pt.TCPOpts{Flags: fACK, Seq: 999000, Ack: 777010}, "server ACK", StateEstablished)
	c.raw(Client, pt.TCPOpts{Flags: fPA, Seq: 777010, Ack: 999000, Payload: []byte("more")}, "client data", StateEstablished)
	c.raw(Server, pt.TCPOpts{Flags: fPA, Seq: 999000 + 500000, Ack: 777014, Payload: []byte("far")}, "server data far out of window (liberal)", StateEstablished)
	d := b.tcp(40181, 80)
	d.raw(Client, pt.TCPOpts{Flags: fFA, Seq: 5, Ack: 6}, "FIN+ACK as the first packet", StateInvalid)
	d.raw(Client, pt.TCPOpts{Flags: fRA, Seq: 5, Ack: 6}, "RST+ACK as the first packet", StateInvalid)
	d.raw(Server, pt.TCPOpts{Flags: fSYNACK, Seq: 5, Ack: 6, MSS: 1460, WScale: pt.NoWScale}, "SYN/ACK as the first packet", StateInvalid)
	return b
}

func tcpPickupStrict(v6 bool) *sb {
	b := newSB("tcp-pickup-strict"+sfx(v6), "2.4", v6, dropInvalid,
		"nf_conntrack_tcp_loose=0: a mid-stream ACK is INVALID; a SYN still opens")
	b.sysctls(Sysctls{NoLoose: true})
	c := b.tcp(40190, 80)
	c.raw(Client, pt.TCPOpts{Flags: fPA, Seq: 777000, Ack: 999000, Payload: []byte("mid-stream")}, "client data, mid-stream", StateInvalid)
	c.raw(Server, pt.TCPOpts{Flags: fACK, Seq: 999000, Ack: 777010}, "server ACK", StateInvalid)
	d := b.tcp(40191, 80).handshake()
	d.exchange(Client, "ok")
	return b
}

func tcpWindowScale(v6 bool) *sb {
	b := newSB("tcp-window-scaling"+sfx(v6), "2.7", v6, dropInvalid,
		"both ends send window scale 7: a small raw window covers much more; beyond the scaled window is INVALID")
	c := b.tcp(40200, 80)
	c.end[Client].wscale, c.end[Server].wscale = 7, 7
	c.handshake()
	c.end[Client].win, c.end[Server].win = 1000, 1000 // x128 = 128000
	c.exchange(Client, "scaled")
	c.ack(Server)
	e, r := c.end[Client], c.end[Server]
	c.raw(Client, pt.TCPOpts{Flags: fPA, Seq: e.nxt + 100000, Ack: r.nxt, Win: 1000, Payload: []byte("inside scaled")}, "client data 100000 ahead (inside the scaled window)", StateEstablished)
	c.raw(Client, pt.TCPOpts{Flags: fPA, Seq: e.nxt + 200000, Ack: r.nxt, Win: 1000, Payload: []byte("overshoot")}, "client data 200000 ahead (overshoot: ignored)", StateEstablished)
	c.raw(Client, pt.TCPOpts{Flags: fPA, Seq: e.nxt + 400000, Ack: r.nxt, Win: 1000, Payload: []byte("outside")}, "client data 400000 ahead (outside)", StateInvalid)
	c.raw(Server, pt.TCPOpts{Flags: fPA, Seq: r.nxt + 90000, Ack: e.nxt, Win: 1000, Payload: []byte("inside too")}, "server data 90000 ahead", StateEstablished)
	return b
}

func tcpWindowScaleOneSided(v6 bool) *sb {
	b := newSB("tcp-window-scaling-one-sided"+sfx(v6), "2.7", v6, dropInvalid,
		"only the client sends window scale: scaling is off both ways, so the same data is INVALID")
	c := b.tcp(40210, 80)
	c.end[Client].wscale = 7
	c.handshake()
	c.end[Client].win, c.end[Server].win = 1000, 1000
	c.exchange(Client, "unscaled")
	c.ack(Server)
	e, r := c.end[Client], c.end[Server]
	c.raw(Client, pt.TCPOpts{Flags: fPA, Seq: e.nxt + 200000, Ack: r.nxt, Win: 1000, Payload: []byte("outside")}, "client data 200000 ahead", StateInvalid)
	c.raw(Client, pt.TCPOpts{Flags: fPA, Seq: e.nxt + 50000, Ack: r.nxt, Win: 1000, Payload: []byte("inside maxwin")}, "client data 50000 ahead", "")
	return b
}

// impossible flag combinations: all of FIN, SYN, RST, ACK, URG except the
// nine the tracker allows (PSH, ECE, CWR do not matter).
var allowedFlags = map[packet.TCPFlags]bool{
	fSYN: true, fSYN | fURG: true, fSYNACK: true, fRST: true, fRA: true,
	fFA: true, fFA | fURG: true, fACK: true, fACK | fURG: true,
}

func tcpImpossibleFlags(v6 bool) *sb {
	b := newSB("tcp-impossible-flags"+sfx(v6), "2.3", v6, dropInvalid,
		"every flag combination the tracker refuses, on an established connection (with and without PSH/ECE/CWR)")
	c := established(b, 40220)
	n := 0
	for f := packet.TCPFlags(0); f < 64; f++ {
		base := f & (packet.FIN | packet.SYN | packet.RST | packet.ACK | packet.URG)
		if f != base && f != base|packet.PSH {
			continue
		}
		if allowedFlags[base] {
			continue
		}
		fl := f
		if n%2 == 1 {
			fl |= packet.ECE | packet.CWR
		}
		n++
		c.raw(Client, pt.TCPOpts{Flags: fl, Seq: c.end[Client].nxt, Ack: c.end[Server].nxt, WScale: pt.NoWScale},
			"client flags "+fl.String(), StateInvalid)
	}
	c.exchange(Client, "alive")
	return b
}

func tcpAllowedFlags(v6 bool) *sb {
	b := newSB("tcp-allowed-flags"+sfx(v6), "2.3", v6, dropInvalid,
		"allowed combinations with URG, PSH, ECE, CWR pass")
	c := b.tcp(40230, 80)
	c.raw(Client, pt.TCPOpts{Flags: fSYN | packet.ECE | packet.CWR, Seq: c.end[Client].nxt, MSS: 1460, WScale: pt.NoWScale}, "client SYN+ECE+CWR", StateNew)
	c.end[Client].nxt++
	c.send(Server, fSYNACK|packet.ECE, "", "server SYN/ACK+ECE", StateEstablished)
	c.send(Client, fACK, "", "client ACK", StateEstablished)
	c.raw(Client, pt.TCPOpts{Flags: fACK | fURG | fPSH, Seq: c.end[Client].nxt, Ack: c.end[Server].nxt, Urg: 1, Payload: []byte("!")}, "client ACK+URG+PSH data", StateEstablished)
	c.end[Client].nxt++
	c.raw(Server, pt.TCPOpts{Flags: fACK | packet.ECE | packet.CWR, Seq: c.end[Server].nxt, Ack: c.end[Client].nxt}, "server ACK+ECE+CWR", StateEstablished)
	c.raw(Client, pt.TCPOpts{Flags: fFA | fURG, Seq: c.end[Client].nxt, Ack: c.end[Server].nxt}, "client FIN+ACK+URG", StateEstablished)
	return b
}

func tcpInvalidFirst(v6 bool) *sb {
	b := newSB("tcp-invalid-first-packet"+sfx(v6), "2.4", v6, gateway,
		"first packets that cannot create an entry: a bare RST, a FIN+ACK, NULL flags; a SYN+URG can")
	c := b.tcp(40240, 80)
	c.raw(Client, pt.TCPOpts{Flags: fRST, Seq: 1}, "RST as the first packet", StateInvalid)
	c.raw(Client, pt.TCPOpts{Flags: 0, Seq: 1}, "no flags as the first packet", StateInvalid)
	c.raw(Client, pt.TCPOpts{Flags: fSYN | fURG, Seq: 100, MSS: 1460, WScale: pt.NoWScale}, "SYN+URG as the first packet", StateNew)
	return b
}

func tcpBadChecksum(v6 bool) *sb {
	b := newSB("tcp-bad-checksum"+sfx(v6), "2.3", v6, dropInvalid,
		"a wrong TCP checksum is INVALID, on a new and on an established connection")
	c := b.tcp(40250, 80)
	syn := c.seg(Client, pt.TCPOpts{Flags: fSYN, Seq: c.end[Client].nxt, MSS: 1460})
	b.add(Client, pt.BadL4Checksum(syn), "SYN, bad checksum", StateInvalid)
	c.handshake()
	data := c.seg(Client, pt.TCPOpts{Flags: fPA, Seq: c.end[Client].nxt, Ack: c.end[Server].nxt, Payload: []byte("x")})
	b.add(Client, pt.BadL4Checksum(data), "data, bad checksum", StateInvalid)
	ack := c.seg(Server, pt.TCPOpts{Flags: fACK, Seq: c.end[Server].nxt, Ack: c.end[Client].nxt})
	b.add(Server, pt.BadL4Checksum(ack), "server ACK, bad checksum", StateInvalid)
	return b
}

func checksumOff(v6 bool) *sb {
	b := newSB("checksum-off"+sfx(v6), "2.3", v6, dropInvalid,
		"nf_conntrack_checksum=0: bad TCP, UDP and ICMP checksums are not checked; the packets are tracked normally")
	b.sysctls(Sysctls{NoChecksum: true})
	c := b.tcp(40255, 80)
	syn := c.seg(Client, pt.TCPOpts{Flags: fSYN, Seq: c.end[Client].isn, MSS: 1460})
	b.add(Client, pt.BadL4Checksum(syn), "SYN, bad checksum", StateNew)
	sa := c.seg(Server, pt.TCPOpts{Flags: fSYNACK, Seq: c.end[Server].isn, Ack: c.end[Client].isn + 1, MSS: 1460})
	b.add(Server, pt.BadL4Checksum(sa), "SYN/ACK, bad checksum", StateEstablished)
	u := pt.UDP(b.ep(Client, 2, 33600), b.ep(Server, 2, 53), pt.UDPOpts{Payload: []byte("query")})
	b.add(Client, pt.BadL4Checksum(u), "UDP, bad checksum", StateNew)
	typ := uint8(8)
	if v6 {
		typ = 128
	}
	e := pt.ICMP(b.host(Client, 2), b.host(Server, 2), pt.ICMPOpts{Type: typ, ID: 3, Seq: 1, Data: []byte("x")})
	b.add(Client, pt.BadL4Checksum(e), "echo request, bad checksum", StateNew)
	return b
}

func tcpTruncated(v6 bool) *sb {
	b := newSB("tcp-truncated"+sfx(v6), "2.3", v6, dropInvalid,
		"truncated TCP headers: data offset below 5, data offset past the segment, a 10-byte header; an IP length past the buffer never reaches conntrack")
	c := established(b, 40260)
	mk := func() []byte {
		return c.seg(Client, pt.TCPOpts{Flags: fPA, Seq: c.end[Client].nxt, Ack: c.end[Server].nxt, Payload: []byte("abcdefgh")})
	}
	b.add(Client, pt.SetDataOffset(mk(), 4), "data offset 4", StateInvalid)
	b.add(Client, pt.SetDataOffset(mk(), 15), "data offset 15 (past the segment)", StateInvalid)
	ip := 20
	if v6 {
		ip = 40
	}
	b.add(Client, pt.TruncateL4(mk(), ip+10), "10-byte TCP header", StateInvalid)
	b.add(Client, pt.Truncate(mk(), ip+20), "IP length longer than the packet", StateNone)
	c.exchange(Client, "alive")
	return b
}

func tcpLiberal(v6 bool) *sb {
	b := newSB("tcp-be-liberal"+sfx(v6), "2.7", v6, dropInvalid,
		"nf_conntrack_tcp_be_liberal=1: out-of-window data and ACKs are accepted; invalid flags are still INVALID")
	b.sysctls(Sysctls{BeLiberal: true})
	c := established(b, 40270)
	e, r := c.end[Client], c.end[Server]
	c.raw(Client, pt.TCPOpts{Flags: fPA, Seq: e.nxt + 500000, Ack: r.nxt, Payload: []byte("far")}, "client data far above window", StateEstablished)
	c.raw(Server, pt.TCPOpts{Flags: fACK, Seq: r.nxt, Ack: e.nxt + 900000}, "server ACK above sent", StateEstablished)
	c.raw(Client, pt.TCPOpts{Flags: fSYN | fFIN, Seq: e.nxt, WScale: pt.NoWScale}, "client SYN+FIN", StateInvalid)
	return b
}

func tcpIgnoreInvalidRST(v6 bool) *sb {
	b := newSB("tcp-ignore-invalid-rst"+sfx(v6), "2.6", v6, dropInvalid,
		"nf_conntrack_tcp_ignore_invalid_rst=1: a RST below the max ACK is no longer INVALID")
	b.sysctls(Sysctls{IgnoreInvalidRST: true})
	c := established(b, 40280)
	c.raw(Server, pt.TCPOpts{Flags: fRST, Seq: c.end[Server].nxt - 5}, "server RST below the client's max ACK", "")
	c.exchange(Client, "after")
	return b
}

func tcpAckLossStall(v6 bool) *sb {
	b := newSB("tcp-ack-loss-stall"+sfx(v6), "9.6", v6, dropInvalid,
		"conntrack_ack_loss_stall: a retransmission of data acknowledged more than a window ago is ignored, not INVALID")
	c := b.tcp(40290, 80)
	c.end[Server].win = 65535
	c.end[Client].win = 65535
	c.handshake()
	first := c.end[Client].nxt
	chunk := make([]byte, 1400)
	for i := range chunk {
		chunk[i] = 'a' + byte(i%26)
	}
	for range 50 {
		c.send(Client, fPA, string(chunk), "client 1400 bytes", "")
		c.ack(Server)
	}
	c.raw(Client, pt.TCPOpts{Flags: fPA, Seq: first, Ack: c.end[Server].nxt, Payload: chunk}, "client retransmits the first segment", StateEstablished)
	c.ack(Server)
	return b
}

func tcpSynChallengeAck(v6 bool) *sb {
	b := newSB("tcp-syn-challenge-ack"+sfx(v6), "9.3", v6, dropInvalid,
		"conntrack_syn_challenge_ack: a SYN answered by an ACK of an old incarnation; the RST for it and the SYN retry pass")
	c := b.tcp(40300, 80)
	syn := c.send(Client, fSYN, "", "client SYN", StateNew)
	c.raw(Server, pt.TCPOpts{Flags: fACK, Seq: 42424242, Ack: 31313131}, "server challenge ACK (old incarnation)", StateEstablished)
	c.raw(Client, pt.TCPOpts{Flags: fRST, Seq: 31313131}, "client RST at the challenge ACK's ack", StateEstablished)
	b.add(Client, pt.Clone(syn), "client SYN again", StateNew)
	c.send(Server, fSYNACK, "", "server SYN/ACK", StateEstablished)
	c.send(Client, fACK, "", "client ACK", StateEstablished)
	return b
}

func tcpNotrack(v6 bool) *sb {
	r := dropInvalid
	r.Notrack = []Match{{Proto: "tcp", DPort: 8888}, {Proto: "udp", DPort: 5353}}
	b := newSB("notrack"+sfx(v6), "1.1", v6, r,
		"notrack for TCP 8888 and UDP 5353: UNTRACKED both ways (the reply is not matched by the notrack rule but has no entry: a mid-stream pickup, NEW)")
	c := b.tcp(40310, 8888)
	c.send(Client, fSYN, "", "client SYN to a notrack port", StateUntracked)
	c.send(Server, fSYNACK, "", "server SYN/ACK (not notracked: invalid first packet)", StateInvalid)
	b.add(Client, pt.UDP(b.ep(Client, 2, 5353), b.ep(Server, 2, 5353), pt.UDPOpts{Payload: []byte("mdns")}), "UDP to a notrack port", StateUntracked)
	b.add(Server, pt.UDP(b.ep(Server, 2, 5353), b.ep(Client, 2, 5353), pt.UDPOpts{Payload: []byte("mdns")}), "UDP back (source port 5353, destination 5353: notrack)", StateUntracked)
	b.add(Server, pt.UDP(b.ep(Server, 2, 5353), b.ep(Client, 2, 6000), pt.UDPOpts{Payload: []byte("x")}), "UDP from 5353 to 6000 (tracked)", StateNew)
	return b
}

// --- 3: UDP, ICMP, generic ---------------------------------------------------

func udpNewReply(v6 bool) *sb {
	b := newSB("udp-new-reply"+sfx(v6), "3.1", v6, gateway,
		"UDP: the first datagram is NEW, the reply ESTABLISHED, later ones ESTABLISHED; an unsolicited datagram to a closed port is refused")
	q := pt.UDP(b.ep(Client, 2, 33333), b.ep(Server, 2, 53), pt.UDPOpts{Payload: []byte("query")})
	b.add(Client, q, "client query", StateNew)
	b.add(Server, pt.UDP(b.ep(Server, 2, 53), b.ep(Client, 2, 33333), pt.UDPOpts{Payload: []byte("answer")}), "server answer", StateEstablished)
	b.add(Client, pt.UDP(b.ep(Client, 2, 33333), b.ep(Server, 2, 53), pt.UDPOpts{Payload: []byte("again")}), "client again", StateEstablished)
	b.add(Server, pt.UDP(b.ep(Server, 2, 53), b.ep(Client, 2, 33334), pt.UDPOpts{Payload: []byte("unsolicited")}), "server to another client port", StateNew)
	b.add(Client, pt.UDP(b.ep(Client, 2, 33335), b.ep(Server, 2, 54), pt.UDPOpts{Payload: []byte("x")}), "client to a refused port", StateNew)
	return b
}

func udpBad(v6 bool) *sb {
	b := newSB("udp-malformed"+sfx(v6), "3.1", v6, dropInvalid,
		"UDP: bad checksum, a zero checksum (valid over IPv4), a length field past the data, a length below 8, a 4-byte header")
	mk := func(port uint16) []byte {
		return pt.UDP(b.ep(Client, 2, port), b.ep(Server, 2, 53), pt.UDPOpts{Payload: []byte("payload!")})
	}
	b.add(Client, pt.BadL4Checksum(mk(33400)), "bad checksum", StateInvalid)
	zero := pt.UDP(b.ep(Client, 2, 33401), b.ep(Server, 2, 53), pt.UDPOpts{Payload: []byte("nocsum"), NoChecksum: true})
	if v6 {
		b.add(Client, zero, "zero checksum over IPv6", "")
	} else {
		b.add(Client, zero, "zero checksum", StateNew)
	}
	b.add(Client, pt.SetUDPLength(mk(33402), 40), "length field past the data", StateInvalid)
	b.add(Client, pt.SetUDPLength(mk(33403), 4), "length field 4", StateInvalid)
	ip := 20
	if v6 {
		ip = 40
	}
	b.add(Client, pt.TruncateL4(mk(33404), ip+4), "4-byte UDP header", StateInvalid)
	return b
}

func icmpEcho(v6 bool) *sb {
	typReq, typRep := uint8(8), uint8(0)
	if v6 {
		typReq, typRep = 128, 129
	}
	b := newSB("icmp-echo"+sfx(v6), map[bool]string{false: "3.2", true: "3.3"}[v6], v6, dropInvalid,
		"ICMP (ICMPv6 over IPv6) echo request NEW, reply ESTABLISHED, the next request ESTABLISHED, a duplicate reply ESTABLISHED; a reply without request and a bad checksum are INVALID")
	c, s := b.host(Client, 2), b.host(Server, 2)
	req := func(from Side, typ uint8, id, seq uint16) []byte {
		src, dst := c, s
		if from == Server {
			src, dst = s, c
		}
		return pt.ICMP(src, dst, pt.ICMPOpts{Type: typ, ID: id, Seq: seq, Data: []byte("pingdata")})
	}
	b.add(Client, req(Client, typReq, 0x1234, 1), "echo request", StateNew)
	rep := b.add(Server, req(Server, typRep, 0x1234, 1), "echo reply", StateEstablished)
	b.add(Client, req(Client, typReq, 0x1234, 2), "second echo request", StateEstablished)
	b.add(Server, pt.Clone(rep), "duplicate echo reply", StateEstablished)
	b.add(Server, req(Server, typRep, 0x4321, 1), "echo reply without request", StateInvalid)
	b.add(Client, pt.BadL4Checksum(req(Client, typReq, 0x5555, 1)), "echo request, bad checksum", StateInvalid)
	b.add(Server, req(Server, typReq, 0x1234, 9), "echo request from the server, same id", StateNew)
	ip := 20
	if v6 {
		ip = 40
	}
	b.add(Client, pt.TruncateL4(req(Client, typReq, 0x6666, 1), ip+4), "4-byte ICMP header", StateInvalid)
	return b
}

func icmpOddTypes(v6 bool) *sb {
	b := newSB("icmp-odd-types"+sfx(v6), "3.2", v6, dropInvalid,
		"ICMP types without a tracker: timestamp request/reply pair, router advertisement, type above 18; ICMPv6 neighbour discovery and MLD are UNTRACKED, unknown informational types INVALID")
	c, s := b.host(Client, 2), b.host(Server, 2)
	if !v6 {
		b.s.Section = "3.2"
		b.add(Client, pt.ICMP(c, s, pt.ICMPOpts{Type: 13, ID: 7, Seq: 1, Data: make([]byte, 12)}), "timestamp request", StateNew)
		b.add(Server, pt.ICMP(s, c, pt.ICMPOpts{Type: 14, ID: 7, Seq: 1, Data: make([]byte, 12)}), "timestamp reply", StateEstablished)
		b.add(Client, pt.ICMP(c, s, pt.ICMPOpts{Type: 9, Data: make([]byte, 8)}), "router advertisement", StateInvalid)
		b.add(Client, pt.ICMP(c, s, pt.ICMPOpts{Type: 40, Data: make([]byte, 8)}), "type 40", StateInvalid)
		b.add(Client, pt.ICMP(c, s, pt.ICMPOpts{Type: 17, ID: 9, Data: make([]byte, 4)}), "address mask request", StateNew)
		b.add(Server, pt.ICMP(s, c, pt.ICMPOpts{Type: 16, ID: 10}), "information reply without request", StateInvalid)
		return b
	}
	b.s.Section = "3.3"
	b.add(Client, pt.ICMP(c, s, pt.ICMPOpts{Type: 135, TTL: 255, Data: make([]byte, 16)}), "neighbour solicitation", StateUntracked)
	b.add(Client, pt.ICMP(c, s, pt.ICMPOpts{Type: 136, TTL: 255, Data: make([]byte, 16)}), "neighbour advertisement", StateUntracked)
	b.add(Client, pt.ICMP(c, s, pt.ICMPOpts{Type: 133, TTL: 255}), "router solicitation", StateUntracked)
	b.add(Client, pt.ICMP(c, s, pt.ICMPOpts{Type: 131, Data: make([]byte, 16)}), "MLD report", StateUntracked)
	b.add(Client, pt.ICMP(c, s, pt.ICMPOpts{Type: 200, ID: 5}), "type 200", StateInvalid)
	b.add(Client, pt.ICMP(c, s, pt.ICMPOpts{Type: 139, ID: 5, Data: make([]byte, 8)}), "node information query", StateNew)
	b.add(Server, pt.ICMP(s, c, pt.ICMPOpts{Type: 140, ID: 5, Data: make([]byte, 8)}), "node information reply", StateEstablished)
	b.add(Client, pt.ICMP6Redirect(c, s, b.host(Client, 9), b.host(Server, 7), nil), "redirect from a global source", StateInvalid)
	return b
}

func genericProto(v6 bool) *sb {
	b := newSB("generic-protocol"+sfx(v6), "3.4", v6, gateway,
		"an unknown protocol (253) is tracked by addresses: NEW, then ESTABLISHED both ways (the gateway rules allow no new 253: dropped)")
	b.s.Rules = dropInvalid
	c, s := b.host(Client, 2), b.host(Server, 2)
	b.add(Client, pt.Raw(c, s, 253, []byte("experimental"), pt.IPOpts{}), "client proto 253", StateNew)
	b.add(Server, pt.Raw(s, c, 253, []byte("reply"), pt.IPOpts{}), "server proto 253", StateEstablished)
	b.add(Client, pt.Raw(c, s, 253, []byte("again"), pt.IPOpts{}), "client proto 253 again", StateEstablished)
	return b
}

// --- 4: ICMP errors ----------------------------------------------------------

// icmpErr builds an ICMP (v4) or ICMPv6 error from src to dst quoting q.
func (b *sb) icmpErr(src, dst string, code uint8, q []byte) []byte {
	if b.v6 {
		return pt.ICMP6Error(src, dst, 1, code, q)
	}
	if len(q) > 28+20 {
		q = q[:28+20]
	}
	return pt.ICMP4Error(src, dst, 3, code, q)
}

func icmpErrorKnown(v6 bool) *sb {
	b := newSB("icmp-error-known"+sfx(v6), "4", v6, gateway,
		"ICMP errors about known connections from both sides and from routers on the path are RELATED; the quoted TCP seq is not checked")
	c := b.tcp(40400, 80)
	syn := c.send(Client, fSYN, "", "client SYN", StateNew)
	sa := c.send(Server, fSYNACK, "", "server SYN/ACK", StateEstablished)
	c.send(Client, fACK, "", "client ACK", StateEstablished)
	data := c.data(Client, "request", "")
	b.add(Server, b.icmpErr(b.host(Server, 9), b.host(Client, 2), 1, data), "host unreachable from a router near the server, quoting client data", StateRelated)
	b.add(Server, b.icmpErr(b.host(Server, 2), b.host(Client, 2), 4, syn), "error from the server quoting the client SYN", StateRelated)
	b.add(Client, b.icmpErr(b.host(Client, 2), b.host(Server, 2), 3, sa), "port unreachable from the client quoting the SYN/ACK", StateRelated)
	b.add(Client, b.icmpErr(b.host(Client, 8), b.host(Server, 2), 0, sa), "error from a router near the client", StateRelated)
	bogus := c.seg(Client, pt.TCPOpts{Flags: fPA, Seq: c.end[Client].nxt + 999999, Ack: 5, Payload: []byte("zz")})
	b.add(Server, b.icmpErr(b.host(Server, 9), b.host(Client, 2), 1, bogus), "error quoting a segment with an absurd seq", StateRelated)
	u := pt.UDP(b.ep(Client, 2, 33500), b.ep(Server, 2, 53), pt.UDPOpts{Payload: []byte("q")})
	b.add(Client, u, "client UDP query", StateNew)
	b.add(Server, b.icmpErr(b.host(Server, 2), b.host(Client, 2), map[bool]uint8{false: 3, true: 4}[v6], u), "port unreachable about the UDP query", StateRelated)
	if v6 {
		ptb := pt.ICMP(b.host(Server, 9), b.host(Client, 2), pt.ICMPOpts{Type: 2, Rest: 1280, Data: data})
		b.add(Server, ptb, "packet too big", StateRelated)
		te := pt.ICMP(b.host(Server, 9), b.host(Client, 2), pt.ICMPOpts{Type: 3, Data: data})
		b.add(Server, te, "time exceeded", StateRelated)
	} else {
		q := data[:28]
		fn := pt.ICMP(b.host(Server, 9), b.host(Client, 2), pt.ICMPOpts{Type: 3, Code: 4, Rest: 1400, Data: q})
		b.add(Server, fn, "fragmentation needed (28 bytes quoted)", StateRelated)
		te := pt.ICMP(b.host(Server, 9), b.host(Client, 2), pt.ICMPOpts{Type: 11, Data: q})
		b.add(Server, te, "time exceeded", StateRelated)
		pp := pt.ICMP(b.host(Server, 9), b.host(Client, 2), pt.ICMPOpts{Type: 12, Rest: 20 << 24, Data: q})
		b.add(Server, pp, "parameter problem", StateRelated)
	}
	return b
}

func icmpErrorUnknown(v6 bool) *sb {
	b := newSB("icmp-error-unknown"+sfx(v6), "4", v6, gateway,
		"ICMP errors about connections that do not exist are INVALID and create nothing; a quote too short for ports too")
	c := b.tcp(40410, 80)
	ghost := c.seg(Client, pt.TCPOpts{Flags: fSYN, Seq: 1, MSS: 1460})
	b.add(Server, b.icmpErr(b.host(Server, 9), b.host(Client, 2), 1, ghost), "error quoting a SYN never seen", StateInvalid)
	ghostS := c.seg(Server, pt.TCPOpts{Flags: fSYNACK, Seq: 1, Ack: 2, MSS: 1460})
	b.add(Client, b.icmpErr(b.host(Client, 2), b.host(Server, 2), 3, ghostS), "client error quoting a SYN/ACK never seen", StateInvalid)
	c.handshake()
	data := c.data(Client, "x", "")
	ip := 20
	if v6 {
		ip = 40
	}
	b.add(Server, b.icmpErr(b.host(Server, 9), b.host(Client, 2), 1, data[:ip+2]), "error quoting only 2 bytes of TCP", StateInvalid)
	return b
}

func icmpErrorAboutError(v6 bool) *sb {
	b := newSB("icmp-error-about-error"+sfx(v6), "4", v6, dropInvalid,
		"an ICMP error quoting an ICMP error is INVALID (from both sides), even when the inner error is about a known connection")
	c := b.tcp(40420, 80).handshake()
	data := c.data(Client, "x", "")
	inner := b.add(Server, b.icmpErr(b.host(Server, 9), b.host(Client, 2), 1, data), "error about client data", StateRelated)
	b.add(Client, b.icmpErr(b.host(Client, 2), b.host(Server, 9), 3, inner), "client error quoting that error", StateInvalid)
	sdata := c.data(Server, "y", "")
	inner2 := b.add(Client, b.icmpErr(b.host(Client, 8), b.host(Server, 2), 1, sdata), "error about server data", StateRelated)
	b.add(Server, b.icmpErr(b.host(Server, 2), b.host(Client, 8), 3, inner2), "server error quoting that error", StateInvalid)
	return b
}

func icmpErrorOuterDaddr(v6 bool) *sb {
	b := newSB("icmp-error-outer-daddr"+sfx(v6), "4", v6, dropInvalid,
		"an error about a known connection sent to an address other than the connection's end is INVALID")
	c := b.tcp(40430, 80).handshake()
	data := c.data(Client, "x", "")
	b.add(Server, b.icmpErr(b.host(Server, 9), b.host(Client, 5), 1, data), "error about client data to another client address", StateInvalid)
	sdata := c.data(Server, "y", "")
	b.add(Client, b.icmpErr(b.host(Client, 9), b.host(Server, 6), 1, sdata), "error about server data to another server address", StateInvalid)
	b.add(Client, b.icmpErr(b.host(Client, 9), b.host(Server, 2), 1, sdata), "the same error to the server itself", StateRelated)
	return b
}

func icmpErrorAboutEcho(v6 bool) *sb {
	b := newSB("icmp-error-about-echo"+sfx(v6), "4", v6, dropInvalid,
		"an error quoting a known echo request is RELATED; quoting an echo reply without request INVALID")
	c, s := b.host(Client, 2), b.host(Server, 2)
	typReq, typRep := uint8(8), uint8(0)
	if v6 {
		typReq, typRep = 128, 129
	}
	req := b.add(Client, pt.ICMP(c, s, pt.ICMPOpts{Type: typReq, ID: 77, Seq: 1, Data: []byte("abcdefgh")}), "echo request", StateNew)
	b.add(Server, b.icmpErr(b.host(Server, 9), c, 0, req), "unreachable quoting the echo request", StateRelated)
	rep := pt.ICMP(s, c, pt.ICMPOpts{Type: typRep, ID: 78, Seq: 1, Data: []byte("abcdefgh")})
	b.add(Client, b.icmpErr(b.host(Client, 9), s, 0, rep), "unreachable quoting an unknown echo reply", StateInvalid)
	return b
}

// --- 5, 6: FTP ---------------------------------------------------------------

// ftp is an FTP control connection after the banner and USER (the first
// segment of each direction is never parsed).
func ftpControl(b *sb, cport, port uint16) *tcpConn {
	c := b.tcp(cport, port).handshake()
	c.data(Server, "220 FTP ready\r\n", "server banner")
	c.ack(Client)
	c.data(Client, "USER anonymous\r\n", "client USER")
	c.ack(Server)
	c.data(Server, "331 Password please\r\n", "server 331")
	c.ack(Client)
	return c
}

// portCmd is PORT (or EPRT on IPv6) announcing addr:port.
func (b *sb) portCmd(host uint8, port uint16) string {
	if b.v6 {
		return fmt.Sprintf("EPRT |2|%s|%d|\r\n", b.addr(Client, host), port)
	}
	a := b.addr(Client, host).As4()
	return fmt.Sprintf("PORT %d,%d,%d,%d,%d,%d\r\n", a[0], a[1], a[2], a[3], port>>8, port&0xff)
}

// dataConn is a data connection initiated by init to a port on the other
// side, from sport.
func (b *sb) dataConn(init Side, sport, dport uint16) *tcpConn {
	if init == Client {
		return b.tcp(sport, dport)
	}
	c := b.tcp(dport, sport)
	c.end[Server].isn, c.end[Server].nxt = 7000000, 7000000
	return c
}

func ftpActive(v6 bool) *sb {
	b := newSB("ftp-active"+sfx(v6), "6.2", v6, ftpRules(21, true, 21),
		"active mode: PORT (EPRT on IPv6) from the client; the server's data connection from port 20 is RELATED, its reply ESTABLISHED")
	c := ftpControl(b, 40500, 21)
	c.data(Client, b.portCmd(2, 50000), "client PORT/EPRT")
	c.data(Server, "200 PORT command successful\r\n", "server 200")
	c.data(Client, "LIST\r\n", "client LIST")
	d := b.dataConn(Server, 20, 50000)
	d.handshakeFrom(Server, StateRelated)
	d.exchange(Server, "file1\r\nfile2\r\n")
	d.send(Server, fFA, "", "server FIN on data", StateEstablished)
	return b
}

func ftpPassive(v6 bool) *sb {
	name, reply := "ftp-pasv", "227 Entering Passive Mode (10,0,2,2,195,81).\r\n"
	if v6 {
		// PASV's 227 on IPv6 parses but its address cannot match: no
		// expectation.
		name = "ftp-pasv"
	}
	b := newSB(name+sfx(v6), "6.2", v6, ftpRules(21, true, 21),
		"passive mode: the server's 227 reply; the client's data connection is RELATED (over IPv6 the 227's IPv4 address never matches: NEW)")
	c := ftpControl(b, 40510, 21)
	c.data(Client, "PASV\r\n", "client PASV")
	c.data(Server, reply, "server 227")
	c.ack(Client)
	d := b.dataConn(Client, 40511, 50001)
	want := StateRelated
	if v6 {
		want = StateNew
	}
	d.send(Client, fSYN, "", "client data SYN", want)
	if !v6 {
		d.send(Server, fSYNACK, "", "server SYN/ACK", StateEstablished)
		d.send(Client, fACK, "", "client ACK", StateEstablished)
	}
	return b
}

func ftpEPRT(v6 bool) *sb {
	b := newSB("ftp-eprt"+sfx(v6), "6.3", v6, ftpRules(21, true, 21),
		"EPRT with the family's protocol digit (1 on IPv4, 2 on IPv6) makes the server's data connection RELATED; the other digit is a parse failure: dropped")
	c := ftpControl(b, 40520, 21)
	if v6 {
		c.data(Client, fmt.Sprintf("EPRT |2|%s|50010|\r\n", b.addr(Client, 2)), "client EPRT |2|")
	} else {
		c.data(Client, fmt.Sprintf("EPRT |1|%s|50010|\r\n", b.addr(Client, 2)), "client EPRT |1|")
	}
	c.ack(Server)
	d := b.dataConn(Server, 20, 50010)
	d.handshakeFrom(Server, StateRelated)
	wrong := "EPRT |2|fd00:1::2|50011|\r\n"
	if v6 {
		wrong = "EPRT |1|10.0.1.2|50011|\r\n"
	}
	c.data(Client, wrong, "client EPRT with the other family's digit (dropped by the helper)")
	return b
}

func ftpEPSV(v6 bool) *sb {
	b := newSB("ftp-epsv"+sfx(v6), "6.3", v6, ftpRules(21, true, 21),
		"EPSV: the server's 229 reply makes the client's data connection RELATED; a 229 without '(' is dropped")
	c := ftpControl(b, 40530, 21)
	c.data(Client, "EPSV\r\n", "client EPSV")
	c.data(Server, "229 Entering Extended Passive Mode (|||50020|)\r\n", "server 229")
	c.ack(Client)
	d := b.dataConn(Client, 40531, 50020)
	d.handshakeFrom(Client, StateRelated)
	d.exchange(Client, "STOR data")
	c.data(Server, "229 no parenthesis\r\n", "server 229 without '(' (dropped)")
	return b
}

func ftpBounce(v6 bool) *sb {
	b := newSB("ftp-bounce"+sfx(v6), "6.5", v6, ftpRules(21, true, 21),
		"FTP bounce: a PORT announcing a third host creates no expectation (the command passes); a data connection to it is NEW and refused")
	c := ftpControl(b, 40540, 21)
	c.data(Client, b.portCmd(77, 50030), "client PORT for another host")
	c.ack(Server)
	d := b.tcp(50030, 20)
	d.end[Client].host = 77
	d.send(Server, fSYN, "", "server SYN to the bounce target", StateNew)
	e := b.dataConn(Server, 20, 50030)
	e.send(Server, fSYN, "", "server SYN to the client at that port", StateNew)
	return b
}

func ftpSplitCommand(v6 bool) *sb {
	b := newSB("ftp-split-command"+sfx(v6), "6.4", v6, ftpRules(21, true, 21),
		"a PORT split across two segments: the first part is dropped by the helper, the second is not parsed; the data connection is NEW")
	c := ftpControl(b, 40550, 21)
	cmd := b.portCmd(2, 50040)
	cut := len(cmd) / 2
	c.data(Client, cmd[:cut], "client first half of the command")
	c.data(Client, cmd[cut:], "client second half")
	c.ack(Server)
	d := b.dataConn(Server, 20, 50040)
	d.send(Server, fSYN, "", "server data SYN", StateNew)
	return b
}

func ftpSecondPort(v6 bool) *sb {
	b := newSB("ftp-second-port"+sfx(v6), "5.5", v6, ftpRules(21, true, 21),
		"a second PORT on the same control connection replaces the first expectation (at most one per connection)")
	c := ftpControl(b, 40560, 21)
	c.data(Client, b.portCmd(2, 50050), "client PORT 50050")
	c.data(Server, "200 ok\r\n", "server 200")
	c.data(Client, b.portCmd(2, 50051), "client PORT 50051")
	c.ack(Server)
	d := b.dataConn(Server, 20, 50050)
	d.send(Server, fSYN, "", "server SYN to the first port", StateNew)
	e := b.dataConn(Server, 20, 50051)
	e.send(Server, fSYN, "", "server SYN to the second port", StateRelated)
	return b
}

func ftpExpectationReused(v6 bool) *sb {
	b := newSB("ftp-expectation-reused"+sfx(v6), "5.3", v6, ftpRules(21, true, 21),
		"an expectation is used once: a second data connection to the announced port (other source port) is NEW")
	c := ftpControl(b, 40570, 21)
	c.data(Client, "EPSV\r\n", "client EPSV")
	c.data(Server, "229 Entering Extended Passive Mode (|||50060|)\r\n", "server 229")
	c.ack(Client)
	d := b.dataConn(Client, 40571, 50060)
	d.handshakeFrom(Client, StateRelated)
	e := b.dataConn(Client, 40572, 50060)
	e.send(Client, fSYN, "", "second client SYN to the same port", StateNew)
	return b
}

func ftpWrongDirection(v6 bool) *sb {
	b := newSB("ftp-wrong-direction"+sfx(v6), "5.2", v6, ftpRules(21, true, 21),
		"after PORT the server is expected to connect; a SYN from the client to the server at that port is NEW; the right one is then RELATED")
	c := ftpControl(b, 40580, 21)
	c.data(Client, b.portCmd(2, 50070), "client PORT 50070")
	c.ack(Server)
	d := b.dataConn(Client, 50070, 50070)
	d.send(Client, fSYN, "", "client SYN to server:50070 (wrong direction)", StateNew)
	e := b.dataConn(Server, 20, 50070)
	e.send(Server, fSYN, "", "server SYN to client:50070", StateRelated)
	return b
}

func ftpNoHelper(v6 bool) *sb {
	b := newSB("ftp-no-helper"+sfx(v6), "5.6", v6, ftpRules(21, false, 0),
		"no helper attached (no automatic assignment): PORT and 227 create nothing, malformed commands pass")
	c := ftpControl(b, 40590, 21)
	c.data(Client, b.portCmd(2, 50080), "client PORT")
	c.data(Client, "PORT 1,2,3\r\n", "malformed PORT (passes: no helper)")
	c.ack(Server)
	d := b.dataConn(Server, 20, 50080)
	d.send(Server, fSYN, "", "server data SYN", StateNew)
	return b
}

func ftpNonStandardPort(v6 bool) *sb {
	b := newSB("ftp-non-standard-port"+sfx(v6), "5.6", v6, ftpRules(2121, true, 2121),
		"the helper attached to port 2121: a control connection there works; one to port 21 gets no helper")
	b.s.Rules.Rules = append(b.s.Rules.Rules, Rule{States: []string{StateNew}, Proto: "tcp", DPort: 21, Action: "accept"})
	c := ftpControl(b, 40600, 2121)
	c.data(Client, b.portCmd(2, 50090), "client PORT on the 2121 control connection")
	c.ack(Server)
	d := b.dataConn(Server, 20, 50090)
	d.send(Server, fSYN, "", "server data SYN", StateRelated)
	o := ftpControl(b, 40601, 21)
	o.data(Client, b.portCmd(2, 50091), "client PORT on a port-21 control connection")
	o.ack(Server)
	e := b.dataConn(Server, 20, 50091)
	e.send(Server, fSYN, "", "server data SYN for it", StateNew)
	return b
}

func ftpMalformed(v6 bool) *sb {
	b := newSB("ftp-malformed"+sfx(v6), "6.4", v6, ftpRules(21, true, 21),
		"malformed commands are dropped by the helper: too few numbers, a space before CR, a bare 'PORT', a 227 without digits")
	c := ftpControl(b, 40610, 21)
	for _, cmd := range []string{"PORT 10,0,1,2,4\r\n", "PORT 10,0,1,2,4,1 \r\n", "PORT\r\n"} {
		b.add(Client, c.seg(Client, pt.TCPOpts{Flags: fPA, Seq: c.end[Client].nxt, Ack: c.end[Server].nxt, Payload: []byte(cmd)}),
			fmt.Sprintf("client %q", cmd), StateEstablished)
	}
	c.data(Client, "NOOP\r\n", "client NOOP")
	c.data(Server, "227 no numbers here\r\n", "server 227 without digits")
	c.data(Server, "200 ok\r\n", "server 200")
	return b
}

func ftpFirstSegment(v6 bool) *sb {
	b := newSB("ftp-first-segment"+sfx(v6), "6.1", v6, ftpRules(21, true, 21),
		"the first data segment of each direction is never parsed: a PORT sent first creates nothing")
	c := b.tcp(40620, 21).handshake()
	c.data(Client, b.portCmd(2, 50100), "client PORT as its first segment")
	c.ack(Server)
	d := b.dataConn(Server, 20, 50100)
	d.send(Server, fSYN, "", "server data SYN", StateNew)
	return b
}
