package filter

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter/filtertest"
	"github.com/tunrouter/router/packet"
)

func TestAppendLogLine(t *testing.T) {
	syn := filtertest.Build(filtertest.IP{Src: mustAddr("10.1.0.5"), Dst: mustAddr("192.0.2.10"), Proto: packet.TCP, TOS: 0xb8, DF: true, ID: 4321, TTL: 63},
		filtertest.Segment(filtertest.TCPHeader{SrcPort: 40000, DstPort: 22, Flags: packet.SYN | packet.ECE | packet.CWR, Window: 29200, Reserved: 1}, nil))
	ptb6 := filtertest.ICMPError("2001:db8::1", "fd00:1::5", packet.ICMPv6PacketTooBig, 0, 1280, tcpSyn6)
	frag6 := filtertest.Build(filtertest.IP{Src: mustAddr("fd00:1::5"), Dst: mustAddr("2001:db8::53"), Proto: packet.UDP, MF: true, ID: 0x1234},
		filtertest.Datagram(5000, 53, make([]byte, 10)))
	echoReply := filtertest.ICMP("192.0.2.1", "10.1.0.5", packet.ICMPEchoReply, 0, 7, 9)
	const v6a, v6b = "fd00:0001:0000:0000:0000:0000:0000:0005", "2001:0db8:0000:0000:0000:0000:0000:0053"
	cases := []struct {
		name    string
		prefix  string
		in, out string
		pkt     *Packet
		ct      bool
		want    string
	}{
		{"tcp syn with tos, df, ecn flags", "NEW: ", "lan0", "wan0", pk(syn, conntrack.New), true,
			"NEW: IN=lan0 OUT=wan0 MAC= SRC=10.1.0.5 DST=192.0.2.10 LEN=40 TOS=0x18 PREC=0xA0 TTL=63 ID=4321 DF PROTO=TCP SPT=40000 DPT=22 WINDOW=29200 RES=0x00 AE CWR ECE SYN URGP=0 CT=NEW"},
		{"invalid with reason", "DROP INVALID: ", "lan0", "wan0",
			with(pk(tcpAck4, conntrack.Invalid), func(p *Packet) { p.Reason = conntrack.ReasonTCPSeqAboveWindow }), true,
			`DROP INVALID: IN=lan0 OUT=wan0 MAC= SRC=10.1.0.5 DST=192.0.2.10 LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=0 PROTO=TCP SPT=40000 DPT=22 WINDOW=65535 RES=0x00 ACK URGP=0 CT=INVALID REASON="tcp: seq above window"`},
		{"udp over ipv6", "", "lan0", "wan0", pk(udp6, conntrack.EstablishedReply), true,
			"IN=lan0 OUT=wan0 MAC= SRC=" + v6a + " DST=" + v6b + " LEN=58 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=UDP SPT=5000 DPT=53 LEN=18 CT=ESTABLISHED_REPLY"},
		{"icmp echo in prerouting (no ct)", "", "lan0", "", pk(echo4, conntrack.New), false,
			"IN=lan0 OUT= MAC= SRC=10.1.0.5 DST=192.0.2.1 LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=0 PROTO=ICMP TYPE=8 CODE=0 ID=7 SEQ=1"},
		{"icmp echo reply", "", "wan0", "lan0", pk(echoReply, conntrack.EstablishedReply), true,
			"IN=wan0 OUT=lan0 MAC= SRC=192.0.2.1 DST=10.1.0.5 LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=0 PROTO=ICMP TYPE=0 CODE=0 ID=7 SEQ=9 CT=ESTABLISHED_REPLY"},
		{"icmp error quotes the packet", "", "wan0", "lan0", pk(unreach4, conntrack.RelatedReply), true,
			"IN=wan0 OUT=lan0 MAC= SRC=192.0.2.10 DST=10.1.0.5 LEN=56 TOS=0x00 PREC=0x00 TTL=64 ID=0 PROTO=ICMP TYPE=3 CODE=3 [SRC=10.1.0.5 DST=192.0.2.53 LEN=48 TOS=0x00 PREC=0x00 TTL=64 ID=0 PROTO=UDP SPT=5353 DPT=53 LEN=28 ] CT=RELATED_REPLY"},
		{"icmpv6 packet too big quotes an incomplete tcp header", "", "wan0", "lan0", pk(ptb6, conntrack.RelatedReply), true,
			"IN=wan0 OUT=lan0 MAC= SRC=2001:0db8:0000:0000:0000:0000:0000:0001 DST=" + v6a + " LEN=96 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 TYPE=2 CODE=0 " +
				"[SRC=" + v6a + " DST=2001:0db8:0000:0000:0000:0000:0000:0010 LEN=60 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=TCP INCOMPLETE [8 bytes] ] MTU=1280 CT=RELATED_REPLY"},
		{"non-first ipv4 fragment", "", "lan0", "wan0",
			with(pk(frag4, conntrack.Invalid), func(p *Packet) { p.Reason = conntrack.ReasonFragment }), true,
			`IN=lan0 OUT=wan0 MAC= SRC=10.1.0.5 DST=192.0.2.10 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=0 FRAG:8 PROTO=TCP CT=INVALID REASON="ip: unreassembled fragment"`},
		{"first ipv6 fragment", "", "lan0", "wan0", pk(frag6, conntrack.Invalid), true,
			"IN=lan0 OUT=wan0 MAC= SRC=" + v6a + " DST=" + v6b + " LEN=66 TC=0 HOPLIMIT=64 FLOWLBL=0 FRAG:0 INCOMPLETE ID:00001234 PROTO=UDP SPT=5000 DPT=53 LEN=18 CT=INVALID"},
		{"other protocol, router's own packet", "", "", "wan0", pk(gre4, conntrack.New), true,
			"IN= OUT=wan0 SRC=10.1.0.5 DST=192.0.2.10 LEN=36 TOS=0x00 PREC=0x00 TTL=64 ID=0 PROTO=47 CT=NEW"},
		{"truncated buffer", "", "", "", &Packet{P: filtertest.Decode([]byte{0x45, 0})}, true,
			"IN= OUT= TRUNCATED CT=ESTABLISHED"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := string(AppendLogLine([]byte("x"), tc.prefix, tc.in, tc.out, tc.pkt, tc.ct))
			if got != "x"+tc.want {
				t.Fatalf("\n got %q\nwant %q", got, "x"+tc.want)
			}
		})
	}
}

func TestAppendLogLineNoAllocs(t *testing.T) {
	buf := make([]byte, 0, 1024)
	p := pk(unreach4, conntrack.RelatedReply)
	if n := testing.AllocsPerRun(100, func() { buf = AppendLogLine(buf[:0], "X: ", "wan0", "lan0", p, true) }); n != 0 {
		t.Fatalf("AppendLogLine allocates %v times", n)
	}
}

// FuzzAppendLogLine feeds arbitrary bytes to the formatter: it must not
// panic, whatever the packet says about its lengths.
func FuzzAppendLogLine(f *testing.F) {
	for _, b := range [][]byte{tcpSyn4, udp6, unreach4, frag4, echo6, filtertest.ICMPError("2001:db8::1", "fd00:1::5", 2, 0, 1280, tcpSyn6)} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p packet.Parsed
		p.Decode(b)
		_ = AppendLogLine(nil, "p ", "a", "b", &Packet{P: &p, Ct: conntrack.Invalid, Reason: conntrack.Reason(len(b))}, true)
		// Also the raw dumpers on the undecoded bytes (Decode may have
		// trimmed or rejected the buffer).
		_ = appendIPv4(nil, b, 0, true)
		_ = appendIPv6(nil, b, 0, true)
	})
}

// recorder is a slog handler that keeps the records it gets.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.recs {
		out = append(out, rec.Level.String()+" "+rec.Message)
	}
	return out
}

func TestLogRuleThroughEval(t *testing.T) {
	rec := &recorder{}
	spec := fwd(
		RuleSpec{CtState: l("invalid"), Action: "drop", LogPrefix: "DROP INVALID: ", Comment: "invalid"},
		RuleSpec{Proto: l("udp"), Action: "log", LogLevel: "info"},
		RuleSpec{Proto: l("udp"), Action: "accept"},
	)
	spec.Logger = slog.New(rec)
	rs := mustCompile(t, spec)
	v := rs.Eval(Forward, with(pk(tcpAck4, conntrack.Invalid), func(p *Packet) { p.Reason = conntrack.ReasonTCPNoSYN }), 0)
	if v.Action != Drop || !v.Log {
		t.Fatalf("verdict %+v, want a logged drop", v)
	}
	v = rs.Eval(Forward, pk(udp4, conntrack.New), 0)
	if v.Action != Accept || v.Rule != 2 || v.Log {
		t.Fatalf("verdict %+v, want accept by rule 2 (not logging itself)", v)
	}
	rs.Eval(Forward, pk(tcpSyn4, conntrack.New), 0) // no log rule matches
	got := rec.messages()
	want := []string{
		`WARN DROP INVALID: IN=lan0 OUT=wan0 MAC= SRC=10.1.0.5 DST=192.0.2.10 LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=0 PROTO=TCP SPT=40000 DPT=22 WINDOW=65535 RES=0x00 ACK URGP=0 CT=INVALID REASON="tcp: new connection without syn"`,
		`INFO IN=lan0 OUT=wan0 MAC= SRC=10.1.0.5 DST=192.0.2.53 LEN=48 TOS=0x00 PREC=0x00 TTL=64 ID=0 PROTO=UDP SPT=5353 DPT=53 LEN=28 CT=NEW`,
	}
	if len(got) != len(want) {
		t.Fatalf("logged %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("line %d:\n got %q\nwant %q", i, got[i], want[i])
		}
	}
	var attrs []string
	rec.recs[0].Attrs(func(a slog.Attr) bool { attrs = append(attrs, a.String()); return true })
	if len(attrs) != 3 || attrs[0] != "chain=forward" || attrs[1] != "rule=0" || attrs[2] != "action=drop" {
		t.Fatalf("attrs %q", attrs)
	}
}

func TestLogRateLimit(t *testing.T) {
	rec := &recorder{}
	now := time.Unix(5000, 0)
	spec := fwd(RuleSpec{Action: "drop", Log: true, LogPrefix: "D "})
	spec.Logger = slog.New(rec)
	spec.LogRate, spec.LogBurst = 1, 2
	spec.now = func() time.Time { return now }
	spec.Workers = 2
	rs := mustCompile(t, spec)
	for i := range 5 {
		if v := rs.Eval(Forward, pk(udp4, conntrack.New), i%2); v.Action != Drop {
			t.Fatalf("verdict %+v", v)
		}
	}
	if n := len(rec.messages()); n != 2 {
		t.Fatalf("%d lines within the burst, want 2", n)
	}
	if s := rs.LogSuppressed(); s != 3 {
		t.Fatalf("suppressed %d, want 3", s)
	}
	now = now.Add(time.Second)
	rs.Eval(Forward, pk(udp4, conntrack.New), 7) // out-of-range worker
	got := rec.messages()
	if len(got) != 4 || got[2] != "WARN filter: 3 log messages suppressed" || got[3][:7] != "WARN D " {
		t.Fatalf("after refill: %q", got)
	}
	// Nothing new suppressed: no second summary.
	rs.FlushLogSummary()
	now = now.Add(time.Hour)
	rs.Eval(Forward, pk(udp4, conntrack.New), 0)
	rs.Eval(Forward, pk(udp4, conntrack.New), 0)
	rs.Eval(Forward, pk(udp4, conntrack.New), 0) // suppressed
	rs.FlushLogSummary()
	got = rec.messages()
	if len(got) != 7 || got[6] != "WARN filter: 1 log messages suppressed" {
		t.Fatalf("flush: %q", got)
	}
}

func TestSuppressedLogDoesNotAllocate(t *testing.T) {
	spec := fwd(RuleSpec{Action: "drop", Log: true})
	spec.Logger = slog.New(&recorder{})
	spec.LogRate, spec.LogBurst = 1e-9, 1
	rs := mustCompile(t, spec)
	p := pk(udp4, conntrack.New)
	rs.Eval(Forward, p, 0) // uses the only token
	if n := testing.AllocsPerRun(200, func() { rs.Eval(Forward, p, 0) }); n != 0 {
		t.Fatalf("a rate-limited log rule allocates %v times per packet", n)
	}
}
