package conformance

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tunrouter/router/tundev/tundevtest"
)

// Waiting times. Packets cross a namespace in microseconds; these only
// bound the wait for packets that never come.
const (
	waitSeen      = 500 * time.Millisecond // for conntrack's first word about a packet
	waitDelivered = 500 * time.Millisecond // for a packet the filter accepted to come out
)

// kernelRunner plays scenarios through the Linux kernel: three namespaces
// client - router - server joined by veth pairs. The router namespace
// forwards with the scenario's rule set as nftables; the end namespaces
// drop everything their own stacks would see or send, so they never
// answer. Packets are injected with AF_PACKET on the end's veth (below its
// stack) and captured with AF_PACKET on the other end's veth.
type kernelRunner struct {
	tb       testing.TB
	ns       [3]string // client, router, server
	nsPath   [3]string
	sock     [2]*pktSock // client, server ends
	caps     [2]chan captured
	log      *nflog
	logs     chan nflogMsg
	neighSet map[netip.Addr]bool
	mac      [2]net.HardwareAddr // the end veths' MACs (neighbours of the router)
	rules    []Rule              // the running scenario's forward rules
	policy   string
}

const (
	nsClient = 0
	nsRouter = 1
	nsServer = 2
)

// endNftables blocks the end namespaces' own stacks: nothing they receive
// reaches a socket or provokes an answer, nothing they would send leaves
// (router solicitations, MLD reports). AF_PACKET sees packets before
// these hooks.
const endNftables = `table inet sink {
	chain in { type filter hook prerouting priority -500; policy drop; }
	chain out { type filter hook output priority -500; policy drop; }
}
`

func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func runStdin(tb testing.TB, stdin string, name string, args ...string) {
	tb.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("%s %s: %v\n%s\ninput:\n%s", name, strings.Join(args, " "), err, out, stdin)
	}
}

func newKernelRunner(tb testing.TB) *kernelRunner {
	k := &kernelRunner{tb: tb, neighSet: map[netip.Addr]bool{}}
	for i, p := range []string{"cfk-c", "cfk-r", "cfk-s"} {
		k.ns[i], k.nsPath[i] = tundevtest.NewNetns(tb, p)
	}
	c, r, s := k.ns[nsClient], k.ns[nsRouter], k.ns[nsServer]
	// Links: client "e0" <-> router "l0", router "l1" <-> server "e0".
	run(tb, "ip", "-n", r, "link", "add", "l0", "type", "veth", "peer", "name", "e0", "netns", c)
	run(tb, "ip", "-n", r, "link", "add", "l1", "type", "veth", "peer", "name", "e0", "netns", s)
	sysctl(tb, r, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
		"net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0",
		"net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0",
		// conntrack's INVALID reasons go to nfnetlink_log group 0.
		"net.netfilter.nf_log.2=nfnetlink_log", "net.netfilter.nf_log.10=nfnetlink_log",
		"net.netfilter.nf_conntrack_log_invalid=255")
	for i, dev := range []string{"l0", "l1"} {
		for _, p := range []netip.Prefix{Router4[i], Router6[i]} {
			run(tb, "ip", "-n", r, "addr", "add", p.String(), "dev", dev, "nodad")
		}
		run(tb, "ip", "-n", r, "link", "set", dev, "up")
	}
	for i, ns := range []string{c, s} {
		run(tb, "ip", "-n", ns, "link", "set", "e0", "up")
		runStdin(tb, endNftables, "ip", "netns", "exec", ns, "nft", "-f", "-")
		// Rx checksumming off on every veth: conntrack must verify
		// transport checksums itself (some kernels' veth marked packets
		// that carry no checksum state as verified; this one does not,
		// but the bad-checksum scenarios must not depend on it).
		setRxChecksum(tb, k.nsPath[nsRouter], []string{"l0", "l1"}[i], false)
		setRxChecksum(tb, k.nsPath[[]int{nsClient, nsServer}[i]], "e0", false)
	}
	var rmac [2]net.HardwareAddr
	for i := range 2 {
		dev := []string{"l0", "l1"}[i]
		if err := tundevtest.InNetns(k.nsPath[nsRouter], func() error {
			ifi, err := net.InterfaceByName(dev)
			if err == nil {
				rmac[i] = ifi.HardwareAddr
			}
			return err
		}); err != nil {
			tb.Fatal(err)
		}
	}
	for i, ni := range []int{nsClient, nsServer} {
		var err error
		err = tundevtest.InNetns(k.nsPath[ni], func() error {
			ifi, err := net.InterfaceByName("e0")
			if err != nil {
				return err
			}
			k.mac[i] = ifi.HardwareAddr
			k.sock[i], err = openPktSock("e0", rmac[i])
			return err
		})
		if err != nil {
			tb.Fatal(err)
		}
		k.caps[i] = make(chan captured, 1024)
		k.sock[i].start(k.caps[i])
		tb.Cleanup(func() { k.sock[i].Close() })
	}
	if err := tundevtest.InNetns(k.nsPath[nsRouter], func() error {
		var err error
		k.log, err = openNflog(0, 1)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	k.logs = make(chan nflogMsg, 4096)
	k.log.start(k.logs)
	tb.Cleanup(func() { k.log.Close() })
	return k
}

func sysctl(tb testing.TB, ns string, kv ...string) {
	tb.Helper()
	run(tb, "ip", append([]string{"netns", "exec", ns, "sysctl", "-q", "-w"}, kv...)...)
}

// neigh gives the router namespace a permanent neighbour entry for every
// destination of the scenario (the end namespaces do not answer ARP or
// neighbour solicitations).
func (k *kernelRunner) neigh(s *Scenario) {
	for _, p := range s.Packets {
		_, dst, _ := ipAddrs(p.Bytes)
		if k.neighSet[dst] {
			continue
		}
		side, _ := SideOf(dst)
		dev := []string{"l0", "l1"}[side]
		run(k.tb, "ip", "-n", k.ns[nsRouter], "neigh", "replace", dst.String(), "lladdr", k.mac[side].String(), "dev", dev, "nud", "permanent")
		k.neighSet[dst] = true
	}
}

// reset loads the scenario's rule set and sysctls and empties the
// connection and expectation tables.
func (k *kernelRunner) reset(s *Scenario) {
	r := k.ns[nsRouter]
	runStdin(k.tb, "flush ruleset\n"+s.Rules.nft("conf"), "ip", "netns", "exec", r, "nft", "-f", "-")
	sysctl(k.tb, r, s.Sysctls.sysctlValues()...)
	run(k.tb, "ip", "netns", "exec", r, "sh", "-c", "conntrack -F 2>/dev/null; conntrack -F expect 2>/dev/null; true")
	k.neigh(s)
	k.rules, k.policy = s.Rules.Rules, s.Rules.Policy
	k.drain()
}

func (k *kernelRunner) drain() {
	for {
		select {
		case <-k.caps[0]:
		case <-k.caps[1]:
		case <-k.logs:
		default:
			return
		}
	}
}

// Run plays s and returns one outcome per packet.
func (k *kernelRunner) Run(s *Scenario) []Outcome {
	k.reset(s)
	out := make([]Outcome, len(s.Packets))
	for i, p := range s.Packets {
		out[i] = k.one(p)
	}
	return out
}

func (k *kernelRunner) one(p Packet) Outcome {
	id, _ := identOf(p.Bytes)
	if err := k.sock[p.From].send(p.Bytes); err != nil {
		k.tb.Fatalf("inject: %v", err)
	}
	var (
		o        = Outcome{State: StateNone}
		seen     bool   // conntrack logged its state
		verdict  string // the forward chain's deciding rule ("0", "policy")
		accepted bool
		reasons  []string
	)
	deadline := time.NewTimer(waitSeen)
	defer deadline.Stop()
	capCh := k.caps[p.From.Other()]
	for {
		select {
		case m := <-k.logs:
			mid, ok := identOf(m.Packet)
			if !ok || mid != id {
				continue
			}
			switch {
			case m.Group == 0:
				reasons = append(reasons, strings.TrimSpace(m.Prefix))
			case strings.HasPrefix(m.Prefix, "S:"):
				seen = true
				o.State = strings.TrimPrefix(m.Prefix, "S:")
			case strings.HasPrefix(m.Prefix, "V:"):
				verdict = strings.TrimPrefix(m.Prefix, "V:")
				accepted = k.ruleAccepts(verdict)
				if !accepted {
					o.Detail = "filter drop (rule " + verdict + ")"
					return k.finish(o, reasons)
				}
				deadline.Reset(waitDelivered)
			}
		case c := <-capCh:
			cid, ok := identOf(c.Packet)
			if !ok || cid != id {
				continue
			}
			o.Delivered = true
			if !payloadSame(p.Bytes, c.Packet) {
				o.Detail = "delivered modified"
			}
			if !seen {
				// The state log is written before the packet is
				// forwarded; give it a moment anyway.
				deadline.Reset(waitSeen)
				for !seen {
					select {
					case m := <-k.logs:
						if mid, ok := identOf(m.Packet); ok && mid == id && strings.HasPrefix(m.Prefix, "S:") {
							seen, o.State = true, strings.TrimPrefix(m.Prefix, "S:")
						}
					case <-deadline.C:
						o.Detail = joinNonEmpty("; ", o.Detail, "no ct state logged")
						return k.finish(o, reasons)
					}
				}
			}
			return k.finish(o, reasons)
		case <-deadline.C:
			switch {
			case !seen:
				o.Detail = "never reached conntrack"
			case verdict == "":
				o.Detail = "not forwarded"
			default:
				o.Detail = "accepted by rule " + verdict + ", dropped after the filter (helper)"
			}
			return k.finish(o, reasons)
		}
	}
}

func (k *kernelRunner) finish(o Outcome, reasons []string) Outcome {
	if len(reasons) > 0 {
		o.Reason = reasons[len(reasons)-1]
		if len(reasons) > 1 {
			o.Detail = joinNonEmpty("; ", o.Detail, "ct log: "+strings.Join(reasons, " | "))
		}
	}
	return o
}

// ruleAccepts tells whether the forward chain's deciding rule v ("0",
// "policy", as logged) accepts.
func (k *kernelRunner) ruleAccepts(v string) bool {
	if v == "policy" {
		return k.policy == "accept"
	}
	var i int
	if _, err := fmt.Sscan(v, &i); err != nil || i < 0 || i >= len(k.rules) {
		return false
	}
	return k.rules[i].Action == "accept"
}

// setRxChecksum turns a device's rx checksumming on or off (ethtool -K
// DEV rx off) with the legacy ETHTOOL_SRXCSUM ioctl.
func setRxChecksum(tb testing.TB, nsPath, dev string, on bool) {
	tb.Helper()
	err := tundevtest.InNetns(nsPath, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		v := struct{ cmd, data uint32 }{cmd: ethtoolSRXCSUM}
		if on {
			v.data = 1
		}
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data unsafe.Pointer
			_    [24 - unsafe.Sizeof(uintptr(0))]byte
		}
		copy(ifr.name[:unix.IFNAMSIZ-1], dev)
		ifr.data = unsafe.Pointer(&v)
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
			return fmt.Errorf("ETHTOOL_SRXCSUM %s: %w", dev, e)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

const ethtoolSRXCSUM = 0x15
