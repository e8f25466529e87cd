package conntrack

import (
	"fmt"
	"testing"
	"time"

	"github.com/tunrouter/router/packet"
	"github.com/tunrouter/router/packet/packettest"
)

// Tests of Track/Commit/Discard per protocol (reference sections 1, 3, 4
// and 5), checksums and decoder errors, expectations, helpers, and the
// section 9 selftests that involve the table, all with real packets.

const (
	fSYN = packet.SYN
	fACK = packet.ACK
	fFIN = packet.FIN
	fRST = packet.RST
	fPSH = packet.PSH
)

// tbFamilies are the address pairs the per-family tests run with.
var tbFamilies = []struct {
	name          string
	cli, srv, rtr string // addresses without ports
	ep            func(addr string, port int) string
}{
	{"ipv4", tbCli4, tbSrv4, tbRtr4, func(a string, p int) string { return fmt.Sprintf("%s:%d", a, p) }},
	{"ipv6", tbCli6, tbSrv6, tbRtr6, func(a string, p int) string { return fmt.Sprintf("[%s]:%d", a, p) }},
}

func TestTrackTCPLifecycle(t *testing.T) {
	for _, fam := range tbFamilies {
		t.Run(fam.name, func(t *testing.T) {
			h := newTB(t, nil)
			x := newTBTCP(fam.ep(fam.cli, 40000), fam.ep(fam.srv, 80), 1000, 900000)
			k := x.key()
			to := DefaultConfig().TCP.Timeouts

			r, p := h.track(x.cl(fSYN, 0))
			wantRes(t, "SYN", r, New, 0)
			if r.TCPState != TCPSynSent || r.Status&StatusSeenReply != 0 || !r.IsNewEntry() {
				t.Fatalf("SYN: state %v status %v new %v", r.TCPState, r.Status, r.IsNewEntry())
			}
			h.absent(k)
			h.tab.Commit(&r, p, h.now)
			info := h.entry(k)
			id := info.ID
			if info.Status&(StatusConfirmed|StatusSeenReply) != StatusConfirmed || info.TCPState != TCPSynSent {
				t.Fatalf("after SYN: status %v state %v", info.Status, info.TCPState)
			}
			h.wantTimeout("SYN_SENT", k, to[TCPSynSent])

			h.adv(time.Second)
			r = h.pass(x.sv(fSYN|fACK, 0))
			wantRes(t, "SYN/ACK", r, EstablishedReply, 0)
			if r.Status&StatusSeenReply == 0 || r.Status&StatusAssured != 0 || r.TCPState != TCPSynRecv {
				t.Fatalf("SYN/ACK: status %v state %v", r.Status, r.TCPState)
			}
			if got, d, _ := h.tab.Lookup(k.Reverse(), h.now); got.ID != id || d != Reply {
				t.Fatalf("reply tuple: id %v dir %v, want %v reply", got.ID, d, id)
			}
			h.wantTimeout("SYN_RECV", k, to[TCPSynRecv])

			r = h.pass(x.cl(fACK, 0))
			wantRes(t, "ACK", r, Established, 0)
			if r.Status&StatusAssured == 0 || r.TCPState != TCPEstablished {
				t.Fatalf("ACK: status %v state %v, want ASSURED ESTABLISHED", r.Status, r.TCPState)
			}
			h.wantTimeout("ESTABLISHED", k, to[TCPEstablished])

			// Data: unacknowledged data caps the timeout at 300 s (2.8-2c)
			// until the peer acknowledges it.
			var bytes [2]uint64
			d1 := x.cl(fACK|fPSH, 100)
			wantRes(t, "client data", h.pass(d1), Established, 0)
			bytes[0] += uint64(len(d1))
			h.wantTimeout("unacknowledged data", k, DefaultConfig().TCP.TimeoutUnack)
			a1 := x.sv(fACK, 0)
			wantRes(t, "server ack", h.pass(a1), EstablishedReply, 0)
			bytes[1] += uint64(len(a1))
			h.wantTimeout("data acknowledged", k, to[TCPEstablished])
			d2 := x.sv(fACK|fPSH, 50)
			wantRes(t, "server data", h.pass(d2), EstablishedReply, 0)
			bytes[1] += uint64(len(d2))
			a2 := x.cl(fACK, 0)
			wantRes(t, "client ack", h.pass(a2), Established, 0)
			bytes[0] += uint64(len(a2))
			info = h.entry(k)
			if info.Packets != [2]uint64{4, 3} {
				t.Fatalf("packets %v, want [4 3]", info.Packets)
			}
			// The handshake packets are 40 (v4) or 60 (v6) bytes each.
			hs := uint64(40)
			if fam.name == "ipv6" {
				hs = 60
			}
			if want := [2]uint64{bytes[0] + 2*hs, bytes[1] + hs}; info.Bytes != want {
				t.Fatalf("bytes %v, want %v", info.Bytes, want)
			}

			steps := []struct {
				name  string
				pkt   []byte
				info  CtInfo
				state TCPState
			}{
				{"client FIN", x.cl(fFIN|fACK, 0), Established, TCPFinWait},
				{"server ACK of FIN", x.sv(fACK, 0), EstablishedReply, TCPCloseWait},
				{"server FIN", x.sv(fFIN|fACK, 0), EstablishedReply, TCPLastAck},
				{"client last ACK", x.cl(fACK, 0), Established, TCPTimeWait},
			}
			for _, s := range steps {
				r := h.pass(s.pkt)
				wantRes(t, s.name, r, s.info, 0)
				if r.TCPState != s.state {
					t.Fatalf("%s: state %v, want %v", s.name, r.TCPState, s.state)
				}
				h.wantTimeout(s.name, k, to[s.state])
				if got := h.entry(k); got.ID != id {
					t.Fatalf("%s: id changed %v -> %v", s.name, id, got.ID)
				}
			}

			// TIME_WAIT expires after exactly 120 s.
			h.adv(to[TCPTimeWait] - 1)
			h.entry(k)
			h.adv(1)
			h.absent(k)
			h.absent(k.Reverse())
			if _, ok := h.tab.Get(id, h.now); ok {
				t.Fatalf("expired entry found by id")
			}
			if n := h.listed(); n != 0 {
				t.Fatalf("List shows %d expired entries", n)
			}
			// The next packet of the tuple creates a fresh entry.
			h.ev.take()
			x.c += 1 << 20
			r = h.pass(x.cl(fSYN, 0))
			wantRes(t, "SYN after expiry", r, New, 0)
			if got := h.entry(k); got.ID == id {
				t.Fatalf("expired entry revived")
			}
			ev := h.ev.take()
			if len(ev) != 2 || ev[0].typ != EventExpired || ev[0].info.ID != id || ev[1].typ != EventNew {
				t.Fatalf("events %v, want DESTROY(expired) of the old entry then NEW", tbEventTypes(ev))
			}
			checkTableInvariants(t, h.tab, h.now)
		})
	}
}

func tbEventTypes(ev []tbEvent) []string {
	var s []string
	for _, e := range ev {
		s = append(s, fmt.Sprintf("%v(%v)", e.typ, e.typ == EventExpired))
	}
	return s
}

// conntrack -E shows one UPDATE per packet that changed the TCP state,
// set SEEN_REPLY or set ASSURED (the kernel's IPCT_PROTOINFO, IPCT_REPLY,
// IPCT_ASSURED, delivered together), and none for plain data.
func TestTrackTCPEvents(t *testing.T) {
	h := newTB(t, nil)
	x := newTBTCP(tbCli4+":40000", tbSrv4+":80", 1, 2)
	steps := []struct {
		name string
		pkt  []byte
		want []EventType
		st   TCPState
	}{
		{"SYN", x.cl(fSYN, 0), []EventType{EventNew}, TCPSynSent},
		{"SYN/ACK", x.sv(fSYN|fACK, 0), []EventType{EventUpdate}, TCPSynRecv},
		{"ACK", x.cl(fACK, 0), []EventType{EventUpdate}, TCPEstablished},
		{"data", x.cl(fACK|fPSH, 10), nil, TCPEstablished},
		{"data ack", x.sv(fACK, 0), nil, TCPEstablished},
		{"FIN", x.cl(fFIN|fACK, 0), []EventType{EventUpdate}, TCPFinWait},
		{"ACK of FIN", x.sv(fACK, 0), []EventType{EventUpdate}, TCPCloseWait},
		{"RST", x.sv(fRST|fACK, 0), []EventType{EventUpdate}, TCPClose},
	}
	for _, s := range steps {
		h.adv(time.Millisecond)
		h.pass(s.pkt)
		ev := h.ev.take()
		if len(ev) != len(s.want) {
			t.Fatalf("%s: %d events %v, want %v", s.name, len(ev), tbEventTypes(ev), s.want)
		}
		for i := range ev {
			if ev[i].typ != s.want[i] || ev[i].info.TCPState != s.st {
				t.Fatalf("%s: event %v state %v, want %v %v", s.name, ev[i].typ, ev[i].info.TCPState, s.want[i], s.st)
			}
			// Events carry the remaining timeout, as conntrack -E prints it.
			if ev[i].info.Timeout != DefaultConfig().TCP.Timeouts[s.st] {
				t.Fatalf("%s: event timeout %v, want %v", s.name, ev[i].info.Timeout, DefaultConfig().TCP.Timeouts[s.st])
			}
		}
	}
}

// A RST before any reply deletes the entry at once (2.8-3), whichever side
// sends it; the packet itself passes.
func TestTrackTCPRSTUnreplied(t *testing.T) {
	tests := []struct {
		name string
		rst  func(x *tbTCP) []byte
		want CtInfo
	}{
		{"client RST after its SYN", func(x *tbTCP) []byte { return x.cl(fRST, 0) }, New},
		{"server RST/ACK refusing the SYN", func(x *tbTCP) []byte {
			return packettest.TCP(x.srv, x.cli, packettest.TCPOpts{Flags: fRST | fACK, Seq: 0, Ack: x.c, WScale: packettest.NoWScale})
		}, EstablishedReply},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTB(t, nil)
			x := newTBTCP(tbCli4+":40000", tbSrv4+":80", 7000, 0)
			h.pass(x.cl(fSYN, 0))
			id := h.entry(x.key()).ID
			h.ev.take()
			r := h.pass(tt.rst(x))
			wantRes(t, "RST", r, tt.want, 0)
			if r.HasConn() {
				t.Fatalf("RST result still attached to a connection")
			}
			h.absent(x.key())
			if h.tab.Len() != 0 {
				t.Fatalf("Len %d after RST on an unreplied entry", h.tab.Len())
			}
			ev := h.ev.take()
			if len(ev) != 1 || ev[0].typ.String() != "DESTROY" || ev[0].info.ID != id {
				t.Fatalf("events %v, want one DESTROY of %v", tbEventTypes(ev), id)
			}
		})
	}
}

// A SYN on a closed (TIME_WAIT, or CLOSE after a RST from the same side)
// entry replaces it (2.6-1): the old entry is destroyed, the SYN is NEW on
// a fresh entry with a new id.
func TestTrackTCPReopen(t *testing.T) {
	tests := []struct {
		name  string
		close func(h *tbHarness, x *tbTCP)
		// fromServer: the reopening SYN comes from the old server (roles
		// reversed on the new entry).
		fromServer bool
		discard    bool
	}{
		{name: "SYN on TIME_WAIT", close: tbCloseFIN},
		{name: "SYN on CLOSE after own RST", close: func(h *tbHarness, x *tbTCP) {
			wantRes(h.t, "RST", h.pass(x.cl(fRST|fACK, 0)), Established, 0)
		}},
		{name: "server SYN on TIME_WAIT reverses roles", close: tbCloseFIN, fromServer: true},
		{name: "reopening SYN dropped by the filter", close: tbCloseFIN, discard: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTB(t, nil)
			x := newTBTCP(tbCli4+":40000", tbSrv4+":80", 1000, 5000)
			h.handshake(x)
			h.pass(x.cl(fACK|fPSH, 10))
			h.pass(x.sv(fACK, 0))
			tt.close(h, x)
			old := h.entry(x.key())
			h.ev.take()
			h.adv(time.Second)
			var syn []byte
			wantKey := x.key()
			if tt.fromServer {
				x.s += 100000
				syn = x.sv(fSYN, 0)
				wantKey = wantKey.Reverse()
			} else {
				x.c += 100000
				syn = x.cl(fSYN, 0)
			}
			if tt.discard {
				r := h.drop(syn)
				wantRes(t, "reopening SYN", r, New, 0)
				// The old entry is gone with the dropped SYN's new one, as
				// in the kernel (the old one was killed before the filter).
				h.absent(x.key())
				if h.tab.Len() != 0 {
					t.Fatalf("Len %d", h.tab.Len())
				}
				return
			}
			r := h.pass(syn)
			wantRes(t, "reopening SYN", r, New, 0)
			if !r.IsNewEntry() && r.TCPState != TCPSynSent {
				t.Fatalf("reopening SYN: state %v", r.TCPState)
			}
			info := h.entry(wantKey)
			if info.ID == old.ID || info.Orig != wantKey {
				t.Fatalf("entry id %v orig %v, want a new id with orig %v", info.ID, info.Orig, wantKey)
			}
			if info.Status&(StatusSeenReply|StatusAssured) != 0 || info.TCPState != TCPSynSent {
				t.Fatalf("new entry: status %v state %v, want unreplied SYN_SENT", info.Status, info.TCPState)
			}
			if _, ok := h.tab.Get(old.ID, h.now); ok {
				t.Fatalf("old id still resolves")
			}
			ev := h.ev.take()
			if len(ev) != 2 || ev[0].typ != EventDestroy || ev[0].info.ID != old.ID || ev[1].typ != EventNew || ev[1].info.ID != info.ID {
				t.Fatalf("events %v, want DESTROY old, NEW new", tbEventTypes(ev))
			}
			if h.tab.Len() != 1 {
				t.Fatalf("Len %d, want 1", h.tab.Len())
			}
			// The reply completes the new handshake.
			var sa []byte
			if tt.fromServer {
				sa = x.cl(fSYN|fACK, 0)
			} else {
				sa = x.sv(fSYN|fACK, 0)
			}
			wantRes(t, "SYN/ACK", h.pass(sa), EstablishedReply, 0)
		})
	}
}

func tbCloseFIN(h *tbHarness, x *tbTCP) {
	h.pass(x.cl(fFIN|fACK, 0))
	h.pass(x.sv(fFIN|fACK, 0))
	if r := h.pass(x.cl(fACK, 0)); r.TCPState != TCPTimeWait {
		h.t.Fatalf("close: state %v, want TIME_WAIT", r.TCPState)
	}
}

// Accounting follows the kernel: SYN retransmissions before a reply and
// packets the tracker ignores are not counted (they return before
// nf_ct_refresh_acct). Checked on Linux 6.18: a SYN sent four times shows
// "packets=1 bytes=60" and an unrefreshed timeout.
func TestTrackTCPAccounting(t *testing.T) {
	h := newTB(t, nil)
	x := newTBTCP("["+tbCli6+"]:40000", "["+tbSrv6+"]:80", 5, 50)
	syn := x.cl(fSYN, 0)
	for i := 0; i < 4; i++ {
		wantRes(t, "SYN", h.pass(syn), New, 0)
		h.adv(time.Second)
	}
	info := h.entry(x.key())
	if info.Packets != [2]uint64{1, 0} || info.Bytes != [2]uint64{uint64(len(syn)), 0} {
		t.Fatalf("after 4 SYNs: packets %v bytes %v, want [1 0] [%d 0]", info.Packets, info.Bytes, len(syn))
	}
	if info.Timeout != 116*time.Second {
		t.Fatalf("timeout %v, want 116s (not refreshed by retransmissions)", info.Timeout)
	}
	h.pass(x.sv(fSYN|fACK, 0))
	h.pass(x.cl(fACK, 0))
	// An original-direction SYN on an established connection is ignored:
	// it passes, is not INVALID, and is neither counted nor refreshing.
	h.adv(time.Second)
	before := h.entry(x.key())
	r := h.pass(packettest.TCP(x.cli, x.srv, packettest.TCPOpts{Flags: fSYN, Seq: 777, Win: 100, WScale: packettest.NoWScale}))
	wantRes(t, "SYN in ESTABLISHED", r, Established, 0)
	after := h.entry(x.key())
	if after.Packets != before.Packets || after.Bytes != before.Bytes || after.Timeout != before.Timeout {
		t.Fatalf("ignored packet counted or refreshed: %v/%v -> %v/%v", before.Packets, before.Timeout, after.Packets, after.Timeout)
	}
	if h.tab.Stats().Ignore != 1 {
		t.Fatalf("Ignore %d, want 1", h.tab.Stats().Ignore)
	}
}

// Mid-stream pickup: with nf_conntrack_tcp_loose an ACK creates a NEW entry
// in ESTABLISHED (timeout capped at 300 s while unreplied), the reply is
// ESTABLISHED_REPLY, the third packet makes it ASSURED; without loose the
// ACK is INVALID and creates nothing.
func TestTrackTCPMidStream(t *testing.T) {
	t.Run("loose", func(t *testing.T) {
		h := newTB(t, nil)
		x := newTBTCP(tbCli4+":40000", tbSrv4+":80", 123456, 654321)
		r := h.pass(x.cl(fACK|fPSH, 20))
		wantRes(t, "pickup", r, New, 0)
		if r.TCPState != TCPEstablished || r.Status&StatusAssured != 0 {
			t.Fatalf("pickup: state %v status %v", r.TCPState, r.Status)
		}
		h.wantTimeout("pickup", x.key(), DefaultConfig().TCP.TimeoutUnack)
		wantRes(t, "reply", h.pass(x.sv(fACK, 0)), EstablishedReply, 0)
		r = h.pass(x.cl(fACK, 0))
		wantRes(t, "third", r, Established, 0)
		if r.Status&StatusAssured == 0 {
			t.Fatalf("third packet of a pickup: not ASSURED")
		}
	})
	t.Run("strict", func(t *testing.T) {
		h := newTB(t, func(c *Config, _ *TableOptions) { c.TCP.Loose = false })
		x := newTBTCP(tbCli4+":40000", tbSrv4+":80", 123456, 654321)
		wantRes(t, "pickup", h.pass(x.cl(fACK, 0)), Invalid, ReasonTCPNoSYN)
		if h.tab.Len() != 0 {
			t.Fatalf("INVALID pickup left an entry")
		}
		if st := h.tab.Stats(); st.Invalid != 1 || st.InvalidBy[ReasonTCPNoSYN] != 1 || st.Insert != 0 {
			t.Fatalf("stats %+v", st)
		}
		if got := ReasonTCPNoSYN.String(); got != "tcp: new connection without syn" {
			t.Fatalf("reason text %q", got)
		}
	})
}

// First packets that cannot start a connection, and flag combinations that
// are never valid, are INVALID and leave no entry.
func TestTrackTCPInvalidFirst(t *testing.T) {
	tests := []struct {
		flags  packet.TCPFlags
		reason Reason
	}{
		{fSYN | fACK, ReasonTCPInvalidNew},
		{fFIN | fACK, ReasonTCPInvalidNew},
		{fRST, ReasonTCPInvalidNew},
		{fRST | fACK, ReasonTCPInvalidNew},
		{0, ReasonTCPFlags},
		{fPSH, ReasonTCPFlags},
		{fFIN, ReasonTCPFlags},
		{fSYN | fFIN, ReasonTCPFlags},
		{fSYN | fRST, ReasonTCPFlags},
		{fRST | fFIN, ReasonTCPFlags},
		{fSYN | fACK | packet.URG, ReasonTCPFlags},
	}
	h := newTB(t, nil)
	for i, tt := range tests {
		t.Run(tt.flags.String(), func(t *testing.T) {
			b := packettest.TCP(tbCli4+":40000", tbSrv4+":80", packettest.TCPOpts{Flags: tt.flags, Seq: 77, Ack: 88, Win: 1000, WScale: packettest.NoWScale})
			wantRes(t, "first", h.pass(b), Invalid, tt.reason)
			if h.tab.Len() != 0 {
				t.Fatalf("entry created")
			}
			if st := h.tab.Stats(); st.Invalid != uint64(i+1) {
				t.Fatalf("Invalid %d, want %d", st.Invalid, i+1)
			}
		})
	}
}

// Per-state timeouts come from the configuration, and a SYN retransmitted
// before any reply does not renew the timeout (2.8-3).
func TestTrackTCPTimeouts(t *testing.T) {
	h := newTB(t, func(c *Config, _ *TableOptions) {
		c.TCP.Timeouts[TCPSynSent] = 17 * time.Second
		c.TCP.Timeouts[TCPSynRecv] = 13 * time.Second
		c.TCP.Timeouts[TCPEstablished] = 1000 * time.Second
	})
	x := newTBTCP(tbCli4+":40000", tbSrv4+":80", 1, 2)
	syn := x.cl(fSYN, 0)
	h.pass(syn)
	h.wantTimeout("SYN_SENT", x.key(), 17*time.Second)
	h.adv(5 * time.Second)
	wantRes(t, "SYN retransmit", h.pass(syn), New, 0)
	h.wantTimeout("after retransmit", x.key(), 12*time.Second)
	h.pass(x.sv(fSYN|fACK, 0))
	h.wantTimeout("SYN_RECV", x.key(), 13*time.Second)
	h.pass(x.cl(fACK, 0))
	h.wantTimeout("ESTABLISHED", x.key(), 1000*time.Second)
	// SetConfig applies to later packets.
	cfg := DefaultConfig()
	cfg.TCP.Timeouts[TCPEstablished] = 50 * time.Second
	h.tab.SetConfig(cfg)
	h.pass(x.sv(fACK, 0))
	h.wantTimeout("after SetConfig", x.key(), 50*time.Second)
	h.adv(50 * time.Second)
	h.absent(x.key())
}

func TestTrackUDP(t *testing.T) {
	for _, fam := range tbFamilies {
		t.Run(fam.name, func(t *testing.T) {
			h := newTB(t, nil)
			a, b := fam.ep(fam.cli, 5000), fam.ep(fam.srv, 53)
			fwd := func() []byte { return packettest.UDP(a, b, packettest.UDPOpts{Payload: []byte("q")}) }
			rev := func() []byte { return packettest.UDP(b, a, packettest.UDPOpts{Payload: []byte("r")}) }
			k := udpKey(a, b)
			created := h.now

			r := h.pass(fwd())
			wantRes(t, "first", r, New, 0)
			h.wantTimeout("first", k, 30*time.Second)
			if ev := h.ev.take(); len(ev) != 1 || ev[0].typ != EventNew || ev[0].info.Timeout != 30*time.Second {
				t.Fatalf("events %v, want NEW with 30 s", tbEventTypes(ev))
			}
			h.adv(time.Second)
			r = h.pass(rev())
			wantRes(t, "reply", r, EstablishedReply, 0)
			if r.Status&StatusSeenReply == 0 || r.Status&StatusAssured != 0 {
				t.Fatalf("reply: status %v", r.Status)
			}
			h.wantTimeout("reply", k, 30*time.Second)
			if ev := h.ev.take(); len(ev) != 1 || ev[0].typ != EventUpdate {
				t.Fatalf("events %v, want UPDATE", tbEventTypes(ev))
			}
			h.now = created + 2*tbSec
			r = h.pass(fwd())
			wantRes(t, "at 2 s", r, Established, 0)
			if r.Status&StatusAssured != 0 {
				t.Fatalf("assured at exactly 2 s")
			}
			h.wantTimeout("at 2 s", k, 30*time.Second)
			h.now++
			r = h.pass(fwd())
			wantRes(t, "after 2 s", r, Established, 0)
			if r.Status&StatusAssured == 0 {
				t.Fatalf("not assured after 2 s with a reply")
			}
			h.wantTimeout("stream", k, 120*time.Second)
			if ev := h.ev.take(); len(ev) != 1 || ev[0].typ != EventUpdate || ev[0].info.Status&StatusAssured == 0 {
				t.Fatalf("events %v, want one UPDATE with ASSURED", tbEventTypes(ev))
			}
			h.adv(100 * time.Second)
			wantRes(t, "reply later", h.pass(rev()), EstablishedReply, 0)
			h.wantTimeout("stream reply", k, 120*time.Second)
			if ev := h.ev.take(); len(ev) != 0 {
				t.Fatalf("events %v for a packet that changed nothing", tbEventTypes(ev))
			}
			h.adv(120*time.Second - 1)
			h.entry(k)
			h.adv(1)
			h.absent(k)
		})
	}
}

// Without a reply a UDP flow is never ASSURED and lives 30 s after its
// last packet; a reply that comes more than 2 s after creation gets 30 s
// (it is processed before SEEN_REPLY is set) and the next packet assures.
func TestTrackUDPUnreplied(t *testing.T) {
	h := newTB(t, nil)
	a, b := tbCli4+":5000", tbSrv4+":53"
	k := udpKey(a, b)
	for i := 0; i < 3; i++ {
		r := h.pass(udp4(a, b))
		wantRes(t, "unreplied", r, New, 0)
		if r.Status&StatusAssured != 0 {
			t.Fatalf("unreplied flow assured")
		}
		h.wantTimeout("unreplied", k, 30*time.Second)
		h.adv(3 * time.Second)
	}
	r := h.pass(udp4(b, a))
	wantRes(t, "late reply", r, EstablishedReply, 0)
	if r.Status&StatusAssured != 0 {
		t.Fatalf("first reply assured the flow")
	}
	h.wantTimeout("late reply", k, 30*time.Second)
	r = h.pass(udp4(b, a))
	if r.Status&StatusAssured == 0 {
		t.Fatalf("second reply after 2 s did not assure")
	}
	h.wantTimeout("second reply", k, 120*time.Second)

	// Expiry: 30 s after the last packet the flow is gone and the next
	// packet is NEW on a new entry.
	h2 := newTB(t, nil)
	h2.pass(udp4(a, b))
	id := h2.entry(k).ID
	h2.adv(30*time.Second - 1)
	h2.entry(k)
	h2.adv(1)
	h2.absent(k)
	wantRes(t, "after expiry", h2.pass(udp4(a, b)), New, 0)
	if h2.entry(k).ID == id {
		t.Fatalf("expired UDP entry reused")
	}
}

func TestTrackICMPEcho(t *testing.T) {
	type fam struct {
		name             string
		cli, srv         string
		echo             func(src, dst string, typ uint8, id, seq uint16) []byte
		req, rep         uint8
		proto            packet.Proto
		timeout          time.Duration
		replyNoReq       Reason
		untrackable      Reason
		otherQueries     [][2]uint8 // further request/reply pairs
		notInvertible    []uint8
		untracked        []uint8
		invalidTypeAbove []uint8 // types rejected as invalid types
	}
	fams := []fam{
		{name: "icmp", cli: tbCli4, srv: tbSrv4, echo: packettest.ICMP4Echo, req: 8, rep: 0, proto: packet.ICMP,
			timeout: 30 * time.Second, replyNoReq: ReasonICMPReplyNoRequest, untrackable: ReasonICMPUntrackable,
			otherQueries:     [][2]uint8{{13, 14}, {15, 16}, {17, 18}},
			notInvertible:    []uint8{1, 2, 6, 7, 9, 10},
			invalidTypeAbove: []uint8{19, 40, 255}},
		{name: "icmpv6", cli: tbCli6, srv: tbSrv6, echo: packettest.ICMP6Echo, req: 128, rep: 129, proto: packet.ICMPv6,
			timeout: 30 * time.Second, replyNoReq: ReasonICMPv6ReplyNoRequest, untrackable: ReasonICMPv6Untrackable,
			otherQueries:  [][2]uint8{{139, 140}},
			notInvertible: []uint8{141, 142, 144, 200, 255},
			untracked:     []uint8{130, 131, 132, 133, 134, 135, 136, 143, 151, 152}},
	}
	for _, f := range fams {
		t.Run(f.name, func(t *testing.T) {
			h := newTB(t, nil)
			k := packettest.ICMPKey(f.cli, f.srv, f.req, 0, 7)
			wantRes(t, "request", h.pass(f.echo(f.cli, f.srv, f.req, 7, 1)), New, 0)
			h.wantTimeout("request", k, f.timeout)
			h.adv(time.Second)
			r := h.pass(f.echo(f.srv, f.cli, f.rep, 7, 1))
			wantRes(t, "reply", r, EstablishedReply, 0)
			if r.Status&StatusSeenReply == 0 {
				t.Fatalf("reply did not set SEEN_REPLY")
			}
			h.wantTimeout("reply", k, f.timeout)
			wantRes(t, "duplicate reply", h.pass(f.echo(f.srv, f.cli, f.rep, 7, 1)), EstablishedReply, 0)
			wantRes(t, "next request", h.pass(f.echo(f.cli, f.srv, f.req, 7, 2)), Established, 0)
			wantRes(t, "reply to it", h.pass(f.echo(f.srv, f.cli, f.rep, 7, 2)), EstablishedReply, 0)
			if info := h.entry(k); info.Packets != [2]uint64{2, 3} || info.Status&StatusAssured != 0 {
				t.Fatalf("entry packets %v status %v", info.Packets, info.Status)
			}
			wantRes(t, "other id", h.pass(f.echo(f.cli, f.srv, f.req, 8, 1)), New, 0)
			if h.tab.Len() != 2 {
				t.Fatalf("Len %d, want 2 (one entry per id)", h.tab.Len())
			}
			// Request in the other direction with the same id: another entry.
			wantRes(t, "request from server", h.pass(f.echo(f.srv, f.cli, f.req, 7, 1)), New, 0)
			n := h.tab.Len()
			wantRes(t, "reply without request", h.pass(f.echo(f.cli, f.srv, f.rep, 99, 1)), Invalid, f.replyNoReq)
			for _, q := range f.otherQueries {
				wantRes(t, fmt.Sprint("request ", q[0]), h.pass(f.echo(f.cli, f.srv, q[0], 50, 1)), New, 0)
				wantRes(t, fmt.Sprint("reply ", q[1]), h.pass(f.echo(f.srv, f.cli, q[1], 50, 1)), EstablishedReply, 0)
				wantRes(t, fmt.Sprint("unsolicited reply ", q[1]), h.pass(f.echo(f.srv, f.cli, q[1], 51, 1)), Invalid, f.replyNoReq)
				n++
			}
			for _, typ := range f.notInvertible {
				wantRes(t, fmt.Sprint("type ", typ), h.pass(f.echo(f.cli, f.srv, typ, 1, 1)), Invalid, f.untrackable)
			}
			for _, typ := range f.invalidTypeAbove {
				wantRes(t, fmt.Sprint("type ", typ), h.pass(f.echo(f.cli, f.srv, typ, 1, 1)), Invalid, ReasonICMPType)
			}
			before := h.tab.Stats().Untracked
			for _, typ := range f.untracked {
				b := packettest.ICMP(f.cli, f.srv, packettest.ICMPOpts{Type: typ, TTL: 255, Data: make([]byte, 24)})
				r := h.pass(b)
				if r.Info != Untracked || r.HasConn() || r.State() != StateUntracked {
					t.Fatalf("type %d: %v HasConn %v, want UNTRACKED without entry", typ, r.Info, r.HasConn())
				}
			}
			if got := h.tab.Stats().Untracked - before; got != uint64(len(f.untracked)) {
				t.Fatalf("Untracked +%d, want +%d", got, len(f.untracked))
			}
			if h.tab.Len() != n {
				t.Fatalf("Len %d, want %d: INVALID or UNTRACKED packets created entries", h.tab.Len(), n)
			}
			h.adv(f.timeout)
			h.absent(k)
			checkTableInvariants(t, h.tab, h.now)
		})
	}
}

// tbErrFlow is a connection for the ICMP error tests: the client's first
// packet and the server's reply, and the error builder of the family.
type tbErrFlow struct {
	name     string
	fwd, rep []byte // client -> server and server -> client packets
	key      packet.FlowKey
}

func tbErrFlows(fam int) []tbErrFlow {
	f := tbFamilies[fam]
	a, b := f.ep(f.cli, 40000), f.ep(f.srv, 80)
	x := newTBTCP(a, b, 1000, 2000)
	syn := x.cl(fSYN, 0)
	sa := x.sv(fSYN|fACK, 0)
	var echo func(src, dst string, typ uint8, id, seq uint16) []byte
	req, rep := uint8(8), uint8(0)
	if fam == 0 {
		echo = packettest.ICMP4Echo
	} else {
		echo, req, rep = packettest.ICMP6Echo, 128, 129
	}
	ub := f.ep(f.srv, 53)
	return []tbErrFlow{
		{"tcp", syn, sa, x.key()},
		{"udp", packettest.UDP(a, ub, packettest.UDPOpts{Payload: []byte("query")}),
			packettest.UDP(ub, a, packettest.UDPOpts{Payload: []byte("reply")}), udpKey(a, ub)},
		{"echo", echo(f.cli, f.srv, req, 33, 1), echo(f.srv, f.cli, rep, 33, 1), packettest.ICMPKey(f.cli, f.srv, req, 0, 33)},
	}
}

// ICMP and ICMPv6 errors (section 4): RELATED in the direction of the
// tuple the inverted quote matched, only if the outer destination is that
// direction's destination; they never create, refresh, count on or reply
// an entry. (Counting: on Linux 6.18 a UDP datagram to a closed port over
// lo, answered by a port unreachable, lists "packets=0" for the reply.)
func TestTrackICMPErrors(t *testing.T) {
	for fi, fam := range tbFamilies {
		v6 := fi == 1
		icmpErr := packettest.ICMP4Error
		types := [][2]uint8{{3, 3}, {3, 4}, {11, 0}, {12, 0}, {4, 0}, {5, 1}}
		unknown, outer, notInv, badQuote, csum := ReasonICMPUnknown, ReasonICMPOuterDaddr, ReasonICMPQuoteNotInvertible, ReasonICMPBadQuote, ReasonICMPChecksum
		ihl := 20
		if v6 {
			icmpErr = packettest.ICMP6Error
			types = [][2]uint8{{1, 4}, {1, 0}, {2, 0}, {3, 0}, {4, 0}}
			unknown, outer, notInv, badQuote, csum = ReasonICMPv6Unknown, ReasonICMPv6OuterDaddr, ReasonICMPv6QuoteNotInvertible, ReasonICMPv6BadQuote, ReasonICMPv6Checksum
			ihl = 40
		}
		other := "10.9.9.9"
		if v6 {
			other = "fd00:9::9"
		}
		for _, fl := range tbErrFlows(fi) {
			t.Run(fam.name+"/"+fl.name, func(t *testing.T) {
				h := newTB(t, nil)
				wantRes(t, "first", h.pass(fl.fwd), New, 0)
				before := h.entry(fl.key)
				// A packet to an unknown peer, to quote in "unknown".
				strange := packettest.Clone(fl.fwd)
				if v6 {
					strange[39] ^= 0x55
				} else {
					strange[19] ^= 0x55
				}
				errAboutErr := icmpErr(fam.srv, fam.cli, types[0][0], types[0][1], fl.fwd)
				cases := []struct {
					name   string
					pkt    []byte
					want   CtInfo
					reason Reason
				}{
					{"router to client about its packet", icmpErr(fam.rtr, fam.cli, types[0][0], types[0][1], fl.fwd), RelatedReply, 0},
					{"server to client about its packet", icmpErr(fam.srv, fam.cli, types[0][0], types[0][1], fl.fwd), RelatedReply, 0},
					{"router to server about the reply", icmpErr(fam.rtr, fam.srv, types[0][0], types[0][1], fl.rep), Related, 0},
					{"quote truncated to 8 bytes of transport", icmpErr(fam.rtr, fam.cli, types[0][0], types[0][1], fl.fwd[:ihl+8]), RelatedReply, 0},
					{"outer destination not the client", icmpErr(fam.rtr, other, types[0][0], types[0][1], fl.fwd), Invalid, outer},
					{"outer destination is the server", icmpErr(fam.rtr, fam.srv, types[0][0], types[0][1], fl.fwd), Invalid, outer},
					{"unknown connection", icmpErr(fam.rtr, fam.cli, types[0][0], types[0][1], strange), Invalid, unknown},
					{"error about an error", icmpErr(fam.rtr, fam.cli, types[0][0], types[0][1], errAboutErr), Invalid, notInv},
					{"quote without transport ports", icmpErr(fam.rtr, fam.cli, types[0][0], types[0][1], fl.fwd[:ihl+2]), Invalid, badQuote},
					{"quote shorter than an IP header", icmpErr(fam.rtr, fam.cli, types[0][0], types[0][1], fl.fwd[:ihl-4]), Invalid, badQuote},
					{"bad checksum", packettest.BadL4Checksum(icmpErr(fam.rtr, fam.cli, types[0][0], types[0][1], fl.fwd)), Invalid, csum},
				}
				for _, ty := range types[1:] {
					cases = append(cases, struct {
						name   string
						pkt    []byte
						want   CtInfo
						reason Reason
					}{fmt.Sprintf("type %d code %d", ty[0], ty[1]), icmpErr(fam.rtr, fam.cli, ty[0], ty[1], fl.fwd), RelatedReply, 0})
				}
				for _, c := range cases {
					h.adv(time.Second)
					r := h.pass(c.pkt)
					wantRes(t, c.name, r, c.want, c.reason)
					if c.want != Invalid {
						if !r.HasConn() || r.State() != StateRelated || r.IsNewEntry() {
							t.Fatalf("%s: HasConn %v state %v new %v", c.name, r.HasConn(), r.State(), r.IsNewEntry())
						}
					}
				}
				after := h.entry(fl.key)
				elapsed := time.Duration(len(cases)) * time.Second
				if after.Timeout != before.Timeout-elapsed {
					t.Fatalf("timeout %v after %v of errors, want %v (never refreshed)", after.Timeout, elapsed, before.Timeout-elapsed)
				}
				if after.Status&StatusSeenReply != 0 {
					t.Fatalf("an error in the reply direction set SEEN_REPLY")
				}
				if after.Packets != before.Packets || after.Bytes != before.Bytes {
					t.Fatalf("errors were counted: packets %v -> %v", before.Packets, after.Packets)
				}
				if h.tab.Len() != 1 || h.tab.Stats().Insert != 1 {
					t.Fatalf("errors created entries: Len %d", h.tab.Len())
				}
				// The connection itself still works, and its first reply is
				// still ESTABLISHED_REPLY.
				wantRes(t, "reply after errors", h.pass(fl.rep), EstablishedReply, 0)
				// Errors about an expired connection are unknown.
				h.adv(700 * time.Second)
				wantRes(t, "after expiry", h.pass(icmpErr(fam.rtr, fam.cli, types[0][0], types[0][1], fl.fwd)), Invalid, unknown)
			})
		}
	}
}

// ICMPv6 redirects (3.3): a well-formed redirect from a link-local router
// with hop limit 255 quoting a tracked packet is RELATED; the other forms
// are INVALID for the reason the kernel logs.
func TestTrackICMPv6Redirect(t *testing.T) {
	const rtr = "fe80::1"
	a, b := "["+tbCli6+"]:40000", "["+tbSrv6+"]:80"
	x := newTBTCP(a, b, 1, 2)
	syn := x.cl(fSYN, 0)
	target, dest := "fe80::2", tbSrv6
	var td []byte
	for _, s := range []string{target, dest} {
		ad, _ := packettest.Endpoint(s)
		a16 := ad.As16()
		td = append(td, a16[:]...)
	}
	pad := func(q []byte) []byte {
		for len(q)%8 != 0 {
			q = append(q, 0)
		}
		return q
	}
	withCode := func(bb []byte, code byte) []byte {
		c := packettest.Clone(bb)
		c[41] = code
		return packettest.FixChecksums(c)
	}
	good := packettest.ICMP6Redirect(rtr, tbCli6, target, dest, syn)
	tests := []struct {
		name   string
		pkt    []byte
		want   CtInfo
		reason Reason
	}{
		{"redirect quoting the connection", good, RelatedReply, 0},
		{"code 1", withCode(good, 1), Invalid, ReasonICMPv6Untrackable},
		{"hop limit 64", packettest.SetTTL(good, 64), Invalid, ReasonICMPv6BadRedirect},
		{"global source", packettest.ICMP6Redirect("fd00:99::1", tbCli6, target, dest, syn), Invalid, ReasonICMPv6BadRedirect},
		{"no options", packettest.ICMP6Redirect(rtr, tbCli6, target, dest, nil), Invalid, ReasonICMPv6BadRedirect},
		{"short redirect", packettest.ICMP(rtr, tbCli6, packettest.ICMPOpts{Type: 137, TTL: 255, Data: td[:20]}), Invalid, ReasonICMPv6BadRedirect},
		{"first option is a link-layer address", packettest.ICMP(rtr, tbCli6, packettest.ICMPOpts{Type: 137, TTL: 255,
			Data: append(append(append([]byte(nil), td...), 2, 1, 0, 1, 2, 3, 4, 5), pad(append([]byte{4, 3, 0, 0, 0, 0, 0, 0}, syn...))...)}),
			Invalid, ReasonICMPv6Untrackable},
		{"option of length zero", packettest.ICMP(rtr, tbCli6, packettest.ICMPOpts{Type: 137, TTL: 255,
			Data: append(append([]byte(nil), td...), pad(append([]byte{4, 0, 0, 0, 0, 0, 0, 0}, syn...))...)}),
			Invalid, ReasonICMPv6BadRedirect},
		{"quoting an unknown connection", packettest.ICMP6Redirect(rtr, tbCli6, target, dest,
			packettest.TCP(a, "["+tbSrv6+"]:81", packettest.TCPOpts{Flags: fSYN, WScale: packettest.NoWScale})), Invalid, ReasonICMPv6Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTB(t, nil)
			h.pass(syn)
			wantRes(t, tt.name, h.pass(tt.pkt), tt.want, tt.reason)
			if h.tab.Len() != 1 {
				t.Fatalf("Len %d", h.tab.Len())
			}
		})
	}
}

// Protocols without a tracker (GRE here, and an unassigned number) are
// tracked by address pair with the generic 600 s timeout.
func TestTrackGeneric(t *testing.T) {
	for _, fam := range tbFamilies {
		for _, proto := range []packet.Proto{packet.GRE, 99} {
			t.Run(fmt.Sprintf("%s/%v", fam.name, proto), func(t *testing.T) {
				h := newTB(t, nil)
				pl := []byte{0, 0, 0x08, 0, 1, 2, 3, 4}
				fwd := packettest.Raw(fam.cli, fam.srv, proto, pl, packettest.IPOpts{})
				rev := packettest.Raw(fam.srv, fam.cli, proto, pl, packettest.IPOpts{})
				k := packettest.Key(proto, fam.cli, fam.srv)
				r := h.pass(fwd)
				wantRes(t, "first", r, New, 0)
				if info := h.entry(k); info.Orig.SrcPort != 0 || info.Orig.DstPort != 0 {
					t.Fatalf("generic tuple has ports: %v", info.Orig)
				}
				h.wantTimeout("first", k, 600*time.Second)
				h.adv(time.Second)
				r = h.pass(rev)
				wantRes(t, "reply", r, EstablishedReply, 0)
				if r.Status&StatusSeenReply == 0 {
					t.Fatalf("reply did not set SEEN_REPLY")
				}
				wantRes(t, "again", h.pass(fwd), Established, 0)
				if r := h.pass(fwd); r.Status&StatusAssured != 0 {
					t.Fatalf("generic entry became ASSURED")
				}
				h.wantTimeout("refreshed", k, 600*time.Second)
				third := packettest.Raw(fam.cli, fam.rtr, proto, pl, packettest.IPOpts{})
				wantRes(t, "other peer", h.pass(third), New, 0)
				if h.tab.Len() != 2 {
					t.Fatalf("Len %d, want 2", h.tab.Len())
				}
				h.adv(600 * time.Second)
				h.absent(k)
			})
		}
	}
}

// A tuple that is its own inverse (a host talking to itself with a
// generic protocol, or with the same port at both ends) gets one entry whose
// later packets match the reply tuple first: ESTABLISHED_REPLY, as Linux
// 6.18 classifies them (checked with raw protocol-99 packets to 127.0.0.1
// and nft "ct direction reply" counters).
func TestTrackSelfInverseTuple(t *testing.T) {
	h := newTB(t, nil)
	b := packettest.Raw(tbCli4, tbCli4, 99, []byte("abcd"), packettest.IPOpts{})
	wantRes(t, "first", h.pass(b), New, 0)
	for i := 0; i < 2; i++ {
		r := h.pass(b)
		wantRes(t, "later", r, EstablishedReply, 0)
		if r.Status&StatusSeenReply == 0 {
			t.Fatalf("SEEN_REPLY not set")
		}
	}
	tcp := packettest.TCP(tbCli4+":7", tbCli4+":7", packettest.TCPOpts{Flags: fSYN, Seq: 1, Win: 100, WScale: packettest.NoWScale})
	wantRes(t, "tcp to itself", h.pass(tcp), New, 0)
	if h.tab.Len() != 2 {
		t.Fatalf("Len %d, want 2", h.tab.Len())
	}
	checkTableInvariants(t, h.tab, h.now)
}

// Checksums (Config.Checksum = nf_conntrack_checksum): a bad transport
// checksum is INVALID with the protocol's reason, checked before the flag
// and type checks as in the kernel; accepted when verification is off or
// the caller says the checksum is known good; a zero UDP checksum means
// "none".
func TestTrackChecksums(t *testing.T) {
	echoReq4 := packettest.ICMP4Echo(tbCli4, tbSrv4, 8, 1, 1)
	echoReq6 := packettest.ICMP6Echo(tbCli6, tbSrv6, 128, 1, 1)
	syn4 := packettest.TCP(tbCli4+":1000", tbSrv4+":80", packettest.TCPOpts{Flags: fSYN, WScale: packettest.NoWScale})
	syn6 := packettest.TCP("["+tbCli6+"]:1000", "["+tbSrv6+"]:80", packettest.TCPOpts{Flags: fSYN, WScale: packettest.NoWScale})
	udp6 := packettest.UDP6("["+tbCli6+"]:1000", "["+tbSrv6+"]:53", []byte("x"))
	ns := packettest.ICMP(tbCli6, tbSrv6, packettest.ICMPOpts{Type: 135, TTL: 255, Data: make([]byte, 16)})
	tests := []struct {
		name   string
		pkt    []byte
		reason Reason // with verification on
		good   CtInfo // with verification off
	}{
		{"tcp4", packettest.BadL4Checksum(syn4), ReasonTCPChecksum, New},
		{"tcp6", packettest.BadL4Checksum(syn6), ReasonTCPChecksum, New},
		{"udp4", packettest.BadL4Checksum(udp4(tbCli4+":1000", tbSrv4+":53")), ReasonUDPChecksum, New},
		{"udp6", packettest.BadL4Checksum(udp6), ReasonUDPChecksum, New},
		{"icmp echo", packettest.BadL4Checksum(echoReq4), ReasonICMPChecksum, New},
		{"icmpv6 echo", packettest.BadL4Checksum(echoReq6), ReasonICMPv6Checksum, New},
		// The kernel verifies the checksum before the flag check, the
		// ICMP type check and the ICMPv6 untracked types.
		{"tcp with bad flags", packettest.BadL4Checksum(packettest.TCP(tbCli4+":1000", tbSrv4+":80",
			packettest.TCPOpts{Flags: fSYN | fFIN, WScale: packettest.NoWScale})), ReasonTCPChecksum, Invalid},
		{"icmp type 40", packettest.BadL4Checksum(packettest.ICMP4Echo(tbCli4, tbSrv4, 40, 1, 1)), ReasonICMPChecksum, Invalid},
		{"neighbour solicitation", packettest.BadL4Checksum(ns), ReasonICMPv6Checksum, Untracked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTB(t, nil)
			wantRes(t, "verify", h.pass(tt.pkt), Invalid, tt.reason)
			if st := h.tab.Stats(); st.InvalidBy[tt.reason] != 1 || h.tab.Len() != 0 {
				t.Fatalf("InvalidBy[%v] = %d, Len %d", tt.reason, st.InvalidBy[tt.reason], h.tab.Len())
			}
			r := h.passArgs(tt.pkt, TrackArgs{ChecksumVerified: true})
			if r.Info != tt.good || r.Reason == tt.reason {
				t.Fatalf("ChecksumVerified: %v %q, want %v", r.Info, r.Reason, tt.good)
			}
			off := newTB(t, func(c *Config, _ *TableOptions) { c.Checksum = false })
			if r := off.pass(tt.pkt); r.Info != tt.good || r.Reason == tt.reason {
				t.Fatalf("checksum off: %v %q, want %v", r.Info, r.Reason, tt.good)
			}
		})
	}
	t.Run("zero udp checksum", func(t *testing.T) {
		h := newTB(t, nil)
		b := packettest.UDP(tbCli4+":1000", tbSrv4+":53", packettest.UDPOpts{Payload: []byte("x"), NoChecksum: true})
		wantRes(t, "no checksum", h.pass(b), New, 0)
	})
	t.Run("good checksums", func(t *testing.T) {
		h := newTB(t, nil)
		for i, b := range [][]byte{syn4, syn6, udp6, echoReq4, echoReq6} {
			wantRes(t, fmt.Sprint("packet ", i), h.pass(b), New, 0)
		}
	})
}

// Every decoder error becomes the INVALID reason with the same number and
// text; malformed packets from the builders' corruption helpers get the
// right one, and fragments and IPv6 "no next header" their own.
func TestTrackDecodeErrors(t *testing.T) {
	h := newTB(t, nil)
	for e := packet.DecodeError(1); e < packet.NumDecodeErrors; e++ {
		p := &packet.Parsed{Err: e, Family: 4, Proto: packet.TCP}
		r := h.tab.Track(p, TrackArgs{Now: h.now})
		if r.Info != Invalid || r.Reason != Reason(e) || r.Reason.String() != e.String() || r.Reason != ReasonFromDecode(e) {
			t.Fatalf("decode error %v: %v %q", e, r.Info, r.Reason)
		}
		if got, ok := ParseReason(e.String()); !ok || got != Reason(e) {
			t.Fatalf("ParseReason(%q) = %v %v", e.String(), got, ok)
		}
	}
	if st := h.tab.Stats(); st.Invalid != uint64(packet.NumDecodeErrors-1) || h.tab.Len() != 0 {
		t.Fatalf("Invalid %d Len %d", st.Invalid, h.tab.Len())
	}

	tcp4 := packettest.TCP(tbCli4+":1000", tbSrv4+":80", packettest.TCPOpts{Flags: fSYN, WScale: packettest.NoWScale})
	u4 := udp4(tbCli4+":1000", tbSrv4+":53")
	u6 := packettest.UDP6("["+tbCli6+"]:1000", "["+tbSrv6+"]:53", []byte("x"))
	big := packettest.UDP4(tbCli4+":1000", tbSrv4+":53", make([]byte, 200))
	big6 := packettest.UDP6("["+tbCli6+"]:1000", "["+tbSrv6+"]:53", make([]byte, 200))
	tests := []struct {
		name   string
		pkt    []byte
		reason Reason
	}{
		{"truncated ip", packettest.Truncate(tcp4, 10), Reason(packet.ErrIPTruncated)},
		{"ip version 5", packettest.SetVersion(tcp4, 5), Reason(packet.ErrIPVersion)},
		{"ihl 4", packettest.SetIHL(tcp4, 4), Reason(packet.ErrIPHeaderLen)},
		{"total length too long", packettest.SetTotalLen(tcp4, 4000), Reason(packet.ErrIPTotalLen)},
		{"ip header checksum", packettest.BadIPChecksum(tcp4), Reason(packet.ErrIPChecksum)},
		{"truncated ipv6", packettest.Truncate(u6, 30), Reason(packet.ErrIPv6Truncated)},
		{"ipv6 payload length", packettest.SetTotalLen(u6, 2000), Reason(packet.ErrIPv6PayloadLen)},
		{"truncated tcp", packettest.TruncateL4(tcp4, 30), Reason(packet.ErrTCPTruncated)},
		{"tcp data offset 3", packettest.SetDataOffset(tcp4, 3), Reason(packet.ErrTCPDataOff)},
		{"truncated udp", packettest.TruncateL4(u4, 24), Reason(packet.ErrUDPTruncated)},
		{"udp length 3", packettest.SetUDPLength(u4, 3), Reason(packet.ErrUDPLength)},
		{"truncated icmp", packettest.TruncateL4(packettest.ICMP4Echo(tbCli4, tbSrv4, 8, 1, 1), 24), Reason(packet.ErrICMPTruncated)},
		{"truncated icmpv6", packettest.TruncateL4(packettest.ICMP6Echo(tbCli6, tbSrv6, 128, 1, 1), 44), Reason(packet.ErrICMPv6Truncated)},
		{"truncated sctp", packettest.Raw(tbCli4, tbSrv4, packet.SCTP, []byte{0, 1, 0, 2}, packettest.IPOpts{}), Reason(packet.ErrL4Truncated)},
		{"first fragment", packettest.Fragment4(big, 64)[0], ReasonFragment},
		{"later fragment", packettest.Fragment4(big, 64)[1], ReasonFragment},
		{"ipv6 fragment", packettest.Fragment6(big6, 64)[0], ReasonFragment},
		{"ipv6 no next header", packettest.Raw(tbCli6, tbSrv6, packet.IPv6NoNext, nil, packettest.IPOpts{}), ReasonNoL4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTB(t, nil)
			wantRes(t, tt.name, h.pass(tt.pkt), Invalid, tt.reason)
			if h.tab.Len() != 0 || h.tab.Stats().InvalidBy[tt.reason] != 1 {
				t.Fatalf("Len %d InvalidBy %d", h.tab.Len(), h.tab.Stats().InvalidBy[tt.reason])
			}
		})
	}
}

// ---- expectations ----

// tbExpectSetup is an FTP-like master connection (client -> server:21)
// confirmed in a table that shares an expectation table, with a fake
// helper named "ftp" registered as HelperID 1.
type tbExpectSetup struct {
	h      *tbHarness
	ex     *Expectations
	master *tbTCP
	id     ConnID
	helper *tbHelper
}

func newTBExpect(t *testing.T) *tbExpectSetup {
	ex := NewExpectations(64)
	fh := &tbHelper{name: "ftp"}
	h := newTB(t, func(_ *Config, o *TableOptions) {
		o.Expect = ex
		o.Helpers = []Helper{&tbHelper{name: "other"}, fh}
	})
	m := newTBTCP(tbCli4+":40000", tbSrv4+":21", 100, 200)
	wantRes(t, "master SYN", h.passArgs(m.cl(fSYN, 0), TrackArgs{Helper: 2}), New, 0)
	h.pass(m.sv(fSYN|fACK, 0))
	h.pass(m.cl(fACK, 0))
	return &tbExpectSetup{h: h, ex: ex, master: m, id: h.entry(m.key()).ID, helper: fh}
}

// expect announces a passive-mode data connection: client (any port) to
// server:port.
func (s *tbExpectSetup) expect(port uint16) {
	s.h.t.Helper()
	x := Expectation{
		Tuple:       packettest.Key(packet.TCP, tbCli4+":0", fmt.Sprintf("%s:%d", tbSrv4, port)),
		SrcPortWild: true,
		Master:      s.id,
		MasterTuple: s.master.key(),
		Helper:      "ftp",
		Expires:     s.h.now + 300*tbSec,
	}
	if err := s.ex.Add(x, 1, s.h.now); err != nil {
		s.h.t.Fatalf("Add: %v", err)
	}
}

func TestTrackExpected(t *testing.T) {
	s := newTBExpect(t)
	h := s.h
	s.expect(5000)
	d := newTBTCP(tbCli4+":41000", tbSrv4+":5000", 9000, 19000)
	r := h.passArgs(d.cl(fSYN, 0), TrackArgs{Helper: 1})
	wantRes(t, "data SYN", r, Related, 0)
	if r.Status&StatusExpected == 0 || r.MasterHelper != 2 || r.Helper != 0 || r.State() != StateRelated {
		t.Fatalf("data SYN: status %v master helper %d helper %d", r.Status, r.MasterHelper, r.Helper)
	}
	if s.ex.Len() != 0 {
		t.Fatalf("expectation not consumed")
	}
	info := h.entry(d.key())
	if info.Master != s.id || info.Status&StatusExpected == 0 || info.Helper != "" {
		t.Fatalf("data entry: master %v (want %v) status %v helper %q", info.Master, s.id, info.Status, info.Helper)
	}
	wantRes(t, "data SYN retransmit", h.pass(d.cl(fSYN, 0)), Related, 0)
	r = h.pass(d.sv(fSYN|fACK, 0))
	wantRes(t, "data SYN/ACK", r, EstablishedReply, 0)
	if r.MasterHelper != 2 {
		t.Fatalf("MasterHelper lost on the reply")
	}
	wantRes(t, "data ACK", h.pass(d.cl(fACK, 0)), Established, 0)
	if info := h.entry(d.key()); info.Status&StatusExpected == 0 || info.Master != s.id {
		t.Fatalf("EXPECTED or master link lost: %v %v", info.Status, info.Master)
	}
	if st := h.tab.Stats(); st.Expected != 1 {
		t.Fatalf("Stats.Expected %d", st.Expected)
	}
	// A second connection to the same port is not expected any more.
	d2 := newTBTCP(tbCli4+":41001", tbSrv4+":5000", 1, 2)
	wantRes(t, "second data SYN", h.pass(d2.cl(fSYN, 0)), New, 0)
}

// The expectation is consumed when the first packet is tracked, before the
// filter: if the filter drops it, the retransmission is NEW.
func TestTrackExpectedDiscarded(t *testing.T) {
	s := newTBExpect(t)
	h := s.h
	s.expect(5000)
	d := newTBTCP(tbCli4+":41000", tbSrv4+":5000", 9000, 19000)
	syn := d.cl(fSYN, 0)
	wantRes(t, "dropped SYN", h.drop(syn), Related, 0)
	if s.ex.Len() != 0 {
		t.Fatalf("expectation survived")
	}
	r := h.pass(syn)
	wantRes(t, "retransmission", r, New, 0)
	if r.Status&StatusExpected != 0 {
		t.Fatalf("retransmission EXPECTED")
	}
	// A first packet the tracker rejects consumes the expectation too.
	s.expect(5001)
	bad := packettest.TCP(tbCli4+":41002", tbSrv4+":5001", packettest.TCPOpts{Flags: fFIN | fACK, WScale: packettest.NoWScale})
	wantRes(t, "FIN/ACK first", h.pass(bad), Invalid, ReasonTCPInvalidNew)
	if s.ex.Len() != 0 {
		t.Fatalf("expectation survived an INVALID first packet")
	}
}

// Misses: an empty expectation table, or expectations for other tuples,
// leave the packet NEW and the expectations in place.
func TestTrackExpectMiss(t *testing.T) {
	s := newTBExpect(t)
	h := s.h
	wantRes(t, "empty table", h.pass(udp4(tbCli4+":1", tbSrv4+":5000")), New, 0)
	s.expect(5000)
	wantRes(t, "udp to the port", h.pass(udp4(tbCli4+":2", tbSrv4+":5000")), New, 0)
	d := newTBTCP(tbCli4+":41000", tbSrv4+":5002", 9, 19)
	wantRes(t, "other port", h.pass(d.cl(fSYN, 0)), New, 0)
	d = newTBTCP(tbRtr4+":41000", tbSrv4+":5000", 9, 19)
	wantRes(t, "other source address", h.pass(d.cl(fSYN, 0)), New, 0)
	if s.ex.Len() != 1 {
		t.Fatalf("expectation consumed by a non-matching packet")
	}
	// Expired expectations never match.
	h.adv(300 * time.Second)
	d = newTBTCP(tbCli4+":41000", tbSrv4+":5000", 9, 19)
	wantRes(t, "after expiry", h.pass(d.cl(fSYN, 0)), New, 0)
}

// ---- helpers ----

// tbHelperCall records one Help call.
type tbHelperCall struct {
	info  CtInfo
	id    ConnID
	tuple [2]packet.FlowKey
	seen  int // the per-connection counter kept in State, before this call
	proto packet.Proto
	dir   Dir
}

// tbHelper is a fake helper: it counts calls per connection in its State,
// records calls when record is set, and drops packets or adds
// expectations on request.
type tbHelper struct {
	name   string
	record bool
	calls  int
	log    []tbHelperCall
	// dropIf decides the verdict; onHelp runs first (e.g. to add an
	// expectation).
	dropIf func(h *HelperContext) bool
	onHelp func(h *HelperContext)
}

func (f *tbHelper) Name() string { return f.name }

func (f *tbHelper) Help(h *HelperContext) HelperResult {
	f.calls++
	n, _ := (*h.State).(*int)
	if n == nil {
		n = new(int)
		*h.State = n
	}
	if f.record {
		f.log = append(f.log, tbHelperCall{info: h.Info, id: h.ConnID, tuple: h.Tuple, seen: *n,
			proto: h.Packet.Proto, dir: h.Info.Dir()})
	}
	*n++
	if f.onHelp != nil {
		f.onHelp(h)
	}
	if f.dropIf != nil && f.dropIf(h) {
		return HelperResult{Drop: true, Why: "fake: dropped"}
	}
	return HelperResult{}
}

// The helper attached at creation runs at Commit for every packet of its
// connection except RELATED_REPLY ones, with the connection's id, tuples
// and a State that persists across packets.
func TestTrackHelperCalls(t *testing.T) {
	fh := &tbHelper{name: "fake", record: true}
	h := newTB(t, func(_ *Config, o *TableOptions) { o.Helpers = []Helper{fh} })
	x := newTBTCP(tbCli4+":40000", tbSrv4+":21", 10, 20)
	r := h.passArgs(x.cl(fSYN, 0), TrackArgs{Helper: 1})
	if r.Helper != 1 || r.Status&StatusHelper == 0 {
		t.Fatalf("SYN: Helper %d status %v", r.Helper, r.Status)
	}
	info := h.entry(x.key())
	if info.Helper != "fake" {
		t.Fatalf("EntryInfo.Helper %q", info.Helper)
	}
	h.pass(x.sv(fSYN|fACK, 0))
	h.pass(x.cl(fACK, 0))
	h.pass(x.cl(fACK|fPSH, 5))
	// ICMP errors about the connection: RELATED goes to the helper,
	// RELATED_REPLY does not.
	h.pass(packettest.ICMP4Error(tbRtr4, tbSrv4, 3, 4, x.sv(fACK, 0)))
	h.pass(packettest.ICMP4Error(tbRtr4, tbCli4, 3, 4, x.cl(fACK, 0)))
	want := []CtInfo{New, EstablishedReply, Established, Established, Related}
	if len(fh.log) != len(want) {
		t.Fatalf("%d helper calls, want %d", len(fh.log), len(want))
	}
	reply := x.key().Reverse()
	for i, c := range fh.log {
		if c.info != want[i] || c.id != info.ID || c.tuple != [2]packet.FlowKey{x.key(), reply} || c.seen != i {
			t.Fatalf("call %d: info %v id %v tuple %v state %d, want %v %v %d", i, c.info, c.id, c.tuple, c.seen, want[i], info.ID, i)
		}
	}
	if fh.log[4].proto != packet.ICMP {
		t.Fatalf("RELATED call did not see the ICMP packet")
	}
	// A connection without the helper never calls it; an out-of-range
	// helper id is ignored.
	n := fh.calls
	y := newTBTCP(tbCli4+":40001", tbSrv4+":21", 10, 20)
	r = h.passArgs(y.cl(fSYN, 0), TrackArgs{Helper: 9})
	if r.Helper != 0 || fh.calls != n {
		t.Fatalf("out-of-range helper attached")
	}
	h.pass(y.sv(fSYN|fACK, 0))
	if fh.calls != n {
		t.Fatalf("helper called for a connection without it")
	}
}

// A helper's Drop discards a new entry (and any expectation it added
// meanwhile); on an existing entry the packet is dropped but the entry
// stays. Destroying a master removes its expectations.
func TestTrackHelperDrop(t *testing.T) {
	ex := NewExpectations(64)
	var dropNext bool
	fh := &tbHelper{name: "fake"}
	fh.dropIf = func(*HelperContext) bool { return dropNext }
	fh.onHelp = func(hc *HelperContext) {
		if hc.Info != New {
			return
		}
		x := Expectation{
			Tuple:       packettest.Key(packet.TCP, tbSrv4+":20", tbCli4+":6000"),
			SrcPortWild: true, Master: hc.ConnID, MasterTuple: hc.Tuple[0], Helper: "fake",
			Expires: hc.Now + 300*tbSec,
		}
		if err := hc.Expect.Add(x, 1, hc.Now); err != nil {
			panic(err)
		}
	}
	h := newTB(t, func(_ *Config, o *TableOptions) { o.Helpers = []Helper{fh}; o.Expect = ex })
	x := newTBTCP(tbCli4+":40000", tbSrv4+":21", 10, 20)

	dropNext = true
	r := h.passArgs(x.cl(fSYN, 0), TrackArgs{Helper: 1})
	if !h.hr.Drop || h.hr.Why != "fake: dropped" {
		t.Fatalf("Commit returned %+v, want the helper's drop", h.hr)
	}
	if r.HasConn() || h.tab.Len() != 0 {
		t.Fatalf("dropped new entry kept: HasConn %v Len %d", r.HasConn(), h.tab.Len())
	}
	if ex.Len() != 0 {
		t.Fatalf("expectation of a discarded master survived")
	}
	if st := h.tab.Stats(); st.HelperDrop != 1 || st.Insert != 0 {
		t.Fatalf("HelperDrop %d Insert %d", st.HelperDrop, st.Insert)
	}
	if ev := h.ev.take(); len(ev) != 0 {
		t.Fatalf("events %v for a helper-dropped new entry", tbEventTypes(ev))
	}

	dropNext = false
	wantRes(t, "SYN again", h.passArgs(x.cl(fSYN, 0), TrackArgs{Helper: 1}), New, 0)
	if ex.Len() != 1 {
		t.Fatalf("helper's expectation missing")
	}
	id := h.entry(x.key()).ID
	dropNext = true
	h.pass(x.sv(fSYN|fACK, 0))
	if !h.hr.Drop || h.entry(x.key()).ID != id {
		t.Fatalf("drop on an existing entry: verdict %+v", h.hr)
	}
	// Destroying the master (conntrack -D) removes its expectations.
	if !h.tab.Delete(id) {
		t.Fatalf("Delete failed")
	}
	if ex.Len() != 0 {
		t.Fatalf("expectations survived their master's deletion")
	}
	// So does its expiry through Reap.
	dropNext = false
	x.c += 1000
	h.passArgs(x.cl(fSYN, 0), TrackArgs{Helper: 1})
	if ex.Len() != 1 {
		t.Fatalf("no expectation")
	}
	h.adv(121 * time.Second)
	h.tab.Reap(h.now, 100)
	if ex.Len() != 0 || h.tab.Len() != 0 {
		t.Fatalf("after Reap: %d expectations, Len %d", ex.Len(), h.tab.Len())
	}
}

// ---- section 9: the kernel selftests that involve the table ----

// tb9Step is one packet of a packetdrill-like script through the table.
type tb9Step struct {
	name     string
	fromSrv  bool
	flags    packet.TCPFlags
	seq, ack uint32
	win      uint16
	n        int
	wscale   int // -1: none (only put on SYN segments)
	sackPerm bool
	invalid  bool
	state    TCPState // after the packet
	fresh    bool     // the entry must be new (a replacement) after this packet
	unreply  bool     // the entry must be UNREPLIED after this packet
	assured  bool     // the entry must be ASSURED after this packet
	advance  time.Duration
}

// run9 replays steps for the client cli and server srv and returns the
// number of INVALID packets.
func run9(t *testing.T, steps []tb9Step) (int, *tbHarness) {
	t.Helper()
	h := newTB(t, nil)
	cli, srv := tbCli4+":40000", tbSrv4+":8080"
	k := packettest.Key(packet.TCP, cli, srv)
	var id ConnID
	for i, s := range steps {
		h.adv(s.advance)
		src, dst := cli, srv
		if s.fromSrv {
			src, dst = srv, cli
		}
		var mss uint16
		if s.flags&fSYN != 0 {
			mss = 1460
		}
		b := packettest.TCP(src, dst, packettest.TCPOpts{Flags: s.flags, Seq: s.seq, Ack: s.ack, Win: s.win,
			MSS: mss, WScale: s.wscale, SACKPerm: s.sackPerm, Payload: tbPayload(s.n)})
		before := h.tab.Stats().Invalid
		r := h.pass(b)
		where := fmt.Sprintf("step %d (%s)", i+1, s.name)
		if got := h.tab.Stats().Invalid != before; got != s.invalid || (r.Info == Invalid) != s.invalid {
			t.Fatalf("%s: %v %q, want invalid=%v", where, r.Info, r.Reason, s.invalid)
		}
		info := h.entry(k)
		if info.TCPState != s.state {
			t.Fatalf("%s: state %v, want %v", where, info.TCPState, s.state)
		}
		if s.fresh != (id != 0 && info.ID != id) {
			t.Fatalf("%s: entry replaced=%v, want %v", where, info.ID != id, s.fresh)
		}
		if s.fresh && r.Info != New {
			t.Fatalf("%s: replacement SYN is %v, want NEW", where, r.Info)
		}
		id = info.ID
		if s.unreply != (info.Status&StatusSeenReply == 0) {
			t.Fatalf("%s: status %v, want unreplied=%v", where, info.Status, s.unreply)
		}
		if s.assured != (info.Status&StatusAssured != 0) {
			t.Fatalf("%s: status %v, want assured=%v", where, info.Status, s.assured)
		}
	}
	return int(h.tab.Stats().Invalid), h
}

func TestTrackSelftests(t *testing.T) {
	const L, R = 1000, 5000000 // the local and remote ISN
	const none = packettest.NoWScale
	tests := []struct {
		name        string
		steps       []tb9Step
		wantInvalid int
	}{
		{"9.1 rst_invalid", []tb9Step{
			{name: "> S", flags: fSYN, seq: L, win: 65535, wscale: 8, sackPerm: true, state: TCPSynSent, unreply: true},
			{name: "< S.", fromSrv: true, flags: fSYN | fACK, seq: R, ack: L + 1, win: 65535, wscale: none, state: TCPSynRecv},
			{name: "> .", flags: fACK, seq: L + 1, ack: R + 1, win: 65535, wscale: none, state: TCPEstablished, assured: true},
			{name: "< 1:1001", fromSrv: true, flags: fACK, seq: R + 1, ack: L + 1, win: 65535, n: 1000, wscale: none, state: TCPEstablished, assured: true},
			{name: "< 1001:2001", fromSrv: true, flags: fACK, seq: R + 1001, ack: L + 1, win: 65535, n: 1000, wscale: none, state: TCPEstablished, assured: true},
			{name: "< 2001:3001", fromSrv: true, flags: fACK, seq: R + 2001, ack: L + 1, win: 65535, n: 1000, wscale: none, state: TCPEstablished, assured: true},
			{name: "> ack 3001", flags: fACK, seq: L + 1, ack: R + 3001, win: 65535, wscale: none, state: TCPEstablished, assured: true},
			{name: "< R 0", fromSrv: true, flags: fRST, seq: R, wscale: none, invalid: true, state: TCPEstablished, assured: true},
			{name: "< R 1000000", fromSrv: true, flags: fRST, seq: R + 1000000, wscale: none, invalid: true, state: TCPEstablished, assured: true},
			{name: "< R 42", fromSrv: true, flags: fRST, seq: R + 42, wscale: none, invalid: true, state: TCPEstablished, assured: true},
			{name: "> P. 1:1001", flags: fACK | fPSH, seq: L + 1, ack: R + 3001, win: 65535, n: 1000, wscale: none, state: TCPEstablished, assured: true},
			{name: "< ack 1001", fromSrv: true, flags: fACK, seq: R + 3001, ack: L + 1001, win: 65535, wscale: none, state: TCPEstablished, assured: true},
			{name: "< R. 3000", fromSrv: true, flags: fRST | fACK, seq: R + 3000, ack: L + 1001, wscale: none, invalid: true, state: TCPEstablished, assured: true},
			{name: "< R. 3001", fromSrv: true, flags: fRST | fACK, seq: R + 3001, ack: L + 1001, wscale: none, state: TCPClose, assured: true},
		}, 4},
		{"9.3 syn_challenge_ack", []tb9Step{
			{name: "> S", flags: fSYN, seq: L, win: 65535, wscale: 8, sackPerm: true, state: TCPSynSent, unreply: true},
			{name: "< . challenge", fromSrv: true, flags: fACK, seq: R + 145824453, ack: L + 643160523, win: 240, wscale: none,
				state: TCPSynSent, advance: 100 * time.Millisecond},
			{name: "> R", flags: fRST, seq: L + 643160523, wscale: none, state: TCPClose, advance: 10 * time.Millisecond},
			{name: "> S again", flags: fSYN, seq: L, win: 65535, wscale: 8, sackPerm: true, state: TCPSynSent, fresh: true, unreply: true,
				advance: 10 * time.Millisecond},
			{name: "< S.", fromSrv: true, flags: fSYN | fACK, seq: R, ack: L + 1, win: 250, wscale: 0, state: TCPSynRecv, advance: 100 * time.Millisecond},
			{name: "> .", flags: fACK, seq: L + 1, ack: R + 1, win: 256, wscale: none, state: TCPEstablished, assured: true},
		}, 0},
		{"9.4 synack_old", []tb9Step{
			{name: "> S", flags: fSYN, seq: L, win: 65535, wscale: 8, sackPerm: true, state: TCPSynSent, unreply: true},
			{name: "< S. stale", fromSrv: true, flags: fSYN | fACK, seq: R + 145824453, ack: L + 643160523, win: 240, wscale: 0,
				invalid: true, state: TCPSynSent, unreply: true, advance: 100 * time.Millisecond},
			{name: "> S retransmit", flags: fSYN, seq: L, win: 65535, wscale: 8, sackPerm: true, state: TCPSynSent, unreply: true,
				advance: 910 * time.Millisecond},
			{name: "< S. correct", fromSrv: true, flags: fSYN | fACK, seq: R + 145758918, ack: L + 1, win: 250, wscale: 0, state: TCPSynRecv},
			{name: "> P. 1:2", flags: fACK | fPSH, seq: L + 1, ack: R + 145758919, win: 256, n: 1, wscale: none, state: TCPEstablished, assured: true},
		}, 1},
		// 9.5: here the remote client is the original direction and the
		// local server replies.
		{"9.5 synack_reuse", []tb9Step{
			{name: "< S", flags: fSYN, seq: R, win: 32792, wscale: 7, state: TCPSynSent, unreply: true},
			{name: "> S.", fromSrv: true, flags: fSYN | fACK, seq: L, ack: R + 1, win: 65535, wscale: 8, state: TCPSynRecv},
			{name: "< .", flags: fACK, seq: R + 1, ack: L + 1, win: 257, wscale: none, state: TCPEstablished, assured: true},
			{name: "< P. 1:101", flags: fACK | fPSH, seq: R + 1, ack: L + 1, win: 257, n: 100, wscale: none, state: TCPEstablished, assured: true},
			{name: "> . ack 101", fromSrv: true, flags: fACK, seq: L + 1, ack: R + 101, win: 256, wscale: none, state: TCPEstablished, assured: true},
			{name: "< S 2000", flags: fSYN, seq: R + 2000, win: 32792, wscale: 7, state: TCPEstablished, assured: true, advance: time.Second},
			{name: "> . challenge ack", fromSrv: true, flags: fACK, seq: L + 1, ack: R + 101, win: 256, wscale: none, state: TCPEstablished, assured: true},
			{name: "< R. 101", flags: fRST | fACK, seq: R + 101, ack: L + 1, win: 257, wscale: none, state: TCPClose, assured: true},
			{name: "< S 2000 again", flags: fSYN, seq: R + 2000, win: 32792, wscale: 0, state: TCPSynSent, fresh: true, unreply: true,
				advance: 500 * time.Millisecond},
			{name: "> S.", fromSrv: true, flags: fSYN | fACK, seq: L + 77777, ack: R + 2001, win: 65535, wscale: none, state: TCPSynRecv},
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, h := run9(t, tt.steps)
			if n != tt.wantInvalid {
				t.Fatalf("%d INVALID packets, want %d", n, tt.wantInvalid)
			}
			checkTableInvariants(t, h.tab, h.now)
		})
	}
}
