//go:build linux

package e2e

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunrouter/router/test/routertest"
)

// rejectPort is a forward rule that refuses new TCP connections to port.
func rejectPort(comment string, port int) string {
	return fmt.Sprintf(`
[[chains.forward.rules]]
comment = %q
ct_state = "new"
proto = "tcp"
dport = %d
action = "reject"
`, comment, port)
}

// TestReload: while a TCP stream runs through the router, the rule set is
// changed by SIGHUP and then by `router reload`, and a broken file is
// offered both ways. Each good reload takes effect at once for new
// connections (a newly added reject rule refuses them, a removed one no
// longer does; `router rules` lists the new rules); each broken one is
// reported with file:line:col and keeps the running rules; the stream's
// connection keeps its conntrack entry and delivers every byte.
func TestReload(t *testing.T) {
	requireE2E(t)
	r := startRouter(t, routerConfig{Forward: gatewayRules})
	portA, portB := serveEcho(t, r.server), serveEcho(t, r.server)
	probe := func(port int) error {
		c, err := dialIn(r.client, "tcp", net.JoinHostPort(serverV4, strconv.Itoa(port)), 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		return echoRoundTrip(c, "probe")
	}
	// expect checks which of the probe ports accept new connections.
	expect := func(t *testing.T, when string, aOpen, bOpen bool) {
		t.Helper()
		for _, p := range []struct {
			name string
			port int
			open bool
		}{{"A", portA, aOpen}, {"B", portB, bOpen}} {
			err := probe(p.port)
			switch {
			case p.open && err != nil:
				t.Errorf("%s: a new connection to port %s (%d) failed: %v", when, p.name, p.port, err)
			case !p.open && err == nil:
				t.Errorf("%s: a new connection to port %s (%d) got through its reject rule", when, p.name, p.port)
			case !p.open && !errors.Is(err, syscall.ECONNREFUSED):
				t.Errorf("%s: a new connection to port %s (%d): %v, want refused by the reject rule", when, p.name, p.port, err)
			}
		}
	}
	hasRule := func(t testing.TB, comment string) bool { _, ok := r.rule(t, "forward", comment); return ok }
	const ruleA, ruleB = "reload 1: refuse port A", "reload 2: refuse port B"
	rulesWith := func(extra string) routerConfig {
		return routerConfig{Forward: ruleEstablished + ruleInvalid + extra + ruleLANOut + ruleWANReject}
	}

	expect(t, "before any reload", true, true)
	s := startStream(t, r, steady)
	lport := s.conn.LocalAddr().(*net.TCPAddr).Port
	entry := func() (id, state string) {
		es := r.entries(t, "-p", "tcp", "--sport", strconv.Itoa(lport))
		if len(es) != 1 {
			t.Fatalf("conntrack has %d entries for the stream (client port %d), want 1", len(es), lport)
		}
		return es[0].ID, es[0].State
	}
	time.Sleep(300 * time.Millisecond) // the stream is flowing
	streamID, _ := entry()

	t.Run("SIGHUP", func(t *testing.T) {
		r.writeConfig(t, rulesWith(rejectPort(ruleA, portA)))
		if err := r.proc.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if !routertest.WaitFor(5*time.Second, func() bool { return hasRule(t, ruleA) }) {
			t.Fatalf("`router rules` has no rule %q 5 s after SIGHUP", ruleA)
		}
		expect(t, "after SIGHUP", false, true)
		if row, _ := r.rule(t, "forward", ruleA); row.Packets == 0 {
			t.Errorf("rule %q counted no packet after refusing a connection", ruleA)
		}
	})

	t.Run("router reload", func(t *testing.T) {
		r.writeConfig(t, rulesWith(rejectPort(ruleB, portB)))
		if out := r.mustCtl(t, "reload"); strings.TrimSpace(out) != "reloaded" {
			t.Errorf("router reload printed %q, want \"reloaded\"", out)
		}
		// The control request returns after the swap: no waiting.
		if !hasRule(t, ruleB) || hasRule(t, ruleA) {
			t.Fatalf("after router reload the rules are:\n%s\nwant %q and not %q", r.mustCtl(t, "rules"), ruleB, ruleA)
		}
		expect(t, "after router reload", true, false)
	})

	t.Run("broken file", func(t *testing.T) {
		good := rulesWith(rejectPort(ruleB, portB))
		broken := rulesWith(rejectPort(ruleB, portB) + rejectPort("broken", 70000))
		text := broken.render(r.client.path, r.server.path, r.sock, r.trace)
		line := 1 + strings.Count(text[:strings.Index(text, "dport = 70000")], "\n")
		pos := regexp.MustCompile(regexp.QuoteMeta(r.cfgPath) + ":" + strconv.Itoa(line) + `:\d+: .*70000`)
		r.writeConfigText(t, text)

		logBefore := len(r.proc.Output())
		if err := r.proc.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		var logged string
		if !routertest.WaitFor(5*time.Second, func() bool {
			logged = r.proc.Output()[logBefore:]
			return strings.Contains(logged, "reload failed")
		}) {
			t.Fatalf("no \"reload failed\" in the router's log 5 s after SIGHUP with a broken file; it logged:\n%s", logged)
		}
		if !pos.MatchString(logged) {
			t.Errorf("the reload error does not point at %s:%d:COL:\n%s", r.cfgPath, line, logged)
		}
		if !r.running() {
			t.Fatal("the router exited after a broken reload")
		}
		if !hasRule(t, ruleB) {
			t.Errorf("after a broken SIGHUP reload the running rules changed:\n%s", r.mustCtl(t, "rules"))
		}
		expect(t, "after a broken SIGHUP reload", true, false)

		out, errOut, err := r.ctl("reload")
		if err == nil {
			t.Errorf("router reload of a broken file succeeded: %s", out)
		}
		if !pos.MatchString(errOut) {
			t.Errorf("router reload's error does not point at %s:%d:COL:\n%s", r.cfgPath, line, errOut)
		}
		if !hasRule(t, ruleB) {
			t.Errorf("after a broken router reload the running rules changed:\n%s", r.mustCtl(t, "rules"))
		}
		r.writeConfig(t, good)
	})

	t.Run("SIGHUP burst under load", func(t *testing.T) {
		// A stream at full speed while the rules change 20 times in a
		// second, each new set with another rule.
		fast := startStream(t, r, flat)
		for i := range 20 {
			time.Sleep(50 * time.Millisecond)
			r.writeConfig(t, rulesWith(rejectPort(ruleB, portB)+rejectPort(fmt.Sprintf("burst %d", i), 1000+i)))
			if err := r.proc.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}
		if !routertest.WaitFor(5*time.Second, func() bool { return hasRule(t, "burst 19") }) {
			t.Fatalf("the last rule set of the burst is not running after 5 s:\n%s", r.mustCtl(t, "rules"))
		}
		sent, recv := fast.stop()
		if sent.err != nil || recv.err != nil {
			t.Fatalf("fast stream: sender %v, receiver %v", sent.err, recv.err)
		}
		if sent.n == 0 || sent.n != recv.n || sent.sum != recv.sum {
			t.Fatalf("fast stream: sent %d bytes (%s), received %d (%s); want identical", sent.n, sent.sum, recv.n, recv.sum)
		}
		t.Logf("fast stream through 20 reloads: %d bytes intact", recv.n)
		expect(t, "after the burst", true, false)
	})

	// The stream survived: same conntrack entry, every byte delivered.
	if id, state := entry(); id != streamID || state != "ESTABLISHED" {
		t.Errorf("the stream's entry is now id %s in %s; want the same id %s, ESTABLISHED", id, state, streamID)
	}
	sent, recv := s.stop()
	if sent.err != nil || recv.err != nil {
		t.Fatalf("stream: sender %v, receiver %v", sent.err, recv.err)
	}
	if sent.n < 1<<20 || sent.n != recv.n || sent.sum != recv.sum {
		t.Fatalf("stream: sent %d bytes (%s), received %d (%s); want at least 1 MiB, identical", sent.n, sent.sum, recv.n, recv.sum)
	}
	t.Logf("steady stream through all %d reloads: %d bytes intact", 24, recv.n)
}
