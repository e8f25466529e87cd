package conntrack

import (
	"bytes"
	"encoding/gob"
	"testing"
	"time"

	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
)

// TestSnapshotRestore saves a table with an established TCP connection (in
// the middle of its data), a UDP flow and an ICMP echo, restores it into a
// fresh table at another clock, and checks that the connections go on as
// if nothing happened: in-window data is ESTABLISHED, out-of-window data is
// still INVALID (the window state survived), the timeouts continue.
func TestSnapshotRestore(t *testing.T) {
	cfg := DefaultConfig()
	old := NewTable(cfg, TableOptions{Seed: 1})
	now := int64(10 * time.Second)
	c, s := "10.0.0.1:40000", "10.0.0.2:80"
	step := func(tb *Table, pkt []byte, at int64) Result {
		p := pt.MustDecode(pkt)
		r := tb.Track(p, TrackArgs{Now: at})
		if r.Info != Invalid {
			tb.Commit(&r, p, at)
		}
		return r
	}
	step(old, pt.TCP4(c, s, pt.TCPOpts{Flags: packet.SYN, Seq: 1000, Win: 65535, WScale: 7, SACKPerm: true}), now)
	step(old, pt.TCP4(s, c, pt.TCPOpts{Flags: packet.SYN | packet.ACK, Seq: 5000, Ack: 1001, Win: 65535, WScale: 7, SACKPerm: true}), now)
	step(old, pt.TCP4(c, s, pt.TCPOpts{Flags: packet.ACK, Seq: 1001, Ack: 5001, Win: 512}), now)
	step(old, pt.TCP4(c, s, pt.TCPOpts{Flags: packet.ACK | packet.PSH, Seq: 1001, Ack: 5001, Win: 512, Payload: make([]byte, 100)}), now)
	step(old, pt.UDP4("10.0.0.1:5353", "10.0.0.2:53", []byte("q")), now)
	step(old, pt.UDP4("10.0.0.2:53", "10.0.0.1:5353", []byte("r")), now)
	step(old, pt.ICMP4Echo("10.0.0.1", "10.0.0.2", packet.ICMPEchoRequest, 9, 1), now)

	// Save through gob, as a state file would.
	later := now + int64(5*time.Second)
	var buf bytes.Buffer
	enc := gob.NewEncoder(&buf)
	n := 0
	old.Export(later, func(sn *Snapshot) bool {
		if err := enc.Encode(sn); err != nil {
			t.Fatal(err)
		}
		n++
		return true
	})
	if n != 3 {
		t.Fatalf("exported %d entries, want 3", n)
	}

	fresh := NewTable(cfg, TableOptions{Seed: 99, Worker: 3})
	restart := int64(1000 * time.Second) // another process, another clock
	dec := gob.NewDecoder(&buf)
	for i := 0; i < n; i++ {
		var sn Snapshot
		if err := dec.Decode(&sn); err != nil {
			t.Fatal(err)
		}
		if err := fresh.Restore(&sn, restart); err != nil {
			t.Fatal(err)
		}
		if err := fresh.Restore(&sn, restart); err != ErrRestoreExists {
			t.Fatalf("restoring twice: %v", err)
		}
	}
	if fresh.Len() != 3 {
		t.Fatalf("restored %d entries", fresh.Len())
	}
	info, _, ok := fresh.Lookup(pt.Key(packet.TCP, c, s), restart)
	if !ok || info.TCPState != TCPEstablished || info.Status&StatusAssured == 0 || info.Packets[Original] != 3 {
		t.Fatalf("restored TCP entry %+v", info)
	}
	// The TCP window survived: data right after what was seen is fine,
	// data far beyond the window is INVALID (a pickup would be liberal).
	if r := step(fresh, pt.TCP4(c, s, pt.TCPOpts{Flags: packet.ACK | packet.PSH, Seq: 1101, Ack: 5001, Win: 512, Payload: make([]byte, 100)}), restart); r.Info != Established {
		t.Fatalf("in-window data after restore: %v %v", r.Info, r.Reason)
	}
	if r := step(fresh, pt.TCP4(c, s, pt.TCPOpts{Flags: packet.ACK, Seq: 1001 + 1<<30, Ack: 5001, Win: 512, Payload: []byte("x")}), restart); r.Info != Invalid || r.Reason != ReasonTCPSeqAboveWindow {
		t.Fatalf("out-of-window data after restore: %v %v", r.Info, r.Reason)
	}
	// UDP keeps its remaining timeout: 30 s from the last packet, 5 s of
	// which had passed when it was saved.
	if info, _, ok := fresh.Lookup(pt.Key(packet.UDP, "10.0.0.1:5353", "10.0.0.2:53"), restart); !ok ||
		info.Timeout != 25*time.Second || info.Status&StatusSeenReply == 0 {
		t.Fatalf("restored UDP entry %+v", info)
	}
	// The echo reply is still a reply.
	if r := step(fresh, pt.ICMP4Echo("10.0.0.2", "10.0.0.1", packet.ICMPEchoReply, 9, 1), restart); r.Info != EstablishedReply {
		t.Fatalf("echo reply after restore: %v", r.Info)
	}
	// Restored ids are this table's.
	fresh.List(restart, func(info *EntryInfo) bool {
		if uint8(info.ID>>56) != 3 {
			t.Fatalf("id %x not from worker 3", uint64(info.ID))
		}
		return true
	})
}

func TestRestoreRefusesNonsense(t *testing.T) {
	tb := NewTable(DefaultConfig(), TableOptions{})
	good := Snapshot{Orig: pt.Key(packet.UDP, "10.0.0.1:1", "10.0.0.2:2"), Reply: pt.Key(packet.UDP, "10.0.0.2:2", "10.0.0.1:1"), Remaining: time.Second}
	for name, mut := range map[string]func(s *Snapshot){
		"family":    func(s *Snapshot) { s.Orig.Family = 0 },
		"proto":     func(s *Snapshot) { s.Reply.Proto = packet.TCP },
		"expired":   func(s *Snapshot) { s.Remaining = 0 },
		"icmp":      func(s *Snapshot) { s.Orig = pt.ICMPKey("10.0.0.1", "10.0.0.2", 3, 0, 0); s.Reply = s.Orig },
		"tcp state": func(s *Snapshot) { s.Orig.Proto, s.Reply.Proto, s.TCP.State = packet.TCP, packet.TCP, 42 },
	} {
		s := good
		mut(&s)
		if err := tb.Restore(&s, 1); err == nil {
			t.Errorf("%s: nonsense snapshot restored", name)
		}
	}
	if tb.Len() != 0 {
		t.Fatalf("%d entries after refused restores", tb.Len())
	}
	if err := tb.Restore(&good, 1); err != nil {
		t.Fatal(err)
	}
}
