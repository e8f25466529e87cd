package inprocess

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter"
	"github.com/tunrouter/router/packet"
	"github.com/tunrouter/router/pipeline"
)

// checkRelated asserts that the data connection dc crossed the router as
// an expected connection: its first packet is the SYN from the side that
// opens it (the server in active mode), RELATED, with status EXPECTED, and
// every packet of it was forwarded.
func checkRelated(t *testing.T, tr *tracer, dc dataConn, active bool) {
	t.Helper()
	recs := tr.flow(packet.TCP, dc.client, dc.server)
	if len(recs) == 0 {
		t.Fatalf("no trace records for the data connection %v <-> %v", dc.client, dc.server)
	}
	first := recs[0]
	wantIn := portLAN
	if active {
		wantIn = portWAN
	}
	if first.Flags != packet.SYN || first.In != wantIn || first.Ct != conntrack.Related ||
		first.Status&conntrack.StatusExpected == 0 || first.Verdict != "accept" {
		t.Fatalf("data connection's first packet: %v; want a SYN from port %d, RELATED, status expected, accepted", first, wantIn)
	}
	for _, x := range recs {
		if x.Verdict != "accept" || x.Ct == conntrack.Invalid || x.Ct == conntrack.New {
			t.Fatalf("data connection packet not forwarded as part of the expected connection: %v", x)
		}
	}
}

// TestFTPTransfers moves files in every mode under the strict policy (new
// connections only to TCP 21 from the LAN): the data connections pass only
// because the FTP helper announced them. PORT, EPRT, PASV and EPSV over
// IPv4, EPRT and EPSV over IPv6; downloads and uploads; 1 and 4 workers
// (with 4, a data connection usually lands on another worker than its
// control connection and is found through the shared expectation table).
func TestFTPTransfers(t *testing.T) {
	for _, workers := range []int{1, 4} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			r := newRig(t, workers, strictRules)
			t.Run("policy-is-strict", func(t *testing.T) {
				// A new connection to another server port is dropped: the
				// data connections below pass only as RELATED.
				ln := listenTCP(t, r.server, netip.AddrPortFrom(r.server.addr(4), 8080))
				defer ln.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				if c, err := r.client.net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(r.server.addr(4), 8080)); err == nil {
					c.Close()
					t.Fatal("the strict policy let a connection to port 8080 through")
				}
			})
			for _, fam := range []int{4, 6} {
				modes := []string{modePORT, modeEPRT, modePASV, modeEPSV}
				if fam == 6 {
					modes = []string{modeEPRT, modeEPSV}
				}
				srv := startFTPServer(t, r.server, netip.AddrPortFrom(r.server.addr(fam), 21))
				fc, err := dialFTP(r.client, srv.addr)
				if err != nil {
					t.Fatalf("ipv%d control connection: %v", fam, err)
				}
				t.Cleanup(fc.close)
				for i, mode := range modes {
					active := mode == modePORT || mode == modeEPRT
					name := fmt.Sprintf("ipv%d-%s", fam, mode)
					t.Run(name+"/RETR", func(t *testing.T) {
						want := content(uint64(100*fam+i), 96<<10+i)
						srv.put(name, want)
						expected := r.ftp.Stats().Expected
						got, dc, err := fc.retr(mode, name, announce{})
						if err != nil {
							t.Fatal(err)
						}
						if !bytes.Equal(got, want) {
							t.Fatalf("downloaded %d bytes that differ from the %d served", len(got), len(want))
						}
						if n := r.ftp.Stats().Expected - expected; n != 1 {
							t.Fatalf("the helper added %d expectations, want 1", n)
						}
						if n := r.p.Expectations().Len(); n != 0 {
							t.Fatalf("%d expectations left after the transfer, want 0 (used up)", n)
						}
						checkRelated(t, r.trace, dc, active)
					})
					t.Run(name+"/STOR", func(t *testing.T) {
						data := content(uint64(1000*fam+i), 80<<10+i)
						dc, err := fc.stor(mode, name+".up", data)
						if err != nil {
							t.Fatal(err)
						}
						if got, _ := srv.file(name + ".up"); !bytes.Equal(got, data) {
							t.Fatalf("server stored %d bytes that differ from the %d uploaded", len(got), len(data))
						}
						checkRelated(t, r.trace, dc, active)
					})
				}
			}
		})
	}
}

// TestFTPUnannouncedRefused opens a data connection nobody announced while
// another one is expected: the router drops it (the strict policy), and
// the announced one still works afterwards.
func TestFTPUnannouncedRefused(t *testing.T) {
	r := newRig(t, 2, strictRules)
	srv := startFTPServer(t, r.server, netip.AddrPortFrom(r.server.addr(4), 21))
	fc, err := dialFTP(r.client, srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.close()
	rogue := listenTCP(t, r.client, netip.AddrPortFrom(r.client.addr(4), 0))
	defer rogue.Close()
	rogueAddr := addrPortOf(rogue.Addr())
	srv.put("f", []byte("announced data"))
	var dialErr error
	fc.beforeVerb = func(mode string, announced netip.AddrPort) {
		if n := r.p.Expectations().Len(); n != 1 {
			t.Errorf("%d expectations after PORT, want 1", n)
		}
		// The server host connects to a port the client did not
		// announce.
		ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
		defer cancel()
		var c interface{ Close() error }
		c, dialErr = r.server.net.DialContextTCPAddrPort(ctx, rogueAddr)
		if dialErr == nil {
			c.Close()
		}
	}
	got, dc, err := fc.retr(modePORT, "f", announce{})
	if err != nil {
		t.Fatalf("announced transfer after the refused one: %v", err)
	}
	if string(got) != "announced data" {
		t.Fatalf("got %q", got)
	}
	checkRelated(t, r.trace, dc, true)
	if dialErr == nil {
		t.Fatal("the unannounced data connection was accepted")
	}
	if !errors.Is(dialErr, context.DeadlineExceeded) && !isTimeout(dialErr) {
		t.Fatalf("unannounced connection failed with %v, want a timeout (silent drop)", dialErr)
	}
	recs := r.trace.matching(func(x *rec) bool {
		return x.Key.Proto == packet.TCP && x.Key.DstAddr() == rogueAddr.Addr() && x.Key.DstPort == rogueAddr.Port()
	})
	if len(recs) == 0 {
		t.Fatal("the unannounced SYN never reached the router")
	}
	for _, x := range recs {
		if x.Ct != conntrack.New || x.Status&conntrack.StatusExpected != 0 || x.In != portWAN ||
			x.Chain != filter.Forward || x.Rule != -1 || x.Verdict != "drop" {
			t.Fatalf("unannounced data connection packet: %v, want NEW dropped by the forward policy", x)
		}
	}
}

// TestFTPBounce announces a data address that is not the client's own
// (FTP bounce): the helper counts it and creates no expectation, so the
// server's connection to that address is dropped and the transfer fails
// with 425, although a listener is waiting at the announced address (the
// client host owns it: only the router stops the connection).
func TestFTPBounce(t *testing.T) {
	r := newRig(t, 2, strictRules)
	// One server per family for all cases: port 21 cannot be bound again
	// while a closed control connection on it lingers in TIME_WAIT.
	servers := map[int]*ftpServer{
		4: startFTPServer(t, r.server, netip.AddrPortFrom(r.server.addr(4), 21)),
		6: startFTPServer(t, r.server, netip.AddrPortFrom(r.server.addr(6), 21)),
	}
	for _, s := range servers {
		s.dialTimeout = 500 * time.Millisecond // the connections are meant to fail
	}
	for _, tc := range []struct {
		name  string
		fam   int
		mode  string
		other string
	}{
		{"PORT", 4, modePORT, clientV4b},
		{"EPRT-ipv4", 4, modeEPRT, clientV4b},
		{"EPRT-ipv6", 6, modeEPRT, clientV6b},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := servers[tc.fam]
			fc, err := dialFTP(r.client, srv.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer fc.close()
			srv.put("f", []byte("secret"))
			before := r.ftp.Stats()
			policyBefore := r.drops(pipeline.DropPolicy)
			var target netip.AddrPort
			fc.beforeVerb = func(mode string, announced netip.AddrPort) {
				target = announced
				if n := r.p.Expectations().Len(); n != 0 {
					t.Errorf("%d expectations after the bounce %s, want 0", n, mode)
				}
			}
			_, _, err = fc.retr(tc.mode, "f", announce(netip.MustParseAddr(tc.other)))
			var fe *ftpError
			if !errors.As(err, &fe) || fe.Code != 425 {
				t.Fatalf("bounce transfer: %v, want the server's 425", err)
			}
			after := r.ftp.Stats()
			if after.Bounce-before.Bounce != 1 || after.Expected != before.Expected {
				t.Fatalf("helper counted %d bounces and %d expectations, want 1 and 0",
					after.Bounce-before.Bounce, after.Expected-before.Expected)
			}
			if log := strings.Join(srv.logged(), "; "); !strings.Contains(log, "dial "+target.String()) {
				t.Fatalf("the server did not try %v (log: %s)", target, log)
			}
			recs := r.trace.matching(func(x *rec) bool {
				return x.Key.Proto == packet.TCP && x.Key.DstAddr() == target.Addr() && x.Key.DstPort == target.Port()
			})
			if len(recs) == 0 {
				t.Fatal("the bounced SYN never reached the router")
			}
			for _, x := range recs {
				if x.Ct != conntrack.New || x.In != portWAN || x.Rule != -1 || x.Verdict != "drop" {
					t.Fatalf("bounced connection packet: %v, want NEW dropped by the policy", x)
				}
			}
			if d := r.drops(pipeline.DropPolicy) - policyBefore; d != uint64(len(recs)) {
				t.Fatalf("policy drops went up by %d, want %d (the bounced SYNs)", d, len(recs))
			}
		})
	}
}
