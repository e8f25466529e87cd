package conntrack

import (
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/tunrouter/router/packet"
	"github.com/tunrouter/router/packet/packettest"
)

// Tests of the control plane: List, Get, Lookup, Delete, DeleteMatching,
// Flush, Stats, the conntrack -L line format and the events they emit.

// tbControlSetup fills a table with one established TCP connection, one
// replied UDP flow, one UDP flow that expires, a ping, and one tentative
// entry (a packet tracked but neither committed nor discarded yet).
type tbControlSetup struct {
	h                *tbHarness
	tcp              *tbTCP
	udp, gone, icmp  packet.FlowKey
	tentative        Result
	tentativeExpires int64
}

func newTBControl(t *testing.T) *tbControlSetup {
	h := newTB(t, nil)
	s := &tbControlSetup{h: h}
	s.gone = udpKey(tbCli4+":7000", tbSrv4+":53")
	h.pass(udp4(tbCli4+":7000", tbSrv4+":53"))
	h.adv(10 * time.Second)
	s.tcp = newTBTCP(tbCli4+":40000", tbSrv4+":80", 1, 2)
	h.handshake(s.tcp)
	s.udp = udpKey(tbCli4+":5000", tbSrv4+":53")
	h.pass(udp4(tbCli4+":5000", tbSrv4+":53"))
	h.pass(udp4(tbSrv4+":53", tbCli4+":5000"))
	s.icmp = packettest.ICMPKey(tbCli6, tbSrv6, 128, 0, 9)
	h.pass(packettest.ICMP6Echo(tbCli6, tbSrv6, 128, 9, 1))
	h.adv(21 * time.Second) // the first UDP flow expires
	s.tentative, _ = h.track(udp4(tbCli4+":6000", tbSrv4+":53"))
	h.ev.take()
	return s
}

func TestControlList(t *testing.T) {
	s := newTBControl(t)
	h := s.h
	got := map[packet.FlowKey]EntryInfo{}
	h.tab.List(h.now, func(info *EntryInfo) bool {
		got[info.Orig] = *info
		return true
	})
	if len(got) != 3 {
		t.Fatalf("List: %d entries, want 3 (confirmed and unexpired only)", len(got))
	}
	for _, k := range []packet.FlowKey{s.tcp.key(), s.udp, s.icmp} {
		info, ok := got[k]
		if !ok {
			t.Fatalf("List misses %v", k)
		}
		want, _ := k.Invert()
		if info.Reply != want || info.ID == 0 || info.Status&StatusConfirmed == 0 || info.Timeout <= 0 {
			t.Fatalf("%v: reply %v id %v status %v timeout %v", k, info.Reply, info.ID, info.Status, info.Timeout)
		}
	}
	if tcp := got[s.tcp.key()]; tcp.TCPState != TCPEstablished || tcp.Created != tbStart+10*tbSec || tcp.Timeout != 432000*time.Second-21*time.Second {
		t.Fatalf("tcp entry: state %v created %d timeout %v", tcp.TCPState, tcp.Created, tcp.Timeout)
	}
	if udp := got[s.udp]; udp.TCPState != TCPNone || udp.Packets != [2]uint64{1, 1} || udp.Timeout != 9*time.Second {
		t.Fatalf("udp entry: state %v packets %v timeout %v", udp.TCPState, udp.Packets, udp.Timeout)
	}
	// fn returning false stops the walk.
	n := 0
	h.tab.List(h.now, func(*EntryInfo) bool { n++; return false })
	if n != 1 {
		t.Fatalf("List called fn %d times after it returned false", n)
	}
}

func TestControlGetLookup(t *testing.T) {
	s := newTBControl(t)
	h := s.h
	info, d, ok := h.tab.Lookup(s.tcp.key(), h.now)
	if !ok || d != Original {
		t.Fatalf("Lookup(original) = %v %v", d, ok)
	}
	r, d, ok := h.tab.Lookup(s.tcp.key().Reverse(), h.now)
	if !ok || d != Reply || r.ID != info.ID {
		t.Fatalf("Lookup(reply) = %v %v %v", r.ID, d, ok)
	}
	g, ok := h.tab.Get(info.ID, h.now)
	if !ok || g.Orig != info.Orig || g.Reply != info.Reply || g.Status != info.Status || g.Timeout != info.Timeout {
		t.Fatalf("Get = %+v, Lookup = %+v", g, info)
	}
	// An ICMP key is found by its reply (type 129).
	if _, d, ok := h.tab.Lookup(packettest.ICMPKey(tbSrv6, tbCli6, 129, 0, 9), h.now); !ok || d != Reply {
		t.Fatalf("Lookup(echo reply key) = %v %v", d, ok)
	}
	for _, k := range []packet.FlowKey{
		s.gone,                                                   // expired
		udpKey(tbCli4+":6000", tbSrv4+":53"),                     // tentative
		udpKey(tbCli4+":5000", tbSrv4+":54"),                     // unknown
		packettest.ICMPKey(tbCli6, tbSrv6, 129, 0, 9),            // echo reply in the request's direction
		packettest.Key(packet.UDP, tbSrv4+":5000", tbCli4+":53"), // swapped ports only
	} {
		if info, _, ok := h.tab.Lookup(k, h.now); ok {
			t.Fatalf("Lookup(%v) found %v", k, info.Orig)
		}
	}
	if _, ok := h.tab.Get(0, h.now); ok {
		t.Fatalf("Get(0) found an entry")
	}
	// Get at a later time sees the entry expire.
	if _, ok := h.tab.Get(info.ID, h.now+432000*tbSec); ok {
		t.Fatalf("Get after the timeout found the entry")
	}
}

func TestControlDelete(t *testing.T) {
	s := newTBControl(t)
	h := s.h
	id := h.entry(s.udp).ID
	if !h.tab.Delete(id) {
		t.Fatalf("Delete failed")
	}
	ev := h.ev.take()
	if len(ev) != 1 || ev[0].typ != EventDestroy || ev[0].typ.String() != "DESTROY" || ev[0].info.ID != id || ev[0].info.Orig != s.udp {
		t.Fatalf("events %v", tbEventTypes(ev))
	}
	if h.tab.Delete(id) {
		t.Fatalf("second Delete succeeded")
	}
	if _, ok := h.tab.Get(id, h.now); ok {
		t.Fatalf("deleted id resolves")
	}
	h.absent(s.udp)
	// Traffic of the flow starts over.
	wantRes(t, "after delete", h.pass(udp4(tbSrv4+":53", tbCli4+":5000")), New, 0)
	if h.entry(udpKey(tbSrv4+":53", tbCli4+":5000")).ID == id {
		t.Fatalf("deleted id reused at once")
	}
	checkTableInvariants(t, h.tab, h.now)
}

func TestControlDeleteMatching(t *testing.T) {
	s := newTBControl(t)
	h := s.h
	var seen []packet.Proto
	n := h.tab.DeleteMatching(h.now, func(info *EntryInfo) bool {
		seen = append(seen, info.Orig.Proto)
		return info.Orig.Proto == packet.UDP
	})
	// The expired UDP entry (not reaped yet) is matched and removed too;
	// the tentative one is not the control plane's.
	if n != 2 {
		t.Fatalf("DeleteMatching removed %d, want 2", n)
	}
	if len(seen) != 4 {
		t.Fatalf("match saw %d entries, want 4 confirmed ones", len(seen))
	}
	h.absent(s.udp)
	h.entry(s.tcp.key())
	h.entry(s.icmp)
	ev := h.ev.take()
	if len(ev) != 2 || ev[0].typ != EventDestroy || ev[1].typ != EventDestroy {
		t.Fatalf("events %v", tbEventTypes(ev))
	}
	if h.tab.Len() != 3 { // tcp, icmp, tentative
		t.Fatalf("Len %d, want 3", h.tab.Len())
	}
}

func TestControlFlush(t *testing.T) {
	s := newTBControl(t)
	h := s.h
	if n := h.tab.Flush(); n != 4 {
		t.Fatalf("Flush removed %d, want 4 confirmed entries", n)
	}
	if ev := h.ev.take(); len(ev) != 4 {
		t.Fatalf("%d events, want 4", len(ev))
	}
	// The packet in flight still owns its tentative entry.
	if h.tab.Len() != 1 || h.listed() != 0 {
		t.Fatalf("Len %d listed %d after Flush", h.tab.Len(), h.listed())
	}
	h.tab.Discard(&s.tentative)
	if h.tab.Len() != 0 {
		t.Fatalf("Len %d", h.tab.Len())
	}
	if n := h.tab.Flush(); n != 0 {
		t.Fatalf("Flush of an empty table removed %d", n)
	}
	checkTableInvariants(t, h.tab, h.now)
}

func TestControlStats(t *testing.T) {
	h := newTB(t, nil)
	a, b := tbCli4+":5000", tbSrv4+":53"
	q := udp4(a, b)
	h.pass(q)          // miss, insert
	h.pass(udp4(b, a)) // found
	x := newTBTCP(tbCli4+":40000", tbSrv4+":80", 1, 2)
	h.handshake(x)                                                                                                         // miss, insert, found, found
	h.pass(packettest.TCP(x.cli, x.srv, packettest.TCPOpts{Flags: fSYN, Seq: 999, Win: 100, WScale: packettest.NoWScale})) // found, ignored
	h.pass(packettest.BadL4Checksum(udp4(a, b)))                                                                           // invalid
	h.pass(packettest.ICMP4Error(tbRtr4, tbCli4, 3, 3, q))                                                                 // found
	h.pass(packettest.ICMP(tbCli6, tbSrv6, packettest.ICMPOpts{Type: 136, TTL: 255, Data: make([]byte, 20)}))              // untracked
	h.pass(packettest.ICMP4Echo(tbCli4, tbSrv4, 0, 1, 1))                                                                  // invalid (reply without request)
	h.adv(31 * time.Second)
	h.tab.Reap(h.now, 100) // the UDP flow
	st := h.tab.Stats()
	want := Stats{Entries: 1, Found: 5, Miss: 3, Insert: 2, Invalid: 2, Ignore: 1, Untracked: 1, Reaped: 1}
	want.InvalidBy[ReasonUDPChecksum] = 1
	want.InvalidBy[ReasonICMPReplyNoRequest] = 1
	if st != want {
		t.Fatalf("Stats\n got %+v\nwant %+v", st, want)
	}
	sum := st
	sum.Add(&st)
	if sum.Found != 10 || sum.Entries != 2 || sum.InvalidBy[ReasonUDPChecksum] != 2 || sum.Reaped != 2 || sum.Ignore != 2 || sum.Untracked != 2 {
		t.Fatalf("Add: %+v", sum)
	}
}

// EntryInfo.Format prints conntrack -L's line (conntrack-tools 1.4.7 with
// accounting on and -o id, as printed on Linux 6.18): protocol name padded
// to 8, number, timeout in whole seconds, TCP state, the original tuple
// with its counters, [UNREPLIED], the reply tuple with its counters,
// [ASSURED], mark=0, helper=NAME, use=1, id.
func TestControlFormat(t *testing.T) {
	ap := netip.MustParseAddrPort
	key := func(p packet.Proto, s, d string) packet.FlowKey { return packet.KeyFromAddrs(p, ap(s), ap(d)) }
	tcp := key(packet.TCP, "127.0.0.1:40001", "127.0.0.1:8080")
	udp := key(packet.UDP, "127.0.0.1:40000", "127.0.0.1:5354")
	icmp := packettest.ICMPKey("127.0.0.1", "127.0.0.1", 8, 0, 77)
	icmpR, _ := icmp.Invert()
	other := packettest.Key(99, "127.0.0.1", "127.0.0.2")
	tcp6 := key(packet.TCP, "[fd00::1]:40002", "[fd00::2]:21")
	tests := []struct {
		name string
		info EntryInfo
		want string
	}{
		{"tcp time_wait", EntryInfo{ID: 3106470227, Orig: tcp, Reply: tcp.Reverse(), TCPState: TCPTimeWait,
			Status: StatusConfirmed | StatusSeenReply | StatusAssured, Timeout: 119*time.Second + 800*time.Millisecond,
			Packets: [2]uint64{5, 3}, Bytes: [2]uint64{271, 164}},
			"tcp      6 119 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=40001 dport=8080 packets=5 bytes=271 " +
				"src=127.0.0.1 dst=127.0.0.1 sport=8080 dport=40001 packets=3 bytes=164 [ASSURED] mark=0 use=1 id=3106470227"},
		{"udp unreplied", EntryInfo{ID: 2277584413, Orig: udp, Reply: udp.Reverse(), Status: StatusConfirmed,
			Timeout: 29*time.Second + time.Millisecond, Packets: [2]uint64{1, 0}, Bytes: [2]uint64{33, 0}},
			"udp      17 29 src=127.0.0.1 dst=127.0.0.1 sport=40000 dport=5354 packets=1 bytes=33 [UNREPLIED] " +
				"src=127.0.0.1 dst=127.0.0.1 sport=5354 dport=40000 packets=0 bytes=0 mark=0 use=1 id=2277584413"},
		{"icmp", EntryInfo{ID: 2964300447, Orig: icmp, Reply: icmpR, Status: StatusConfirmed | StatusSeenReply,
			Timeout: 29 * time.Second, Packets: [2]uint64{1, 1}, Bytes: [2]uint64{36, 36}},
			"icmp     1 29 src=127.0.0.1 dst=127.0.0.1 type=8 code=0 id=77 packets=1 bytes=36 " +
				"src=127.0.0.1 dst=127.0.0.1 type=0 code=0 id=77 packets=1 bytes=36 mark=0 use=1 id=2964300447"},
		{"unknown protocol", EntryInfo{ID: 3440191357, Orig: other, Reply: other.Reverse(), Status: StatusConfirmed,
			Timeout: 599 * time.Second, Packets: [2]uint64{1, 0}, Bytes: [2]uint64{24, 0}},
			"unknown  99 599 src=127.0.0.1 dst=127.0.0.2 packets=1 bytes=24 [UNREPLIED] " +
				"src=127.0.0.2 dst=127.0.0.1 packets=0 bytes=0 mark=0 use=1 id=3440191357"},
		{"tcp6 with helper", EntryInfo{ID: 4068351570, Orig: tcp6, Reply: tcp6.Reverse(), TCPState: TCPEstablished,
			Status: StatusConfirmed | StatusSeenReply | StatusAssured | StatusHelper, Timeout: 431999 * time.Second,
			Helper: "ftp", Packets: [2]uint64{3, 1}, Bytes: [2]uint64{180, 60}},
			"tcp      6 431999 ESTABLISHED src=fd00::1 dst=fd00::2 sport=40002 dport=21 packets=3 bytes=180 " +
				"src=fd00::2 dst=fd00::1 sport=21 dport=40002 packets=1 bytes=60 [ASSURED] mark=0 helper=ftp use=1 id=4068351570"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(tt.info.Format(nil)); got != tt.want {
				t.Fatalf("Format\n got %q\nwant %q", got, tt.want)
			}
			// Format appends.
			if got := string(tt.info.Format([]byte("x "))); got != "x "+tt.want {
				t.Fatalf("Format does not append: %q", got)
			}
		})
	}

	// Entries from the table print the same way.
	h := newTB(t, nil)
	x := newTBTCP(tbCli4+":40000", tbSrv4+":80", 1, 2)
	h.handshake(x)
	h.adv(500 * time.Millisecond)
	info := h.entry(x.key())
	want := "tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=192.0.2.1 sport=40000 dport=80 packets=2 bytes=80 " +
		"src=192.0.2.1 dst=10.0.0.1 sport=80 dport=40000 packets=1 bytes=40 [ASSURED] mark=0 use=1 id=" +
		strconv.FormatUint(uint64(info.ID), 10)
	if got := string(info.Format(nil)); got != want {
		t.Fatalf("table tcp entry\n got %q\nwant %q", got, want)
	}
	h.pass(udp4(tbCli4+":5000", tbSrv4+":53"))
	h.adv(1500 * time.Millisecond)
	info = h.entry(udpKey(tbCli4+":5000", tbSrv4+":53"))
	want = fmt.Sprintf("udp      17 28 src=10.0.0.1 dst=192.0.2.1 sport=5000 dport=53 packets=1 bytes=%d [UNREPLIED] "+
		"src=192.0.2.1 dst=10.0.0.1 sport=53 dport=5000 packets=0 bytes=0 mark=0 use=1 id=%d", len(udp4("1.1.1.1:1", "1.1.1.1:2")), info.ID)
	if got := string(info.Format(nil)); got != want {
		t.Fatalf("table udp entry\n got %q\nwant %q", got, want)
	}
}

func TestControlEventTypeStrings(t *testing.T) {
	for e, want := range map[EventType]string{EventNew: "NEW", EventUpdate: "UPDATE", EventDestroy: "DESTROY",
		EventExpired: "DESTROY", EventEarlyDrop: "DESTROY", 0: "?", 99: "?"} {
		if got := e.String(); got != want {
			t.Fatalf("EventType(%d) = %q, want %q", e, got, want)
		}
	}
}
