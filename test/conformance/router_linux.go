package conformance

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunrouter/router/test/routertest"
	"github.com/tunrouter/router/tundev/tundevtest"
)

// routerRunner plays scenarios through this router: the daemon runs with
// a configuration translated from the scenario, its TUN devices in the
// client and server namespaces ("lan0", "wan0"). Packets are injected
// with AF_PACKET on the client's (or server's) TUN, so the daemon reads
// exactly those bytes, and captured with AF_PACKET on the other TUN; the
// trace file gives each packet's ct state, INVALID reason and verdict. The
// end namespaces drop everything their own stacks would see or send.
type routerRunner struct {
	tb     testing.TB
	bin    string
	dir    string
	ns     [2]string
	nsPath [2]string
	seq    int
}

func moduleRoot(tb testing.TB) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		tb.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(string(bytes.TrimSpace(out)))
}

func newRouterRunner(tb testing.TB, bin string) *routerRunner {
	r := &routerRunner{tb: tb, bin: bin, dir: tb.TempDir()}
	for i, p := range []string{"cfr-c", "cfr-s"} {
		r.ns[i], r.nsPath[i] = tundevtest.NewNetns(tb, p)
		runStdin(tb, endNftables, "ip", "netns", "exec", r.ns[i], "nft", "-f", "-")
	}
	return r
}

// config renders the router's configuration for s.
func (r *routerRunner) config(s *Scenario) string {
	return routerConfig(r.nsPath, s)
}

// daemon is one running router process.
type daemon struct {
	*routertest.Process
	trace string
	sock  [2]*pktSock
	caps  [2]chan captured
}

// exitError describes the daemon's unexpected exit.
func (d *daemon) exitError() error {
	return fmt.Errorf("router exited: %v\n%s", d.Cmd.ProcessState, d.Output())
}

// start writes the configuration and starts the daemon, then waits until
// both devices are up and opens the inject/capture sockets on them.
func (r *routerRunner) start(s *Scenario) (*daemon, error) {
	r.seq++
	cfg := filepath.Join(r.dir, fmt.Sprintf("%03d-%s.toml", r.seq, s.Name))
	trace := filepath.Join(r.dir, fmt.Sprintf("%03d-%s.trace", r.seq, s.Name))
	if err := os.WriteFile(cfg, []byte(r.config(s)), 0o644); err != nil {
		return nil, err
	}
	p, err := routertest.Start("router", exec.Command(r.bin, "run", "--config", cfg, "--trace", trace), syscall.SIGTERM)
	if err != nil {
		return nil, err
	}
	d := &daemon{Process: p, trace: trace}
	deadline := time.Now().Add(10 * time.Second)
	for i := range 2 {
		for {
			var up bool
			err := tundevtest.InNetns(r.nsPath[i], func() error {
				ifi, err := net.InterfaceByName(devName[i])
				if err != nil {
					return err
				}
				up = ifi.Flags&net.FlagUp != 0
				if up {
					d.sock[i], err = openPktSock(devName[i], nil)
				}
				return err
			})
			if err == nil && up {
				break
			}
			select {
			case <-d.Done():
				d.close()
				return nil, d.exitError()
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				d.stop()
				return nil, fmt.Errorf("router devices not up after 10 s (%v)\n%s", err, d.Output())
			}
		}
		d.caps[i] = make(chan captured, 1024)
		d.sock[i].start(d.caps[i])
	}
	// The devices are up before the pipeline reads them; wait for the
	// daemon to say it runs.
	if err := d.WaitRunning("", time.Until(deadline)); err != nil {
		d.stop()
		return nil, fmt.Errorf("router: %v\n%s", err, d.Output())
	}
	return d, nil
}

func (d *daemon) close() {
	for _, s := range d.sock {
		if s != nil {
			s.Close()
		}
	}
}

// stop ends the daemon (SIGTERM, then SIGKILL after 5 s).
func (d *daemon) stop() {
	d.close()
	d.Stop(5 * time.Second)
}

// Run plays s through a fresh daemon.
func (r *routerRunner) Run(s *Scenario) ([]Outcome, error) {
	d, err := r.start(s)
	if err != nil {
		return nil, err
	}
	defer d.stop()
	tail := &traceTail{file: routertest.TraceFile{Path: d.trace}}
	out := make([]Outcome, len(s.Packets))
	sigs := make([]sig, len(s.Packets))
	lines := make([]*traceLine, len(s.Packets))
	for i, p := range s.Packets {
		sigs[i] = packetSig(p.From, p.Bytes)
		// An identical earlier packet (an IPv6 retransmission: no ID)
		// must have its record before this one can be told apart.
		for j := range i {
			if lines[j] == nil && sigs[j] == sigs[i] {
				if lines[j] = tail.wait(sigs[j], 2*time.Second); lines[j] == nil {
					return nil, fmt.Errorf("packet %d (%s): no trace record\n%s", j, s.Packets[j].Note, tail.dump())
				}
			}
		}
		delivered, modified, l, err := r.one(d, tail, p, sigs[i])
		if err != nil {
			return nil, fmt.Errorf("packet %d: %w", i, err)
		}
		out[i].Delivered = delivered
		lines[i] = l
		if modified {
			out[i].Detail = "delivered modified"
		}
	}
	// Every packet has a trace record; delivered ones may not be flushed
	// yet (the daemon flushes its trace every 100 ms).
	for i := range s.Packets {
		l := lines[i]
		if l == nil {
			l = tail.wait(sigs[i], 2*time.Second)
		}
		if l == nil {
			return nil, fmt.Errorf("packet %d (%s): no trace record\n%s", i, s.Packets[i].Note, tail.dump())
		}
		out[i].State = l.State
		if strings.HasPrefix(l.Verdict, "drop: ip header") {
			// Dropped before tracking, as the kernel's IP layer does.
			out[i].State = StateNone
		}
		if l.State == StateInvalid || l.Verdict != "accept" {
			out[i].Reason = joinNonEmpty("; ", l.Reason, l.Why)
		}
		out[i].Detail = joinNonEmpty("; ", out[i].Detail, routerDetail(l))
	}
	return out, nil
}

func routerDetail(l *traceLine) string {
	d := "verdict " + l.Verdict
	if l.Chain != "" && l.Verdict != "accept" {
		if l.Rule >= 0 {
			d += fmt.Sprintf(" (%s rule %d)", l.Chain, l.Rule)
		} else {
			d += fmt.Sprintf(" (%s policy)", l.Chain)
		}
	}
	if l.TCPState != "" {
		d += ", tcp " + l.TCPState
	}
	if l.Why != "" {
		d += ", helper: " + l.Why
	}
	return d
}

// one injects a packet and waits until it comes out on the other side or
// the trace has a record of it (a drop).
func (r *routerRunner) one(d *daemon, tail *traceTail, p Packet, want sig) (delivered, modified bool, line *traceLine, err error) {
	id, _ := identOf(p.Bytes)
	if err := d.sock[p.From].send(p.Bytes); err != nil {
		return false, false, nil, fmt.Errorf("inject: %w", err)
	}
	capCh := d.caps[p.From.Other()]
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	deadline := time.After(3 * time.Second)
	var traced time.Time
	for {
		select {
		case c := <-capCh:
			if cid, ok := identOf(c.Packet); ok && cid == id {
				return true, !payloadSame(p.Bytes, c.Packet), line, nil
			}
		case <-poll.C:
			tail.poll()
			if line == nil {
				if line = tail.take(want); line != nil {
					if line.Verdict != "accept" {
						return false, false, line, nil
					}
					// Accepted: it must show up; give the device a
					// moment.
					traced = time.Now()
				}
			} else if time.Since(traced) > waitDelivered {
				return false, false, line, nil
			}
		case <-d.Done():
			return false, false, nil, d.exitError()
		case <-deadline:
			return false, false, nil, fmt.Errorf("no capture and no trace record after 3 s\n%s", tail.dump())
		}
	}
}

// traceTail reads the daemon's growing trace file.
type traceTail struct {
	file  routertest.TraceFile
	lines []*traceLine
}

// poll reads the records appended since the last poll. The file may not
// be there yet, and a line that is not a record is skipped (not a
// packet's).
func (t *traceTail) poll() {
	recs, _ := t.file.Read()
	for _, rec := range recs {
		t.lines = append(t.lines, &traceLine{TraceRecord: rec})
	}
}

// peek returns the first unused record with signature s.
func (t *traceTail) peek(s sig) *traceLine {
	for _, l := range t.lines {
		if !l.used && l.sig() == s {
			return l
		}
	}
	return nil
}

// take is peek that marks the record used.
func (t *traceTail) take(s sig) *traceLine {
	l := t.peek(s)
	if l != nil {
		l.used = true
	}
	return l
}

// wait polls until a record with signature s comes, and takes it.
func (t *traceTail) wait(s sig, d time.Duration) *traceLine {
	deadline := time.Now().Add(d)
	for {
		t.poll()
		if l := t.take(s); l != nil || time.Now().After(deadline) {
			return l
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (t *traceTail) dump() string {
	data, _ := os.ReadFile(t.file.Path)
	if len(data) > 8000 {
		data = data[len(data)-8000:]
	}
	return "trace:\n" + string(data)
}
