package inprocess

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/packet"
)

// ping sends echo requests from src (an address of h) to dst, one every
// 200 ms, until a reply carrying payload comes back or timeout passes. It
// returns the reply (ICMP header and data) and the echo identifier the
// stack used.
//
// It resends rather than waiting once because netstack's PingConn only
// wakes up for replies that arrive after ReadFrom started waiting.
func ping(h *host, src, dst netip.Addr, payload []byte, timeout time.Duration) ([]byte, uint16, error) {
	pc, err := h.net.DialPingAddr(src, dst)
	if err != nil {
		return nil, 0, err
	}
	defer pc.Close()
	typ, replyType := byte(packet.ICMPEchoRequest), byte(packet.ICMPEchoReply)
	if dst.Is6() {
		typ, replyType = packet.ICMPv6EchoRequest, packet.ICMPv6EchoReply
	}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for seq := 1; time.Now().Before(deadline); seq++ {
		req := append([]byte{typ, 0, 0, 0, 0, 0, byte(seq >> 8), byte(seq)}, payload...)
		if _, err := pc.Write(req); err != nil {
			return nil, 0, err
		}
		pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			n, err := pc.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return nil, 0, err
			}
			m := buf[:n]
			if n >= 8 && m[0] == replyType && bytes.Equal(m[8:], payload) {
				return append([]byte(nil), m...), uint16(m[4])<<8 | uint16(m[5]), nil
			}
		}
	}
	return nil, 0, fmt.Errorf("no echo reply from %v within %v", dst, timeout)
}

// icmpRecs returns the trace records of ICMP echo packets between a and b
// with the identifier id.
func icmpRecs(tr *tracer, a, b netip.Addr, id uint16) []rec {
	return tr.matching(func(x *rec) bool {
		k := x.Key
		if !k.Proto.IsICMP() || k.ICMPID() != id {
			return false
		}
		s, d := k.SrcAddr(), k.DstAddr()
		return (s == a && d == b) || (s == b && d == a)
	})
}

func TestPing(t *testing.T) {
	r := newRig(t, 2, nil)
	for _, tc := range []struct {
		name     string
		src, dst netip.Addr
		// wantOut is the port the request leaves on (-1: the router
		// answers it itself).
		wantOut int
	}{
		{"ipv4", r.client.addr(4), r.server.addr(4), portWAN},
		{"ipv6", r.client.addr(6), r.server.addr(6), portWAN},
		{"router-ipv4", r.client.addr(4), netip.MustParseAddr(routerLAN4), -1},
		{"router-ipv6", r.client.addr(6), netip.MustParseAddr(routerLAN6), -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := []byte("ping " + tc.name + " through the router")
			reply, id, err := ping(r.client, tc.src, tc.dst, payload, 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(reply[8:], payload) {
				t.Fatalf("reply data %q, want %q", reply[8:], payload)
			}
			recs := icmpRecs(r.trace, tc.src, tc.dst, id)
			if len(recs) == 0 {
				t.Fatal("no trace records for the echo")
			}
			req := recs[0]
			if req.Key.SrcAddr() != tc.src || req.Ct != conntrack.New || req.In != portLAN || req.Out != tc.wantOut {
				t.Fatalf("first echo record %v, want NEW from lan to port %d", req, tc.wantOut)
			}
			if tc.wantOut < 0 {
				if req.Verdict != "local: echo reply" {
					t.Fatalf("request to the router: verdict %q, want the router's reply", req.Verdict)
				}
				return
			}
			if req.Verdict != "accept" {
				t.Fatalf("request verdict %q, want accept", req.Verdict)
			}
			var replies int
			for _, x := range recs {
				if x.Key.SrcAddr() != tc.dst {
					continue
				}
				replies++
				if x.Ct != conntrack.EstablishedReply || x.In != portWAN || x.Out != portLAN || x.Verdict != "accept" {
					t.Fatalf("echo reply record %v, want ESTABLISHED_REPLY wan->lan accepted", x)
				}
			}
			if replies == 0 {
				t.Fatalf("no echo reply traced:%s", dumpRecs(recs))
			}
		})
	}
}
