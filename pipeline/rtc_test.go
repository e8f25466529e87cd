package pipeline

import (
	"testing"
	"time"

	"github.com/tunrouter/router/conntrack"
	pt "github.com/tunrouter/router/packet/packettest"
)

// TestReaderWaitsForBusyWorker holds the only worker (a control call that
// blocks) while packets arrive: the reader must wait for the worker, not
// drop or reorder, and forward everything in order once the worker is
// free.
func TestReaderWaitsForBusyWorker(t *testing.T) {
	n := newTestNet(t, 1)
	// Open the flow first so that every later packet is ESTABLISHED
	// traffic of one connection.
	n.lan.send(pt.UDP4(client+":7000", server+":7001", []byte{0}))
	if n.wan.recv(t) == nil {
		t.Fatal("first packet not forwarded")
	}
	held, release := make(chan struct{}), make(chan struct{})
	go n.p.Do(0, func(*conntrack.Table, int64) {
		close(held)
		<-release
	})
	<-held
	const count = 100
	for i := 1; i <= count; i++ {
		n.lan.send(pt.UDP4(client+":7000", server+":7001", []byte{byte(i)}))
	}
	// The reader takes the first batch and blocks on the worker.
	deadline := time.Now().Add(2 * time.Second)
	for n.contended() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the reader never waited for the busy worker")
		}
		time.Sleep(time.Millisecond)
	}
	if len(n.wan.Out) != 0 {
		t.Fatalf("%d packets forwarded while the worker was held", len(n.wan.Out))
	}
	close(release)
	for i := 1; i <= count; i++ {
		p := n.wan.recv(t)
		if p == nil {
			t.Fatalf("packet %d of %d not forwarded", i, count)
		}
		if got := p.Payload(); len(got) != 1 || int(got[0]) != i {
			t.Fatalf("packet %d arrived with payload %v: out of order", i, got)
		}
	}
	st := n.p.Stats()
	if d := st.Drops(); d != ([NumDropReasons]uint64{}) {
		t.Fatalf("drops %v", d)
	}
}

// contended sums the readers' waits for busy workers.
func (n *testNet) contended() uint64 {
	var c uint64
	for _, r := range n.p.readers {
		c += r.stats.contended.Load()
	}
	return c
}

// TestReadersShareWorkers sends replies of many connections from one
// device and new connections from the other at once, with two workers, so
// that both readers run both workers (each batch mixes flows of the two):
// every packet must be forwarded and tracked, with the per-worker tables
// holding each connection once.
func TestReadersShareWorkers(t *testing.T) {
	n := newTestNet(t, 2)
	const conns = 64
	for i := 0; i < conns; i++ {
		n.lan.send(pt.UDP4(client+":"+itoa(20000+i), server+":53", []byte("q")))
	}
	for i := 0; i < conns; i++ {
		if n.wan.recv(t) == nil {
			t.Fatalf("query %d not forwarded", i)
		}
	}
	// Replies and new queries of other connections, from both devices
	// at once. (A query's order relative to its own reply is not defined
	// across devices: the replies go first.)
	for i := 0; i < conns; i++ {
		n.wan.send(pt.UDP4(server+":53", client+":"+itoa(20000+i), []byte("a")))
		n.lan.send(pt.UDP4(client+":"+itoa(30000+i), server+":53", []byte("q")))
	}
	lanGot, wanGot := 0, 0
	for lanGot+wanGot < 2*conns {
		select {
		case <-n.lan.Out:
			lanGot++
		case <-n.wan.Out:
			wanGot++
		case <-time.After(2 * time.Second):
			t.Fatalf("%d replies and %d queries of %d each forwarded", lanGot, wanGot, conns)
		}
	}
	if lanGot != conns || wanGot != conns {
		t.Fatalf("%d replies and %d queries forwarded, want %d each", lanGot, wanGot, conns)
	}
	n.trace.mu.Lock()
	states := map[conntrack.CtInfo]int{}
	for _, r := range n.trace.rec {
		states[r.Ct]++
	}
	n.trace.mu.Unlock()
	if states[conntrack.New] != 2*conns || states[conntrack.EstablishedReply] != conns || len(states) != 2 {
		t.Fatalf("conntrack states %v, want %d NEW and %d ESTABLISHED_REPLY", states, 2*conns, conns)
	}
	entries := 0
	n.p.DoAll(func(_ int, tb *conntrack.Table, _ int64) { entries += tb.Len() })
	if entries != 2*conns {
		t.Fatalf("%d entries in the workers' tables, want %d", entries, 2*conns)
	}
	st := n.p.Stats()
	if st.Conntrack.Invalid != 0 {
		t.Fatalf("%d INVALID packets", st.Conntrack.Invalid)
	}
	busy := 0
	for _, w := range st.Workers {
		if w.Packets > 0 {
			busy++
		}
	}
	if busy != 2 {
		t.Fatalf("%d of 2 workers saw packets", busy)
	}
}
