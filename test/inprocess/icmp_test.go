package inprocess

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/packet"
)

// ping sends an echo request from src (an address of h) to dst and waits
// for the reply carrying payload, retrying until timeout passes. It returns
// the reply (ICMP header and data) and the echo identifier the stack used.
//
// netstack's PingConn.ReadFrom waits for a "readable" event before it
// reads, and the endpoint signals that only when its queue goes from
// empty to non-empty: a reply that arrives before a Read starts waiting
// stays queued unseen, and so does every later one. The router answers
// its own pings fast enough for that to happen, so each attempt starts
// its Read before it sends, and a failed attempt starts over with a new
// socket.
func ping(h *host, src, dst netip.Addr, payload []byte, timeout time.Duration) ([]byte, uint16, error) {
	deadline := time.Now().Add(timeout)
	for {
		reply, err := pingOnce(h, src, dst, payload, 300*time.Millisecond)
		if err == nil {
			return reply, uint16(reply[4])<<8 | uint16(reply[5]), nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, 0, err
		}
		if time.Now().After(deadline) {
			return nil, 0, fmt.Errorf("no echo reply from %v within %v", dst, timeout)
		}
	}
}

func pingOnce(h *host, src, dst netip.Addr, payload []byte, wait time.Duration) ([]byte, error) {
	pc, err := h.net.DialPingAddr(src, dst)
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	typ, replyType := byte(packet.ICMPEchoRequest), byte(packet.ICMPEchoReply)
	if dst.Is6() {
		typ, replyType = packet.ICMPv6EchoRequest, packet.ICMPv6EchoReply
	}
	type result struct {
		reply []byte
		err   error
	}
	done := make(chan result, 1)
	reading := make(chan struct{})
	pc.SetReadDeadline(time.Now().Add(wait))
	go func() {
		buf := make([]byte, 1500)
		close(reading)
		for {
			n, err := pc.Read(buf)
			if err != nil {
				done <- result{err: err}
				return
			}
			if m := buf[:n]; n >= 8 && m[0] == replyType && bytes.Equal(m[8:], payload) {
				done <- result{reply: append([]byte(nil), m...)}
				return
			}
		}
	}()
	<-reading
	runtime.Gosched()
	if _, err := pc.Write(append([]byte{typ, 0, 0, 0, 0, 0, 0, 1}, payload...)); err != nil {
		return nil, err
	}
	r := <-done
	return r.reply, r.err
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
				t.Fatalf("%v; trace:%s", err, dumpRecs(r.trace.matching(func(x *rec) bool { return x.Key.Proto.IsICMP() })))
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
