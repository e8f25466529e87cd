package inprocess

import (
	"context"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ourGoroutines returns the stacks of the live goroutines, less those
// that netstack created for itself (its TCP processors and timers, which
// wind down on their own after a stack is closed).
func ourGoroutines() []string {
	buf := make([]byte, 16<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "created by gvisor.dev/gvisor/") {
			continue
		}
		out = append(out, g)
	}
	return out
}

// checkNoLeak fails the test unless the goroutine count (netstack's own
// aside) comes back down to base within a grace period.
func checkNoLeak(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		gs := ourGoroutines()
		if len(gs) <= base {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after shutdown, %d before:\n\n%s", len(gs), base, strings.Join(gs, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestShutdownWithTrafficInFlight closes the pipeline while a download and
// a UDP stream cross it: Close returns promptly, no reader or worker
// goroutine survives it, nothing is written to a device after it, and
// every packet the readers took was either handled (and traced) or
// counted as dropped. Once the hosts and their sockets are closed too, no
// goroutine is left over.
func TestShutdownWithTrafficInFlight(t *testing.T) {
	base := len(ourGoroutines())
	t.Cleanup(func() { // runs after every other cleanup
		if !t.Failed() {
			checkNoLeak(t, base)
		}
	})

	r := newRig(t, 2, nil)
	srvHTTP := netip.AddrPortFrom(r.server.addr(4), 80)
	serveHTTP(t, r.server, srvHTTP, blobHandler())
	sinkAddr := netip.AddrPortFrom(r.server.addr(6), 9)
	sink, err := r.server.net.ListenUDPAddrPort(sinkAddr)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := r.client.net.DialUDPAddrPort(netip.AddrPortFrom(r.client.addr(6), 0), sinkAddr)
	if err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	var downloaded, sunk atomic.Int64
	stop := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	var stopOnce sync.Once
	stopTraffic := func() {
		stopOnce.Do(func() {
			close(stop)
			cancel()
			cli.Close()
			sink.Close()
		})
		wg.Wait()
	}
	t.Cleanup(stopTraffic) // before the rig's teardown, also when the test fails
	wg.Add(3)
	go func() { // the download: 32 MB, far more than the test lets through
		defer wg.Done()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, urlFor(srvHTTP, "/blob/33554432"), nil)
		resp, err := httpClient(t, r.client).Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			downloaded.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	go func() { // the UDP stream: a datagram every millisecond
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		msg := make([]byte, 512)
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			cli.Write(msg)
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			if _, err := sink.Read(buf); err != nil {
				return
			}
			sunk.Add(1)
		}
	}()
	waitFor(t, 5*time.Second, "traffic in both directions", func() bool {
		return downloaded.Load() > 256<<10 && sunk.Load() > 20
	})

	start := time.Now()
	closed := make(chan struct{})
	go func() {
		r.p.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("Pipeline.Close has not returned after 2s")
	}
	took := time.Since(start)
	r.client.dev.sealed.Store(true)
	r.server.dev.sealed.Store(true)
	t.Logf("Close returned after %v with %d bytes downloaded and %d datagrams received", took, downloaded.Load(), sunk.Load())

	for _, g := range ourGoroutines() {
		if strings.Contains(g, "github.com/tunrouter/router/pipeline.") {
			t.Fatalf("a pipeline goroutine outlived Close:\n%s", g)
		}
	}
	again := time.Now()
	r.p.Close()
	if d := time.Since(again); d > 100*time.Millisecond || !r.p.Stopping() {
		t.Fatalf("second Close took %v, Stopping=%v", d, r.p.Stopping())
	}
	st := r.stats()
	var read, handled, queueFull uint64
	for _, rd := range st.Readers {
		read += rd.Packets
		queueFull += rd.QueueFull
	}
	for _, w := range st.Workers {
		handled += w.Packets
	}
	if read != handled+queueFull || read == 0 {
		t.Fatalf("readers took %d packets, workers handled %d and %d were dropped for full queues", read, handled, queueFull)
	}
	if traced := len(r.trace.matching(func(*rec) bool { return true })); uint64(traced) != handled {
		t.Fatalf("%d packets traced, %d handled", traced, handled)
	}
	if n := r.client.dev.late.Load() + r.server.dev.late.Load(); n != 0 {
		t.Fatalf("%d packets written to the devices after Close returned", n)
	}

	// Stop the traffic, and let the hosts finish their conversations
	// through a fresh pipeline, so that they can be closed quietly.
	r.client.dev.sealed.Store(false)
	r.server.dev.sealed.Store(false)
	r.restart(acceptAllRules)
	stopTraffic()
}
