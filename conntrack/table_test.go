package conntrack

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"

	"github.com/tunrouter/router/packet"
	"github.com/tunrouter/router/packet/packettest"
)

// This file holds the connection table's test harness (a Table with a
// clock and an event recorder, packets run through Track then Commit or
// Discard as the pipeline does) and the tests of the table itself: tentative
// entries, the entry limit and early drop, Reap, slab reuse, invariants and
// allocation.

const tbSec = int64(time.Second)

// tbStart is the harness clock's start: far from zero, because fill treats
// now == 0 as "unknown".
const tbStart = 1_000_000 * tbSec

// Addresses used throughout the table tests.
const (
	tbCli4 = "10.0.0.1"
	tbSrv4 = "192.0.2.1"
	tbRtr4 = "198.51.100.1" // a router on the path (sends ICMP errors)
	tbCli6 = "fd00::1"
	tbSrv6 = "fd00:2::1"
	tbRtr6 = "fd00:99::1"
)

// tbEvent is one recorded connection event.
type tbEvent struct {
	typ  EventType
	info EntryInfo
}

// tbEvents records events (an EventSink for tests).
type tbEvents struct{ list []tbEvent }

func (e *tbEvents) Event(t EventType, info *EntryInfo) {
	e.list = append(e.list, tbEvent{t, *info})
}

// take returns the events recorded since the last call.
func (e *tbEvents) take() []tbEvent {
	l := e.list
	e.list = nil
	return l
}

// tbHarness is a table with a clock.
type tbHarness struct {
	t   testing.TB
	tab *Table
	now int64
	ev  *tbEvents
	// hr is the helper verdict of the last pass.
	hr HelperResult
}

// newTB returns a harness around a table with the Linux defaults, Max
// 1024 and an event recorder; mod may change the configuration first.
func newTB(t testing.TB, mod func(cfg *Config, opt *TableOptions)) *tbHarness {
	t.Helper()
	cfg := DefaultConfig()
	ev := &tbEvents{}
	opt := TableOptions{Seed: 0x5eed, Max: 1024, Events: ev}
	if mod != nil {
		mod(&cfg, &opt)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return &tbHarness{t: t, tab: NewTable(cfg, opt), now: tbStart, ev: ev}
}

func tbDecode(b []byte) *packet.Parsed {
	p := new(packet.Parsed)
	p.Decode(b)
	return p
}

// track runs Track only (the caller commits or discards).
func (h *tbHarness) track(b []byte) (Result, *packet.Parsed) {
	p := tbDecode(b)
	return h.tab.Track(p, TrackArgs{Now: h.now}), p
}

// pass runs b through Track and, the filter having accepted it, Commit.
func (h *tbHarness) pass(b []byte) Result { return h.passArgs(b, TrackArgs{}) }

func (h *tbHarness) passArgs(b []byte, a TrackArgs) Result {
	p := tbDecode(b)
	a.Now = h.now
	r := h.tab.Track(p, a)
	h.hr = h.tab.Commit(&r, p, h.now)
	return r
}

// drop runs b through Track and, the filter having dropped it, Discard.
func (h *tbHarness) drop(b []byte) Result {
	p := tbDecode(b)
	r := h.tab.Track(p, TrackArgs{Now: h.now})
	h.tab.Discard(&r)
	return r
}

func (h *tbHarness) adv(d time.Duration) { h.now += int64(d) }

// entry returns the live entry one of whose tuples is k, failing the test
// when there is none.
func (h *tbHarness) entry(k packet.FlowKey) EntryInfo {
	h.t.Helper()
	info, _, ok := h.tab.Lookup(k, h.now)
	if !ok {
		h.t.Fatalf("no entry for %v", k)
	}
	return info
}

// absent fails the test when k has a live entry.
func (h *tbHarness) absent(k packet.FlowKey) {
	h.t.Helper()
	if info, _, ok := h.tab.Lookup(k, h.now); ok {
		h.t.Fatalf("entry for %v exists: %s", k, info.Format(nil))
	}
}

// listed returns the number of entries List reports.
func (h *tbHarness) listed() int {
	n := 0
	h.tab.List(h.now, func(*EntryInfo) bool { n++; return true })
	return n
}

// bucket returns the hash bucket of k.
func (h *tbHarness) bucket(k packet.FlowKey) uint32 { return h.tab.bucketOf(&k) }

// wantRes fails unless r has ctinfo want (and, when want is Invalid, the
// given reason).
func wantRes(t testing.TB, what string, r Result, want CtInfo, reason Reason) {
	t.Helper()
	if r.Info != want {
		t.Fatalf("%s: ctinfo %v (reason %q), want %v", what, r.Info, r.Reason, want)
	}
	if want == Invalid && r.Reason != reason {
		t.Fatalf("%s: reason %q, want %q", what, r.Reason, reason)
	}
	if want != Invalid && r.Reason != ReasonNone {
		t.Fatalf("%s: %v with reason %q", what, r.Info, r.Reason)
	}
}

// wantTimeout fails unless the entry of k expires in exactly d.
func (h *tbHarness) wantTimeout(what string, k packet.FlowKey, d time.Duration) {
	h.t.Helper()
	if got := h.entry(k).Timeout; got != d {
		h.t.Fatalf("%s: timeout %v, want %v", what, got, d)
	}
}

// ---- TCP conversations ----

// tbTCP builds the segments of one TCP connection, keeping each side's
// next sequence number. Windows are 65535 without scaling.
type tbTCP struct {
	cli, srv string // "addr:port"
	c, s     uint32 // next sequence number of the client and the server
	win      uint16
}

func newTBTCP(cli, srv string, cISN, sISN uint32) *tbTCP {
	return &tbTCP{cli: cli, srv: srv, c: cISN, s: sISN, win: 65535}
}

func tbPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

// seg builds a segment from the client (fromCli) or the server carrying n
// payload bytes, acknowledging everything the peer sent, and advances the
// sender's sequence number.
func (x *tbTCP) seg(fromCli bool, flags packet.TCPFlags, n int) []byte {
	src, dst, seq, ack := x.cli, x.srv, &x.c, x.s
	if !fromCli {
		src, dst, seq, ack = x.srv, x.cli, &x.s, x.c
	}
	o := packettest.TCPOpts{Flags: flags, Seq: *seq, Win: x.win, WScale: packettest.NoWScale, Payload: tbPayload(n)}
	if flags&packet.ACK != 0 {
		o.Ack = ack
	}
	*seq += uint32(n)
	if flags&packet.SYN != 0 {
		*seq++
	}
	if flags&packet.FIN != 0 {
		*seq++
	}
	return packettest.TCP(src, dst, o)
}

func (x *tbTCP) cl(flags packet.TCPFlags, n int) []byte { return x.seg(true, flags, n) }
func (x *tbTCP) sv(flags packet.TCPFlags, n int) []byte { return x.seg(false, flags, n) }

// key returns the connection's original tuple.
func (x *tbTCP) key() packet.FlowKey { return packettest.Key(packet.TCP, x.cli, x.srv) }

// handshake runs SYN, SYN/ACK, ACK through the table and checks the
// ctinfo of each.
func (h *tbHarness) handshake(x *tbTCP) {
	h.t.Helper()
	wantRes(h.t, "SYN", h.pass(x.cl(packet.SYN, 0)), New, 0)
	wantRes(h.t, "SYN/ACK", h.pass(x.sv(packet.SYN|packet.ACK, 0)), EstablishedReply, 0)
	wantRes(h.t, "ACK", h.pass(x.cl(packet.ACK, 0)), Established, 0)
}

// udp4 returns a UDP/IPv4 datagram between two "addr:port" endpoints.
func udp4(src, dst string) []byte { return packettest.UDP4(src, dst, []byte("payload")) }

func udpKey(src, dst string) packet.FlowKey { return packettest.Key(packet.UDP, src, dst) }

// assureUDP makes the UDP flow src -> dst ASSURED (request, reply, and a
// packet more than 2 s after creation).
func (h *tbHarness) assureUDP(src, dst string) {
	h.t.Helper()
	h.pass(udp4(src, dst))
	h.pass(udp4(dst, src))
	h.adv(3 * time.Second)
	if r := h.pass(udp4(src, dst)); r.Status&StatusAssured == 0 {
		h.t.Fatalf("%s -> %s not assured: %v", src, dst, r.Status)
	}
}

// ---- invariants ----

// checkTableInvariants verifies the table's structure and its public
// views: the slab accounting, that every confirmed entry sits exactly once
// in the chain of each of its tuples and nowhere else, Len <= Max, that List
// reports exactly the confirmed unexpired entries and that each of them is
// found by its id and by both tuples.
func checkTableInvariants(t testing.TB, tab *Table, now int64) {
	t.Helper()
	if tab.Len() > tab.Max() {
		t.Fatalf("Len %d > Max %d", tab.Len(), tab.Max())
	}
	live, linked, unexpired := 0, 0, 0
	for i := uint32(0); i < tab.nslots; i++ {
		c := tab.at(i)
		if c.live {
			live++
		}
		if c.linked {
			if !c.live {
				t.Fatalf("slot %d linked but not live", i)
			}
			linked++
			if c.expires > now {
				unexpired++
			}
		}
	}
	if live != tab.Len() {
		t.Fatalf("%d live slots, Len %d", live, tab.Len())
	}
	free := 0
	for f := tab.freeHead; f != 0; f = tab.at(f - 1).next[0] {
		if tab.at(f - 1).live {
			t.Fatalf("free slot %d is live", f-1)
		}
		free++
		if free > int(tab.nslots) {
			t.Fatalf("free list loops")
		}
	}
	if free+live != int(tab.nslots) {
		t.Fatalf("%d free + %d live != %d slots", free, live, tab.nslots)
	}
	seen := make(map[uint32]int)
	for b := range tab.buckets {
		n := 0
		for ref := tab.buckets[b]; ref != 0; {
			i, d := (ref-1)>>1, Dir((ref-1)&1)
			if i >= tab.nslots {
				t.Fatalf("bucket %d: reference to slot %d beyond %d", b, i, tab.nslots)
			}
			c := tab.at(i)
			if !c.linked {
				t.Fatalf("bucket %d: slot %d chained but not linked", b, i)
			}
			k := tab.tuple(c, d)
			if hb := tab.bucketOf(&k); hb != uint32(b) {
				t.Fatalf("slot %d dir %v in bucket %d, hashes to %d", i, d, b, hb)
			}
			seen[ref]++
			ref = c.next[d]
			if n++; n > 2*int(tab.nslots) {
				t.Fatalf("bucket %d loops", b)
			}
		}
	}
	if len(seen) != 2*linked {
		t.Fatalf("%d chain nodes for %d linked entries", len(seen), linked)
	}
	for ref, n := range seen {
		if n != 1 {
			t.Fatalf("node %d chained %d times", ref, n)
		}
	}
	listed := 0
	tab.List(now, func(info *EntryInfo) bool {
		listed++
		for d, k := range [2]packet.FlowKey{info.Orig, info.Reply} {
			got, dir, ok := tab.Lookup(k, now)
			// A self-inverse tuple (same address and port at both ends)
			// is found in the reply direction first, as in the kernel.
			if !ok || got.ID != info.ID || (dir != Dir(d) && info.Orig != info.Reply) {
				t.Fatalf("Lookup(%v) = %v %v %v, want id %v dir %v", k, got.ID, dir, ok, info.ID, Dir(d))
			}
		}
		if got, ok := tab.Get(info.ID, now); !ok || got.Orig != info.Orig {
			t.Fatalf("Get(%v) = %v, %v", info.ID, got.Orig, ok)
		}
		if info.Status&StatusConfirmed == 0 {
			t.Fatalf("listed entry %v not confirmed", info.ID)
		}
		return true
	})
	if listed != unexpired {
		t.Fatalf("List reports %d entries, %d are confirmed and unexpired", listed, unexpired)
	}
}

// ---- tests ----

// A tentative entry is counted by Len but invisible until Commit; Discard
// removes it completely, so the next packet of the flow is NEW again.
func TestTableCommitDiscard(t *testing.T) {
	h := newTB(t, nil)
	a, b := tbCli4+":5000", tbSrv4+":53"
	k := udpKey(a, b)

	r, p := h.track(udp4(a, b))
	wantRes(t, "first", r, New, 0)
	if !r.IsNewEntry() || !r.HasConn() {
		t.Fatalf("first packet: IsNewEntry %v HasConn %v", r.IsNewEntry(), r.HasConn())
	}
	if h.tab.Len() != 1 {
		t.Fatalf("Len %d with a tentative entry, want 1", h.tab.Len())
	}
	h.absent(k)
	if n := h.listed(); n != 0 {
		t.Fatalf("List shows %d entries before Commit", n)
	}
	h.tab.Discard(&r)
	if h.tab.Len() != 0 || r.HasConn() || r.IsNewEntry() {
		t.Fatalf("after Discard: Len %d HasConn %v IsNewEntry %v", h.tab.Len(), r.HasConn(), r.IsNewEntry())
	}
	// Commit after Discard does nothing.
	h.tab.Commit(&r, p, h.now)
	if h.tab.Len() != 0 || h.listed() != 0 {
		t.Fatalf("Commit after Discard confirmed something")
	}
	h.absent(k)
	if ev := h.ev.take(); len(ev) != 0 {
		t.Fatalf("events for a discarded entry: %v", ev)
	}

	r, p = h.track(udp4(a, b))
	wantRes(t, "after discard", r, New, 0)
	if !r.IsNewEntry() {
		t.Fatalf("retransmission after Discard did not create an entry")
	}
	h.tab.Commit(&r, p, h.now)
	info := h.entry(k)
	if info.Status&StatusConfirmed == 0 || h.tab.Len() != 1 {
		t.Fatalf("after Commit: status %v Len %d", info.Status, h.tab.Len())
	}
	// A second Commit of the same result and a Discard of a committed
	// result change nothing.
	h.tab.Commit(&r, p, h.now)
	h.tab.Discard(&r)
	if st := h.tab.Stats(); st.Insert != 1 || h.tab.Len() != 1 {
		t.Fatalf("Insert %d Len %d after repeated Commit/Discard, want 1 1", st.Insert, h.tab.Len())
	}
	// Discarding a packet of a confirmed entry keeps the entry.
	r = h.drop(udp4(a, b))
	wantRes(t, "dropped second packet", r, New, 0)
	if got := h.entry(k); got.ID != info.ID {
		t.Fatalf("entry replaced: id %v -> %v", info.ID, got.ID)
	}
	checkTableInvariants(t, h.tab, h.now)
}

// ID layout: worker in the top byte, never zero, unique across slot reuse;
// the ids of removed entries no longer resolve.
func TestTableIDs(t *testing.T) {
	h := newTB(t, func(_ *Config, o *TableOptions) { o.Worker = 3; o.Max = 16 })
	seen := map[ConnID]bool{}
	var old []ConnID
	for round := 0; round < 5; round++ {
		var ids []ConnID
		for i := 0; i < 16; i++ {
			src := fmt.Sprintf("%s:%d", tbCli4, 1000+i)
			h.pass(udp4(src, tbSrv4+":53"))
			id := h.entry(udpKey(src, tbSrv4+":53")).ID
			if id == 0 || uint8(id>>56) != 3 {
				t.Fatalf("id %#x: want worker 3 in the top byte, non-zero", uint64(id))
			}
			if seen[id] {
				t.Fatalf("round %d: id %#x reused", round, uint64(id))
			}
			seen[id] = true
			ids = append(ids, id)
		}
		for _, id := range old {
			if _, ok := h.tab.Get(id, h.now); ok {
				t.Fatalf("old id %#x resolves", uint64(id))
			}
			if h.tab.Delete(id) {
				t.Fatalf("Delete of old id %#x succeeded", uint64(id))
			}
		}
		if n := h.tab.Flush(); n != 16 {
			t.Fatalf("Flush removed %d, want 16", n)
		}
		old = append(old, ids...)
	}
	if h.tab.nslots != 16 {
		t.Fatalf("slab grew to %d slots for 16 live entries", h.tab.nslots)
	}
	// Ids of another worker's table never resolve here.
	h.pass(udp4(tbCli4+":1", tbSrv4+":53"))
	id := h.entry(udpKey(tbCli4+":1", tbSrv4+":53")).ID
	if _, ok := h.tab.Get(id^(1<<56), h.now); ok {
		t.Fatalf("id of worker 2 resolved in worker 3's table")
	}
	if _, ok := h.tab.Get(id+1<<40, h.now); ok {
		t.Fatalf("id with a slot beyond the slab resolved")
	}
}

// The generation is 24 bits in the id; when it wraps, an id must still
// never be zero (zero means "no connection").
func TestTableIDNeverZero(t *testing.T) {
	h := newTB(t, func(_ *Config, o *TableOptions) { o.Max = 4 })
	h.pass(udp4(tbCli4+":1", tbSrv4+":53"))
	h.tab.Flush()
	// Make slot 0's next generation wrap to zero in the id's 24 bits.
	h.tab.at(0).gen = 1<<24 - 1
	h.pass(udp4(tbCli4+":2", tbSrv4+":53"))
	info := h.entry(udpKey(tbCli4+":2", tbSrv4+":53"))
	if info.ID == 0 {
		t.Fatalf("entry got id 0 after the generation wrapped")
	}
	if got, ok := h.tab.Get(info.ID, h.now); !ok || got.Orig != info.Orig {
		t.Fatalf("Get(%v) after wrap = %v", info.ID, ok)
	}
}

// earlyDropSetup finds flows for the early-drop tests in a table of 64
// buckets: the new flow (its bucket b), victims whose tuples hash to b+3,
// and far flows whose tuples are both outside b..b+7.
type earlyDropSetup struct {
	newFlow        [2]string
	victims, fars  [][2]string
	rangeLo, width uint32
}

func findEarlyDropFlows(h *tbHarness, nVictims, nFar int) earlyDropSetup {
	h.t.Helper()
	srv := tbSrv4 + ":53"
	var s earlyDropSetup
	s.newFlow = [2]string{tbCli4 + ":999", srv}
	b := h.bucket(udpKey(s.newFlow[0], srv))
	inRange := func(x uint32) bool { return (x-b)&h.tab.mask < 8 }
	for port := 1000; port < 60000 && (len(s.victims) < nVictims || len(s.fars) < nFar); port++ {
		f := [2]string{fmt.Sprintf("%s:%d", tbCli4, port), srv}
		k := udpKey(f[0], f[1])
		ob, rb := h.bucket(k), h.bucket(k.Reverse())
		switch {
		case ob == (b+3)&h.tab.mask && len(s.victims) < nVictims:
			s.victims = append(s.victims, f)
		case !inRange(ob) && !inRange(rb) && len(s.fars) < nFar:
			s.fars = append(s.fars, f)
		}
	}
	if len(s.victims) < nVictims || len(s.fars) < nFar {
		h.t.Fatalf("could not find flows for the bucket layout")
	}
	return s
}

// When the table is full, a new connection evicts the entries that are
// not ASSURED in the first of the eight buckets from its own that has
// any; with nothing evictable nearby the packet is dropped (table full),
// even if evictable entries exist elsewhere.
func TestTableEarlyDrop(t *testing.T) {
	tests := []struct {
		name            string
		victimsAssured  bool
		farUnassured    bool // one far flow is left unassured
		victimsExpired  bool
		wantNew         bool
		wantEarlyDrops  uint64
		wantVictimsGone bool
	}{
		{name: "evicts both unassured entries of the nearest bucket", wantNew: true, wantEarlyDrops: 2, wantVictimsGone: true},
		{name: "nearby entries assured: table full", victimsAssured: true, wantNew: false},
		{name: "unassured entry far away: still full", victimsAssured: true, farUnassured: true, wantNew: false},
		{name: "expired nearby entries are reaped, not early-dropped", victimsExpired: true, wantNew: true, wantVictimsGone: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTB(t, func(_ *Config, o *TableOptions) { o.Max = 4 })
			if len(h.tab.buckets) != 64 {
				t.Fatalf("%d buckets, the layout assumes 64", len(h.tab.buckets))
			}
			s := findEarlyDropFlows(h, 2, 2)
			for _, f := range s.victims {
				if tt.victimsAssured {
					h.assureUDP(f[0], f[1])
				} else {
					h.pass(udp4(f[0], f[1]))
				}
			}
			if tt.victimsExpired {
				h.adv(31 * time.Second) // victims expire; fars are created after
			}
			for i, f := range s.fars {
				if tt.farUnassured && i == 0 {
					h.pass(udp4(f[0], f[1]))
				} else {
					h.assureUDP(f[0], f[1])
				}
			}
			if h.tab.Len() != 4 {
				t.Fatalf("setup: Len %d, want 4", h.tab.Len())
			}
			h.ev.take()
			before := h.tab.Stats()
			r := h.pass(udp4(s.newFlow[0], s.newFlow[1]))
			st := h.tab.Stats()
			if tt.wantNew {
				wantRes(t, "new flow", r, New, 0)
				if r.Drop() {
					t.Fatalf("accepted packet says Drop")
				}
				h.entry(udpKey(s.newFlow[0], s.newFlow[1]))
			} else {
				wantRes(t, "new flow", r, Invalid, ReasonTableFull)
				if !r.Drop() || r.HasConn() {
					t.Fatalf("table full: Drop %v HasConn %v, want true false", r.Drop(), r.HasConn())
				}
				if st.Drop != before.Drop+1 || st.Invalid != before.Invalid {
					t.Fatalf("table full: Drop %d->%d Invalid %d->%d, want Drop+1, Invalid unchanged",
						before.Drop, st.Drop, before.Invalid, st.Invalid)
				}
				h.absent(udpKey(s.newFlow[0], s.newFlow[1]))
			}
			if got := st.EarlyDrop - before.EarlyDrop; got != tt.wantEarlyDrops {
				t.Fatalf("EarlyDrop +%d, want +%d", got, tt.wantEarlyDrops)
			}
			for _, f := range s.victims {
				_, _, ok := h.tab.Lookup(udpKey(f[0], f[1]), h.now)
				if ok == tt.wantVictimsGone {
					t.Fatalf("victim %v present=%v, want %v", f, ok, !tt.wantVictimsGone)
				}
			}
			for _, f := range s.fars {
				h.entry(udpKey(f[0], f[1]))
			}
			if h.tab.Len() > h.tab.Max() {
				t.Fatalf("Len %d > Max %d", h.tab.Len(), h.tab.Max())
			}
			if tt.wantVictimsGone {
				want := EventEarlyDrop
				if tt.victimsExpired {
					want = EventExpired
				}
				n := 0
				for _, e := range h.ev.take() {
					if e.typ == want {
						n++
					}
				}
				if n != len(s.victims) {
					t.Fatalf("%d %v events, want %d", n, want, len(s.victims))
				}
			}
			checkTableInvariants(t, h.tab, h.now)
		})
	}
}

// Tentative entries count against the limit: with Max 1, a second new flow
// while the first is unconfirmed cannot get an entry (nothing confirmed to
// evict).
func TestTableTentativeCountsAgainstMax(t *testing.T) {
	h := newTB(t, func(_ *Config, o *TableOptions) { o.Max = 1 })
	r1, p1 := h.track(udp4(tbCli4+":1", tbSrv4+":53"))
	wantRes(t, "first", r1, New, 0)
	r2 := h.pass(udp4(tbCli4+":2", tbSrv4+":53"))
	wantRes(t, "second", r2, Invalid, ReasonTableFull)
	h.tab.Commit(&r1, p1, h.now)
	if h.tab.Len() != 1 {
		t.Fatalf("Len %d, want 1", h.tab.Len())
	}
}

// Reap examines at most 4*budget slots per call and removes at most budget
// entries.
func TestTableReapBounded(t *testing.T) {
	h := newTB(t, func(_ *Config, o *TableOptions) { o.Max = 4096 })
	const n = 1000
	// Even flows are created at start, odd ones 20 s later: at start+31 s
	// exactly the even ones (slots 0, 2, 4, ...) have expired.
	for i := 0; i < n; i += 2 {
		h.pass(udp4(fmt.Sprintf("%s:%d", tbCli4, 1000+i), tbSrv4+":53"))
		h.pass(udp4(fmt.Sprintf("%s:%d", tbCli4, 1001+i), tbSrv4+":54"))
	}
	for i := 1; i < n; i += 2 {
		h.tab.at(uint32(i)).expires += 20 * tbSec
	}
	// Nothing expired: a call scans exactly 4*budget slots.
	cur := h.tab.gcCursor
	if got := h.tab.Reap(h.now, 10); got != 0 {
		t.Fatalf("Reap with nothing expired removed %d", got)
	}
	if d := h.tab.gcCursor - cur; d != 40 {
		t.Fatalf("Reap(budget 10) scanned %d slots, want 40", d)
	}
	h.adv(31 * time.Second)
	cur = h.tab.gcCursor // 40: an even slot
	if got := h.tab.Reap(h.now, 5); got != 5 {
		t.Fatalf("Reap(5) removed %d, want 5", got)
	}
	// Every other slot is expired: five removals take nine slots.
	if d := h.tab.gcCursor - cur; d != 9 {
		t.Fatalf("Reap(5) scanned %d slots, want 9", d)
	}
	if got := h.tab.Reap(h.now, 0); got != 0 {
		t.Fatalf("Reap(0) removed %d", got)
	}
	if got := h.tab.Reap(h.now, -3); got != 0 {
		t.Fatalf("Reap(-3) removed %d", got)
	}
}

// Repeated bounded Reap calls remove exactly the expired entries; reaped
// ids stop resolving; live entries stay findable; freed slots are reused
// with fresh ids.
func TestTableReapEventually(t *testing.T) {
	h := newTB(t, func(_ *Config, o *TableOptions) { o.Max = 4096 })
	const n = 1000
	type flow struct {
		src string
		k   packet.FlowKey
		id  ConnID
	}
	var expired, alive []flow
	for i := 0; i < n; i++ {
		src := fmt.Sprintf("%s:%d", tbCli4, 1000+i)
		h.pass(udp4(src, tbSrv4+":53"))
		k := udpKey(src, tbSrv4+":53")
		f := flow{src, k, h.entry(k).ID}
		if i%3 == 0 {
			alive = append(alive, f)
		} else {
			expired = append(expired, f)
		}
	}
	h.adv(25 * time.Second)
	for _, f := range alive {
		h.pass(udp4(f.src, tbSrv4+":53"))
	}
	h.adv(6 * time.Second) // 31 s after creation, 6 s after the refresh
	h.ev.take()
	total, calls := 0, 0
	for total < len(expired) {
		got := h.tab.Reap(h.now, 7)
		if got > 7 {
			t.Fatalf("Reap(7) removed %d", got)
		}
		total += got
		if calls++; calls > 10000 {
			t.Fatalf("Reap made no progress: %d of %d after %d calls", total, len(expired), calls)
		}
	}
	if total != len(expired) {
		t.Fatalf("reaped %d, want %d", total, len(expired))
	}
	// One more full sweep finds nothing.
	for i := 0; i < n/28+2; i++ {
		if got := h.tab.Reap(h.now, 7); got != 0 {
			t.Fatalf("Reap after all expired were removed: %d", got)
		}
	}
	if h.tab.Len() != len(alive) {
		t.Fatalf("Len %d, want %d", h.tab.Len(), len(alive))
	}
	if st := h.tab.Stats(); st.Reaped != uint64(len(expired)) {
		t.Fatalf("Stats.Reaped %d, want %d", st.Reaped, len(expired))
	}
	ev := h.ev.take()
	if len(ev) != len(expired) {
		t.Fatalf("%d events, want %d", len(ev), len(expired))
	}
	for _, e := range ev {
		if e.typ != EventExpired || e.typ.String() != "DESTROY" {
			t.Fatalf("event %v (%s), want an expiry DESTROY", e.typ, e.typ)
		}
	}
	old := map[ConnID]bool{}
	for _, f := range expired {
		old[f.id] = true
		if _, ok := h.tab.Get(f.id, h.now); ok {
			t.Fatalf("reaped id %v resolves", f.id)
		}
		if _, _, ok := h.tab.Lookup(f.k, h.now); ok {
			t.Fatalf("reaped flow %v found", f.k)
		}
	}
	for _, f := range alive {
		if got := h.entry(f.k); got.ID != f.id {
			t.Fatalf("live flow %v: id %v, want %v", f.k, got.ID, f.id)
		}
	}
	// New flows reuse the freed slots, with new ids.
	slots := h.tab.nslots
	for i := 0; i < len(expired); i++ {
		src := fmt.Sprintf("[%s]:%d", tbCli6, 1000+i)
		h.pass(packettest.UDP6(src, "["+tbSrv6+"]:53", nil))
		if id := h.entry(udpKey(src, "["+tbSrv6+"]:53")).ID; old[id] {
			t.Fatalf("reused slot kept the id %v", id)
		}
	}
	if h.tab.nslots != slots {
		t.Fatalf("slab grew from %d to %d although %d slots were free", slots, h.tab.nslots, len(expired))
	}
	checkTableInvariants(t, h.tab, h.now)
}

// A budget too large for 4*budget to fit an int must still work.
func TestTableReapHugeBudget(t *testing.T) {
	h := newTB(t, nil)
	for i := 0; i < 10; i++ {
		h.pass(udp4(fmt.Sprintf("%s:%d", tbCli4, 1000+i), tbSrv4+":53"))
	}
	h.adv(31 * time.Second)
	for _, budget := range []int{math.MaxInt, math.MaxInt / 4, math.MaxInt/4 + 1} {
		h.tab.Reap(h.now, budget)
	}
	if h.tab.Len() != 0 {
		t.Fatalf("Len %d after Reap with huge budgets, want 0", h.tab.Len())
	}
}

// A tentative entry whose packet was neither committed nor discarded (a
// caller bug) must not leak forever: once expired, Reap frees it, and a
// late Commit of its result is then ignored.
func TestTableReapOrphanTentative(t *testing.T) {
	h := newTB(t, nil)
	r, p := h.track(udp4(tbCli4+":1", tbSrv4+":53"))
	wantRes(t, "orphan", r, New, 0)
	h.adv(29 * time.Second)
	h.tab.Reap(h.now, 100)
	if h.tab.Len() != 1 {
		t.Fatalf("unexpired tentative entry reaped")
	}
	h.adv(2 * time.Second)
	h.tab.Reap(h.now, 100)
	if h.tab.Len() != 0 {
		t.Fatalf("expired orphan tentative entry not reaped: Len %d", h.tab.Len())
	}
	// A new entry reuses the slot; the stale result must not confirm it.
	r2, _ := h.track(udp4(tbCli4+":2", tbSrv4+":53"))
	h.tab.Commit(&r, p, h.now)
	if n := h.listed(); n != 0 {
		t.Fatalf("stale Commit confirmed another packet's entry")
	}
	h.tab.Discard(&r2)
	if h.tab.Len() != 0 {
		t.Fatalf("Len %d", h.tab.Len())
	}
	if ev := h.ev.take(); len(ev) != 0 {
		t.Fatalf("events for an entry never confirmed: %v", ev)
	}
}

// Both tuples of an entry (without NAT) hash to the same bucket, for every
// protocol; different flows spread over the buckets.
func TestTableBucketSymmetric(t *testing.T) {
	h := newTB(t, nil)
	keys := []packet.FlowKey{
		udpKey(tbCli4+":5000", tbSrv4+":53"),
		packettest.Key(packet.TCP, "["+tbCli6+"]:40000", "["+tbSrv6+"]:80"),
		packettest.ICMPKey(tbCli4, tbSrv4, 8, 0, 77),
		packettest.ICMPKey(tbCli6, tbSrv6, 128, 0, 77),
		packettest.Key(packet.GRE, tbCli4, tbSrv4),
		udpKey(tbCli4+":53", tbCli4+":53"),
	}
	for _, k := range keys {
		inv, ok := k.Invert()
		if !ok {
			t.Fatalf("%v not invertible", k)
		}
		if h.bucket(k) != h.bucket(inv) {
			t.Fatalf("%v and its inverse in buckets %d and %d", k, h.bucket(k), h.bucket(inv))
		}
	}
	used := map[uint32]bool{}
	for port := 0; port < 512; port++ {
		used[h.bucket(udpKey(fmt.Sprintf("%s:%d", tbCli4, 1000+port), tbSrv4+":53"))] = true
	}
	// 512 flows over 2048 buckets: expect about 450 distinct buckets.
	if len(used) < 400 {
		t.Fatalf("512 flows use only %d of %d buckets", len(used), len(h.tab.buckets))
	}
	// Another seed gives another layout.
	h2 := newTB(t, func(_ *Config, o *TableOptions) { o.Seed = 12345 })
	same := 0
	for port := 0; port < 64; port++ {
		k := udpKey(fmt.Sprintf("%s:%d", tbCli4, 1000+port), tbSrv4+":53")
		if h.bucket(k) == h2.bucket(k) {
			same++
		}
	}
	if same > 8 {
		t.Fatalf("%d of 64 flows in the same bucket under two seeds", same)
	}
}

// Memory per entry: the slab entry plus two bucket heads per entry of
// capacity must stay within the 200-byte budget (BenchmarkTableMemory
// measures the heap).
func TestTableEntrySize(t *testing.T) {
	per := unsafe.Sizeof(conn{}) + 2*unsafe.Sizeof(uint32(0))
	if per > 200 {
		t.Fatalf("conn is %d bytes (+ bucket heads = %d), budget 200", unsafe.Sizeof(conn{}), per)
	}
	t.Logf("conn %d bytes, %d with bucket heads", unsafe.Sizeof(conn{}), per)
}

// A long random run of mixed traffic (the FuzzTrack generator driven by a
// PRNG) keeps every invariant.
func TestTableRandomTraffic(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, seed*7919))
			buf := make([]byte, 30000)
			for i := range buf {
				buf[i] = byte(r.Uint32())
			}
			runTrackFuzz(t, buf)
		})
	}
}

// Track + Commit allocate nothing on established flows, on new flows once
// the slab has room, with events enabled and with a helper attached.
func TestTrackNoAllocs(t *testing.T) {
	const runs = 200
	type pkt = tbPkt
	tests := []struct {
		name  string
		setup func(h *tbHarness) []pkt // packets for runs+1 calls
	}{
		{"established tcp4", func(h *tbHarness) []pkt { return tbTCPStream(h, tbCli4+":40000", tbSrv4+":80", runs+1) }},
		{"established tcp6", func(h *tbHarness) []pkt {
			return tbTCPStream(h, "["+tbCli6+"]:40000", "["+tbSrv6+"]:80", runs+1)
		}},
		{"udp4 both directions", func(h *tbHarness) []pkt {
			var out []pkt
			for i := 0; i <= runs; i++ {
				b := udp4(tbCli4+":5000", tbSrv4+":53")
				if i%2 == 1 {
					b = udp4(tbSrv4+":53", tbCli4+":5000")
				}
				out = append(out, pkt{p: *tbDecode(b)})
			}
			return out
		}},
		{"new udp flows", func(h *tbHarness) []pkt {
			var out []pkt
			for i := 0; i <= runs; i++ {
				out = append(out, pkt{p: *tbDecode(udp4(fmt.Sprintf("%s:%d", tbCli4, 2000+i), tbSrv4+":53"))})
			}
			// Grow the slab first, then free it, so the run reuses slots.
			for i := range out {
				r := h.tab.Track(&out[i].p, TrackArgs{Now: h.now})
				h.tab.Commit(&r, &out[i].p, h.now)
			}
			h.tab.Flush()
			return out
		}},
		{"icmp errors", func(h *tbHarness) []pkt {
			q := udp4(tbCli4+":5000", tbSrv4+":53")
			h.pass(q)
			e := *tbDecode(packettest.ICMP4Error(tbRtr4, tbCli4, 3, 4, q))
			out := make([]pkt, runs+1)
			for i := range out {
				out[i].p = e
			}
			return out
		}},
		{"tcp with helper", func(h *tbHarness) []pkt {
			x := newTBTCP(tbCli4+":40001", tbSrv4+":21", 100, 900)
			h.passArgs(x.cl(packet.SYN, 0), TrackArgs{Helper: 1})
			h.pass(x.sv(packet.SYN|packet.ACK, 0))
			h.pass(x.cl(packet.ACK, 0))
			var out []pkt
			for i := 0; i <= runs; i++ {
				if i%2 == 0 {
					out = append(out, pkt{p: *tbDecode(x.cl(packet.ACK|packet.PSH, 10))})
				} else {
					out = append(out, pkt{p: *tbDecode(x.sv(packet.ACK, 0))})
				}
			}
			return out
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &tbCountingSink{}
			fh := &tbHelper{name: "fake"}
			h := newTB(t, func(_ *Config, o *TableOptions) {
				o.Events = sink
				o.Helpers = []Helper{fh}
			})
			pkts := tt.setup(h)
			i := 0
			allocs := testing.AllocsPerRun(runs, func() {
				q := &pkts[i]
				i++
				q.args.Now = h.now
				r := h.tab.Track(&q.p, q.args)
				if r.Info == Invalid {
					panic("invalid: " + r.Reason.String())
				}
				h.tab.Commit(&r, &q.p, h.now)
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per Track+Commit", allocs)
			}
			if tt.name == "tcp with helper" && fh.calls < runs {
				t.Fatalf("helper called %d times", fh.calls)
			}
		})
	}
}

// tbPkt is a decoded packet ready for Track.
type tbPkt struct {
	p    packet.Parsed
	args TrackArgs
}

// tbCountingSink counts events without retaining anything.
type tbCountingSink struct{ n [8]int }

func (s *tbCountingSink) Event(t EventType, _ *EntryInfo) { s.n[t&7]++ }

// tbTCPStream sets up an established connection in h and returns n
// decoded packets continuing it: client data and server ACKs alternately.
func tbTCPStream(h *tbHarness, cli, srv string, n int) []tbPkt {
	x := newTBTCP(cli, srv, 1000, 50000)
	h.handshake(x)
	out := make([]tbPkt, n)
	for i := range out {
		if i%2 == 0 {
			out[i].p = *tbDecode(x.cl(packet.ACK|packet.PSH, 100))
		} else {
			out[i].p = *tbDecode(x.sv(packet.ACK, 0))
		}
	}
	return out
}
