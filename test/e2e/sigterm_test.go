//go:build linux

package e2e

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSIGTERM: the router stops on SIGTERM while a stream runs through it
// as fast as it can and a connection is idle in its table: it exits with status 0 well
// within the limit, logs its final counters, and leaves no device in the
// namespaces and no control socket behind (router.stop checks those, as
// it does at the end of every test).
func TestSIGTERM(t *testing.T) {
	requireE2E(t)
	r := startRouter(t, routerConfig{Forward: gatewayRules})
	port := serveEcho(t, r.server)
	idle, err := dialIn(r.client, "tcp", net.JoinHostPort(serverV6, strconv.Itoa(port)), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if err := echoRoundTrip(idle, "idle connection"); err != nil {
		t.Fatal(err)
	}
	s := startStream(t, r, flat)
	time.Sleep(200 * time.Millisecond)
	if n := len(r.entries(t, "-p", "tcp")); n < 2 {
		t.Fatalf("conntrack has %d TCP entries before SIGTERM, want the stream and the idle connection", n)
	}

	took := r.stop(t)
	t.Logf("router exited %v after SIGTERM", took.Round(time.Millisecond))
	if !strings.Contains(r.proc.Output(), "pipeline stopped") {
		t.Errorf("the router did not log its shutdown (\"pipeline stopped\"):\n%s", r.proc.Output())
	}
	// The stream got through until the end.
	s.abort()
	if _, recv := s.stop(); recv.n == 0 {
		t.Errorf("the stream delivered nothing before SIGTERM")
	}
}
