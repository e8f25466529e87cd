package tundev

import (
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring of the error; "" means valid
	}{
		{"zero", Config{}, ""},
		{"full", Config{Name: "rt0", Netns: "blue", MTU: 9000, Queues: 4, Up: true,
			Addresses: []netip.Prefix{p("10.0.0.1/24"), p("fd00::1/64")},
			Routes:    []netip.Prefix{p("10.1.0.0/16"), p("fd01::/48")}}, ""},
		{"template-name", Config{Name: "rt%d"}, ""},
		{"max-name", Config{Name: "abcdefghijklmno"}, ""},
		{"name-too-long", Config{Name: "abcdefghijklmnop"}, "longer than 15"},
		{"name-slash", Config{Name: "a/b"}, "contains"},
		{"name-space", Config{Name: "a b"}, "contains"},
		{"name-colon", Config{Name: "a:1"}, "contains"},
		{"name-dot", Config{Name: "."}, "reserved"},
		{"name-two-templates", Config{Name: "a%d%d"}, "one %d"},
		{"name-bad-template", Config{Name: "a%s"}, "one %d"},
		{"mtu-too-small", Config{MTU: 67}, "MTU 67"},
		{"mtu-too-large", Config{MTU: 65536}, "MTU 65536"},
		{"mtu-min", Config{MTU: MinMTU}, ""},
		{"ipv6-small-mtu", Config{MTU: 1279, Addresses: []netip.Prefix{p("fd00::1/64")}}, "IPv6 minimum"},
		{"ipv6-route-small-mtu", Config{MTU: 1000, Up: true, Routes: []netip.Prefix{p("fd01::/48")}}, "IPv6 minimum"},
		{"ipv4-small-mtu", Config{MTU: 576, Addresses: []netip.Prefix{p("10.0.0.1/24")}}, ""},
		{"negative-queues", Config{Queues: -1}, "Queues -1"},
		{"too-many-queues", Config{Queues: MaxQueues + 1}, "Queues 257"},
		{"max-queues", Config{Queues: MaxQueues}, ""},
		{"negative-fd", Config{FD: -1}, "negative"},
		{"fd-multiqueue", Config{FD: 5, Queues: 2}, "single queue"},
		{"fd-ignores-name", Config{FD: 5, Name: "this name is far too long"}, ""},
		{"invalid-address", Config{Addresses: []netip.Prefix{{}}}, "not a valid prefix"},
		{"mapped-address", Config{Addresses: []netip.Prefix{p("::ffff:10.0.0.1/120")}}, "IPv4-mapped"},
		{"route-host-bits", Config{Up: true, Routes: []netip.Prefix{p("10.1.2.3/16")}}, "host bits"},
		{"routes-need-up", Config{Routes: []netip.Prefix{p("10.1.0.0/16")}}, "need Up"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("validate: no error, want %q", tt.wantErr)
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("validate: %v; want ErrInvalidConfig mentioning %q", err, tt.wantErr)
			}
		})
	}
}

// TestOpenRejectsInvalidConfig checks that Open validates before it touches
// the system (it needs no privileges).
func TestOpenRejectsInvalidConfig(t *testing.T) {
	d, err := Open(Config{Name: "this-name-is-too-long"})
	if err == nil {
		d.Close()
		t.Fatal("Open accepted an invalid name")
	}
	if !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Open: %v, want ErrInvalidConfig", err)
	}
}

func TestWrapSys(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		sentinel error // nil: no sentinel expected
		hint     string
	}{
		{"eperm", syscall.EPERM, ErrPermission, "CAP_NET_ADMIN"},
		{"eacces", syscall.EACCES, ErrPermission, "user namespace"},
		{"ebusy", syscall.EBUSY, ErrDeviceBusy, "Config.FD"},
		{"einval", syscall.EINVAL, nil, ""},
		{"not-errno", errors.New("boom"), nil, ""},
	}
	sentinels := []error{ErrNoTUN, ErrPermission, ErrDeviceBusy, ErrNoNetns, ErrNotTUN, ErrInvalidConfig, ErrOffload}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := wrapSys("create", `"rt0"`, tt.err)
			if !errors.Is(got, tt.err) {
				t.Errorf("%v does not wrap the original %v", got, tt.err)
			}
			if !strings.HasPrefix(got.Error(), `tundev: create "rt0": `) {
				t.Errorf("message %q lacks operation and subject", got)
			}
			for _, s := range sentinels {
				if errors.Is(got, s) != (s == tt.sentinel) {
					t.Errorf("errors.Is(%v, %v) = %v", got, s, errors.Is(got, s))
				}
			}
			if tt.hint != "" && !strings.Contains(got.Error(), tt.hint) {
				t.Errorf("message %q lacks hint %q", got, tt.hint)
			}
		})
	}
}

func TestWrapOpenClone(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOENT, syscall.ENODEV, syscall.ENXIO} {
		if err := wrapOpenClone("/dev/net/tun", errno); !errors.Is(err, ErrNoTUN) || !strings.Contains(err.Error(), "modprobe tun") {
			t.Errorf("%v: got %v, want ErrNoTUN with a hint", errno, err)
		}
	}
	if err := wrapOpenClone("/dev/net/tun", syscall.EACCES); !errors.Is(err, ErrPermission) || errors.Is(err, ErrNoTUN) {
		t.Errorf("EACCES: got %v, want ErrPermission only", err)
	}
}

func TestEventKindString(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range []EventKind{EventUp, EventDown, EventMTU, EventRemoved, 0, 99} {
		s := k.String()
		if s == "" || seen[s] {
			t.Errorf("EventKind(%d).String() = %q: empty or duplicate", k, s)
		}
		seen[s] = true
	}
	if got := (Event{Kind: EventMTU, MTU: 1280}).String(); got != "mtu mtu=1280" {
		t.Errorf("Event.String() = %q", got)
	}
}
