package filter

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter/filtertest"
	"github.com/tunrouter/router/packet"
)

func TestTerminalActionsAndPolicy(t *testing.T) {
	rs := mustCompile(t, Spec{Chains: []ChainSpec{
		{Chain: Forward, Policy: "drop", Rules: []RuleSpec{
			{CtState: l("established", "related"), Action: "accept"},
			{CtState: l("invalid"), Action: "drop"},
			{Proto: l("tcp"), DPort: l("22"), Action: "accept"},
			{Proto: l("udp"), Action: "reject"},
		}},
		{Chain: Input, Policy: "accept", Rules: []RuleSpec{{Proto: l("udp"), Action: "drop"}}},
	}})
	cases := []struct {
		name  string
		chain Chain
		pkt   *Packet
		act   Action
		rule  int
	}{
		{"established accepted by rule 0", Forward, pk(tcpAck4, conntrack.Established), Accept, 0},
		{"reply accepted by rule 0", Forward, pk(tcpSynAck, conntrack.EstablishedReply), Accept, 0},
		{"invalid dropped by rule 1", Forward, pk(tcpAck4, conntrack.Invalid), Drop, 1},
		{"new ssh accepted by rule 2", Forward, pk(tcpSyn4, conntrack.New), Accept, 2},
		{"new udp rejected by rule 3", Forward, pk(udp4, conntrack.New), Reject, 3},
		{"new other tcp falls to policy drop", Forward, pk(tcpSyn6, conntrack.New), Drop, -1},
		{"input udp dropped", Input, pk(udp4, conntrack.New), Drop, 0},
		{"input tcp falls to policy accept", Input, pk(tcpSyn4, conntrack.New), Accept, -1},
		{"undefined chain accepts", Output, pk(udp4, conntrack.New), Accept, -1},
		{"undefined prerouting accepts", Prerouting, pk(udp4, conntrack.New), Accept, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := rs.Eval(tc.chain, tc.pkt, 0)
			if v.Action != tc.act || v.Rule != tc.rule {
				t.Fatalf("got %v by rule %d, want %v by rule %d", v.Action, v.Rule, tc.act, tc.rule)
			}
		})
	}
	if rs.Defined(Output) || !rs.Defined(Forward) {
		t.Fatal("Defined: want forward defined and output not")
	}
	if rs.Policy(Forward) != Drop || rs.NumRules(Forward) != 4 {
		t.Fatalf("Policy/NumRules: got %v/%d", rs.Policy(Forward), rs.NumRules(Forward))
	}
}

func TestReject(t *testing.T) {
	unreach6 := filtertest.ICMPError("2001:db8::1", "fd00:1::5", packet.ICMPv6DestUnreachable, 4, 0, udp6)
	mcast := filtertest.UDP("10.1.0.5:5000", "239.1.1.1:5000", 4)
	bcast := filtertest.UDP("10.1.0.5:68", "255.255.255.255:67", 4)
	mcast6 := filtertest.UDP("[fd00:1::5]:5000", "[ff02::1]:5000", 4)
	cases := []struct {
		name       string
		with       string
		proto      []string
		pkt        []byte
		act        Action
		kind       RejectKind
		typ, code  uint8
		limitedRej bool
	}{
		{"tcp default reset", "", nil, tcpSyn4, Reject, RejectTCPReset, 0, 0, false},
		{"tcp6 default reset", "", nil, tcpSyn6, Reject, RejectTCPReset, 0, 0, false},
		{"udp default port unreachable", "", nil, udp4, Reject, RejectICMP, 3, 3, false},
		{"udp6 default port unreachable", "", nil, udp6, Reject, RejectICMP, 1, 4, false},
		{"icmp echo default", "", nil, echo4, Reject, RejectICMP, 3, 3, false},
		{"tcp with icmp admin-prohibited", "admin-prohibited", nil, tcpSyn4, Reject, RejectICMP, 3, 13, false},
		{"v6 admin-prohibited", "admin-prohibited", nil, udp6, Reject, RejectICMP, 1, 1, false},
		{"host-unreachable v4", "host-unreachable", nil, udp4, Reject, RejectICMP, 3, 1, false},
		{"host-unreachable v6 is address unreachable", "host-unreachable", nil, udp6, Reject, RejectICMP, 1, 3, false},
		{"host-prohibited v4", "host-prohibited", nil, udp4, Reject, RejectICMP, 3, 10, false},
		{"no-route v6", "no-route", nil, udp6, Reject, RejectICMP, 1, 0, false},
		{"explicit tcp-reset", "tcp-reset", l("tcp"), tcpAck4, Reject, RejectTCPReset, 0, 0, false},
		{"never reset a reset", "", nil, tcpRst4, Drop, RejectNone, 0, 0, true},
		{"never answer an icmp error", "", nil, unreach4, Drop, RejectNone, 0, 0, true},
		{"never answer an icmpv6 error", "", nil, unreach6, Drop, RejectNone, 0, 0, true},
		{"never answer a non-first fragment", "", nil, frag4, Drop, RejectNone, 0, 0, true},
		{"never answer multicast", "", nil, mcast, Drop, RejectNone, 0, 0, true},
		{"never answer broadcast", "", nil, bcast, Drop, RejectNone, 0, 0, true},
		{"never answer v6 multicast", "", nil, mcast6, Drop, RejectNone, 0, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rs := mustCompile(t, fwd(RuleSpec{Proto: tc.proto, Action: "reject", RejectWith: tc.with}))
			v := rs.Eval(Forward, pk(tc.pkt, conntrack.New), 0)
			if v.Action != tc.act || v.Reject != tc.kind || v.ICMPType != tc.typ || v.ICMPCode != tc.code || v.RejectLimited != tc.limitedRej || v.Rule != 0 {
				t.Fatalf("got %+v, want action %v kind %v type %d code %d limited %v", v, tc.act, tc.kind, tc.typ, tc.code, tc.limitedRej)
			}
		})
	}
}

func TestRejectRateLimit(t *testing.T) {
	now := time.Unix(1000, 0)
	spec := fwd(RuleSpec{Action: "reject"})
	spec.RejectRate, spec.RejectBurst = 1, 2
	spec.now = func() time.Time { return now }
	rs := mustCompile(t, spec)
	var got []Action
	for range 4 {
		got = append(got, rs.Eval(Forward, pk(udp4, conntrack.New), 0).Action)
	}
	// TCP resets are not limited.
	if v := rs.Eval(Forward, pk(tcpSyn4, conntrack.New), 0); v.Action != Reject || v.Reject != RejectTCPReset {
		t.Fatalf("tcp reset while ICMP is limited: got %+v", v)
	}
	now = now.Add(time.Second)
	got = append(got, rs.Eval(Forward, pk(udp4, conntrack.New), 0).Action)
	want := []Action{Reject, Reject, Drop, Drop, Reject}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("verdicts %v, want %v", got, want)
		}
	}
}

func TestPreroutingStatements(t *testing.T) {
	rs := mustCompile(t, Spec{Chains: []ChainSpec{{Chain: Prerouting, Policy: "accept", Rules: []RuleSpec{
		{SAddr: l("198.51.100.0/24"), Action: "drop"},
		{Proto: l("tcp"), DPort: l("21"), Action: "helper", Helper: "ftp"},
		{Proto: l("udp"), DPort: l("53"), Action: "notrack"},
		{Proto: l("udp"), DPort: l("53"), IIf: l("wan0"), Action: "drop"},
		{Action: "counter"},
	}}}})
	ftp := filtertest.TCP("10.1.0.5:40000", "192.0.2.10:21", packet.SYN)
	dns := filtertest.UDP("10.1.0.5:5353", "192.0.2.53:53", 20)
	bad := filtertest.UDP("198.51.100.7:5353", "192.0.2.53:53", 20)
	cases := []struct {
		name    string
		pkt     *Packet
		act     Action
		rule    int
		helper  string
		notrack bool
	}{
		{"helper attached, evaluation continues to policy", pk(ftp, conntrack.New), Accept, -1, "ftp", false},
		{"notrack, then policy", pk(dns, conntrack.New), Accept, -1, "", true},
		{"notrack recorded even when a later rule drops", with(pk(dns, conntrack.New), func(p *Packet) { p.IIf = 1 }), Drop, 3, "", true},
		{"drop before any statement", pk(bad, conntrack.New), Drop, 0, "", false},
		{"nothing matches but the counter", pk(tcpSyn4, conntrack.New), Accept, -1, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := rs.Eval(Prerouting, tc.pkt, 0)
			if v.Action != tc.act || v.Rule != tc.rule || v.Helper != tc.helper || v.Notrack != tc.notrack {
				t.Fatalf("got %+v, want %v rule %d helper %q notrack %v", v, tc.act, tc.rule, tc.helper, tc.notrack)
			}
		})
	}
	// The counter rule (4) saw every packet that got past rule 0 and 3.
	if pkts, _ := rs.Counter(Prerouting, 4); pkts != 3 {
		t.Fatalf("counter rule: %d packets, want 3", pkts)
	}
}

func TestPreroutingIgnoresCtInfo(t *testing.T) {
	// A prerouting packet has not been tracked: its Ct field is
	// meaningless and must not select rules.
	rs := mustCompile(t, Spec{Chains: []ChainSpec{{Chain: Prerouting, Policy: "drop", Rules: []RuleSpec{{Proto: l("tcp"), Action: "accept"}}}}})
	for _, ct := range []conntrack.CtInfo{conntrack.New, conntrack.Established, conntrack.Invalid, conntrack.Untracked} {
		if v := rs.Eval(Prerouting, pk(tcpSyn4, ct), 0); v.Action != Accept {
			t.Fatalf("ct %v: got %+v", ct, v)
		}
	}
}

func TestLastHelperWins(t *testing.T) {
	rs := mustCompile(t, Spec{Helpers: []string{"ftp", "tftp"}, Chains: []ChainSpec{{Chain: Prerouting, Rules: []RuleSpec{
		{Proto: l("tcp"), Action: "helper", Helper: "ftp"},
		{DPort: l("22"), Action: "helper", Helper: "tftp"},
	}}}})
	if v := rs.Eval(Prerouting, pk(tcpSyn4, conntrack.New), 0); v.Helper != "tftp" {
		t.Fatalf("helper %q, want tftp", v.Helper)
	}
}

func TestContinueAndCounters(t *testing.T) {
	spec := fwd(
		RuleSpec{Action: "continue", Comment: "all"},
		RuleSpec{Proto: l("tcp"), Action: "counter", Comment: "tcp"},
		RuleSpec{CtState: l("established"), Action: "accept", Comment: "est"},
	)
	spec.Workers = 2
	rs := mustCompile(t, spec)
	type send struct {
		pkt    []byte
		ct     conntrack.CtInfo
		worker int
	}
	sends := []send{
		{tcpAck4, conntrack.Established, 0},
		{tcpAck4, conntrack.Established, 1},
		{udp4, conntrack.Established, 1},
		{tcpSyn4, conntrack.New, 0},
		{udp6, conntrack.New, 99}, // out of range: the shared slot
		{udp6, conntrack.New, -1},
	}
	for _, s := range sends {
		rs.Eval(Forward, pk(s.pkt, s.ct), s.worker)
	}
	n := func(b []byte) uint64 { return uint64(len(b)) }
	want := map[int][2]uint64{
		0:  {6, 2*n(tcpAck4) + n(udp4) + n(tcpSyn4) + 2*n(udp6)},
		1:  {3, 2*n(tcpAck4) + n(tcpSyn4)},
		2:  {3, 2*n(tcpAck4) + n(udp4)},
		-1: {3, n(tcpSyn4) + 2*n(udp6)},
	}
	for rule, w := range want {
		p, b := rs.Counter(Forward, rule)
		if p != w[0] || b != w[1] {
			t.Errorf("rule %d: %d packets %d bytes, want %d/%d", rule, p, b, w[0], w[1])
		}
	}
	all := rs.Counters()
	var found int
	for _, c := range all {
		if c.Chain == Forward && c.Rule == 1 {
			found++
			if c.Comment != "tcp" || c.Packets != 3 {
				t.Errorf("Counters entry %+v", c)
			}
		}
	}
	if found != 1 || len(all) != 3+int(NumChains) {
		t.Fatalf("Counters: %d entries (%d for forward rule 1), want %d", len(all), found, 3+int(NumChains))
	}
}

// TestConcurrentEvalCountersAndSwap runs workers on a ruleset published
// through an atomic pointer while a reader sums counters and a reloader
// swaps rulesets (run with -race).
func TestConcurrentEvalCountersAndSwap(t *testing.T) {
	mk := func(policy string) *Ruleset {
		s := fwd(RuleSpec{CtState: l("established"), Action: "accept"})
		s.Chains[0].Policy = policy
		s.Workers = 4
		return mustCompile(t, s)
	}
	first := mk("drop")
	var cur atomic.Pointer[Ruleset]
	cur.Store(first)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	const perWorker = 2000
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := pk(tcpAck4, conntrack.Established)
			for range perWorker {
				if v := cur.Load().Eval(Forward, p, w); v.Action != Accept {
					t.Errorf("worker %d: %+v", w, v)
					return
				}
			}
		}()
	}
	all := []*Ruleset{first}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				_ = cur.Load().Counters()
				next := mk("accept")
				all = append(all, next)
				cur.Store(next)
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-done
	// Every packet was counted exactly once, on the ruleset it saw.
	var total uint64
	for _, rs := range all {
		p, _ := rs.Counter(Forward, 0)
		total += p
	}
	if total != 4*perWorker {
		t.Fatalf("counted %d packets over %d rulesets, want %d", total, len(all), 4*perWorker)
	}
}
