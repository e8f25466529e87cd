//go:build linux

package e2e

import (
	"bufio"
	"encoding/json"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tunrouter/router/control"
	"github.com/tunrouter/router/test/routertest"
)

// events follows `router ct -E -o json`.
type events struct {
	mu  sync.Mutex
	evs []control.Event
}

func followEvents(t *testing.T, r *router) *events {
	t.Helper()
	cmd := exec.Command(routerBin, "ct", "--socket", r.sock, "-E", "-o", "json")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ev := &events{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var e control.Event
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				ev.mu.Lock()
				ev.evs = append(ev.evs, e)
				ev.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		cmd.Wait()
		if t.Failed() {
			t.Logf("router ct -E: %s", stderr.String())
		}
	})
	return ev
}

// wait waits until an event satisfies match.
func (e *events) wait(timeout time.Duration, match func(control.Event) bool) (control.Event, bool) {
	var found control.Event
	ok := routertest.WaitFor(timeout, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, ev := range e.evs {
			if match(ev) {
				found = ev
				return true
			}
		}
		return false
	})
	return found, ok
}

// TestControlCLI: the control socket's other commands against live
// traffic: `router ct -E` streams a connection's NEW event, `ct -D --id`
// deletes exactly that entry (reporting it, with a DESTROY event), `ct -F`
// empties the table (DESTROY events too), `ct -L expect` lists no
// expectation when there is none.
func TestControlCLI(t *testing.T) {
	requireE2E(t)
	r := startRouter(t, routerConfig{Forward: gatewayRules})
	port := serveEcho(t, r.server)
	ev := followEvents(t, r)

	// The event stream is live once it shows the entry of one of these
	// probes (a UDP datagram each, new source port every time).
	udp := listenPacketIn(t, r.server, "udp", ":0")
	probePort := udp.LocalAddr().(*net.UDPAddr).Port
	live := false
	for i := 0; i < 50 && !live; i++ {
		c, err := dialIn(r.client, "udp", net.JoinHostPort(serverV4, strconv.Itoa(probePort)), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("probe"))
		c.Close()
		_, live = ev.wait(100*time.Millisecond, func(e control.Event) bool {
			return e.Type == "NEW" && e.Entry.Proto == "udp" && e.Entry.Orig.Dport == uint16(probePort)
		})
	}
	if !live {
		t.Fatal("router ct -E showed no event for 50 new UDP flows")
	}

	c, err := dialIn(r.client, "tcp", net.JoinHostPort(serverV4, strconv.Itoa(port)), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echoRoundTrip(c, "events"); err != nil {
		t.Fatal(err)
	}
	lport := uint16(c.LocalAddr().(*net.TCPAddr).Port)
	isConn := func(e control.Entry) bool {
		return e.Proto == "tcp" && e.Orig.Sport == lport && e.Orig.Dport == uint16(port)
	}
	newEv, ok := ev.wait(3*time.Second, func(e control.Event) bool { return e.Type == "NEW" && isConn(e.Entry) })
	if !ok {
		t.Fatalf("router ct -E showed no NEW event for the TCP connection from port %d", lport)
	}

	es := r.entries(t, "-p", "tcp", "--sport", strconv.Itoa(int(lport)))
	if len(es) != 1 || es[0].ID != newEv.Entry.ID {
		t.Fatalf("ct -L for the connection: %v; want one entry with the NEW event's id %s", lines(es), newEv.Entry.ID)
	}
	total := len(r.entries(t))
	_, errOut, err := r.ctl("ct", "-D", "--id", es[0].ID)
	if err != nil || !strings.Contains(errOut, "1 flow entries have been deleted") {
		t.Fatalf("router ct -D --id %s: %v: %s", es[0].ID, err, errOut)
	}
	if n := len(r.entries(t, "-p", "tcp", "--sport", strconv.Itoa(int(lport)))); n != 0 {
		t.Errorf("the deleted connection still has %d entries", n)
	}
	if n := len(r.entries(t)); n != total-1 {
		t.Errorf("ct -D --id deleted %d entries, want exactly 1", total-n)
	}
	if _, ok := ev.wait(2*time.Second, func(e control.Event) bool { return e.Type == "DESTROY" && isConn(e.Entry) }); !ok {
		t.Errorf("router ct -E showed no DESTROY event for the entry ct -D deleted")
	}
	if _, _, err := r.ctl("ct", "-D", "--id", es[0].ID); err == nil {
		t.Errorf("deleting id %s twice succeeded", es[0].ID)
	}

	_, errOut, err = r.ctl("ct", "-F")
	if err != nil || !strings.Contains(errOut, "has been emptied") {
		t.Fatalf("router ct -F: %v: %s", err, errOut)
	}
	if _, ok := ev.wait(2*time.Second, func(e control.Event) bool {
		return e.Type == "DESTROY" && e.Entry.Proto == "udp" && e.Entry.Orig.Dport == uint16(probePort)
	}); !ok {
		t.Errorf("router ct -E showed no DESTROY event for the UDP entries ct -F flushed")
	}
	if es := r.entries(t); len(es) != 0 {
		t.Errorf("after ct -F the table holds:\n%s", lines(es))
	}
	out, errOut, err := r.ctl("ct", "-L", "expect")
	if err != nil || strings.TrimSpace(out) != "" || !strings.Contains(errOut, "0 expectations") {
		t.Errorf("router ct -L expect: %v: %q %q; want no expectation", err, out, errOut)
	}
}
