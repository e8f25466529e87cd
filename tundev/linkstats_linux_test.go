package tundev

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tunrouter/router/tundev/tundevtest"
)

// TestLinkStats: what the kernel hands to a reader shows in TxPackets, and
// what it cannot hand over because nobody reads shows in TxDropped once the
// device's queue is full.
func TestLinkStats(t *testing.T) {
	tundevtest.RequirePrivileges(t)
	_, nsPath := tundevtest.NewNetns(t, "tundev")
	d := openTest(t, Config{Name: "stats0", Netns: nsPath, MTU: 1500, Queues: 1, NoOffload: true,
		Addresses: []netip.Prefix{nsAddr4}, Routes: []netip.Prefix{route4}, Up: true})
	before, err := d.LinkStats()
	if err != nil {
		t.Fatal(err)
	}
	// Nobody reads: the first txqueuelen (500) datagrams wait in the
	// queue, the rest are dropped by the kernel.
	c := udpFromNetns(t, nsPath, netip.AddrPortFrom(remote4, 9))
	for i := 0; i < 700; i++ {
		c.Write([]byte("x"))
	}
	deadline := time.Now().Add(2 * time.Second)
	var st LinkStats
	for time.Now().Before(deadline) {
		if st, err = d.LinkStats(); err != nil {
			t.Fatal(err)
		}
		if st.TxDropped > before.TxDropped {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if dropped := st.TxDropped - before.TxDropped; dropped < 100 || dropped > 700 {
		t.Fatalf("after 700 unread datagrams: %+v (before %+v): want about 200 dropped (500 queued)", st, before)
	}
	// Reading takes the queued ones: the kernel counts them as sent.
	pkts := startReaders(t, d)
	for n := 0; n < 400; n++ {
		select {
		case <-pkts:
		case <-time.After(2 * time.Second):
			t.Fatalf("read %d queued datagrams, want 400 or more", n)
		}
	}
	if st, err = d.LinkStats(); err != nil || st.TxPackets-before.TxPackets < 400 {
		t.Fatalf("after reading 400: %+v, %v", st, err)
	}
	d.Close()
	if _, err := d.LinkStats(); err == nil {
		t.Fatal("LinkStats after Close succeeded")
	}
}
