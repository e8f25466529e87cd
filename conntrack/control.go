package conntrack

import (
	"strconv"
	"time"

	"github.com/tunrouter/router/packet"
)

// EntryInfo is an exported copy of one entry, for listings (conntrack -L),
// events (-E) and state saved across restarts.
type EntryInfo struct {
	ID       ConnID
	Orig     packet.FlowKey
	Reply    packet.FlowKey
	Status   Status
	TCPState TCPState      // TCP connections only
	Timeout  time.Duration // remaining lifetime
	Created  int64         // ns, the pipeline's clock
	Packets  [2]uint64     // per direction (Original, Reply)
	Bytes    [2]uint64
	Helper   string // attached helper's name
	Master   ConnID // for expected connections: the connection that announced it
}

// EventType says what happened to an entry.
type EventType uint8

// Event types, as conntrack -E prints them.
const (
	EventNew EventType = iota + 1
	EventUpdate
	EventDestroy
	EventExpired
	EventEarlyDrop
)

func (e EventType) String() string {
	switch e {
	case EventNew:
		return "NEW"
	case EventUpdate:
		return "UPDATE"
	case EventDestroy, EventExpired, EventEarlyDrop:
		return "DESTROY"
	}
	return "?"
}

// EventSink receives connection events on the owning worker's goroutine.
// It must not block, must not retain info (the table reuses it) and must
// not call back into the table.
type EventSink interface {
	Event(t EventType, info *EntryInfo)
}

// emit sends event e for entry i; now (0 for DESTROY) gives the remaining
// timeout, which conntrack -E prints for NEW and UPDATE. The EntryInfo is
// the table's scratch copy, so events cost no allocation.
func (t *Table) emit(i uint32, e EventType, now int64) {
	info := &t.evInfo
	t.fill(i, info, now)
	t.events.Event(e, info)
	*info = EntryInfo{}
}

// fill copies entry i into info. now (0: unknown) gives the remaining
// timeout.
func (t *Table) fill(i uint32, info *EntryInfo, now int64) {
	c := t.at(i)
	*info = EntryInfo{
		ID:      t.id(i),
		Orig:    c.orig,
		Reply:   t.tuple(c, Reply),
		Status:  c.status,
		Created: c.created,
		Packets: c.packets,
		Bytes:   c.bytes,
	}
	if c.orig.Proto == packet.TCP {
		info.TCPState = c.tcp.state
	}
	if now != 0 && c.expires > now {
		info.Timeout = time.Duration(c.expires - now)
	}
	if e := t.ext(c); e != nil {
		info.Master = e.master
		if e.helper != 0 && int(e.helper) <= len(t.helpers) {
			info.Helper = t.helpers[e.helper-1].Name()
		}
	}
}

// List calls fn for every confirmed, unexpired entry until fn returns
// false. info is reused between calls.
func (t *Table) List(now int64, fn func(info *EntryInfo) bool) {
	var info EntryInfo
	for i := uint32(0); i < t.nslots; i++ {
		c := t.at(i)
		if !c.live || !c.linked || c.expires <= now {
			continue
		}
		t.fill(i, &info, now)
		if !fn(&info) {
			return
		}
	}
}

// Get returns the entry with the given id.
func (t *Table) Get(id ConnID, now int64) (EntryInfo, bool) {
	i, ok := t.lookupIndex(id)
	if !ok || t.at(i).expires <= now {
		return EntryInfo{}, false
	}
	var info EntryInfo
	t.fill(i, &info, now)
	return info, true
}

// Lookup returns the entry one of whose tuples is k.
func (t *Table) Lookup(k packet.FlowKey, now int64) (EntryInfo, Dir, bool) {
	i, d, ok := t.find(&k)
	if !ok || t.at(i).expires <= now {
		return EntryInfo{}, 0, false
	}
	var info EntryInfo
	t.fill(i, &info, now)
	return info, d, true
}

// Delete removes the entry with the given id (conntrack -D).
func (t *Table) Delete(id ConnID) bool {
	i, ok := t.lookupIndex(id)
	if !ok {
		return false
	}
	t.destroy(i, EventDestroy)
	return true
}

// DeleteMatching removes every confirmed entry for which match returns true
// and returns how many it removed (conntrack -D with filters; -F with a
// match-all).
func (t *Table) DeleteMatching(now int64, match func(info *EntryInfo) bool) int {
	var info EntryInfo
	n := 0
	for i := uint32(0); i < t.nslots; i++ {
		c := t.at(i)
		if !c.live || !c.linked {
			continue
		}
		t.fill(i, &info, now)
		if match(&info) {
			t.destroy(i, EventDestroy)
			n++
		}
	}
	return n
}

// Flush removes every entry (conntrack -F).
func (t *Table) Flush() int {
	return t.DeleteMatching(0, func(*EntryInfo) bool { return true })
}

// Stats are a table's counters, the per-CPU lines of conntrack -S plus
// INVALID packets by reason.
type Stats struct {
	Entries    int
	Found      uint64 // packets that found their entry
	Miss       uint64 // packets that found none (a new entry was tried)
	Insert     uint64 // entries confirmed
	Invalid    uint64 // INVALID packets
	Ignore     uint64 // TCP packets the tracker ignored (accepted, no state change)
	Drop       uint64 // packets dropped because the table was full
	EarlyDrop  uint64 // entries evicted to make room
	Expected   uint64 // connections created from an expectation
	HelperDrop uint64 // packets a helper dropped
	Untracked  uint64 // packets reported UNTRACKED (ND, MLD)
	Reaped     uint64 // expired entries removed by Reap
	InvalidBy  [NumReasons]uint64
}

// Stats returns a copy of the table's counters.
func (t *Table) Stats() Stats {
	s := t.stats
	s.Entries = t.n
	return s
}

// Add accumulates o into s (to sum the tables of all workers).
func (s *Stats) Add(o *Stats) {
	s.Entries += o.Entries
	s.Found += o.Found
	s.Miss += o.Miss
	s.Insert += o.Insert
	s.Invalid += o.Invalid
	s.Ignore += o.Ignore
	s.Drop += o.Drop
	s.EarlyDrop += o.EarlyDrop
	s.Expected += o.Expected
	s.HelperDrop += o.HelperDrop
	s.Untracked += o.Untracked
	s.Reaped += o.Reaped
	for i := range s.InvalidBy {
		s.InvalidBy[i] += o.InvalidBy[i]
	}
}

// Format appends the entry in the line format of conntrack -L (with
// accounting on and "-o id"), for example:
//
//	tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=192.0.2.1 sport=40000 dport=80 packets=3 bytes=180 src=192.0.2.1 dst=10.0.0.1 sport=80 dport=40000 packets=2 bytes=120 [ASSURED] mark=0 use=1 id=4294967296
//
// The protocol name is padded to 8 columns ("unknown" for protocols
// conntrack has no name for), each tuple is followed by its direction's
// counters, [UNREPLIED] follows the original tuple. helper=NAME comes
// before use=1 as in conntrack; master=ID (ours) before the id.
func (info *EntryInfo) Format(b []byte) []byte {
	p := info.Orig.Proto
	name := ctProtoName(p)
	b = append(b, name...)
	for n := len(name); n < 8; n++ {
		b = append(b, ' ')
	}
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(p), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(info.Timeout/time.Second), 10)
	b = append(b, ' ')
	if p == packet.TCP {
		b = append(b, info.TCPState.String()...)
		b = append(b, ' ')
	}
	b = info.Orig.AppendTuple(b)
	b = appendCounters(b, info.Packets[Original], info.Bytes[Original])
	if info.Status&StatusSeenReply == 0 {
		b = append(b, " [UNREPLIED]"...)
	}
	b = append(b, ' ')
	b = info.Reply.AppendTuple(b)
	b = appendCounters(b, info.Packets[Reply], info.Bytes[Reply])
	if info.Status&StatusAssured != 0 {
		b = append(b, " [ASSURED]"...)
	}
	b = append(b, " mark=0"...)
	if info.Helper != "" {
		b = append(b, " helper="...)
		b = append(b, info.Helper...)
	}
	b = append(b, " use=1"...)
	if info.Master != 0 {
		b = append(b, " master="...)
		b = strconv.AppendUint(b, uint64(info.Master), 10)
	}
	b = append(b, " id="...)
	b = strconv.AppendUint(b, uint64(info.ID), 10)
	return b
}

// ctProtoName is the protocol name conntrack prints (its own short list).
func ctProtoName(p packet.Proto) string {
	switch p {
	case packet.TCP, packet.UDP, packet.UDPLite, packet.ICMP, packet.ICMPv6, packet.SCTP, packet.GRE:
		return p.String()
	case 33:
		return "dccp"
	}
	return "unknown"
}

func appendCounters(b []byte, packets, bytes uint64) []byte {
	b = append(b, " packets="...)
	b = strconv.AppendUint(b, packets, 10)
	b = append(b, " bytes="...)
	return strconv.AppendUint(b, bytes, 10)
}
