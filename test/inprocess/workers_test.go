package inprocess

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/packet"
)

// TestWorkersAgree runs the same script of ICMP, UDP, HTTP and FTP
// traffic and policy probes through pipelines with 1 and 4 workers, and
// requires the same outcomes: what each exchange delivered, how the router
// classified each flow's first packet, and what the connection tables and
// the expectation table hold at the end.
func TestWorkersAgree(t *testing.T) {
	want := []string{
		"ping ipv4: reply",
		"ping ipv6: reply",
		"udp ipv4: answer, first NEW, reply ESTABLISHED_REPLY",
		"udp ipv6: answer, first NEW, reply ESTABLISHED_REPLY",
		"http ipv4: 262144 bytes identical, first NEW",
		"http ipv6: 262144 bytes identical, first NEW",
		"ftp ipv4 PASV RETR: 40000 bytes identical, data SYN RELATED expected",
		"ftp ipv4 PORT RETR: 40001 bytes identical, data SYN RELATED expected",
		"ftp ipv6 EPSV STOR: 40002 bytes identical, data SYN RELATED expected",
		"ftp ipv6 EPRT STOR: 40003 bytes identical, data SYN RELATED expected",
		"unsolicited udp ipv4: NEW drop by policy",
		"tcp from wan ipv6: refused, NEW drop by policy",
		"conntrack: tcp=10 udp=2 ftp-masters=4 expected=4",
		"expectations pending: 0",
	}
	got := map[int][]string{}
	for _, workers := range []int{1, 4} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			r := newRig(t, workers, nil)
			got[workers] = workerScript(t, r)
			if workers > 1 {
				busy := 0
				for _, w := range r.stats().Workers {
					if w.Packets > 0 {
						busy++
					}
				}
				if busy < 2 {
					t.Fatalf("only %d of %d workers processed packets", busy, workers)
				}
			}
		})
	}
	for _, workers := range []int{1, 4} {
		if g := strings.Join(got[workers], "\n"); g != strings.Join(want, "\n") {
			t.Errorf("workers=%d outcomes:\n%s\nwant:\n%s", workers, g, strings.Join(want, "\n"))
		}
	}
}

// workerScript runs the traffic and describes each outcome in one line.
func workerScript(t *testing.T, r *rig) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }

	for _, fam := range []int{4, 6} {
		if _, _, err := ping(r.client, r.client.addr(fam), r.server.addr(fam), []byte("agree"), 3*time.Second); err != nil {
			add("ping ipv%d: %v", fam, err)
		} else {
			add("ping ipv%d: reply", fam)
		}
	}

	for _, fam := range []int{4, 6} {
		srvAddr := netip.AddrPortFrom(r.server.addr(fam), 7000)
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
		cli.Write([]byte("question"))
		_, from := readUDP(t, srv, 3*time.Second)
		srv.WriteTo([]byte("answer"), net.UDPAddrFromAddrPort(from))
		msg, _ := readUDP(t, cli, 3*time.Second)
		recs := r.trace.flow(packet.UDP, from, srvAddr)
		add("udp ipv%d: %s, first %v, reply %v", fam, msg, ctOf(recs, 0), ctOf(recs, 1))
	}

	srvHTTP := map[int]netip.AddrPort{}
	for _, fam := range []int{4, 6} {
		srvHTTP[fam] = netip.AddrPortFrom(r.server.addr(fam), 80)
		serveHTTP(t, r.server, srvHTTP[fam], blobHandler())
		const size = 256 << 10
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		body, local, err := get(ctx, httpClient(t, r.client), urlFor(srvHTTP[fam], "/blob/"+strconv.Itoa(size)))
		cancel()
		if err != nil {
			add("http ipv%d: %v", fam, err)
			bad := r.trace.matching(func(x *rec) bool {
				return x.Key.Proto == packet.TCP && (x.Verdict != "accept" || x.Ct == conntrack.Invalid)
			})
			t.Logf("http ipv%d failed; TCP packets not forwarded:%s", fam, dumpRecs(bad))
			continue
		}
		add("http ipv%d: %d bytes %s, first %v", fam, len(body), sameOrNot(body, content(size, size)),
			ctOf(r.trace.flow(packet.TCP, local, srvHTTP[fam]), 0))
	}

	for i, tc := range []struct {
		fam        int
		mode, verb string
	}{
		{4, modePASV, "RETR"}, {4, modePORT, "RETR"}, {6, modeEPSV, "STOR"}, {6, modeEPRT, "STOR"},
	} {
		srv := startFTPServerOnce(t, r, tc.fam)
		fc, err := dialFTP(r.client, srv.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer fc.close()
		data := content(uint64(i), 40000+i)
		var got []byte
		var dc dataConn
		if tc.verb == "RETR" {
			srv.put("f", data)
			got, dc, err = fc.retr(tc.mode, "f", announce{})
		} else {
			dc, err = fc.stor(tc.mode, "f.up", data)
			got, _ = srv.file("f.up")
		}
		line := fmt.Sprintf("ftp ipv%d %s %s: ", tc.fam, tc.mode, tc.verb)
		if err != nil {
			add("%s%v", line, err)
			continue
		}
		first := "none"
		if recs := r.trace.flow(packet.TCP, dc.client, dc.server); len(recs) > 0 {
			first = fmt.Sprintf("%v %v", recs[0].Flags, recs[0].Ct)
			if recs[0].Status&conntrack.StatusExpected != 0 {
				first += " expected"
			}
		}
		add("%s%d bytes %s, data %s", line, len(got), sameOrNot(got, data), first)
	}

	// Policy probes.
	{
		cli, err := r.client.net.ListenUDPAddrPort(netip.AddrPortFrom(r.client.addr(4), 7100))
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		from := netip.AddrPortFrom(r.server.addr(4), 7101)
		other, err := r.server.net.ListenUDPAddrPort(from)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		other.WriteTo([]byte("unsolicited"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.client.addr(4), 7100)))
		var recs []rec
		waitFor(t, 3*time.Second, "the unsolicited datagram's record", func() bool {
			recs = r.trace.flow(packet.UDP, from, netip.AddrPortFrom(r.client.addr(4), 7100))
			return len(recs) > 0
		})
		add("unsolicited udp ipv4: %v %s", recs[0].Ct, verdictOf(recs[0]))
	}
	{
		target := netip.AddrPortFrom(r.client.addr(6), 7200)
		ln := listenTCP(t, r.client, target)
		defer ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		c, err := r.server.net.DialContextTCPAddrPort(ctx, target)
		cancel()
		res := "refused"
		if err == nil {
			c.Close()
			res = "connected"
		}
		recs := r.trace.matching(func(x *rec) bool {
			return x.Key.Proto == packet.TCP && x.Key.DstAddr() == target.Addr() && x.Key.DstPort == target.Port()
		})
		first := "no record"
		if len(recs) > 0 {
			first = fmt.Sprintf("%v %s", recs[0].Ct, verdictOf(recs[0]))
		}
		add("tcp from wan ipv6: %s, %s", res, first)
	}

	var tcp, udp, masters, expected int
	r.p.DoAll(func(_ int, tb *conntrack.Table, now int64) {
		tb.List(now, func(e *conntrack.EntryInfo) bool {
			switch e.Orig.Proto {
			case packet.TCP:
				tcp++
			case packet.UDP:
				udp++
			}
			if e.Helper == "ftp" {
				masters++
			}
			if e.Master != 0 {
				expected++
			}
			return true
		})
	})
	add("conntrack: tcp=%d udp=%d ftp-masters=%d expected=%d", tcp, udp, masters, expected)
	add("expectations pending: %d", r.p.Expectations().Len())
	return out
}

// startFTPServerOnce returns the rig's FTP server for the family,
// starting it on first use.
func startFTPServerOnce(t *testing.T, r *rig, fam int) *ftpServer {
	if r.ftpServers == nil {
		r.ftpServers = map[int]*ftpServer{}
	}
	if s := r.ftpServers[fam]; s != nil {
		return s
	}
	s := startFTPServer(t, r.server, netip.AddrPortFrom(r.server.addr(fam), 21))
	r.ftpServers[fam] = s
	return s
}

func ctOf(recs []rec, i int) string {
	if i >= len(recs) {
		return "no record"
	}
	return recs[i].Ct.String()
}

func verdictOf(x rec) string {
	switch {
	case x.Verdict == "drop" && x.Rule < 0:
		return "drop by policy"
	case x.Verdict == "drop":
		return "drop by rule " + strconv.Itoa(x.Rule)
	}
	return x.Verdict
}

func sameOrNot(got, want []byte) string {
	if bytes.Equal(got, want) {
		return "identical"
	}
	return "DIFFERENT"
}
