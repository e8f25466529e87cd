package config

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// egressDoc is a rootless sidecar configuration: the client's TUN device
// (its namespace's default route goes to the router) and the egress.
const egressDoc = `[[device]]
name = "tun0"
netns = "/proc/1234/ns/net"
addresses = ["10.0.2.100/24"]
routes = ["0.0.0.0/0"]
mtu = 65520

[[device]]
name = "egress"
kind = "egress"
gateway = ["10.0.2.2", "fd00::2"]
dns = "10.0.2.3"
dns_upstream = ["127.0.0.53", "[::1]:5353"]
max_flows = 100
half_closed_timeout = "30s"

[[device.forward]]
proto = "tcp"
host = "127.0.0.1:8080"
inside = "10.0.2.100:80"

[[device.forward]]
proto = "UDP"
host = "[::]:5353"
inside = "10.0.2.100:53"

[[route]]
to = "0.0.0.0/0"
device = "egress"
`

func TestEgressDevice(t *testing.T) {
	cfg, err := Parse("egress.toml", []byte(egressDoc))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Devices) != 2 {
		t.Fatalf("%d devices", len(cfg.Devices))
	}
	tun, eg := cfg.Devices[0], cfg.Devices[1]
	if tun.Egress != nil || tun.Kind != "tun" {
		t.Errorf("tun0: kind %q, egress %v", tun.Kind, tun.Egress)
	}
	if eg.Kind != "egress" || eg.Egress == nil {
		t.Fatalf("egress: kind %q", eg.Kind)
	}
	if eg.MTU != 0 {
		t.Errorf("egress MTU %d, want 0 (resolved by the daemon)", eg.MTU)
	}
	want := &Egress{
		Gateways:     []netip.Addr{netip.MustParseAddr("10.0.2.2"), netip.MustParseAddr("fd00::2")},
		HostLoopback: true,
		DNS:          []netip.Addr{netip.MustParseAddr("10.0.2.3")},
		DNSUpstream:  []netip.AddrPort{netip.MustParseAddrPort("127.0.0.53:53"), netip.MustParseAddrPort("[::1]:5353")},
		Forwards: []Forward{
			{"tcp", netip.MustParseAddrPort("127.0.0.1:8080"), netip.MustParseAddrPort("10.0.2.100:80")},
			{"udp", netip.MustParseAddrPort("[::]:5353"), netip.MustParseAddrPort("10.0.2.100:53")},
		},
		MaxFlows:          100,
		Ping:              true,
		HalfClosedTimeout: 30 * time.Second,
	}
	if !reflect.DeepEqual(eg.Egress, want) {
		t.Errorf("egress config\n got %+v\nwant %+v", eg.Egress, want)
	}
	// The filter knows the egress device by name.
	if !strings.Contains(strings.Join(cfg.Filter.Interfaces, ","), "egress") {
		t.Errorf("filter interfaces %v", cfg.Filter.Interfaces)
	}
}

func TestEgressDeviceErrors(t *testing.T) {
	const head = "[[device]]\nname = \"eg\"\nkind = \"egress\"\n"
	cases := []struct {
		name string
		doc  string
		line int
		key  string
		msg  string
	}{
		{"no gateway", head, 1, "device[0]", "needs a gateway address"},
		{"bad gateway", head + "gateway = [\"10.0.2.2\", \"10.0.2\"]\n", 4, "device[0].gateway[1]", `invalid address "10.0.2"`},
		{"loopback gateway", head + "gateway = \"127.0.0.1\"\n", 4, "device[0].gateway", "not a unicast address"},
		{"dns equals gateway", head + "gateway = \"10.0.2.2\"\ndns = \"10.0.2.2\"\n", 5, "device[0].dns", "already given at device[0].gateway"},
		{"upstream without dns", head + "gateway = \"10.0.2.2\"\ndns_upstream = \"1.1.1.1\"\n", 5, "device[0].dns_upstream", "dns_upstream without dns"},
		{"bad upstream", head + "gateway = \"10.0.2.2\"\ndns = \"10.0.2.3\"\ndns_upstream = \"resolver\"\n", 6, "device[0].dns_upstream", `invalid resolver "resolver"`},
		{"tun key on egress", head + "gateway = \"10.0.2.2\"\naddresses = [\"10.0.2.2/24\"]\n", 5, "device[0].addresses", "option of TUN devices"},
		{"egress key on tun", "[[device]]\nname = \"t0\"\ngateway = \"10.0.2.2\"\n", 3, "device[0].gateway", "option of egress devices"},
		{"mtu too small", head + "gateway = \"10.0.2.2\"\nmtu = 1000\n", 5, "device[0].mtu", "below 1280"},
		{"max flows", head + "gateway = \"10.0.2.2\"\nmax_flows = -1\n", 5, "device[0].max_flows", "out of range"},
		{"forward proto", head + "gateway = \"10.0.2.2\"\n[[device.forward]]\nproto = \"sctp\"\nhost = \"127.0.0.1:1\"\ninside = \"10.0.2.100:1\"\n", 6, "device[0].forward[0].proto", `unknown proto "sctp"`},
		{"forward host without port", head + "gateway = \"10.0.2.2\"\n[[device.forward]]\nproto = \"tcp\"\nhost = \"127.0.0.1\"\ninside = \"10.0.2.100:1\"\n", 7, "device[0].forward[0].host", "invalid host"},
		{"forward family", head + "gateway = \"10.0.2.2\"\n[[device.forward]]\nproto = \"tcp\"\nhost = \"127.0.0.1:80\"\ninside = \"[fd00::100]:80\"\n", 8, "device[0].forward[0].inside", "no gateway address"},
		{"forward twice", head + "gateway = \"10.0.2.2\"\n[[device.forward]]\nproto = \"tcp\"\nhost = \"0.0.0.0:80\"\ninside = \"10.0.2.100:80\"\n[[device.forward]]\nproto = \"tcp\"\nhost = \"127.0.0.1:80\"\ninside = \"10.0.2.100:81\"\n", 11, "device[0].forward[1].host", "already forwarded"},
		{"launcher socket relative", "[[device]]\nname = \"t0\"\nlauncher_socket = \"tun.sock\"\n", 3, "device[0].launcher_socket", "absolute path"},
		{"launcher socket and fd", "[[device]]\nname = \"t0\"\nfd = 3\nlauncher_socket = \"/tmp/tun.sock\"\n", 4, "device[0].launcher_socket", "give one"},
		{"gateway is a host-side address", "[[device]]\nname = \"t0\"\naddresses = [\"10.0.2.2/24\"]\n" + head + "gateway = \"10.0.2.2\"\n", 4, "device[1]", "also a host-side address"},
		{"unknown kind", "[[device]]\nname = \"x\"\nkind = \"tap\"\n", 3, "device[0].kind", "want tun or egress"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("bad.toml", []byte(tc.doc))
			var el ErrorList
			if !errors.As(err, &el) || len(el) == 0 {
				t.Fatalf("Parse: %v, want errors", err)
			}
			for _, e := range el {
				if e.Key == tc.key && strings.Contains(e.Msg, tc.msg) {
					if e.Line != tc.line {
						t.Errorf("line %d, want %d: %v", e.Line, tc.line, e)
					}
					return
				}
			}
			t.Fatalf("no error at %s containing %q in:\n%v", tc.key, tc.msg, err)
		})
	}
}

func TestLauncherSocket(t *testing.T) {
	cfg, err := Parse("l.toml", []byte("[[device]]\nname = \"t0\"\nlauncher_socket = \"/run/user/1000/router-tun.sock\"\naddresses = [\"10.0.2.100/24\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Devices[0].LauncherSocket; got != "/run/user/1000/router-tun.sock" {
		t.Fatalf("LauncherSocket %q", got)
	}
}
