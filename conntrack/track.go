package conntrack

import (
	"time"

	"github.com/tunrouter/router/packet"
)

// Result is what tracking decided for one packet. Pass it back to Commit
// (the packet was accepted and will be written) or Discard (dropped).
type Result struct {
	Info   CtInfo
	Reason Reason // why the packet is INVALID (Info == Invalid) or dropped (ReasonTableFull)

	// Status is the connection's status after this packet (zero without a
	// connection). Helper is the attached helper, 0 when none.
	Status Status
	Helper HelperID
	// MasterHelper is, for a connection created from an expectation, the
	// helper of the master that announced it (nft's "ct helper" match).
	MasterHelper HelperID
	// TCPState is the TCP state after this packet (TCP connections only),
	// for traces.
	TCPState TCPState

	idx   uint32 // entry index+1, 0 when none
	isNew bool   // the entry was created by this packet and is not confirmed
	gen   uint32
}

// State returns the packet's user-visible state.
func (r *Result) State() State { return r.Info.State() }

// HasConn reports whether the packet is attached to a connection.
func (r *Result) HasConn() bool { return r.idx != 0 }

// IsNewEntry reports whether this packet created the (not yet confirmed)
// entry.
func (r *Result) IsNewEntry() bool { return r.isNew }

// Drop reports whether conntrack itself requires the packet to be dropped
// (table full), whatever the rules say.
func (r *Result) Drop() bool { return r.Reason == ReasonTableFull }

// TrackArgs are the per-packet inputs besides the packet.
type TrackArgs struct {
	Now int64 // nanoseconds (a monotonic clock read once per batch)
	// Helper to attach if this packet creates a connection (from the
	// prerouting chain or the helper port configuration); 0 = none.
	Helper HelperID
	// ChecksumVerified says the transport checksum is known good (e.g. the
	// TUN delivered a locally generated packet with a partial checksum that
	// was completed on read), so conntrack need not verify it.
	ChecksumVerified bool
}

func invalid(r Reason) Result { return Result{Info: Invalid, Reason: r} }

// Track classifies a decoded packet and updates the connection it belongs
// to. It never allocates once the table's slab covers the live entries.
//
// Untracked packets (a notrack rule) must not be passed to Track; neighbour
// discovery and MLD are reported as Untracked by Track itself.
func (t *Table) Track(p *packet.Parsed, a TrackArgs) Result {
	if p.Err != packet.ErrNone {
		return t.countInvalid(ReasonFromDecode(p.Err))
	}
	if p.Fragment {
		return t.countInvalid(ReasonFragment)
	}
	if p.Proto == packet.IPv6NoNext {
		return t.countInvalid(ReasonNoL4)
	}
	// The checksum comes first, as in the kernel's per-protocol error
	// checks: a corrupted packet is INVALID for its checksum whatever its
	// flags or type claim (and a corrupted ND packet is not UNTRACKED).
	if t.cfg.Checksum && !a.ChecksumVerified && !p.L4ChecksumValid() {
		switch p.Proto {
		case packet.TCP:
			return t.countInvalid(ReasonTCPChecksum)
		case packet.UDP:
			return t.countInvalid(ReasonUDPChecksum)
		case packet.ICMP:
			return t.countInvalid(ReasonICMPChecksum)
		default:
			return t.countInvalid(ReasonICMPv6Checksum)
		}
	}
	switch p.Proto {
	case packet.TCP:
		if r := tcpCheckFlags(p.TCPFlags); r != ReasonNone {
			return t.countInvalid(r)
		}
	case packet.ICMP:
		if p.ICMPType > packet.ICMPAddrMaskReply {
			return t.countInvalid(ReasonICMPType)
		}
		if p.IsICMPError() {
			return t.trackError(p, a.Now)
		}
	case packet.ICMPv6:
		if packet.IsICMPv6Untracked(p.ICMPType) {
			t.stats.Untracked++
			return Result{Info: Untracked}
		}
		// A redirect's checks come before its quoted packet is looked at
		// (the decoder exposes a well-formed redirected header as an
		// error's quote).
		if p.ICMPType == packet.ICMPv6Redirect {
			return t.trackRedirect6(p, a.Now)
		}
		if p.IsICMPError() {
			return t.trackError(p, a.Now)
		}
	}
	return t.trackNormal(p, &a, false)
}

func (t *Table) countInvalid(r Reason) Result {
	t.stats.Invalid++
	if r < NumReasons {
		t.stats.InvalidBy[r]++
	}
	return invalid(r)
}

// trackNormal resolves a non-error packet to its entry (resolve_normal_ct)
// and runs the protocol tracker.
func (t *Table) trackNormal(p *packet.Parsed, a *TrackArgs, again bool) Result {
	now := a.Now
	idx, dir, ok := t.find(&p.Key)
	if ok {
		c := t.at(idx)
		if c.expires <= now {
			t.destroy(idx, EventExpired)
			ok = false
		}
	}
	isNew := false
	if !ok {
		t.stats.Miss++
		var r Reason
		idx, r = t.create(p, a)
		if r != ReasonNone {
			if r == ReasonTableFull {
				t.stats.Drop++
				return Result{Info: Invalid, Reason: r}
			}
			return t.countInvalid(r)
		}
		dir, isNew = Original, true
	} else {
		t.stats.Found++
	}
	c := t.at(idx)
	var info CtInfo
	switch {
	case dir == Reply:
		info = EstablishedReply
	case c.status&StatusSeenReply != 0:
		info = Established
	case c.status&StatusExpected != 0:
		info = Related
	default:
		info = New
	}

	// changed collects what the kernel reports as an UPDATE event for this
	// packet (IPCT_REPLY, IPCT_PROTOINFO, IPCT_ASSURED); acct is false for
	// the packets the kernel does not account (ignored TCP packets and SYN
	// retransmissions, which return before nf_ct_refresh_acct).
	accepted, refresh, acct, timeout := true, true, true, time.Duration(0)
	oldStatus := c.status
	changed := false
	switch p.Proto {
	case packet.TCP:
		// The steady state of an established connection takes the fast
		// path (same result, less work); the rest the general tracker.
		if c.status&(StatusSeenReply|StatusAssured|StatusFixedTimeout|StatusSeqAdjust) == StatusSeenReply|StatusAssured {
			if to, ok := c.tcp.fastEstablished(p, dir, &t.cfg.TCP); ok {
				timeout = to
				break
			}
		}
		seg := segOf(p)
		var remaining time.Duration
		if c.expires > now {
			remaining = time.Duration(c.expires - now)
		}
		out := c.tcp.packet(&seg, tcpIn{dir: dir, status: c.status, cfg: &t.cfg.TCP, remaining: remaining})
		switch out.action {
		case tcpAccept:
			refresh, timeout = out.refresh, out.timeout
			acct = refresh || c.status&StatusFixedTimeout != 0
			if out.assured {
				c.status |= StatusAssured
			}
			changed = out.new != out.old
		case tcpIgnore:
			t.stats.Ignore++
			refresh, acct = false, false
		case tcpInvalid:
			if out.refresh {
				c.expires = now + int64(out.timeout)
			}
			if isNew {
				t.free(idx)
			}
			return t.countInvalid(out.reason)
		case tcpRecreate:
			if isNew || again {
				// Cannot happen for a fresh entry; be safe.
				if isNew {
					t.free(idx)
				}
				return t.countInvalid(ReasonTCPState)
			}
			t.destroy(idx, EventDestroy)
			return t.trackNormal(p, a, true)
		case tcpAcceptDelete:
			accepted = false
		}
	case packet.UDP, packet.UDPLite:
		timeout = t.cfg.UDPTimeout
		if c.status&StatusSeenReply != 0 && now > c.created+int64(2*time.Second) {
			timeout = t.cfg.UDPStreamTimeout
			c.status |= StatusAssured
		}
	case packet.ICMP:
		timeout = t.cfg.ICMPTimeout
	case packet.ICMPv6:
		timeout = t.cfg.ICMPv6Timeout
	default:
		timeout = t.cfg.GenericTimeout
	}
	if acct {
		c.packets[dir]++
		c.bytes[dir] += uint64(p.Length)
	}
	if refresh && c.status&StatusFixedTimeout == 0 {
		c.expires = now + int64(timeout)
	}
	if dir == Reply {
		c.status |= StatusSeenReply
	}
	changed = changed || c.status != oldStatus
	res := Result{
		Info:     info,
		Status:   c.status,
		TCPState: c.tcp.state,
		idx:      idx + 1,
		isNew:    isNew,
		gen:      c.gen,
	}
	if e := t.ext(c); e != nil {
		res.Helper = HelperID(e.helper)
		res.MasterHelper = HelperID(e.masterHelper)
	}
	if !accepted {
		// RST on a connection that never saw a reply: the packet passes
		// with its ctinfo, the entry goes now (2.8-3), with no UPDATE
		// before its DESTROY (the kernel drops events cached for a dying
		// entry).
		if isNew {
			t.free(idx)
		} else {
			t.destroy(idx, EventDestroy)
		}
		res.idx, res.isNew = 0, false
		return res
	}
	// A new entry reports everything in its NEW event at Commit.
	if changed && !isNew && t.events != nil {
		t.emit(idx, EventUpdate, now)
	}
	return res
}

// create allocates a tentative entry for the packet's tuple (init_conntrack
// plus the protocol's "new" check). It returns the entry index or why no
// entry can be made.
func (t *Table) create(p *packet.Parsed, a *TrackArgs) (uint32, Reason) {
	switch p.Proto {
	case packet.ICMP, packet.ICMPv6:
		if _, ok := p.Key.Invert(); !ok {
			if p.Proto == packet.ICMP {
				return 0, ReasonICMPUntrackable
			}
			return 0, ReasonICMPv6Untrackable
		}
	}
	idx, ok := t.alloc()
	if !ok {
		if !t.earlyDrop(&p.Key, a.Now) {
			return 0, ReasonTableFull
		}
		idx, ok = t.alloc()
		if !ok {
			return 0, ReasonTableFull
		}
	}
	c := t.at(idx)
	c.orig = p.Key
	c.created = a.Now
	c.expires = a.Now + int64(time.Minute) // replaced by the tracker's timeout

	// Expectations are looked up at allocation, before the protocol's new
	// check, as the kernel does: a data connection's first packet consumes
	// the expectation even if the tracker then rejects it.
	if t.expect != nil && t.expect.Len() > 0 {
		if x, ok := t.expect.Take(p.Key, a.Now); ok {
			c.status |= StatusExpected
			e := t.extOrNew(c)
			e.master = x.Master
			for i, h := range t.helpers {
				if h.Name() == x.Helper {
					e.masterHelper = uint8(i + 1)
				}
			}
			t.stats.Expected++
		}
	}
	if a.Helper != 0 && int(a.Helper) <= len(t.helpers) && c.status&StatusExpected == 0 {
		t.extOrNew(c).helper = uint8(a.Helper)
		c.status |= StatusHelper
	}

	var r Reason
	switch p.Proto {
	case packet.TCP:
		seg := segOf(p)
		r = c.tcp.init(&seg, &t.cfg.TCP)
	case packet.ICMP:
		switch p.ICMPType {
		case packet.ICMPEchoRequest, packet.ICMPTimestamp, packet.ICMPInfoRequest, packet.ICMPAddrMaskRequest:
		default:
			r = ReasonICMPReplyNoRequest
		}
	case packet.ICMPv6:
		switch p.ICMPType {
		case packet.ICMPv6EchoRequest, packet.ICMPv6NodeInfoQuery:
		default:
			r = ReasonICMPv6ReplyNoRequest
		}
	}
	if r != ReasonNone {
		t.free(idx)
		return 0, r
	}
	return idx, ReasonNone
}

// trackError handles ICMP/ICMPv6 errors (section 4 of the reference): they
// are RELATED to the connection the quoted packet belongs to, or INVALID.
func (t *Table) trackError(p *packet.Parsed, now int64) Result {
	v6 := p.Proto == packet.ICMPv6
	if p.InnerErr != packet.ErrNone {
		if v6 {
			return t.countInvalid(ReasonICMPv6BadQuote)
		}
		return t.countInvalid(ReasonICMPBadQuote)
	}
	inv, ok := p.Inner.Invert()
	if !ok {
		if v6 {
			return t.countInvalid(ReasonICMPv6QuoteNotInvertible)
		}
		return t.countInvalid(ReasonICMPQuoteNotInvertible)
	}
	idx, dir, found := t.find(&inv)
	if !found || t.at(idx).expires <= now {
		if v6 {
			return t.countInvalid(ReasonICMPv6Unknown)
		}
		return t.countInvalid(ReasonICMPUnknown)
	}
	c := t.at(idx)
	k := t.tuple(c, dir)
	if k.Dst != p.Key.Dst {
		if v6 {
			return t.countInvalid(ReasonICMPv6OuterDaddr)
		}
		return t.countInvalid(ReasonICMPOuterDaddr)
	}
	info := Related
	if dir == Reply {
		info = RelatedReply
	}
	// Like the kernel, an error neither refreshes nor counts on the entry
	// (no tracker runs, so no accounting), nor sets SEEN_REPLY.
	t.stats.Found++
	res := Result{Info: info, Status: c.status, TCPState: c.tcp.state, idx: idx + 1, gen: c.gen}
	if e := t.ext(c); e != nil {
		res.Helper = HelperID(e.helper)
		res.MasterHelper = HelperID(e.masterHelper)
	}
	return res
}

// trackRedirect6 applies the kernel's checks to an ICMPv6 redirect (3.3):
// code 0, hop limit 255 and a link-local source, then the first option
// must be present (a non-zero length) and be a redirected header, whose
// quoted packet is then handled like an error's.
func (t *Table) trackRedirect6(p *packet.Parsed, now int64) Result {
	if p.ICMPCode != 0 {
		// Not handled by the error path: the normal lookup cannot invert
		// type 137.
		return t.countInvalid(ReasonICMPv6Untrackable)
	}
	src := p.Key.Src
	if p.TTL != 255 || src[0] != 0xfe || src[1]&0xc0 != 0x80 {
		return t.countInvalid(ReasonICMPv6BadRedirect)
	}
	opt := p.L4Off + 8 + 32 // first option: after the target and destination
	if b := p.Buf(); opt+8 > p.Length || opt+2 > len(b) || b[opt+1] == 0 {
		// A short redirect, no options, or a zero-length option.
		return t.countInvalid(ReasonICMPv6BadRedirect)
	}
	if !p.IsICMPError() {
		// The first option is not a redirected header.
		return t.countInvalid(ReasonICMPv6Untrackable)
	}
	return t.trackError(p, now)
}

// Commit finishes a packet the filter accepted: it runs the connection's
// helper (which may still drop the packet), then confirms a new entry
// (inserts it into the table). It returns the helper's verdict.
func (t *Table) Commit(r *Result, p *packet.Parsed, now int64) HelperResult {
	if r.idx == 0 || !r.isNew && (r.Helper == 0 || r.Info == RelatedReply) {
		// Nothing to confirm and no helper to run: the common case of an
		// established connection.
		return HelperResult{}
	}
	i := r.idx - 1
	c := t.at(i)
	if !c.live || c.gen != r.gen {
		return HelperResult{}
	}
	var hr HelperResult
	if r.Helper != 0 && r.Info != RelatedReply && int(r.Helper) <= len(t.helpers) {
		e := t.ext(c)
		h := t.helpers[r.Helper-1]
		// The context lives in the table: a local would escape to the heap
		// through the interface call (one allocation per helper packet).
		ctx := &t.hctx
		*ctx = HelperContext{
			Packet: p,
			Info:   r.Info,
			Now:    now,
			ConnID: t.id(i),
			Tuple:  [2]packet.FlowKey{c.orig, t.tuple(c, Reply)},
			State:  &e.helperState,
			Expect: t.expect,
		}
		hr = h.Help(ctx)
		*ctx = HelperContext{} // keep no reference to the packet
		if hr.Drop {
			t.stats.HelperDrop++
			if r.isNew {
				// The entry is never confirmed: whatever its helper
				// announced goes with it.
				if t.expect != nil {
					t.expect.RemoveMaster(t.id(i))
				}
				t.free(i)
				r.idx, r.isNew = 0, false
			}
			return hr
		}
	}
	if r.isNew {
		t.link(i)
		r.isNew = false
		t.stats.Insert++
		if t.events != nil {
			t.emit(i, EventNew, now)
		}
	}
	return hr
}

// Discard undoes a tentative entry the packet created when the filter
// dropped the packet (the kernel never confirms it). Other results need no
// discard.
func (t *Table) Discard(r *Result) {
	if r.idx == 0 || !r.isNew {
		return
	}
	i := r.idx - 1
	c := t.at(i)
	if c.live && c.gen == r.gen && !c.linked {
		t.free(i)
	}
	r.idx, r.isNew = 0, false
}

// earlyDrop frees an entry when the table is full (8.2): scan up to eight
// buckets from the new tuple's, delete expired entries and, in the first
// bucket that has any, every confirmed entry that is not assured.
func (t *Table) earlyDrop(k *packet.FlowKey, now int64) bool {
	b := t.bucketOf(k)
	for n := uint32(0); n < 8; n++ {
		dropped := false
		bucket := (b + n) & t.mask
		for ref := t.buckets[bucket]; ref != 0; {
			i, dir := (ref-1)>>1, Dir((ref-1)&1)
			c := t.at(i)
			ref = c.next[dir]
			if c.expires <= now {
				t.destroy(i, EventExpired)
				dropped = true
				ref = t.buckets[bucket] // chain changed: restart
				continue
			}
			if c.status&StatusAssured == 0 {
				t.destroy(i, EventEarlyDrop)
				t.stats.EarlyDrop++
				dropped = true
				ref = t.buckets[bucket]
			}
		}
		if dropped {
			return true
		}
	}
	return false
}

// Reap removes up to budget expired entries, walking the slab from where
// the previous call stopped and examining at most 4*budget slots, so one
// call's work is bounded whatever the table's size. It returns the number
// of entries removed.
//
// A call examines each slot at most once (one sweep of the slab at most,
// whatever the budget). It also frees tentative entries that have expired:
// a packet's unconfirmed entry lives only until its Commit or Discard,
// within the batch, so one still there after its timeout was leaked by a
// caller that did neither.
//
// Removing an entry from a large table costs a few cache misses (about
// 0.25 µs of CPU per entry in a table of 2^20 entries on the development
// machine, BenchmarkTableReap), so the budget bounds a call's time: 256
// keeps it near 0.1 ms, 4096 takes 1 to 2 ms.
func (t *Table) Reap(now int64, budget int) int {
	if t.nslots == 0 || budget <= 0 {
		return 0
	}
	limit := uint64(t.nslots)
	if b := uint64(budget); b <= limit/4 {
		limit = 4 * b
	}
	reaped := 0
	for scanned := uint64(0); scanned < limit && reaped < budget; scanned++ {
		if t.gcCursor >= t.nslots {
			t.gcCursor = 0
		}
		i := t.gcCursor
		t.gcCursor++
		c := t.at(i)
		if !c.live || c.expires > now {
			continue
		}
		if c.linked {
			t.destroy(i, EventExpired)
		} else {
			t.free(i)
		}
		reaped++
	}
	t.stats.Reaped += uint64(reaped)
	return reaped
}
