package inprocess

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// dialWorks reports whether a TCP connection from the client host to
// addr opens within half a second (the policy drops SYNs silently, so a
// refused one times out).
func dialWorks(r *rig, addr netip.AddrPort) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	c, err := r.client.net.DialContextTCPAddrPort(ctx, addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// TestReloadDuringDownload swaps the rule set three times while a
// download is in flight (the client stops reading at each step, so the
// server has data queued): the download completes byte for byte, every
// one of its packets is forwarded, and each new rule set governs new
// connections from the next packet on.
func TestReloadDuringDownload(t *testing.T) {
	r := newRig(t, 2, nil)
	srv := netip.AddrPortFrom(r.server.addr(4), 80)
	serveHTTP(t, r.server, srv, blobHandler())
	const size = 4 << 20
	want := content(size, size)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var local netip.AddrPort
	req, _ := http.NewRequestWithContext(withLocal(ctx, &local), http.MethodGet, urlFor(srv, "/blob/"+strconv.Itoa(size)), nil)
	resp, err := httpClient(t, r.client).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()

	got := make([]byte, 0, size)
	readTo := func(n int) {
		t.Helper()
		buf := got[len(got):n]
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatalf("download broke after %d bytes: %v", len(got), err)
		}
		got = got[:n]
	}
	steps := []struct {
		name     string
		rules    rulesFunc
		newConns bool // may the LAN open new connections to port 80?
	}{
		{"closed", closedRules, false},
		{"gateway", gatewayRules, true},
		{"strict", strictRules, false},
	}
	for i, step := range steps {
		readTo(size * (i + 1) / (len(steps) + 1))
		rs := step.rules(t, r.workers)
		r.p.SetRules(rs)
		if r.p.Rules() != rs {
			t.Fatalf("%s: the pipeline does not report the new rule set", step.name)
		}
		if works := dialWorks(r, srv); works != step.newConns {
			t.Fatalf("after reloading to %s rules: new connection opened = %v, want %v", step.name, works, step.newConns)
		}
	}
	readTo(size)
	if n, err := resp.Body.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("body continues past %d bytes (n=%d, err=%v)", size, n, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("downloaded bytes differ from the served ones")
	}
	checkTCPFlow(t, r, local, srv, size)
}
