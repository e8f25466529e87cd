package config

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/defrag"
	"github.com/tunrouter/router/filter"
	"github.com/tunrouter/router/filter/filtertest"
	"github.com/tunrouter/router/packet"
)

const examplePath = "../config.example.toml"

// Interface indexes in the example: devices in file order.
const (
	lan0 = 0
	wan0 = 1
	none = -1
)

type exampleCase struct {
	name    string
	chain   filter.Chain
	pkt     []byte
	ct      conntrack.CtInfo
	reason  conntrack.Reason
	iif     int
	oif     int
	act     filter.Action
	reject  filter.RejectKind
	typ     uint8 // ICMP type/code of a reject
	code    uint8
	helper  string
	comment string // the comment of the rule that decides ("" = policy)
}

// TestExampleConfig loads config.example.toml (so that it cannot drift
// from the code) and checks that it does what its comments say, on real
// packets.
func TestExampleConfig(t *testing.T) {
	cfg, err := Load(examplePath)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if len(cfg.Warnings) != 0 {
		t.Fatalf("warnings: %v", cfg.Warnings)
	}
	if len(cfg.Devices) != 2 || cfg.Devices[lan0].Name != "lan0" || cfg.Devices[wan0].Name != "wan0" {
		t.Fatalf("devices %+v", cfg.Devices)
	}
	if len(cfg.FTP.Ports) != 1 || cfg.FTP.Ports[0] != 21 || cfg.FTP.Loose {
		t.Fatalf("ftp helper %+v", cfg.FTP)
	}
	if cfg.Conntrack != conntrack.DefaultConfig() {
		t.Fatalf("the example documents the Linux defaults; got %+v", cfg.Conntrack)
	}
	if d := defrag.DefaultConfig(); cfg.Defrag != (Defrag{d.MaxBytes, d.MaxDatagrams, d.Timeout, d.Timeout6}) {
		t.Fatalf("the example documents the defrag defaults %+v; got %+v", d, cfg.Defrag)
	}
	if cfg.FTP.MaxExpected != 1 || cfg.ExpectTimeout != DefaultExpectTimeout {
		t.Fatalf("ftp %+v, expect timeout %v", cfg.FTP, cfg.ExpectTimeout)
	}

	const (
		client  = "10.1.0.7"
		client6 = "fd00:1::7"
		server  = "203.0.113.5"
		server6 = "2001:db8:5::5"
	)
	tcp := func(src, dst string, f packet.TCPFlags) []byte { return filtertest.TCP(src, dst, f) }
	fragNeeded := filtertest.ICMPError("192.0.2.1", client, packet.ICMPDestUnreachable, packet.ICMPFragNeeded, 1400,
		tcp(client+":40000", server+":443", packet.ACK))
	cases := []exampleCase{
		// prerouting: anti-spoofing, then the FTP helper on port 21.
		{name: "LAN source from the Internet is spoofed", chain: filter.Prerouting, pkt: tcp(client+":1", server+":80", packet.SYN), iif: wan0, oif: none,
			act: filter.Drop, comment: "anti-spoofing"},
		{name: "IPv6 LAN source from the Internet is spoofed", chain: filter.Prerouting, pkt: tcp("["+client6+"]:1", "["+server6+"]:80", packet.SYN), iif: wan0, oif: none,
			act: filter.Drop, comment: "anti-spoofing"},
		{name: "bogon source from the Internet", chain: filter.Prerouting, pkt: filtertest.UDP("127.0.0.1:53", client+":53", 4), iif: wan0, oif: none,
			act: filter.Drop, comment: "anti-spoofing"},
		{name: "LAN source from the LAN passes", chain: filter.Prerouting, pkt: tcp(client+":1", server+":80", packet.SYN), iif: lan0, oif: none,
			act: filter.Accept},
		{name: "FTP control connection gets the helper", chain: filter.Prerouting, pkt: tcp(client+":40001", server+":21", packet.SYN), iif: lan0, oif: none,
			act: filter.Accept, helper: "ftp"},
		{name: "FTP over IPv6 gets the helper", chain: filter.Prerouting, pkt: tcp("["+client6+"]:40001", "["+server6+"]:21", packet.SYN), iif: lan0, oif: none,
			act: filter.Accept, helper: "ftp"},

		// forward: established/related, invalid, LAN out, nothing new in.
		{name: "reply from the Internet", chain: filter.Forward, pkt: tcp(server+":443", client+":40000", packet.SYN|packet.ACK), ct: conntrack.EstablishedReply,
			iif: wan0, oif: lan0, act: filter.Accept, comment: "replies, and RELATED"},
		{name: "ICMP error about a known connection is RELATED", chain: filter.Forward, pkt: fragNeeded, ct: conntrack.RelatedReply,
			iif: wan0, oif: lan0, act: filter.Accept, comment: "replies, and RELATED"},
		{name: "active FTP data connection from the server is RELATED", chain: filter.Forward, pkt: tcp(server+":20", client+":50000", packet.SYN), ct: conntrack.Related,
			iif: wan0, oif: lan0, act: filter.Accept, comment: "replies, and RELATED"},
		{name: "passive FTP data connection to the server is RELATED", chain: filter.Forward, pkt: tcp(client+":40002", server+":50000", packet.SYN), ct: conntrack.Related,
			iif: lan0, oif: wan0, act: filter.Accept, comment: "replies, and RELATED"},
		{name: "INVALID is dropped", chain: filter.Forward, pkt: tcp(server+":443", client+":40000", packet.ACK), ct: conntrack.Invalid, reason: conntrack.ReasonTCPSeqAboveWindow,
			iif: wan0, oif: lan0, act: filter.Drop, comment: "INVALID packets are dropped"},
		{name: "new TCP from the LAN out", chain: filter.Forward, pkt: tcp(client+":40003", server+":443", packet.SYN), ct: conntrack.New,
			iif: lan0, oif: wan0, act: filter.Accept, comment: "the LAN may open any connection"},
		{name: "new UDP over IPv6 from the LAN out", chain: filter.Forward, pkt: filtertest.UDP("["+client6+"]:5353", "["+server6+"]:53", 30), ct: conntrack.New,
			iif: lan0, oif: wan0, act: filter.Accept, comment: "the LAN may open any connection"},
		{name: "ping from the LAN out", chain: filter.Forward, pkt: filtertest.ICMP(client, server, packet.ICMPEchoRequest, 0, 1, 1), ct: conntrack.New,
			iif: lan0, oif: wan0, act: filter.Accept, comment: "the LAN may open any connection"},
		{name: "new TCP from the Internet gets a reset", chain: filter.Forward, pkt: tcp(server+":40000", client+":22", packet.SYN), ct: conntrack.New,
			iif: wan0, oif: lan0, act: filter.Reject, reject: filter.RejectTCPReset, comment: "nothing new comes in"},
		{name: "new UDP from the Internet gets port unreachable", chain: filter.Forward, pkt: filtertest.UDP(server+":5000", client+":53", 10), ct: conntrack.New,
			iif: wan0, oif: lan0, act: filter.Reject, reject: filter.RejectICMP, typ: 3, code: 3, comment: "nothing new comes in"},
		{name: "new UDP over IPv6 from the Internet gets port unreachable", chain: filter.Forward, pkt: filtertest.UDP("["+server6+"]:5000", "["+client6+"]:53", 10), ct: conntrack.New,
			iif: wan0, oif: lan0, act: filter.Reject, reject: filter.RejectICMP, typ: 1, code: 4, comment: "nothing new comes in"},
		{name: "untracked traffic meets the drop policy", chain: filter.Forward, pkt: filtertest.UDP(client+":1", server+":2", 1), ct: conntrack.Untracked,
			iif: lan0, oif: wan0, act: filter.Drop},
		{name: "LAN to LAN hairpin meets the drop policy", chain: filter.Forward, pkt: tcp(client+":1", "10.1.0.8:2", packet.SYN), ct: conntrack.New,
			iif: lan0, oif: lan0, act: filter.Drop},

		// input: the router itself.
		{name: "ping the router from the LAN", chain: filter.Input, pkt: filtertest.ICMP(client, "10.1.0.1", packet.ICMPEchoRequest, 0, 9, 1), ct: conntrack.New,
			iif: lan0, oif: none, act: filter.Accept, comment: "ping the router from the LAN"},
		{name: "ping6 the router from the LAN", chain: filter.Input, pkt: filtertest.ICMP(client6, "fd00:1::1", packet.ICMPv6EchoRequest, 0, 9, 1), ct: conntrack.New,
			iif: lan0, oif: none, act: filter.Accept, comment: "ping6 the router from the LAN"},
		{name: "ping the router from the Internet is dropped", chain: filter.Input, pkt: filtertest.ICMP(server, "198.51.100.2", packet.ICMPEchoRequest, 0, 9, 1), ct: conntrack.New,
			iif: wan0, oif: none, act: filter.Drop},
		{name: "SSH to the router from the LAN", chain: filter.Input, pkt: tcp(client+":40000", "10.1.0.1:22", packet.SYN), ct: conntrack.New,
			iif: lan0, oif: none, act: filter.Accept, comment: "SSH to the router from the LAN only"},
		{name: "a new SSH connection must start with a SYN only", chain: filter.Input, pkt: tcp(client+":40000", "10.1.0.1:22", packet.SYN|packet.FIN), ct: conntrack.New,
			iif: lan0, oif: none, act: filter.Reject, reject: filter.RejectICMP, typ: 3, code: 13, comment: "anything else from the LAN is refused"},
		{name: "SSH to the router from the Internet is dropped", chain: filter.Input, pkt: tcp(server+":40000", "198.51.100.2:22", packet.SYN), ct: conntrack.New,
			iif: wan0, oif: none, act: filter.Drop},
		{name: "other ports on the router are refused to the LAN", chain: filter.Input, pkt: tcp(client+":40000", "10.1.0.1:80", packet.SYN), ct: conntrack.New,
			iif: lan0, oif: none, act: filter.Reject, reject: filter.RejectICMP, typ: 3, code: 13, comment: "anything else from the LAN is refused"},
		{name: "IPv6: refused with admin-prohibited", chain: filter.Input, pkt: filtertest.UDP("["+client6+"]:1", "[fd00:1::1]:161", 4), ct: conntrack.New,
			iif: lan0, oif: none, act: filter.Reject, reject: filter.RejectICMP, typ: 1, code: 1, comment: "anything else from the LAN is refused"},
		{name: "replies to the router's own connections", chain: filter.Input, pkt: filtertest.UDP("192.0.2.53:53", "198.51.100.2:33000", 40), ct: conntrack.EstablishedReply,
			iif: wan0, oif: none, act: filter.Accept, comment: "replies to the router's own connections"},
		{name: "invalid to the router is dropped", chain: filter.Input, pkt: tcp(server+":1", "198.51.100.2:2", packet.ACK), ct: conntrack.Invalid,
			iif: wan0, oif: none, act: filter.Drop, comment: "INVALID packets are dropped"},

		// output: accept.
		{name: "the router's own packets", chain: filter.Output, pkt: filtertest.UDP("198.51.100.2:33000", "192.0.2.53:53", 40), ct: conntrack.New,
			iif: none, oif: wan0, act: filter.Accept},
	}

	// Compile again with a logger, as the daemon does, to see the logs.
	rec := &recorder{}
	spec := cfg.Filter
	spec.Logger = slog.New(rec)
	rs, _, err := filter.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	comments := ruleComments(cfg.Filter)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &filter.Packet{P: filtertest.Decode(tc.pkt), Ct: tc.ct, Reason: tc.reason, IIf: tc.iif, OIf: tc.oif}
			v := rs.Eval(tc.chain, p, 0)
			if v.Action != tc.act || v.Reject != tc.reject || v.ICMPType != tc.typ || v.ICMPCode != tc.code || v.Helper != tc.helper {
				t.Fatalf("verdict %+v, want %v (reject %v %d/%d, helper %q)", v, tc.act, tc.reject, tc.typ, tc.code, tc.helper)
			}
			got := ""
			if v.Rule >= 0 {
				got = comments[tc.chain][v.Rule]
			}
			if tc.comment == "" && v.Rule != -1 || tc.comment != "" && !strings.HasPrefix(got, tc.comment) {
				t.Fatalf("decided by rule %d (%q), want the rule commented %q (policy if empty)", v.Rule, got, tc.comment)
			}
		})
	}
	// "INVALID packets are dropped and logged with the reason", and the
	// spoofed packets are logged too.
	logs := strings.Join(rec.messages(), "\n")
	for _, want := range []string{
		`DROP INVALID: IN=wan0 OUT=lan0 MAC= SRC=203.0.113.5 DST=10.1.0.7 LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=0 PROTO=TCP SPT=443 DPT=40000 WINDOW=65535 RES=0x00 ACK URGP=0 CT=INVALID REASON="tcp: seq above window"`,
		`SPOOFED: IN=wan0 OUT= MAC= SRC=127.0.0.1 DST=10.1.0.7 LEN=32`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func ruleComments(s filter.Spec) [filter.NumChains][]string {
	var out [filter.NumChains][]string
	for _, c := range s.Chains {
		for _, r := range c.Rules {
			out[c.Chain] = append(out[c.Chain], r.Comment)
		}
	}
	return out
}

// TestExampleReloadKeepsOldRulesOnError shows the SIGHUP contract the
// daemon implements with Load: a broken file yields errors and no new
// ruleset, so the running one stays published.
func TestExampleReloadKeepsOldRulesOnError(t *testing.T) {
	good, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("router.toml", good)
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(good), `ct_state = "invalid"`, `ct_state = "invalidd"`, 1)
	next, err := Parse("router.toml", []byte(broken))
	var el ErrorList
	if !errors.As(err, &el) || len(el) != 1 || !strings.Contains(el[0].Error(), `key "chains.forward.rules[1].ct_state": unknown ct state "invalidd"`) {
		t.Fatalf("broken reload: %v", err)
	}
	if next != nil && next.Ruleset != nil {
		t.Fatal("a broken file must not produce a ruleset")
	}
	if cfg.Ruleset == nil {
		t.Fatal("the running ruleset is gone")
	}
}

type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }
func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}
