package inprocess

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter"
	"github.com/tunrouter/router/packet"
	"github.com/tunrouter/router/pipeline"
)

// listener makes Close of a netstack listener also end a blocked Accept
// (closing the endpoint alone does not wake it).
type listener struct{ *gonet.TCPListener }

func (l listener) Close() error {
	l.Shutdown()
	return l.TCPListener.Close()
}

func listenTCP(t testing.TB, h *host, addr netip.AddrPort) listener {
	t.Helper()
	ln, err := h.net.ListenTCPAddrPort(addr)
	if err != nil {
		t.Fatalf("listen %v on %s: %v", addr, h.name, err)
	}
	return listener{ln}
}

// content returns n deterministic pseudo-random bytes.
func content(seed uint64, n int) []byte {
	b := make([]byte, n)
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	rand.NewChaCha8(s).Read(b)
	return b
}

// blobHandler serves /blob/<size> with content(size, size).
func blobHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/blob/{size}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.PathValue("size"))
		if err != nil || n < 0 || n > 64<<20 {
			http.Error(w, "bad size", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Write(content(uint64(n), n))
	})
	return mux
}

// serveHTTP runs an HTTP server on h until the test ends.
func serveHTTP(t testing.TB, h *host, addr netip.AddrPort, handler http.Handler) {
	t.Helper()
	ln := listenTCP(t, h, addr)
	srv := &http.Server{Handler: handler}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

// httpClient returns a client that dials from h; its idle connections are
// closed when the test ends.
func httpClient(t testing.TB, h *host) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, err
			}
			return h.net.DialContextTCPAddrPort(ctx, ap)
		},
		DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// get fetches url and returns the body and the client's side of the
// connection that carried it.
func get(ctx context.Context, c *http.Client, url string) ([]byte, netip.AddrPort, error) {
	var local netip.AddrPort
	req, err := http.NewRequestWithContext(withLocal(ctx, &local), http.MethodGet, url, nil)
	if err != nil {
		return nil, local, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, local, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", url, resp.Status)
	}
	return body, local, err
}

// withLocal makes a request with ctx record its connection's local
// address in *local.
func withLocal(ctx context.Context, local *netip.AddrPort) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(ci httptrace.GotConnInfo) { *local = addrPortOf(ci.Conn.LocalAddr()) },
	})
}

func urlFor(ap netip.AddrPort, path string) string {
	return "http://" + ap.String() + path
}

// checkTCPFlow asserts that every packet of the connection between the
// client's c and the server's s crossed the router: the SYN as NEW from
// the LAN, nothing INVALID, nothing dropped (not even for a full worker
// queue); and that the packets from the WAN carried at least wantDown
// payload bytes.
func checkTCPFlow(t *testing.T, r *rig, c, s netip.AddrPort, wantDown int) {
	t.Helper()
	if n := r.drops(pipeline.DropQueueFull); n != 0 {
		t.Fatalf("the pipeline dropped %d packets for full worker queues", n)
	}
	recs := r.trace.flow(packet.TCP, c, s)
	if len(recs) == 0 {
		t.Fatalf("no trace records for %v -> %v", c, s)
	}
	if x := recs[0]; x.Flags != packet.SYN || x.Ct != conntrack.New || x.In != portLAN || x.Out != portWAN || x.Verdict != "accept" {
		t.Fatalf("first packet %v, want the SYN, NEW, lan->wan, accepted", x)
	}
	down := 0
	for _, x := range recs {
		if x.Verdict != "accept" || x.Ct == conntrack.Invalid {
			t.Fatalf("packet not forwarded cleanly: %v", x)
		}
		if x.In == portWAN {
			down += x.Payload
		}
	}
	if down < wantDown {
		t.Fatalf("the router forwarded %d payload bytes from the server, want at least %d", down, wantDown)
	}
}

// TestHTTPDownload fetches a few MB over HTTP from the server host, over
// IPv4 and IPv6, and compares them byte for byte.
func TestHTTPDownload(t *testing.T) {
	r := newRig(t, 2, nil)
	const size = 3 << 20
	for _, fam := range []int{4, 6} {
		t.Run(fmt.Sprintf("ipv%d", fam), func(t *testing.T) {
			srv := netip.AddrPortFrom(r.server.addr(fam), 80)
			serveHTTP(t, r.server, srv, blobHandler())
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			body, local, err := get(ctx, httpClient(t, r.client), urlFor(srv, "/blob/"+strconv.Itoa(size)))
			if err != nil {
				t.Fatal(err)
			}
			el := time.Since(start)
			if want := content(size, size); !bytes.Equal(body, want) {
				t.Fatalf("downloaded %d bytes that differ from the %d served", len(body), len(want))
			}
			t.Logf("%d bytes in %v (%.1f MB/s)", size, el, float64(size)/el.Seconds()/1e6)
			checkTCPFlow(t, r, local, srv, size)
		})
	}
}

// TestTCPFromWANRefused dials from the server host to a listening socket
// on the client host: the forward policy drops the SYNs, so the dial times
// out (no reset: the policy drops silently), and nothing reaches the
// listener.
func TestTCPFromWANRefused(t *testing.T) {
	r := newRig(t, 2, nil)
	for _, fam := range []int{4, 6} {
		t.Run(fmt.Sprintf("ipv%d", fam), func(t *testing.T) {
			target := netip.AddrPortFrom(r.client.addr(fam), 2222)
			ln := listenTCP(t, r.client, target)
			accepted := make(chan net.Conn, 1)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				if c, err := ln.Accept(); err == nil {
					accepted <- c
				}
			}()
			defer func() {
				ln.Close()
				wg.Wait()
			}()
			policyBefore := r.drops(pipeline.DropPolicy)
			ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
			defer cancel()
			start := time.Now()
			c, err := r.server.net.DialContextTCPAddrPort(ctx, target)
			if err == nil {
				c.Close()
				t.Fatalf("dial from the WAN to %v succeeded", target)
			}
			if !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
				t.Fatalf("dial failed with %v, want a timeout (a silent drop)", err)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("dial took %v to fail", el)
			}
			syns := r.trace.matching(func(x *rec) bool {
				return x.Key.Proto == packet.TCP && x.Key.DstPort == target.Port() && x.Key.DstAddr() == target.Addr()
			})
			if len(syns) == 0 {
				t.Fatal("the SYN never reached the router")
			}
			for _, x := range syns {
				if x.Flags != packet.SYN || x.Ct != conntrack.New || x.In != portWAN || x.Chain != filter.Forward || x.Rule != -1 || x.Verdict != "drop" {
					t.Fatalf("packet to the LAN listener: %v, want a SYN, NEW, dropped by the forward policy", x)
				}
			}
			if d := r.drops(pipeline.DropPolicy) - policyBefore; d != uint64(len(syns)) {
				t.Fatalf("policy drops went up by %d, want %d (the SYNs)", d, len(syns))
			}
			select {
			case c := <-accepted:
				c.Close()
				t.Fatal("the LAN listener accepted a connection")
			default:
			}
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
