package inprocess

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter"
	"github.com/tunrouter/router/packet"
	"github.com/tunrouter/router/pipeline"
)

// readUDP reads one datagram with a deadline.
func readUDP(t *testing.T, c net.PacketConn, timeout time.Duration) (string, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(timeout))
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("read on %v: %v", c.LocalAddr(), err)
	}
	return string(buf[:n]), from.(*net.UDPAddr).AddrPort()
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	panic(fmt.Sprintf("address %T", a))
}

// TestUDP exchanges datagrams both ways over a flow the client opened,
// then checks that a datagram the server host sends from another port
// (a flow nobody on the LAN opened) is dropped by the forward policy and
// counted.
func TestUDP(t *testing.T) {
	r := newRig(t, 2, nil)
	for _, fam := range []int{4, 6} {
		t.Run(fmt.Sprintf("ipv%d", fam), func(t *testing.T) {
			srvAddr := netip.AddrPortFrom(r.server.addr(fam), 5353)
			srv, err := r.server.net.ListenUDPAddrPort(srvAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			cli, err := r.client.net.DialUDPAddrPort(netip.AddrPortFrom(r.client.addr(fam), 0), srvAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			cliAddr := addrPortOf(cli.LocalAddr())

			// Client asks, server answers.
			if _, err := cli.Write([]byte("question from the lan")); err != nil {
				t.Fatal(err)
			}
			msg, from := readUDP(t, srv, 3*time.Second)
			if msg != "question from the lan" || from != cliAddr {
				t.Fatalf("server got %q from %v, want the question from %v", msg, from, cliAddr)
			}
			if _, err := srv.WriteTo([]byte("answer from the wan"), net.UDPAddrFromAddrPort(from)); err != nil {
				t.Fatal(err)
			}
			if msg, from := readUDP(t, cli, 3*time.Second); msg != "answer from the wan" || from != srvAddr {
				t.Fatalf("client got %q from %v", msg, from)
			}
			// Server asks on the same flow, client answers.
			if _, err := srv.WriteTo([]byte("question from the wan"), net.UDPAddrFromAddrPort(cliAddr)); err != nil {
				t.Fatal(err)
			}
			if msg, _ := readUDP(t, cli, 3*time.Second); msg != "question from the wan" {
				t.Fatalf("client got %q", msg)
			}
			if _, err := cli.Write([]byte("answer from the lan")); err != nil {
				t.Fatal(err)
			}
			if msg, _ := readUDP(t, srv, 3*time.Second); msg != "answer from the lan" {
				t.Fatalf("server got %q", msg)
			}
			recs := r.trace.flow(packet.UDP, cliAddr, srvAddr)
			want := []struct {
				in int
				ct conntrack.CtInfo
			}{
				{portLAN, conntrack.New}, {portWAN, conntrack.EstablishedReply},
				{portWAN, conntrack.EstablishedReply}, {portLAN, conntrack.Established},
			}
			if len(recs) != len(want) {
				t.Fatalf("%d trace records for the flow, want %d:%s", len(recs), len(want), dumpRecs(recs))
			}
			for i, w := range want {
				if x := recs[i]; x.In != w.in || x.Ct != w.ct || x.Verdict != "accept" {
					t.Fatalf("record %d: %v, want in=%d ct=%v accepted", i, x, w.in, w.ct)
				}
			}

			// Unsolicited: from another server port to the client's
			// socket. The forward policy drops it.
			policyBefore := r.drops(pipeline.DropPolicy)
			other, err := r.server.net.ListenUDPAddrPort(netip.AddrPortFrom(r.server.addr(fam), 5399))
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			if _, err := other.WriteTo([]byte("unsolicited"), net.UDPAddrFromAddrPort(cliAddr)); err != nil {
				t.Fatal(err)
			}
			otherAddr := netip.AddrPortFrom(r.server.addr(fam), 5399)
			var drop []rec
			waitFor(t, 3*time.Second, "the unsolicited datagram's trace record", func() bool {
				drop = r.trace.flow(packet.UDP, otherAddr, cliAddr)
				return len(drop) > 0
			})
			if len(drop) != 1 {
				t.Fatalf("unsolicited datagram traced %d times:%s", len(drop), dumpRecs(drop))
			}
			if x := drop[0]; x.Ct != conntrack.New || x.In != portWAN || x.Chain != filter.Forward || x.Rule != -1 || x.Verdict != "drop" {
				t.Fatalf("unsolicited datagram: %v, want NEW from wan dropped by the forward policy", x)
			}
			if d := r.drops(pipeline.DropPolicy) - policyBefore; d != 1 {
				t.Fatalf("policy drops went up by %d, want 1", d)
			}
			// The client sees the next datagram of its own flow, not the
			// dropped one.
			if _, err := srv.WriteTo([]byte("marker"), net.UDPAddrFromAddrPort(cliAddr)); err != nil {
				t.Fatal(err)
			}
			if msg, from := readUDP(t, cli, 3*time.Second); msg != "marker" || from != srvAddr {
				t.Fatalf("client got %q from %v after the drop, want the marker from %v", msg, from, srvAddr)
			}
		})
	}
}
