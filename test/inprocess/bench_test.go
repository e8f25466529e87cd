package inprocess

import (
	"fmt"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/tunrouter/router/pipeline"
)

// BenchmarkTCPStream measures one TCP stream from the server host to the
// client host through the router (each op is 64 KiB). Both ends are
// netstack, which costs more than the router: the number is an end-to-end
// floor, not the pipeline's speed (see pipeline's benchmarks for that).
//
// The "default-queues" cases run without the harness's credit gate, with
// the pipeline's default worker queue depth, and report the packets the
// readers dropped for full worker queues (drops/MB).
func BenchmarkTCPStream(b *testing.B) {
	for _, tc := range []struct {
		workers int
		gated   bool
	}{{1, true}, {4, true}, {1, false}, {4, false}} {
		name := fmt.Sprintf("workers=%d", tc.workers)
		if !tc.gated {
			name += "/default-queues"
		}
		b.Run(name, func(b *testing.B) {
			r := buildRig(b, tc.workers, nil, tc.gated)
			srv := netip.AddrPortFrom(r.server.addr(4), 5001)
			ln := listenTCP(b, r.server, srv)
			done := make(chan struct{})
			go func() {
				defer close(done)
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				chunk := content(1, 64<<10)
				for {
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
			}()
			c, err := r.client.net.DialTCPAddrPort(srv)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if !tc.gated {
				b.ReportMetric(float64(r.drops(pipeline.DropQueueFull))/(float64(b.N)*float64(len(buf))/1e6), "drops/MB")
			}
			c.Close()
			ln.Close()
			<-done
		})
	}
}

// BenchmarkUDPRoundTrip measures a 64-byte UDP request and its echo from
// the client host to the server host and back through the router.
func BenchmarkUDPRoundTrip(b *testing.B) {
	r := newRig(b, 2, nil)
	srvAddr := netip.AddrPortFrom(r.server.addr(4), 7)
	srv, err := r.server.net.ListenUDPAddrPort(srvAddr)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			srv.WriteTo(buf[:n], from)
		}
	}()
	cli, err := r.client.net.DialUDPAddrPort(netip.AddrPortFrom(r.client.addr(4), 0), srvAddr)
	if err != nil {
		b.Fatal(err)
	}
	req, resp := make([]byte, 64), make([]byte, 2048)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := cli.Write(req); err != nil {
			b.Fatal(err)
		}
		cli.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := cli.Read(resp); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cli.Close()
	srv.Close()
	<-done
}
