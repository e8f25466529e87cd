package inprocess

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter"
	"github.com/tunrouter/router/helpers/ftp"
	"github.com/tunrouter/router/packet"
	"github.com/tunrouter/router/pipeline"
)

// The test network. The client host sits on the LAN port, the server host
// on the WAN port; the client also owns clientV4b and clientV6b, second
// LAN addresses that stand for "another host" in the FTP bounce test.
// Nothing leaves the process: these are addresses inside the two netstack
// hosts.
const (
	clientV4  = "10.1.0.5"
	clientV4b = "10.1.0.6"
	clientV6  = "fd01::5"
	clientV6b = "fd01::6"
	serverV4  = "10.2.0.9"
	serverV6  = "fd02::9"

	routerLAN4 = "10.1.0.1"
	routerLAN6 = "fd01::1"
	routerWAN4 = "10.2.0.1"
	routerWAN6 = "fd02::1"

	linkMTU = 1500

	portLAN = 0 // pipeline port indexes
	portWAN = 1
)

// rulesFunc builds a rule set for a pipeline with the given number of
// workers.
type rulesFunc func(t testing.TB, workers int) *filter.Ruleset

// rig is a pipeline between a client host (lan) and a server host (wan).
type rig struct {
	t       testing.TB
	workers int
	client  *host
	server  *host
	cfg     pipeline.Config
	p       *pipeline.Pipeline
	trace   *tracer
	ftp     *ftp.Helper

	ftpServers map[int]*ftpServer // by family, for tests that share them
}

// newRig builds and starts the rig; the test's cleanup quiesces the hosts,
// closes the pipeline and the hosts. Cleanups the test registers later
// (closing its sockets) run before that.
func newRig(t testing.TB, workers int, rules rulesFunc) *rig {
	t.Helper()
	return buildRig(t, workers, rules, true)
}

// buildRig is newRig; gated=false leaves out the credit gate and uses the
// pipeline's default worker queue depth, as the product runs (see
// hostDev for why the tests gate).
func buildRig(t testing.TB, workers int, rules rulesFunc, gated bool) *rig {
	t.Helper()
	if rules == nil {
		rules = gatewayRules
	}
	r := &rig{
		t:       t,
		workers: workers,
		client:  newHost(t, "client", linkMTU, clientV4, clientV4b, clientV6, clientV6b),
		server:  newHost(t, "server", linkMTU, serverV4, serverV6),
		trace:   &tracer{},
		ftp:     ftp.New(ftp.Config{}),
	}
	routes, err := pipeline.NewRoutes([]pipeline.Route{
		{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Dev: portLAN},
		{Prefix: netip.MustParsePrefix("fd01::/64"), Dev: portLAN},
		{Prefix: netip.MustParsePrefix("10.2.0.0/16"), Dev: portWAN},
		{Prefix: netip.MustParsePrefix("fd02::/64"), Dev: portWAN},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.cfg = pipeline.Config{
		Ports: []pipeline.Port{
			{Name: "lan", Queues: []pipeline.Device{r.client.dev}, MTU: linkMTU,
				Addr4: netip.MustParseAddr(routerLAN4), Addr6: netip.MustParseAddr(routerLAN6)},
			{Name: "wan", Queues: []pipeline.Device{r.server.dev}, MTU: linkMTU,
				Addr4: netip.MustParseAddr(routerWAN4), Addr6: netip.MustParseAddr(routerWAN6)},
		},
		Routes:    routes,
		Workers:   workers,
		Conntrack: conntrack.DefaultConfig(),
		Helpers:   []conntrack.Helper{r.ftp},
		Rules:     rules(t, workers),
		LocalAddrs: []netip.Addr{
			netip.MustParseAddr(routerLAN4), netip.MustParseAddr(routerLAN6),
			netip.MustParseAddr(routerWAN4), netip.MustParseAddr(routerWAN6),
		},
		Tracer:   r.trace,
		ICMPRate: 1e6,
		Seed:     0x5eed,
	}
	if gated {
		// Room for every packet the gate lets in (see hostDev).
		r.cfg.QueueDepth = gateCredits
		r.resetGate()
	}
	r.p, err = pipeline.New(r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.p.Start()
	t.Cleanup(r.teardown)
	return r
}

// gateCredits is how many packets may be inside the pipeline at once (see
// hostDev).
const gateCredits = 64

// resetGate gives the devices a full set of credits (a closed pipeline
// keeps the ones of the packets it read but did not handle).
func (r *rig) resetGate() {
	gate := make(chan struct{}, gateCredits)
	for range gateCredits {
		gate <- struct{}{}
	}
	r.client.dev.gate = gate
	r.server.dev.gate = gate
	r.trace.gate = gate
}

// restart replaces a closed pipeline with a new one over the same hosts
// (fresh connection tracking), with the given rules.
func (r *rig) restart(rules rulesFunc) {
	r.t.Helper()
	r.p.Close()
	r.client.dev.resume()
	r.server.dev.resume()
	if r.trace.gate != nil {
		r.resetGate()
	}
	cfg := r.cfg
	cfg.Rules = rules(r.t, r.workers)
	p, err := pipeline.New(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	r.p = p
	p.Start()
}

// teardown lets the hosts finish what they are sending (FIN handshakes of
// the sockets the test closed), then stops the pipeline and the hosts.
func (r *rig) teardown() {
	if !r.quiesce(50*time.Millisecond, 3*time.Second) {
		r.t.Logf("hosts still sending after 3s; closing anyway")
	}
	r.p.Close()
	for _, h := range []*host{r.client, r.server} {
		if sent, dropped, _ := h.dev.activity(); dropped > 0 {
			r.t.Logf("%s host: %d of its %d packets found no reader (pipeline closed or behind)", h.name, dropped, sent)
		}
		h.dev.close()
	}
}

// quiesce waits until neither host has sent a packet for quiet, at most
// max; it reports whether they became quiet.
func (r *rig) quiesce(quiet, max time.Duration) bool {
	deadline := time.Now().Add(max)
	for {
		_, _, l1 := r.client.dev.activity()
		_, _, l2 := r.server.dev.activity()
		if l2.After(l1) {
			l1 = l2
		}
		if time.Since(l1) >= quiet {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stats returns the pipeline's counters.
func (r *rig) stats() pipeline.Stats { return r.p.Stats() }

// drops returns the pipeline's drop counter for a reason.
func (r *rig) drops(why pipeline.DropReason) uint64 {
	st := r.p.Stats()
	return st.Drops()[why]
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// rec is a trace record with the packet fields the tests look at copied
// out (the tracer must not keep the packet).
type rec struct {
	pipeline.TraceRecord
	Key      packet.FlowKey
	Flags    packet.TCPFlags
	Seq, Ack uint32
	Payload  int
}

func (x rec) String() string {
	return fmt.Sprintf("t=%.3fs w%d in=%d out=%d %v flags=%v seq=%d ack=%d len=%d ct=%v status=%v chain=%v rule=%d verdict=%q why=%q",
		float64(x.Time)/1e9, x.Worker, x.In, x.Out, x.Key, x.Flags, x.Seq, x.Ack, x.Payload, x.Ct, x.Status, x.Chain, x.Rule, x.Verdict, x.Why)
}

// tracer keeps every trace record. It also returns the device credit of
// each packet a worker handled (see hostDev): the pipeline traces every
// packet it takes from a device exactly once.
type tracer struct {
	mu   sync.Mutex
	recs []rec
	gate chan struct{}
}

func (tr *tracer) Trace(w int, r *pipeline.TraceRecord) {
	x := rec{TraceRecord: *r}
	x.Packet = nil
	if p := r.Packet; p != nil {
		x.Key = p.Key
		if p.Proto == packet.TCP {
			x.Flags = p.TCPFlags
			x.Seq, x.Ack = p.Seq, p.Ack
		}
		x.Payload = p.PayloadLen()
	}
	tr.mu.Lock()
	tr.recs = append(tr.recs, x)
	tr.mu.Unlock()
	select {
	case tr.gate <- struct{}{}:
	default:
	}
}

// matching returns the records for which keep is true, in trace order
// (per worker; a connection lives on one worker, so its records are in
// processing order).
func (tr *tracer) matching(keep func(*rec) bool) []rec {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []rec
	for i := range tr.recs {
		if keep(&tr.recs[i]) {
			out = append(out, tr.recs[i])
		}
	}
	return out
}

// flow returns the records of the TCP or UDP flow between a and b, both
// directions.
func (tr *tracer) flow(proto packet.Proto, a, b netip.AddrPort) []rec {
	return tr.matching(func(x *rec) bool { return x.Key.Proto == proto && keyIs(x.Key, a, b) })
}

// keyIs reports whether k goes from a to b or from b to a.
func keyIs(k packet.FlowKey, a, b netip.AddrPort) bool {
	src := netip.AddrPortFrom(k.SrcAddr(), k.SrcPort)
	dst := netip.AddrPortFrom(k.DstAddr(), k.DstPort)
	a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	b = netip.AddrPortFrom(b.Addr().Unmap(), b.Port())
	return (src == a && dst == b) || (src == b && dst == a)
}

func dumpRecs(recs []rec) string {
	var b strings.Builder
	for _, x := range recs {
		b.WriteString("\n\t")
		b.WriteString(x.String())
	}
	return b.String()
}

// Rule sets. All attach the FTP helper to new TCP connections to port 21
// in prerouting, as the product's [helpers.ftp] ports = [21] does.
var ftpHelperRule = filter.ChainSpec{Chain: filter.Prerouting, Policy: "accept", Rules: []filter.RuleSpec{
	{Proto: []string{"tcp"}, DPort: []string{"21"}, Action: "helper", Helper: "ftp"},
}}

func compile(t testing.TB, workers int, chains ...filter.ChainSpec) *filter.Ruleset {
	t.Helper()
	rs, _, err := filter.Compile(filter.Spec{
		Interfaces: []string{"lan", "wan"},
		Helpers:    []string{"ftp"},
		Workers:    workers,
		Chains:     chains,
	})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// gatewayRules is the gateway policy of config.example.toml: replies and
// RELATED pass, INVALID is dropped, the LAN may open anything towards the
// WAN, nothing new comes in from the WAN, the router answers pings from
// the LAN. One difference: new connections from the WAN meet the forward
// policy (a silent drop) where the example rejects them.
func gatewayRules(t testing.TB, workers int) *filter.Ruleset {
	return compile(t, workers, ftpHelperRule,
		filter.ChainSpec{Chain: filter.Forward, Policy: "drop", Rules: []filter.RuleSpec{
			{CtState: []string{"established", "related"}, Action: "accept"},
			{CtState: []string{"invalid"}, Action: "drop"},
			{IIf: []string{"lan"}, OIf: []string{"wan"}, CtState: []string{"new"}, Action: "accept"},
		}},
		filter.ChainSpec{Chain: filter.Input, Policy: "drop", Rules: []filter.RuleSpec{
			{CtState: []string{"established", "related"}, Action: "accept"},
			{IIf: []string{"lan"}, ICMPType: []string{"echo-request"}, Action: "accept"},
			{IIf: []string{"lan"}, ICMPv6Type: []string{"echo-request"}, Action: "accept"},
		}},
	)
}

// strictRules is the FTP policy: new connections only to TCP 21 from the
// LAN; established and related accepted; everything else dropped.
func strictRules(t testing.TB, workers int) *filter.Ruleset {
	return compile(t, workers, ftpHelperRule,
		filter.ChainSpec{Chain: filter.Forward, Policy: "drop", Rules: []filter.RuleSpec{
			{CtState: []string{"established", "related"}, Action: "accept"},
			{IIf: []string{"lan"}, Proto: []string{"tcp"}, DPort: []string{"21"}, CtState: []string{"new"}, Action: "accept"},
		}},
		filter.ChainSpec{Chain: filter.Input, Policy: "drop"},
	)
}

// closedRules lets only existing connections (and what they announced)
// through: no new connection in either direction.
func closedRules(t testing.TB, workers int) *filter.Ruleset {
	return compile(t, workers, ftpHelperRule,
		filter.ChainSpec{Chain: filter.Forward, Policy: "drop", Rules: []filter.RuleSpec{
			{CtState: []string{"established", "related"}, Action: "accept"},
		}},
		filter.ChainSpec{Chain: filter.Input, Policy: "drop"},
	)
}

// acceptAllRules forwards everything, INVALID included.
func acceptAllRules(t testing.TB, workers int) *filter.Ruleset {
	return compile(t, workers, filter.ChainSpec{Chain: filter.Forward, Policy: "accept"})
}
