package daemon

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunrouter/router/config"
)

const testConfig = `
[router]
workers = 3
trace = true
trace_file = "/tmp/t.json"
control_socket = "/run/test/ctl.sock"

[[device]]
name = "lan0"
netns = "/run/netns/a"
addresses = ["10.1.0.2/24", "fd00:1::2/64"]
routes = ["0.0.0.0/0"]
router_addresses = ["10.1.0.1", "fd00:1::1", "10.1.0.3"]
offload = false

[[device]]
name = "wan0"
addresses = ["198.51.100.2/24"]
queues = 1

[[route]]
to = "0.0.0.0/0"
device = "wan0"

[[route]]
to = "10.1.0.0/24"
device = "lan0"

[helpers.ftp]
ports = [21, 2121]
loose = true

[chains.forward]
policy = "drop"
[[chains.forward.rules]]
ct_state = ["established", "related"]
action = "accept"
`

func TestFromConfig(t *testing.T) {
	c, err := config.Parse("test.toml", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	s, err := FromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Devices) != 2 {
		t.Fatalf("%d devices", len(s.Devices))
	}
	lan, wan := s.Devices[0], s.Devices[1]
	// 3 workers over 2 TUN devices: 2 queues each (one reader per worker).
	if lan.Netns != "/run/netns/a" || !lan.NoOffload || lan.Queues != 2 || !lan.Up {
		t.Fatalf("lan device %+v", lan.Config)
	}
	if wan.Queues != 1 || wan.NoOffload {
		t.Fatalf("wan device %+v", wan.Config)
	}
	if len(lan.Routes) != 1 || lan.Routes[0] != netip.MustParsePrefix("0.0.0.0/0") {
		t.Fatalf("namespace routes %v", lan.Routes)
	}
	if lan.Addr4 != netip.MustParseAddr("10.1.0.1") || lan.Addr6 != netip.MustParseAddr("fd00:1::1") {
		t.Fatalf("router addresses %v %v", lan.Addr4, lan.Addr6)
	}
	if len(s.LocalAddrs) != 3 {
		t.Fatalf("local addresses %v", s.LocalAddrs)
	}
	// Explicit routes first, then connected networks not already routed:
	// 10.1.0.0/24 is explicit (not duplicated), fd00:1::/64 and
	// 198.51.100.0/24 are implied.
	var got []string
	for _, r := range s.Routes {
		got = append(got, r.Prefix.String()+">"+r.Device)
	}
	want := "0.0.0.0/0>wan0 10.1.0.0/24>lan0 fd00:1::/64>lan0 198.51.100.0/24>wan0"
	if strings.Join(got, " ") != want {
		t.Fatalf("routes %q, want %q", strings.Join(got, " "), want)
	}
	if s.FTP == nil || !s.FTP.Loose || s.TraceFile != "/tmp/t.json" || s.ControlSocket != "/run/test/ctl.sock" || s.Workers != 3 {
		t.Fatalf("settings %+v", s)
	}
}

func TestLoadSettingsErrorsCarryPositions(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(p, []byte("[[device]]\nname = \"a\"\nmtu = \"big\"\n"), 0o644)
	_, _, err := LoadSettings(p)
	if err == nil || !strings.Contains(err.Error(), p+":3:1") {
		t.Fatalf("error %v, want one at %s:3:1", err, p)
	}
}

func TestWrongTypeReportedOnce(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(p, []byte("[[device]]\nname = \"a\"\nmtu = \"big\"\n"), 0o644)
	_, _, err := LoadSettings(p)
	if err == nil || strings.Count(err.Error(), "device[0].mtu") != 1 {
		t.Fatalf("error %v: want exactly one error for device[0].mtu", err)
	}
}
