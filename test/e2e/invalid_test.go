//go:build linux

package e2e

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunrouter/router/packet"
	"github.com/tunrouter/router/packet/packettest"
	"github.com/tunrouter/router/test/routertest"
)

// INVALID reasons (conntrack.Reason texts, stable).
const (
	reasonFlags    = "tcp: invalid flags"
	reasonRSTBelow = "tcp: rst below acknowledged seq"
	reasonSeqAbove = "tcp: seq above window"
)

// TestInvalidPackets injects crafted TCP segments from the LAN host with a
// raw socket (header included): a SYN|FIN, and RSTs outside the window of
// a live connection (below what the server acknowledged, far above the
// window). Each is INVALID: it never reaches the server (a packet socket on
// the server's device sees the other packets of the flow, but not these),
// the live connection keeps working and stays ESTABLISHED, `router ct -S`
// counts each under its reason, the trace shows it dropped by the INVALID
// rule, and that rule's counter moves.
func TestInvalidPackets(t *testing.T) {
	requireE2E(t)
	r := startRouter(t, routerConfig{Forward: gatewayRules, Trace: true})
	port := serveEcho(t, r.server)
	capt := startCapture(t, r.server, "wan0")
	dropRule := func(t testing.TB) uint64 {
		row, ok := r.rule(t, "forward", "drop INVALID")
		if !ok {
			t.Fatal("router rules: no INVALID drop rule")
		}
		return row.Packets
	}
	invalid := func(t testing.TB, reason string) uint64 { return r.ctStats(t).Invalid[reason] }

	// injected checks one injected INVALID packet: its reason counted
	// once more than before, and its trace record.
	injected := func(t *testing.T, what string, src, dst netip.AddrPort, flags packet.TCPFlags, seq uint32, reason string, before uint64) {
		t.Helper()
		// The trace record is written once the packet has been tracked
		// and filtered: after it, the counters include the packet.
		recs := r.waitTrace(t, what, func(x traceRec) bool {
			return x.Proto == "tcp" && x.Src == src.Addr().String() && x.Sport == src.Port() &&
				x.Dst == dst.Addr().String() && x.Dport == dst.Port() && x.Flags == flags.String() && x.Seq == seq
		})
		for _, x := range recs {
			if x.Ct != "INVALID" || x.Reason != reason || x.Chain != "forward" || x.Rule != ruleIdxInvalid || x.Verdict != "drop" {
				t.Errorf("%s traced as ct %s reason %q, %s rule %d, verdict %q; want INVALID %q dropped by forward rule %d",
					what, x.Ct, x.Reason, x.Chain, x.Rule, x.Verdict, reason, ruleIdxInvalid)
			}
		}
		if got := invalid(t, reason); got != before+1 {
			t.Errorf("%s: ct -S counts %d under %q, want %d (one more than before)", what, got, reason, before+1)
		}
	}

	for i, f := range families {
		t.Run(f.name, func(t *testing.T) {
			client := netip.MustParseAddr(f.client)
			server := netip.AddrPortFrom(netip.MustParseAddr(f.server), uint16(port))
			ruleBefore := dropRule(t)

			t.Run("SYN|FIN", func(t *testing.T) {
				src := netip.AddrPortFrom(client, uint16(41000+i))
				ctlSrc := netip.AddrPortFrom(client, uint16(42000+i))
				before := invalid(t, reasonFlags)
				bad := packettest.TCP(src.String(), server.String(), packettest.TCPOpts{
					Flags: packet.SYN | packet.FIN, Seq: 1000, Win: 64240, WScale: packettest.NoWScale})
				// A control: a plain SYN injected the same way right after
				// it must arrive, or the injection path itself is broken.
				good := packettest.TCP(ctlSrc.String(), server.String(), packettest.TCPOpts{
					Flags: packet.SYN, Seq: 2000, Win: 64240, MSS: 1400, WScale: packettest.NoWScale})
				for _, p := range [][]byte{bad, good} {
					if err := injectRaw(r.client, p); err != nil {
						t.Fatal(err)
					}
				}
				if !routertest.WaitFor(3*time.Second, func() bool { return capt.count(tcpMatch(ctlSrc, server, 0xff, packet.SYN)) > 0 }) {
					t.Fatal("the control SYN injected after the SYN|FIN did not reach the server")
				}
				time.Sleep(200 * time.Millisecond)
				if n := capt.count(tcpMatch(src, server, 0, 0)); n != 0 {
					t.Errorf("the SYN|FIN reached the server (%d packets of its flow captured)", n)
				}
				injected(t, "SYN|FIN", src, server, packet.SYN|packet.FIN, 1000, reasonFlags, before)
			})

			t.Run("RST out of window", func(t *testing.T) {
				c, err := dialIn(r.client, "tcp", server.String(), 3*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if err := echoRoundTrip(c, "hello through the router"); err != nil {
					t.Fatal(err)
				}
				la := c.LocalAddr().(*net.TCPAddr)
				src := netip.AddrPortFrom(client, uint16(la.Port))
				// The highest sequence number the server acknowledged: the
				// ack of its echo segment, as the router saw it.
				echoes := r.waitTrace(t, "the server's echo", func(x traceRec) bool {
					return x.Proto == "tcp" && x.Src == f.server && x.Dport == src.Port() && x.Payload > 0 && x.HasFlag("ACK")
				})
				maxAck := echoes[len(echoes)-1].Ack
				for _, tc := range []struct {
					name   string
					seq    uint32
					reason string
				}{
					{"below the acknowledged sequence", maxAck - 1, reasonRSTBelow},
					{"far above the window", maxAck + 1<<30, reasonSeqAbove},
				} {
					before := invalid(t, tc.reason)
					rst := packettest.TCP(src.String(), server.String(), packettest.TCPOpts{
						Flags: packet.RST, Seq: tc.seq, WScale: packettest.NoWScale})
					if err := injectRaw(r.client, rst); err != nil {
						t.Fatal(err)
					}
					injected(t, "RST "+tc.name, src, server, packet.RST, tc.seq, tc.reason, before)
				}
				// The connection still works (its segments reach the
				// server, which a capture shows), and no RST got there.
				if err := echoRoundTrip(c, "still alive"); err != nil {
					t.Fatalf("the connection broke after the INVALID RSTs: %v", err)
				}
				time.Sleep(100 * time.Millisecond)
				if n := capt.count(tcpMatch(src, server, 0, 0)); n == 0 {
					t.Fatal("the capture on the server saw none of the connection's packets")
				}
				if n := capt.count(tcpMatch(src, server, packet.RST, packet.RST)); n != 0 {
					t.Errorf("%d RSTs of the connection reached the server", n)
				}
				es := r.entries(t, "-p", "tcp", "--sport", strconv.Itoa(la.Port), "--dport", strconv.Itoa(port))
				if len(es) != 1 || es[0].State != "ESTABLISHED" {
					t.Errorf("after the INVALID RSTs the connection's entries are %v, want one ESTABLISHED", lines(es))
				}
			})

			if got := dropRule(t); got < ruleBefore+3 {
				t.Errorf("the INVALID drop rule counted %d packets, want at least the 3 injected", got-ruleBefore)
			}
		})
	}
	if !strings.Contains(r.proc.Output(), "DROP INVALID: ") {
		t.Errorf("the router logged no line with the INVALID rule's prefix")
	}
}
