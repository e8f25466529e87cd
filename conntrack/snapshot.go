package conntrack

import (
	"errors"
	"fmt"
	"time"

	"github.com/tunrouter/router/packet"
)

// Snapshot is the complete, exported state of one entry: what a router
// saves when it stops and restores when it starts, so that established
// connections survive a restart. Times are relative (remaining lifetime,
// age), so a snapshot does not depend on the clock of the process that
// took it. ConnIDs are not kept (they name slots of one process's tables);
// an expected connection keeps its EXPECTED status but loses the link to
// its master.
type Snapshot struct {
	Orig, Reply packet.FlowKey
	Status      Status
	Remaining   time.Duration
	Age         time.Duration
	Packets     [2]uint64
	Bytes       [2]uint64
	TCP         TCPSnapshot
	// Helper is the name of the attached helper ("" none); HelperState
	// is its per-connection state when the helper can marshal it.
	Helper      string
	HelperState []byte
}

// TCPSnapshot is the TCP tracker's state of an entry.
type TCPSnapshot struct {
	State                     TCPState
	Dir                       [2]TCPDirSnapshot
	LastSeq, LastAck, LastEnd uint32
	LastWin                   uint16
	LastIndex, LastDir        uint8
	LastWscale, LastFlags     uint8
	Retrans                   uint8
}

// TCPDirSnapshot is one direction's window data.
type TCPDirSnapshot struct {
	End, MaxEnd, MaxWin, MaxAck uint32
	Scale, Flags                uint8
}

// HelperStateMarshaler is implemented by helpers whose per-connection
// state can be saved with the entry.
type HelperStateMarshaler interface {
	MarshalState(state any) ([]byte, error)
	UnmarshalState(b []byte) (any, error)
}

func (c *tcpConn) snapshot() TCPSnapshot {
	s := TCPSnapshot{
		State: c.state, LastSeq: c.lastSeq, LastAck: c.lastAck, LastEnd: c.lastEnd, LastWin: c.lastWin,
		LastIndex: uint8(c.lastIndex), LastDir: uint8(c.lastDir), LastWscale: c.lastWscale,
		LastFlags: uint8(c.lastFlags), Retrans: c.retrans,
	}
	for d := range c.dir {
		x := &c.dir[d]
		s.Dir[d] = TCPDirSnapshot{End: x.end, MaxEnd: x.maxend, MaxWin: x.maxwin, MaxAck: x.maxack,
			Scale: x.scale, Flags: uint8(x.flags)}
	}
	return s
}

func (c *tcpConn) restore(s *TCPSnapshot) error {
	if s.State >= numTCPStates || s.LastDir > uint8(Reply) || s.LastIndex >= uint8(numTCPIndex) {
		return errors.New("tcp state out of range")
	}
	*c = tcpConn{
		state: s.State, lastSeq: s.LastSeq, lastAck: s.LastAck, lastEnd: s.LastEnd, lastWin: s.LastWin,
		lastIndex: tcpIndex(s.LastIndex), lastDir: Dir(s.LastDir), lastWscale: s.LastWscale,
		lastFlags: tcpDirFlags(s.LastFlags), retrans: s.Retrans,
	}
	for d := range c.dir {
		x := &s.Dir[d]
		c.dir[d] = tcpDirState{end: x.End, maxend: x.MaxEnd, maxwin: x.MaxWin, maxack: x.MaxAck,
			scale: min(x.Scale, tcpMaxWScale), flags: tcpDirFlags(x.Flags)}
	}
	return nil
}

// Export calls fn with a snapshot of every confirmed, unexpired entry
// until fn returns false. s is reused between calls.
func (t *Table) Export(now int64, fn func(s *Snapshot) bool) {
	var s Snapshot
	for i := uint32(0); i < t.nslots; i++ {
		c := t.at(i)
		if !c.live || !c.linked || c.expires <= now {
			continue
		}
		s = Snapshot{
			Orig:      c.orig,
			Reply:     t.tuple(c, Reply),
			Status:    c.status,
			Remaining: time.Duration(c.expires - now),
			Age:       time.Duration(max(now-c.created, 0)),
			Packets:   c.packets,
			Bytes:     c.bytes,
		}
		if c.orig.Proto == packet.TCP {
			s.TCP = c.tcp.snapshot()
		}
		if e := t.ext(c); e != nil && e.helper != 0 && int(e.helper) <= len(t.helpers) {
			h := t.helpers[e.helper-1]
			s.Helper = h.Name()
			if m, ok := h.(HelperStateMarshaler); ok && e.helperState != nil {
				if b, err := m.MarshalState(e.helperState); err == nil {
					s.HelperState = b
				}
			}
		}
		if !fn(&s) {
			return
		}
	}
}

// Errors from Restore.
var (
	ErrRestoreExists = errors.New("an entry with this tuple exists")
	ErrRestoreFull   = errors.New("table full")
)

// Restore inserts a confirmed entry from a snapshot taken by Export (of
// this process or an earlier one). The entry must belong to this table's
// worker (the pipeline steers snapshots by their tuple's hash). Entries
// whose tuple is already tracked are refused (ErrRestoreExists); a table
// at its limit refuses more (ErrRestoreFull); nonsensical snapshots are
// refused with a description.
func (t *Table) Restore(s *Snapshot, now int64) error {
	if s.Orig.Family != 4 && s.Orig.Family != 6 || s.Reply.Family != s.Orig.Family ||
		s.Orig.Proto != s.Reply.Proto || s.Remaining <= 0 {
		return fmt.Errorf("restore: invalid snapshot %v", s.Orig)
	}
	if s.Orig.Proto.IsICMP() {
		if _, ok := s.Orig.Invert(); !ok {
			return fmt.Errorf("restore: untrackable ICMP tuple %v", s.Orig)
		}
	}
	if _, _, ok := t.find(&s.Orig); ok {
		return ErrRestoreExists
	}
	if _, _, ok := t.find(&s.Reply); ok {
		return ErrRestoreExists
	}
	idx, ok := t.alloc()
	if !ok {
		return ErrRestoreFull
	}
	c := t.at(idx)
	c.orig = s.Orig
	c.status = s.Status &^ (StatusConfirmed | StatusDying | StatusHelper)
	c.expires = now + int64(s.Remaining)
	c.created = now - int64(s.Age)
	c.packets, c.bytes = s.Packets, s.Bytes
	if s.Orig.Proto == packet.TCP {
		if err := c.tcp.restore(&s.TCP); err != nil {
			t.free(idx)
			return fmt.Errorf("restore %v: %w", s.Orig, err)
		}
	}
	if inv, _ := s.Orig.Invert(); inv != s.Reply {
		t.extOrNew(c).reply, t.extOrNew(c).hasReply = s.Reply, true
	}
	if s.Helper != "" {
		for i, h := range t.helpers {
			if h.Name() != s.Helper {
				continue
			}
			e := t.extOrNew(c)
			e.helper = uint8(i + 1)
			c.status |= StatusHelper
			if m, ok := h.(HelperStateMarshaler); ok && len(s.HelperState) > 0 {
				if st, err := m.UnmarshalState(s.HelperState); err == nil {
					e.helperState = st
				}
			}
		}
	}
	t.link(idx)
	t.stats.Insert++
	return nil
}
