package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter"
)

// baseDevices is prepended to most test documents (7 lines).
const baseDevices = `[[device]]
name = "lan0"
addresses = ["10.1.0.1/24", "fd00:1::1/64"]

[[device]]
name = "wan0"
addresses = ["198.51.100.2/24"]
`

const baseLines = 7

func TestBadConfigs(t *testing.T) {
	cases := []struct {
		name    string
		doc     string
		noBase  bool
		line    int // within doc (1 = its first line)
		col     int
		key     string // "" for syntax errors
		msgPart string
	}{
		{"syntax error", "[router\nworkers = 1\n", false, 1, 8, "", "syntax error: "},
		{"duplicate key", "[router]\nworkers = 1\nworkers = 2\n", false, 3, 1, "", "syntax error: "},
		{"unknown section", "[routr]\nworkers = 1\n", false, 1, 1, "routr", `unknown key "routr" (did you mean "router"?)`},
		{"unknown key", "[router]\nwrokers = 1\n", false, 2, 1, "router.wrokers", `unknown key "wrokers" (did you mean "workers"?)`},
		{"unknown key in the second rule", "[chains.forward]\n[[chains.forward.rules]]\naction = \"accept\"\n[[chains.forward.rules]]\naction = \"drop\"\ndprot = 22\n",
			false, 6, 1, "chains.forward.rules[1].dprot", `unknown key "dprot" (did you mean "dport"?)`},
		{"unknown key in an inline rule", "[chains.input]\nrules = [ { action = \"accept\" }, { action = \"drop\", prot = \"tcp\" } ]\n",
			false, 2, 53, "chains.input.rules[1].prot", `unknown key "prot" (did you mean "proto"?)`},
		{"unknown chain", "[chains.fowrard]\npolicy = \"drop\"\n", false, 1, 1, "chains.fowrard", `unknown key "fowrard" (did you mean "forward"?)`},
		{"wrong type", "[router]\nworkers = \"four\"\n", false, 2, 1, "router.workers", `expected an integer, got a string ("four")`},
		{"wrong type in a list element", "[[route]]\nto = \"0.0.0.0/0\"\ndevice = \"wan0\"\n[helpers.ftp]\nports = [21, \"ftp\"]\n",
			false, 5, 14, "helpers.ftp.ports[1]", `expected an integer, got a string ("ftp")`},
		{"wrong type for a match", "[[chains.forward.rules]]\nct_state = true\naction = \"accept\"\n",
			false, 2, 1, "chains.forward.rules[0].ct_state", "expected a string or an integer, got a boolean (true)"},
		{"table instead of an array of tables", "[chains.forward.rules]\naction = \"drop\"\n", false, 1, 1, "chains.forward.rules", "expected an array, got a table (write [[chains.forward.rules]] for each element)"},
		{"wrong type: table for a list", "[sets]\nx = { a = 1 }\n", false, 2, 1, "sets.x", "expected a string or an integer, got a table"},
		{"bad prefix in a rule list", "[[chains.forward.rules]]\nsaddr = [\"10.0.0.0/8\", \"10.0.0.0/40\"]\naction = \"drop\"\n",
			false, 2, 24, "chains.forward.rules[0].saddr[1]", `invalid prefix "10.0.0.0/40"`},
		{"prefix with host bits", "[[chains.forward.rules]]\ndaddr = \"192.168.1.1/16\"\naction = \"drop\"\n",
			false, 2, 1, "chains.forward.rules[0].daddr", "has host bits set (did you mean 192.168.0.0/16?)"},
		{"bad prefix in a set", "[sets]\nlan = [\n  \"10.0.0.0/8\",\n  \"fd00::/129\",\n]\n",
			false, 4, 3, "sets.lan[1]", `invalid prefix "fd00::/129"`},
		{"bad device address", "[[device]]\nname = \"dmz0\"\naddresses = [\"10.3.0.1\"]\n",
			false, 3, 14, "device[2].addresses[0]", "address 10.3.0.1 needs its prefix length (e.g. 10.3.0.1/24)"},
		{"unknown state", "[[chains.forward.rules]]\nct_state = [\"established\", \"relatd\"]\naction = \"accept\"\n",
			false, 2, 28, "chains.forward.rules[0].ct_state[1]", `unknown ct state "relatd"`},
		{"unknown state in a comma list", "[[chains.forward.rules]]\nct_state = \"established,relatd\"\naction = \"accept\"\n",
			false, 2, 1, "chains.forward.rules[0].ct_state", `unknown ct state "relatd"`},
		{"unknown reason", "[[chains.forward.rules]]\nct_reason = \"tcp: bad checksun\"\naction = \"drop\"\n",
			false, 2, 1, "chains.forward.rules[0].ct_reason", `unknown INVALID reason "tcp: bad checksun" (did you mean "tcp: bad checksum"?)`},
		{"port out of range in a list", "[[chains.forward.rules]]\nproto = \"tcp\"\ndport = [22, 70000]\naction = \"accept\"\n",
			false, 3, 14, "chains.forward.rules[0].dport[1]", "port 70000 out of range 0..65535"},
		{"port out of range", "[[chains.forward.rules]]\nsport = 70000\naction = \"accept\"\n",
			false, 2, 1, "chains.forward.rules[0].sport", "port 70000 out of range 0..65535"},
		{"port out of range in a set", "[sets]\nweb = [80, 443, \"8000-80000\"]\n", false, 2, 17, "sets.web[2]", "port 80000 out of range 0..65535"},
		{"helper port out of range", "[helpers.ftp]\nports = [0]\n", false, 2, 10, "helpers.ftp.ports[0]", "port 0 out of range 1..65535"},
		{"notrack outside prerouting", "[chains.forward]\npolicy = \"drop\"\n\n[[chains.forward.rules]]\nproto = \"udp\"\naction = \"notrack\"\n",
			false, 6, 1, "chains.forward.rules[0].action", "only valid in the prerouting chain"},
		{"ct match in prerouting", "[[chains.prerouting.rules]]\nct_state = \"new\"\naction = \"drop\"\n",
			false, 2, 1, "chains.prerouting.rules[0].ct_state", "prerouting runs before it"},
		{"log false with a prefix", "[[chains.forward.rules]]\naction = \"drop\"\nlog = false\nlog_prefix = \"X \"\n",
			false, 4, 1, "chains.forward.rules[0].log_prefix", "log_prefix is set but log = false"},
		{"tcp-reset without proto tcp", "[[chains.forward.rules]]\naction = \"reject\"\nreject_with = \"tcp-reset\"\n",
			false, 3, 1, "chains.forward.rules[0].reject_with", `needs proto = "tcp"`},
		{"dport with icmp", "[[chains.forward.rules]]\nproto = [\"tcp\", \"icmp\"]\ndport = 22\naction = \"accept\"\n",
			false, 2, 17, "chains.forward.rules[0].proto[1]", "proto icmp conflicts with dport"},
		{"unknown helper", "[[chains.prerouting.rules]]\naction = \"helper\"\nhelper = \"tftp\"\n",
			false, 3, 1, "chains.prerouting.rules[0].helper", `unknown helper "tftp" (known: ftp)`},
		{"unknown interface", "[[chains.forward.rules]]\niif = [\"lan0\", \"wlan0\"]\naction = \"accept\"\n",
			false, 2, 16, "chains.forward.rules[0].iif[1]", `unknown interface "wlan0" (did you mean "lan0"?)`},
		{"missing action", "[chains.input]\npolicy = \"drop\"\n[[chains.input.rules]]\nproto = \"tcp\"\n",
			false, 3, 1, "chains.input.rules[0].action", "missing action"},
		{"bad policy", "[chains.input]\npolicy = \"reject\"\n", false, 2, 1, "chains.input.policy", `unknown policy "reject"`},
		{"empty list", "[[chains.forward.rules]]\nsaddr = []\naction = \"drop\"\n", false, 2, 1, "chains.forward.rules[0].saddr", "empty list"},
		{"duplicate device names", "[[device]]\nname = \"lan0\"\n", false, 2, 1, "device[2].name", `device name "lan0" is already used by device[0] (line 1)`},
		{"overlapping device networks", "[[device]]\nname = \"dmz0\"\naddresses = [\"10.1.0.200/25\"]\n",
			false, 3, 14, "device[2].addresses[0]", `network 10.1.0.128/25 overlaps 10.1.0.0/24 of device "lan0"`},
		{"device name too long", "[[device]]\nname = \"a-very-long-device-name\"\n", false, 2, 1, "device[2].name", "longer than 15 bytes"},
		{"device name template", "[[device]]\nname = \"tun%d\"\n", false, 2, 1, "device[2].name", `invalid device name "tun%d"`},
		{"fd of standard input", "[[device]]\nname = \"x0\"\nfd = 0\n", false, 3, 1, "device[2].fd", "fd 0 is not an inherited descriptor"},
		{"fd with queues", "[[device]]\nname = \"x0\"\nfd = 3\nqueues = 4\n", false, 4, 1, "device[2].queues", "conflicts with fd"},
		{"relative netns path", "[[device]]\nname = \"x0\"\nnetns = \"run/netns/x\"\n", false, 3, 1, "device[2].netns", "must be an absolute path"},
		{"queue depth", "[router]\nqueue_depth = -1\n", false, 2, 1, "router.queue_depth", "out of range"},
		{"defrag negative", "[defrag]\nmax_bytes = -5\n", false, 2, 1, "defrag.max_bytes", "must not be negative"},
		{"defrag timeout", "[defrag]\ntimeout = \"soon\"\n", false, 2, 1, "defrag.timeout", `invalid duration "soon"`},
		{"ftp max expected", "[helpers.ftp]\nmax_expected = 100\n", false, 2, 1, "helpers.ftp.max_expected", "out of range 0..64"},
		{"mtu below the IPv6 minimum", "[[device]]\nname = \"v6only\"\nmtu = 1000\naddresses = [\"2001:db8:5::1/64\"]\n",
			false, 3, 1, "device[2].mtu", "below 1280"},
		{"route to an unknown device", "[[route]]\nto = \"0.0.0.0/0\"\ndevice = \"wan1\"\n", false, 3, 1, "route[0].device", `unknown device "wan1" (did you mean "wan0"?)`},
		{"route with host bits", "[[route]]\nto = \"10.9.9.9/8\"\ndevice = \"wan0\"\n", false, 2, 1, "route[0].to", "did you mean 10.0.0.0/8?"},
		{"duplicate route", "[[route]]\nto = \"::/0\"\ndevice = \"wan0\"\n[[route]]\nto = \"::/0\"\ndevice = \"lan0\"\n",
			false, 5, 1, "route[1].to", "a route to ::/0 is already defined at route[0] (line 8)"},
		{"route conflicts with a connected network", "[[route]]\nto = \"10.1.0.0/24\"\ndevice = \"wan0\"\n",
			false, 2, 1, "route[0].to", `conflicts with the connected network of device "lan0"`},
		{"workers below zero", "[router]\nworkers = -2\n", false, 2, 1, "router.workers", "workers -2 out of range 0..1024"},
		{"log level", "[router]\nlog_level = \"loud\"\n", false, 2, 1, "router.log_level", `unknown log level "loud"`},
		{"bad duration", "[conntrack.timeouts]\nudp = \"30 seconds\"\n", false, 2, 1, "conntrack.timeouts.udp", `invalid duration "30 seconds"`},
		{"zero duration", "[conntrack.timeouts]\nicmp = 0\n", false, 2, 1, "conntrack.timeouts.icmp", "must be positive"},
		{"udp stream shorter than udp", "[conntrack.timeouts]\nudp = 60\nudp_stream = 30\n", false, 3, 1, "conntrack.timeouts.udp_stream", "shorter than udp"},
		{"max retrans", "[conntrack]\ntcp_max_retrans = 300\n", false, 2, 1, "conntrack.tcp_max_retrans", "300 out of range 0..255"},
		{"helper without expectations", "[conntrack]\nexpect_max = 0\n[helpers.ftp]\nports = [21]\n", false, 4, 1, "helpers.ftp.ports", "conntrack.expect_max is 0"},
		{"unknown helper section", "[helpers.tftp]\nports = [69]\n", false, 1, 1, "helpers.tftp", `unknown key "tftp"`},
		{"no devices", "[router]\nworkers = 1\n", true, 1, 1, "device", "no [[device]] is defined"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc, off := baseDevices+tc.doc, baseLines
			if tc.noBase {
				doc, off = tc.doc, 0
			}
			_, err := Parse("bad.toml", []byte(doc))
			var el ErrorList
			if !errors.As(err, &el) || len(el) == 0 {
				t.Fatalf("Parse: %v, want an ErrorList", err)
			}
			want := fmt.Sprintf("bad.toml:%d:%d: ", tc.line+off, tc.col)
			if tc.key != "" {
				want += fmt.Sprintf("key %q: ", tc.key)
			}
			got := el[0].Error()
			if !strings.HasPrefix(got, want) || !strings.Contains(got, tc.msgPart) {
				t.Fatalf("first error\n got %s\nwant %s...%s...\n(all: %v)", got, want, tc.msgPart, err)
			}
		})
	}
}

func TestEveryErrorIsReported(t *testing.T) {
	doc := baseDevices + `
[router]
workers = -1
log_format = "xml"

[[chains.forward.rules]]
dport = [22, 70000]
action = "accept"

[[chains.forward.rules]]
ct_state = "bogus"
action = "allow"
`
	_, err := Parse("x.toml", []byte(doc))
	var el ErrorList
	if !errors.As(err, &el) {
		t.Fatalf("err = %v", err)
	}
	var got []string
	for _, e := range el {
		got = append(got, fmt.Sprintf("%d:%d %s", e.Line, e.Col, e.Key))
	}
	want := []string{
		"10:1 router.workers",
		"11:1 router.log_format",
		"14:14 chains.forward.rules[0].dport[1]",
		"18:1 chains.forward.rules[1].ct_state",
		"19:1 chains.forward.rules[1].action",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := strings.Count(err.Error(), "\n"); n != len(want)-1 {
		t.Fatalf("ErrorList.Error has %d lines: %q", n+1, err.Error())
	}
}

func TestWarningsNamePositions(t *testing.T) {
	doc := baseDevices + `
[[chains.forward.rules]]
ct_state = ["established", "related"]
action = "accept"

[[chains.forward.rules]]
ct_state = "established"
proto = "tcp"
action = "drop"

[helpers.ftp]
ports = [21]

[[chains.prerouting.rules]]
action = "drop"

[[chains.prerouting.rules]]
proto = "udp"
action = "accept"
`
	cfg, err := Parse("w.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range cfg.Warnings {
		got = append(got, w.String())
	}
	want := []string{
		`w.toml:13:1: warning: key "chains.forward.rules[1]": rule can never match: an earlier accept rule takes every packet it could match (chains.forward.rules[0], line 9)`,
		`w.toml:24:1: warning: key "chains.prerouting.rules[1]": rule can never match: it comes after an unconditional drop rule (chains.prerouting.rules[0], line 21)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestConversion(t *testing.T) {
	doc := baseDevices + `
[router]
workers = 3
pin_cpus = true
log_level = "debug"
log_format = "json"
control_socket = ""

[[device]]
name = "dmz0"
mtu = 9000
queues = 2
offload = false
netns = "dmz"
addresses = ["10.3.0.1/24"]

[[device]]
name = "ext0"
fd = 5

[[route]]
to = "10.2.0.0/16"
device = "dmz0"

[conntrack]
max = 1000
checksum = false
tcp_loose = false
tcp_be_liberal = true
tcp_ignore_invalid_rst = true
tcp_max_retrans = 5
expect_max = 10
expect_timeout = 60

[conntrack.timeouts]
tcp_established = "1h"
tcp_syn_sent2 = 77
udp = "45s"
generic = "10m"

[helpers.ftp]
ports = [21, 2121]
loose = true
max_expected = 2

[defrag]
max_datagrams = 64
timeout6 = "20s"

[filter]
log_rate = 2.5
log_burst = 4
reject_rate = -1

[sets]
lan = ["10.1.0.0/24"]
web = [80, "443"]

[[chains.forward.rules]]
saddr = "@lan"
dport = "@web"
action = "accept"
`
	cfg, err := Parse("c.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Router; r.Workers != 3 || !r.PinCPUs || r.LogLevel.String() != "DEBUG" || r.LogFormat != "json" || r.ControlSocket != "" || r.NumWorkers() != 3 {
		t.Errorf("router %+v", r)
	}
	if len(cfg.Devices) != 4 {
		t.Fatalf("devices %+v", cfg.Devices)
	}
	if d := cfg.Devices[0]; d.Name != "lan0" || d.Kind != "tun" || d.MTU != DefaultMTU || !d.Offload || d.FD != 0 || d.Queues != 0 || len(d.Addresses) != 2 || d.Addresses[1].String() != "fd00:1::1/64" {
		t.Errorf("device 0 defaults %+v", d)
	}
	if d := cfg.Devices[2]; d.MTU != 9000 || d.Queues != 2 || d.Offload || d.FD != 0 || d.Netns != "dmz" {
		t.Errorf("device 2 %+v", d)
	}
	if d := cfg.Devices[3]; d.FD != 5 || d.Name != "ext0" {
		t.Errorf("device 3 %+v", d)
	}
	if cfg.Defrag != (Defrag{MaxDatagrams: 64, Timeout6: 20 * time.Second}) {
		t.Errorf("defrag %+v", cfg.Defrag)
	}
	if len(cfg.Routes) != 1 || cfg.Routes[0].To.String() != "10.2.0.0/16" || cfg.Routes[0].Device != "dmz0" {
		t.Errorf("routes %+v", cfg.Routes)
	}
	ct := cfg.Conntrack
	def := conntrack.DefaultConfig()
	if ct.Max != 1000 || ct.Checksum || ct.TCP.Loose || !ct.TCP.BeLiberal || !ct.TCP.IgnoreInvalidRST || ct.TCP.MaxRetrans != 5 || ct.ExpectMax != 10 {
		t.Errorf("conntrack %+v", ct)
	}
	if ct.TCP.Timeouts[conntrack.TCPEstablished] != time.Hour || ct.TCP.Timeouts[conntrack.TCPSynSent2] != 77*time.Second ||
		ct.UDPTimeout != 45*time.Second || ct.GenericTimeout != 10*time.Minute {
		t.Errorf("timeouts %+v", ct)
	}
	if ct.TCP.Timeouts[conntrack.TCPSynSent] != def.TCP.Timeouts[conntrack.TCPSynSent] || ct.ICMPTimeout != def.ICMPTimeout {
		t.Errorf("unset timeouts must keep the defaults: %+v", ct)
	}
	if cfg.ExpectTimeout != time.Minute {
		t.Errorf("expect timeout %v", cfg.ExpectTimeout)
	}
	if len(cfg.FTP.Ports) != 2 || cfg.FTP.Ports[1] != 2121 || !cfg.FTP.Loose || cfg.FTP.MaxExpected != 2 {
		t.Errorf("ftp %+v", cfg.FTP)
	}
	s := cfg.Filter
	if s.LogRate != 2.5 || s.LogBurst != 4 || s.RejectRate != -1 || s.Workers != 3 || strings.Join(s.Interfaces, ",") != "lan0,wan0,dmz0,ext0" {
		t.Errorf("filter spec %+v", s)
	}
	if len(s.Sets) != 2 || s.Sets[0].Name != "lan" || strings.Join(s.Sets[1].Elems, ",") != "80,443" {
		t.Errorf("sets %+v", s.Sets)
	}
	// The FTP ports became the first prerouting rule.
	if len(s.Chains) != 2 || s.Chains[0].Chain != filter.Prerouting || s.Chains[0].Rules[0].Helper != "ftp" ||
		strings.Join(s.Chains[0].Rules[0].DPort, ",") != "21,2121" {
		t.Errorf("chains %+v", s.Chains)
	}
	if cfg.Ruleset == nil || cfg.Ruleset.NumRules(filter.Forward) != 1 || cfg.Ruleset.NumRules(filter.Prerouting) != 1 {
		t.Fatalf("ruleset not compiled as expected")
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse("d.toml", []byte(baseDevices))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Router.ControlSocket != DefaultControlSocket || cfg.Router.LogFormat != "text" || cfg.Router.Workers != 0 {
		t.Errorf("router defaults %+v", cfg.Router)
	}
	if cfg.Conntrack != conntrack.DefaultConfig() || cfg.ExpectTimeout != DefaultExpectTimeout {
		t.Errorf("conntrack defaults %+v", cfg.Conntrack)
	}
	if len(cfg.FTP.Ports) != 0 {
		t.Errorf("no helper ports unless configured: %+v", cfg.FTP)
	}
	// No chains: every chain accepts (as with no nft ruleset).
	for c := filter.Chain(0); c < filter.NumChains; c++ {
		if cfg.Ruleset.Defined(c) || cfg.Ruleset.Policy(c) != filter.Accept {
			t.Errorf("chain %v: defined %v policy %v", c, cfg.Ruleset.Defined(c), cfg.Ruleset.Policy(c))
		}
	}
}

func TestCheckAndLoadFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(good, []byte(baseDevices+"[[chains.forward.rules]]\naction = \"accept\"\n[[chains.forward.rules]]\naction = \"drop\"\n"), 0o644)
	os.WriteFile(bad, []byte(baseDevices+"[router]\nworkers = -1\nlog_level = 3\n"), 0o644)

	var out bytes.Buffer
	if !Check(&out, good) {
		t.Fatalf("good file failed: %s", out.String())
	}
	want := good + ":10:1: warning: key \"chains.forward.rules[1]\": rule can never match: it comes after an unconditional accept rule (chains.forward.rules[0], line 8)\n" +
		good + ": OK: 2 device(s), 0 route(s), 2 rule(s), 1 warning(s)\n"
	if out.String() != want {
		t.Fatalf("Check output\n%s\nwant\n%s", out.String(), want)
	}
	out.Reset()
	if Check(&out, bad) {
		t.Fatal("bad file passed")
	}
	want = bad + ":9:1: key \"router.workers\": workers -1 out of range 0..1024 (0 = one per CPU)\n" +
		bad + ":10:1: key \"router.log_level\": expected a string, got an integer (3)\n" +
		bad + ": 2 error(s)\n"
	if out.String() != want {
		t.Fatalf("Check output\n%s\nwant\n%s", out.String(), want)
	}
	out.Reset()
	if Check(&out, filepath.Join(dir, "missing.toml")) || !strings.Contains(out.String(), "no such file") {
		t.Fatalf("missing file: %q", out.String())
	}
	if _, err := Load(bad); err == nil {
		t.Fatal("Load(bad) succeeded")
	}
	if cfg, err := Load(good); err != nil || cfg.File != good {
		t.Fatalf("Load(good): %v", err)
	}
}

func TestRestartRequired(t *testing.T) {
	a, err := Parse("a", []byte(baseDevices))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("b", []byte(baseDevices+"[router]\nworkers = 2\n[[chains.forward.rules]]\naction = \"drop\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := b.RestartRequired(a); strings.Join(got, ",") != "router.workers" {
		t.Fatalf("RestartRequired = %v", got)
	}
	c, _ := Parse("c", []byte(strings.Replace(baseDevices, "198.51.100.2/24", "198.51.100.3/24", 1)))
	if got := c.RestartRequired(a); strings.Join(got, ",") != "device" {
		t.Fatalf("RestartRequired = %v", got)
	}
	if got := a.RestartRequired(a); len(got) != 0 {
		t.Fatalf("RestartRequired(self) = %v", got)
	}
}
