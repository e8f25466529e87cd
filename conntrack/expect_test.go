package conntrack

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunrouter/router/packet"
)

const xsec = int64(time.Second)

func xap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// xftp builds what the FTP helper announces for a PORT command: from
// the server (any source port) to client:port.
func xftp(master ConnID, server, client string, port uint16, now int64) Expectation {
	k := packet.KeyFromAddrs(packet.TCP, netip.AddrPortFrom(netip.MustParseAddr(server), 0),
		netip.AddrPortFrom(netip.MustParseAddr(client), port))
	return Expectation{Tuple: k, SrcPortWild: true, Master: master, Helper: "ftp", Expires: now + 300*xsec}
}

func xkey(proto packet.Proto, src, dst string) packet.FlowKey {
	return packet.KeyFromAddrs(proto, xap(src), xap(dst))
}

func TestExpectTakeMatching(t *testing.T) {
	x := xftp(7, "198.51.100.7", "10.0.0.5", 1025, 0)
	tests := []struct {
		name string
		k    packet.FlowKey
		want bool
	}{
		{"any source port", xkey(packet.TCP, "198.51.100.7:20", "10.0.0.5:1025"), true},
		{"other source port", xkey(packet.TCP, "198.51.100.7:54321", "10.0.0.5:1025"), true},
		{"other source address", xkey(packet.TCP, "198.51.100.8:20", "10.0.0.5:1025"), false},
		{"other destination port", xkey(packet.TCP, "198.51.100.7:20", "10.0.0.5:1026"), false},
		{"other destination address", xkey(packet.TCP, "198.51.100.7:20", "10.0.0.6:1025"), false},
		{"udp", xkey(packet.UDP, "198.51.100.7:20", "10.0.0.5:1025"), false},
		{"ipv4-mapped ipv6", xkey(packet.TCP, "[::ffff:198.51.100.7]:20", "[::ffff:10.0.0.5]:1025"), false},
		{"reverse direction", xkey(packet.TCP, "10.0.0.5:1025", "198.51.100.7:20"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewExpectations(0)
			if err := e.Add(x, 1, 0); err != nil {
				t.Fatal(err)
			}
			got, ok := e.Take(tt.k, xsec)
			if ok != tt.want {
				t.Fatalf("Take = %v, want %v", ok, tt.want)
			}
			if !ok {
				if e.Len() != 1 {
					t.Fatalf("a miss removed the expectation: Len = %d", e.Len())
				}
				return
			}
			if got.Master != 7 || got.Tuple.DstPort != 1025 || got.Created != 0 || got.Expires != 300*xsec {
				t.Fatalf("took %+v", got)
			}
			if e.Len() != 0 {
				t.Fatalf("Len after Take = %d", e.Len())
			}
			if _, ok := e.Take(tt.k, xsec); ok {
				t.Fatal("expectation served two connections")
			}
			if s := e.Stats(); s.Used != 1 || s.Created != 1 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

func TestExpectSourceWildcards(t *testing.T) {
	base := xkey(packet.UDP, "192.0.2.1:5000", "192.0.2.2:6000")
	tests := []struct {
		name               string
		addrWild, portWild bool
		k                  packet.FlowKey
		want               bool
	}{
		{"exact", false, false, base, true},
		{"exact other port", false, false, xkey(packet.UDP, "192.0.2.1:5001", "192.0.2.2:6000"), false},
		{"port wild", false, true, xkey(packet.UDP, "192.0.2.1:1", "192.0.2.2:6000"), true},
		{"port wild other addr", false, true, xkey(packet.UDP, "192.0.2.9:1", "192.0.2.2:6000"), false},
		{"addr wild", true, false, xkey(packet.UDP, "192.0.2.9:5000", "192.0.2.2:6000"), true},
		{"addr wild other port", true, false, xkey(packet.UDP, "192.0.2.9:5001", "192.0.2.2:6000"), false},
		{"both wild", true, true, xkey(packet.UDP, "203.0.113.1:9", "192.0.2.2:6000"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewExpectations(0)
			x := Expectation{Tuple: base, SrcAddrWild: tt.addrWild, SrcPortWild: tt.portWild, Master: 1, Expires: xsec}
			if err := e.Add(x, 0, 0); err != nil {
				t.Fatal(err)
			}
			if _, ok := e.Take(tt.k, 0); ok != tt.want {
				t.Fatalf("Take = %v, want %v", ok, tt.want)
			}
		})
	}
}

func TestExpectExpiry(t *testing.T) {
	e := NewExpectations(0)
	x := xftp(1, "192.0.2.1", "192.0.2.2", 2000, 0)
	if err := e.Add(x, 1, 0); err != nil {
		t.Fatal(err)
	}
	k := xkey(packet.TCP, "192.0.2.1:20", "192.0.2.2:2000")
	// One nanosecond before the timer fires it still matches ...
	if _, ok := e.Take(k, 300*xsec-1); !ok {
		t.Fatal("live expectation did not match")
	}
	if err := e.Add(x, 1, 0); err != nil {
		t.Fatal(err)
	}
	// ... at the deadline it no longer does, and it is removed.
	if _, ok := e.Take(k, 300*xsec); ok {
		t.Fatal("expired expectation matched")
	}
	if e.Len() != 0 {
		t.Fatalf("expired expectation not removed, Len = %d", e.Len())
	}
	if s := e.Stats(); s.Expired != 1 || s.Used != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestExpectAddRules(t *testing.T) {
	const now = 10 * xsec
	serverAny := func(master ConnID, port uint16) Expectation {
		return xftp(master, "192.0.2.1", "192.0.2.2", port, now)
	}
	exact := func(master ConnID, sport, dport uint16) Expectation {
		return Expectation{Tuple: xkey(packet.TCP, fmt.Sprintf("192.0.2.1:%d", sport), fmt.Sprintf("192.0.2.2:%d", dport)),
			Master: master, Expires: now + xsec}
	}
	addrWild := func(master ConnID, dport uint16) Expectation {
		x := serverAny(master, dport)
		x.SrcAddrWild = true
		return x
	}
	type step struct {
		x       Expectation
		max     int
		wantErr error
	}
	tests := []struct {
		name  string
		steps []step
		len   int
		check func(t *testing.T, e *Expectations)
	}{
		{"same master same tuple replaces", []step{{serverAny(1, 2000), 1, nil}, {serverAny(1, 2000), 1, nil}}, 1,
			func(t *testing.T, e *Expectations) {
				if s := e.Stats(); s.Replaced != 1 || s.Evicted != 0 {
					t.Fatalf("stats %+v", s)
				}
			}},
		{"other master same tuple clashes", []step{{serverAny(1, 2000), 1, nil}, {serverAny(2, 2000), 1, ErrExpectClash}}, 1,
			func(t *testing.T, e *Expectations) {
				e.List(func(x Expectation) bool {
					if x.Master != 1 {
						t.Fatalf("clash replaced the first master's expectation: %+v", x)
					}
					return true
				})
			}},
		{"same master other class clashes", []step{{serverAny(1, 2000), 0, nil}, {func() Expectation {
			x := serverAny(1, 2000)
			x.Class = 1
			return x
		}(), 0, ErrExpectClash}}, 1, nil},
		{"wildcard overlaps exact", []step{{exact(1, 20, 2000), 0, nil}, {serverAny(2, 2000), 0, ErrExpectClash}}, 1, nil},
		{"address wildcard overlaps", []step{{serverAny(1, 2000), 0, nil}, {addrWild(2, 2000), 0, ErrExpectClash}}, 1, nil},
		{"distinct exact source ports coexist", []step{{exact(1, 20, 2000), 0, nil}, {exact(2, 21, 2000), 0, nil}}, 2, nil},
		{"other destination port coexists", []step{{serverAny(1, 2000), 0, nil}, {serverAny(2, 2001), 0, nil}}, 2, nil},
		{"per-master limit evicts oldest", []step{{serverAny(1, 2000), 2, nil}, {serverAny(1, 2001), 2, nil}, {serverAny(1, 2002), 2, nil}}, 2,
			func(t *testing.T, e *Expectations) {
				if _, ok := e.Take(xkey(packet.TCP, "192.0.2.1:20", "192.0.2.2:2000"), now); ok {
					t.Fatal("oldest not evicted")
				}
				if _, ok := e.Take(xkey(packet.TCP, "192.0.2.1:20", "192.0.2.2:2002"), now); !ok {
					t.Fatal("newest missing")
				}
				if s := e.Stats(); s.Evicted != 1 {
					t.Fatalf("stats %+v", s)
				}
			}},
		{"limit counts per class", []step{{serverAny(1, 2000), 1, nil}, {func() Expectation {
			x := serverAny(1, 2001)
			x.Class = 1
			return x
		}(), 1, nil}}, 2, nil},
		{"limit counts per master", []step{{serverAny(1, 2000), 1, nil}, {serverAny(2, 2001), 1, nil}}, 2, nil},
		{"lowered limit refuses", []step{{serverAny(1, 2000), 0, nil}, {serverAny(1, 2001), 0, nil}, {serverAny(1, 2002), 0, nil},
			{serverAny(1, 2003), 1, ErrExpectMasterLimit}}, 2, func(t *testing.T, e *Expectations) {
			if s := e.Stats(); s.Evicted != 1 || s.RefusedMasterLimit != 1 {
				t.Fatalf("stats %+v", s)
			}
		}},
		{"invalid family", []step{{Expectation{Master: 1, Expires: now + 1}, 0, ErrExpectInvalid}}, 0, nil},
		{"invalid master", []step{{func() Expectation { x := serverAny(1, 2000); x.Master = 0; return x }(), 0, ErrExpectInvalid}}, 0, nil},
		{"already expired", []step{{func() Expectation { x := serverAny(1, 2000); x.Expires = now; return x }(), 0, ErrExpectInvalid}}, 0, nil},
		{"expired entry does not clash", []step{{func() Expectation {
			x := serverAny(1, 2000)
			x.Expires = now + 1
			return x
		}(), 0, nil}}, 1, func(t *testing.T, e *Expectations) {
			if err := e.Add(xftp(2, "192.0.2.1", "192.0.2.2", 2000, now+1), 0, now+1); err != nil {
				t.Fatalf("expired expectation still clashes: %v", err)
			}
			if s := e.Stats(); s.Expired != 1 || e.Len() != 1 {
				t.Fatalf("stats %+v", s)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewExpectations(0)
			for i, s := range tt.steps {
				if err := e.Add(s.x, s.max, now); !errors.Is(err, s.wantErr) {
					t.Fatalf("step %d: Add = %v, want %v", i, err, s.wantErr)
				}
			}
			if e.Len() != tt.len {
				t.Fatalf("Len = %d, want %d", e.Len(), tt.len)
			}
			if tt.check != nil {
				tt.check(t, e)
			}
		})
	}
}

func TestExpectReplaceRestartsTimer(t *testing.T) {
	e := NewExpectations(0)
	if err := e.Add(xftp(1, "192.0.2.1", "192.0.2.2", 2000, 0), 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.Add(xftp(1, "192.0.2.1", "192.0.2.2", 2000, 100*xsec), 1, 100*xsec); err != nil {
		t.Fatal(err)
	}
	if n := e.Reap(350*xsec, 10); n != 0 {
		t.Fatalf("replaced expectation kept its old timer: reaped %d", n)
	}
	if n := e.Reap(400*xsec, 10); n != 1 {
		t.Fatalf("reaped %d at the new deadline", n)
	}
}

func TestExpectGlobalLimit(t *testing.T) {
	e := NewExpectations(3)
	for i := range 3 {
		if err := e.Add(xftp(ConnID(i+1), "192.0.2.1", "192.0.2.2", uint16(2000+i), 0), 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Add(xftp(9, "192.0.2.1", "192.0.2.2", 3000, 0), 1, 0); !errors.Is(err, ErrExpectTableFull) {
		t.Fatalf("Add over the limit = %v", err)
	}
	// A master replacing its own expectation is not refused at the limit.
	if err := e.Add(xftp(1, "192.0.2.1", "192.0.2.2", 2999, 0), 1, 0); err != nil {
		t.Fatalf("per-master replacement at the global limit: %v", err)
	}
	if n := e.RemoveMaster(2); n != 1 {
		t.Fatalf("RemoveMaster = %d", n)
	}
	if err := e.Add(xftp(9, "192.0.2.1", "192.0.2.2", 3000, 0), 1, 0); err != nil {
		t.Fatalf("Add after room was made: %v", err)
	}
	if s := e.Stats(); s.RefusedTableFull != 1 || s.Pending != 3 || s.Removed != 1 || s.Evicted != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestExpectRemoveMaster(t *testing.T) {
	e := NewExpectations(0)
	for i := range 4 {
		if err := e.Add(xftp(ConnID(1+i%2), "192.0.2.1", "192.0.2.2", uint16(2000+i), 0), 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.RemoveMaster(1); n != 2 {
		t.Fatalf("RemoveMaster(1) = %d, want 2", n)
	}
	if n := e.RemoveMaster(1); n != 0 {
		t.Fatalf("second RemoveMaster(1) = %d", n)
	}
	e.List(func(x Expectation) bool {
		if x.Master != 2 {
			t.Fatalf("left %+v", x)
		}
		return true
	})
	if _, ok := e.Take(xkey(packet.TCP, "192.0.2.1:20", "192.0.2.2:2000"), 0); ok {
		t.Fatal("removed master's expectation still matches")
	}
	if _, ok := e.Take(xkey(packet.TCP, "192.0.2.1:20", "192.0.2.2:2001"), 0); !ok {
		t.Fatal("other master's expectation gone")
	}
}

func TestExpectReapBudget(t *testing.T) {
	e := NewExpectations(0)
	for i := range 10 {
		x := xftp(ConnID(i+1), "192.0.2.1", "192.0.2.2", uint16(2000+i), 0)
		x.Expires = int64(10-i) * xsec // 10 s, 9 s, ... 1 s
		if err := e.Add(x, 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	if at, ok := e.NextExpiry(); !ok || at != xsec {
		t.Fatalf("NextExpiry = %d, %v", at, ok)
	}
	if n := e.Reap(5*xsec, 3); n != 3 {
		t.Fatalf("Reap budget 3 removed %d", n)
	}
	// The earliest went first: those expiring at 1, 2, 3 s.
	e.List(func(x Expectation) bool {
		if x.Expires <= 3*xsec {
			t.Fatalf("reaped out of order, still have %+v", x)
		}
		return true
	})
	if n := e.Reap(5*xsec, 100); n != 2 {
		t.Fatalf("second Reap removed %d, want 2 (4 s and 5 s)", n)
	}
	if n := e.Reap(5*xsec, 100); n != 0 {
		t.Fatalf("Reap of live entries removed %d", n)
	}
	if e.Len() != 5 || e.Stats().Expired != 5 {
		t.Fatalf("Len %d stats %+v", e.Len(), e.Stats())
	}
}

func TestExpectListDelete(t *testing.T) {
	e := NewExpectations(0)
	for i := range 5 {
		if err := e.Add(xftp(ConnID(i+1), "192.0.2.1", "192.0.2.2", uint16(2000+i), int64(i)), 1, int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	var order []uint16
	e.List(func(x Expectation) bool {
		order = append(order, x.Tuple.DstPort)
		// List runs without the lock: calling back is allowed.
		_ = e.Len()
		return len(order) < 3
	})
	if fmt.Sprint(order) != "[2000 2001 2002]" {
		t.Fatalf("List order / early stop: %v", order)
	}
	if n := e.Delete(func(x Expectation) bool { return x.Tuple.DstPort%2 == 0 }); n != 3 {
		t.Fatalf("Delete even ports = %d", n)
	}
	if n := e.Delete(nil); n != 2 {
		t.Fatalf("flush = %d", n)
	}
	if e.Len() != 0 || e.Stats().Removed != 5 {
		t.Fatalf("Len %d stats %+v", e.Len(), e.Stats())
	}
}

func TestExpectNormalizes(t *testing.T) {
	e := NewExpectations(0)
	x := xftp(1, "192.0.2.1", "192.0.2.2", 2000, 0)
	x.Tuple.SrcPort = 1234 // wildcarded: ignored
	x.Tuple.Dst[7] = 0xff  // past the IPv4 address: ignored
	if err := e.Add(x, 1, 0); err != nil {
		t.Fatal(err)
	}
	got, ok := e.Take(xkey(packet.TCP, "192.0.2.1:20", "192.0.2.2:2000"), 0)
	if !ok || got.Tuple.SrcPort != 0 || got.Tuple.Dst[7] != 0 {
		t.Fatalf("Take = %+v, %v", got, ok)
	}
}

// expectModel is a naive reference implementation of the table's rules: a slice
// scanned linearly.
type expectModel struct {
	max  int
	xs   []Expectation
	seqs []uint64
	seq  uint64
}

func (m *expectModel) del(i int) {
	m.xs = append(m.xs[:i], m.xs[i+1:]...)
	m.seqs = append(m.seqs[:i], m.seqs[i+1:]...)
}

func (m *expectModel) add(x Expectation, maxPer int, now int64) error {
	if (x.Tuple.Family != 4 && x.Tuple.Family != 6) || x.Master == 0 || x.Expires <= now {
		return ErrExpectInvalid
	}
	normalize(&x)
	x.Created = now
	for i := 0; i < len(m.xs); i++ {
		if m.xs[i].Expires <= now {
			m.del(i)
			i--
		}
	}
	for i, c := range m.xs {
		if dstOf(&c.Tuple) != dstOf(&x.Tuple) {
			continue
		}
		if identical(&c, &x) && c.Master == x.Master && c.Class == x.Class {
			m.del(i)
			break
		}
		if overlap(&c, &x) {
			return ErrExpectClash
		}
	}
	if maxPer > 0 {
		n, oldest := 0, -1
		for i, c := range m.xs {
			if c.Master == x.Master && c.Class == x.Class {
				n++
				if oldest < 0 || m.seqs[i] < m.seqs[oldest] {
					oldest = i
				}
			}
		}
		if n >= maxPer {
			m.del(oldest)
			if n-1 >= maxPer {
				return ErrExpectMasterLimit
			}
		}
	}
	if m.max > 0 && len(m.xs) >= m.max {
		return ErrExpectTableFull
	}
	m.seq++
	m.xs = append(m.xs, x)
	m.seqs = append(m.seqs, m.seq)
	return nil
}

func (m *expectModel) take(k packet.FlowKey, now int64) (Expectation, bool) {
	for i, c := range m.xs {
		if c.Expires > now && c.Matches(&k) {
			m.del(i)
			return c, true
		}
	}
	return Expectation{}, false
}

func (m *expectModel) live(now int64) int {
	n := 0
	for _, c := range m.xs {
		if c.Expires > now {
			n++
		}
	}
	return n
}

// TestExpectModel drives the table and the expectModel with the same random
// operations over a small space of tuples (so that clashes, replacements,
// evictions and expiry all happen) and compares every result.
func TestExpectModel(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			runExpectModel(t, rand.New(rand.NewPCG(seed, 42)), 3000)
		})
	}
}

func runExpectModel(t *testing.T, r *rand.Rand, ops int) {
	t.Helper()
	max := r.IntN(6)
	e := NewExpectations(max)
	m := &expectModel{max: max}
	addrs := []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"}
	now := int64(0)
	randKey := func() packet.FlowKey {
		proto := packet.TCP
		if r.IntN(4) == 0 {
			proto = packet.UDP
		}
		return packet.KeyFromAddrs(proto,
			netip.AddrPortFrom(netip.MustParseAddr(addrs[r.IntN(3)]), uint16(20+r.IntN(2))),
			netip.AddrPortFrom(netip.MustParseAddr(addrs[r.IntN(3)]), uint16(2000+r.IntN(3))))
	}
	for i := range ops {
		now += int64(r.IntN(3)) * xsec
		switch op := r.IntN(10); {
		case op < 4:
			x := Expectation{Tuple: randKey(), SrcAddrWild: r.IntN(4) == 0, SrcPortWild: r.IntN(2) == 0,
				Master: ConnID(1 + r.IntN(4)), Class: uint8(r.IntN(2)), Expires: now + int64(1+r.IntN(20))*xsec}
			maxPer := r.IntN(3)
			err1 := e.Add(x, maxPer, now)
			err2 := m.add(x, maxPer, now)
			if err1 != err2 {
				t.Fatalf("op %d: Add(%+v, %d) = %v, expectModel %v", i, x, maxPer, err1, err2)
			}
		case op < 7:
			k := randKey()
			x1, ok1 := e.Take(k, now)
			x2, ok2 := m.take(k, now)
			if ok1 != ok2 || x1 != x2 {
				t.Fatalf("op %d: Take(%v) = %+v %v, expectModel %+v %v", i, k, x1, ok1, x2, ok2)
			}
		case op == 7:
			master := ConnID(1 + r.IntN(4))
			e.RemoveMaster(master)
			for j := 0; j < len(m.xs); j++ {
				if m.xs[j].Master == master {
					m.del(j)
					j--
				}
			}
		case op == 8:
			e.Reap(now, 1+r.IntN(3))
		default:
			port := uint16(2000 + r.IntN(3))
			e.Delete(func(x Expectation) bool { return x.Tuple.DstPort == port })
			for j := 0; j < len(m.xs); j++ {
				if m.xs[j].Tuple.DstPort == port {
					m.del(j)
					j--
				}
			}
		}
		live := 0
		e.List(func(x Expectation) bool {
			if x.Expires > now {
				live++
			}
			return true
		})
		if want := m.live(now); live != want {
			t.Fatalf("op %d: %d live expectations, expectModel %d", i, live, want)
		}
		if max > 0 && e.Len() > max {
			t.Fatalf("op %d: Len %d over max %d", i, e.Len(), max)
		}
		checkExpectInvariants(t, e, i%97 == 0 || i == ops-1)
	}
}

// checkExpectInvariants verifies the indexes agree with each other.
// With filter, it also checks every slot of the lock-free filter.
func checkExpectInvariants(t *testing.T, e *Expectations, filter bool) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	slots := map[uint64]uint32{}
	for d, c := range e.byDst {
		if c.prevDst != nil {
			t.Fatal("chain head has a predecessor")
		}
		for ; c != nil; c = c.nextDst {
			n++
			if dstOf(&c.x.Tuple) != d || c.dead {
				t.Fatalf("entry %+v in wrong chain or dead", c.x)
			}
			if e.timers[c.heapIdx] != c {
				t.Fatal("heap index stale")
			}
			slots[e.slot(&c.x.Tuple)]++
		}
	}
	m := 0
	for id, c := range e.byMstr {
		for ; c != nil; c = c.nextMst {
			m++
			if c.x.Master != id {
				t.Fatal("entry in wrong master chain")
			}
		}
	}
	if n != m || n != len(e.timers) || int64(n) != e.n.Load() {
		t.Fatalf("index sizes disagree: dst %d master %d heap %d count %d", n, m, len(e.timers), e.n.Load())
	}
	for i := range e.timers {
		if p := (i - 1) / 2; i > 0 && e.timers[p].x.Expires > e.timers[i].x.Expires {
			t.Fatal("heap order violated")
		}
	}
	for i := range e.filter {
		if !filter {
			break
		}
		if got := e.filter[i].Load(); got != slots[uint64(i)] {
			t.Fatalf("filter slot %d = %d, want %d", i, got, slots[uint64(i)])
		}
	}
}

func FuzzExpectations(f *testing.F) {
	f.Add(uint64(1), uint64(2))
	f.Add(uint64(7), uint64(99))
	f.Fuzz(func(t *testing.T, a, b uint64) {
		runExpectModel(t, rand.New(rand.NewPCG(a, b)), 200)
	})
}

// TestExpectConcurrent has workers announce, take, reap and remove at the
// same time; every announced expectation ends up counted exactly once, and
// no expectation is taken twice.
func TestExpectConcurrent(t *testing.T) {
	e := NewExpectations(5000)
	const workers, perWorker = 4, 2000
	var taken sync.Map
	var dup atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range perWorker {
				now := int64(i) * int64(time.Millisecond)
				port := uint16(1024 + r.IntN(4000))
				master := ConnID(1 + r.IntN(50))
				x := xftp(master, "192.0.2.1", "192.0.2.2", port, now)
				x.Expires = now + int64(r.IntN(500))*int64(time.Millisecond) + 1
				_ = e.Add(x, 1, now)
				k := xkey(packet.TCP, "192.0.2.1:20", fmt.Sprintf("192.0.2.2:%d", 1024+r.IntN(4000)))
				if got, ok := e.Take(k, now); ok {
					id := fmt.Sprint(got.Master, got.Tuple.DstPort, got.Created, got.Expires)
					if _, loaded := taken.LoadOrStore(id, true); loaded {
						dup.Add(1)
					}
				}
				switch r.IntN(50) {
				case 0:
					e.RemoveMaster(ConnID(1 + r.IntN(50)))
				case 1:
					e.Reap(now, 10)
				case 2:
					e.Delete(func(x Expectation) bool { return x.Tuple.DstPort == port })
				case 3:
					e.List(func(Expectation) bool { return true })
				}
			}
		}()
	}
	wg.Wait()
	if dup.Load() != 0 {
		t.Fatalf("%d expectations taken twice", dup.Load())
	}
	s := e.Stats()
	gone := s.Used + s.Expired + s.Evicted + s.Replaced + s.Removed
	if s.Created != gone+uint64(s.Pending) {
		t.Fatalf("created %d != removed %d + pending %d (%+v)", s.Created, gone, s.Pending, s)
	}
	checkExpectInvariants(t, e, true)
}

var sinkExpect Expectation
var sinkExpectOK bool

func fillExpect(e *Expectations, n int) {
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		k := packet.KeyFromAddrs(packet.TCP, netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), 0),
			netip.AddrPortFrom(a, uint16(1024+i%60000)))
		if err := e.Add(Expectation{Tuple: k, SrcPortWild: true, Master: ConnID(i + 1), Expires: 1 << 62}, 1, 0); err != nil {
			panic(err)
		}
	}
}

func TestExpectTakeMissNoAllocs(t *testing.T) {
	miss := xkey(packet.TCP, "203.0.113.1:40000", "203.0.113.2:443")
	for _, n := range []int{0, 1000} {
		t.Run(fmt.Sprint(n, "-pending"), func(t *testing.T) {
			e := NewExpectations(0)
			fillExpect(e, n)
			if a := testing.AllocsPerRun(1000, func() { sinkExpect, sinkExpectOK = e.Take(miss, 1) }); a != 0 {
				t.Fatalf("Take miss allocates %v per call", a)
			}
		})
	}
}

func TestExpectAddSteadyStateNoAllocs(t *testing.T) {
	e := NewExpectations(0)
	fillExpect(e, 100)
	x := xftp(1, "198.51.100.7", "192.0.2.2", 2000, 0)
	k := xkey(packet.TCP, "198.51.100.7:20", "192.0.2.2:2000")
	if a := testing.AllocsPerRun(1000, func() {
		_ = e.Add(x, 1, 0)
		sinkExpect, sinkExpectOK = e.Take(k, 1)
	}); a != 0 {
		t.Fatalf("Add+Take allocate %v per pair", a)
	}
}

func BenchmarkExpectTake(b *testing.B) {
	miss := xkey(packet.TCP, "203.0.113.1:40000", "203.0.113.2:443")
	for _, n := range []int{0, 1000} {
		b.Run(fmt.Sprintf("miss-%d-pending", n), func(b *testing.B) {
			e := NewExpectations(0)
			fillExpect(e, n)
			b.ReportAllocs()
			for b.Loop() {
				sinkExpect, sinkExpectOK = e.Take(miss, 1)
			}
		})
	}
	b.Run("add-take-hit-1000-pending", func(b *testing.B) {
		e := NewExpectations(0)
		fillExpect(e, 1000)
		x := xftp(1, "198.51.100.7", "192.0.2.2", 2000, 0)
		k := xkey(packet.TCP, "198.51.100.7:20", "192.0.2.2:2000")
		b.ReportAllocs()
		for b.Loop() {
			_ = e.Add(x, 1, 0)
			sinkExpect, sinkExpectOK = e.Take(k, 1)
		}
	})
	b.Run("miss-1000-pending-parallel", func(b *testing.B) {
		e := NewExpectations(0)
		fillExpect(e, 1000)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_, _ = e.Take(miss, 1)
			}
		})
	})
}
