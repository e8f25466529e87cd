//go:build linux

package conntrack

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/tunrouter/router/packet"
)

// TestTCPKernelDifferential replays segment sequences through the running
// kernel's nf_conntrack and through the tracker (tcpSim), and compares
// after every packet: INVALID or not, whether an entry exists, its state,
// ASSURED, UNREPLIED, its orientation, and its timeout.
//
// It runs only with CT_KERNEL_TEST=1, as root, with unshare, ip, nft and
// conntrack installed. It re-executes itself in a new network namespace
// (gone when the child exits) holding two TUN devices: packets from the
// client are written to ctk0 and forwarded to ctk1, the server's the other
// way; an nft forward rule counts and drops "ct state invalid".
// CT_KERNEL_RANDOM sets the number of random sequences (default 150),
// CT_KERNEL_SEED the seed.
func TestTCPKernelDifferential(t *testing.T) {
	if os.Getenv("CT_KERNEL_TEST") == "" {
		t.Skip("set CT_KERNEL_TEST=1 to compare with the running kernel (needs root, unshare, ip, nft, conntrack)")
	}
	if os.Getenv("CT_KERNEL_NETNS") == "" {
		args := []string{"--net", "--", os.Args[0], "-test.run=^" + t.Name() + "$", "-test.count=1"}
		if testing.Verbose() {
			args = append(args, "-test.v")
		}
		cmd := exec.Command("unshare", args...)
		cmd.Env = append(os.Environ(), "CT_KERNEL_NETNS=1")
		out, err := cmd.CombinedOutput()
		t.Logf("in a new network namespace:\n%s", out)
		if err != nil {
			t.Fatalf("child: %v", err)
		}
		return
	}

	k := newKernelNet(t)
	defer k.close()

	t.Run("scenarios", func(t *testing.T) {
		for _, sc := range kernelScenarios() {
			t.Run(sc.name, func(t *testing.T) {
				k.reset(t)
				sim := k.newSim()
				sim.cfg.BeLiberal, sim.cfg.IgnoreInvalidRST = sc.liberal, sc.ignoreRST
				k.setBool(t, "nf_conntrack_tcp_be_liberal", sc.liberal)
				k.setBool(t, "nf_conntrack_tcp_ignore_invalid_rst", sc.ignoreRST)
				defer k.setBool(t, "nf_conntrack_tcp_be_liberal", false)
				defer k.setBool(t, "nf_conntrack_tcp_ignore_invalid_rst", false)
				for i, x := range sc.steps {
					k.compare(t, sim, i, x.from, x.seg)
				}
			})
		}
	})

	t.Run("cells", func(t *testing.T) {
		for _, pre := range kernelPrefixes() {
			for _, dir := range []Dir{Original, Reply} {
				for _, row := range []string{"SYN", "SYNACK", "FIN", "ACK", "RST", "NONE"} {
					t.Run(fmt.Sprintf("%s/%v/%s", pre.name, dir, row), func(t *testing.T) {
						k.reset(t)
						sim := k.newSim()
						for i, x := range pre.steps {
							k.compare(t, sim, i, x.from, x.seg)
						}
						if sim.conn.state != pre.state {
							t.Fatalf("prefix reached %v, want %v", sim.conn.state, pre.state)
						}
						from := sim.origin
						if dir == Reply {
							from ^= 1
						}
						s, r := sim.conn.dir[dir], sim.conn.dir[dir^1]
						seg := tseg(tcpRowFlags[row], s.end, r.end, 1000, 0)
						if row == "SYN" || row == "SYNACK" {
							seg.seq += 100000 // a new ISN
						}
						k.compare(t, sim, len(pre.steps), from, seg)
						// And one more in-window ACK from the other side.
						if sim.exists {
							d := sim.dirOf(from ^ 1)
							k.compare(t, sim, len(pre.steps)+1, from^1,
								tseg(fA, sim.conn.dir[d].end, sim.conn.dir[d^1].end, 1000, 0))
						}
					})
				}
			}
		}
	})

	t.Run("random", func(t *testing.T) {
		n := 150
		if s := os.Getenv("CT_KERNEL_RANDOM"); s != "" {
			n, _ = strconv.Atoi(s)
		}
		seed := uint64(time.Now().UnixNano())
		if s := os.Getenv("CT_KERNEL_SEED"); s != "" {
			seed, _ = strconv.ParseUint(s, 10, 64)
		}
		t.Logf("seed %d", seed)
		rng := rand.New(rand.NewPCG(seed, 0x7cb))
		src := rngBytes{rng}
		for i := 0; i < n; i++ {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				k.reset(t)
				sim := k.newSim()
				var hist []string
				for j := 0; j < 14; j++ {
					from := tcpEnd(0)
					if sim.exists && src.byte()%2 == 1 {
						from = 1
					}
					seg := genSeg(src, sim, from)
					hist = append(hist, fmt.Sprintf("%s %v", from, seg))
					if !k.compareOK(t, sim, j, from, seg) {
						t.Fatalf("history:\n  %s", strings.Join(hist, "\n  "))
					}
				}
			})
		}
	})
}

type rngBytes struct{ r *rand.Rand }

func (r rngBytes) byte() byte { return byte(r.r.Uint32()) }

// The kernel settings of the comparison: timeouts made pairwise distinct so
// that a wrong state or a wrong timeout rule shows in the timeout.
var kernelSysctls = []struct {
	name string
	val  int
}{
	{"nf_conntrack_tcp_timeout_syn_sent", 111},
	{"nf_conntrack_tcp_timeout_syn_recv", 61},
	{"nf_conntrack_tcp_timeout_established", 4321},
	{"nf_conntrack_tcp_timeout_fin_wait", 122},
	{"nf_conntrack_tcp_timeout_close_wait", 62},
	{"nf_conntrack_tcp_timeout_last_ack", 33},
	{"nf_conntrack_tcp_timeout_time_wait", 124},
	{"nf_conntrack_tcp_timeout_close", 11},
	{"nf_conntrack_tcp_timeout_max_retrans", 250},
	{"nf_conntrack_tcp_timeout_unacknowledged", 200},
}

func kernelTCPConfig() TCPConfig {
	c := testTCPConfig()
	s := time.Second
	c.Timeouts[TCPSynSent] = 111 * s
	c.Timeouts[TCPSynRecv] = 61 * s
	c.Timeouts[TCPEstablished] = 4321 * s
	c.Timeouts[TCPFinWait] = 122 * s
	c.Timeouts[TCPCloseWait] = 62 * s
	c.Timeouts[TCPLastAck] = 33 * s
	c.Timeouts[TCPTimeWait] = 124 * s
	c.Timeouts[TCPClose] = 11 * s
	c.Timeouts[TCPSynSent2] = 120 * s // no sysctl; the kernel default
	c.TimeoutRetrans = 250 * s
	c.TimeoutUnack = 200 * s
	return c
}

type kernelNet struct {
	t              *testing.T
	tun            [2]*os.File // client side, server side
	client, server netip.Addr
	port           uint16
	// refreshed is when the tracker last set the entry's timeout (real
	// time, to compare with the kernel's remaining time).
	refreshed time.Time
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func openTUN(t *testing.T, name string) *os.File {
	fd, err := syscall.Open("/dev/net/tun", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/net/tun: %v", err)
	}
	var ifr [40]byte
	copy(ifr[:16], name)
	const iffTUN, iffNoPI, tunSetIff = 0x0001, 0x1000, 0x400454ca
	binary.NativeEndian.PutUint16(ifr[16:], iffTUN|iffNoPI)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), tunSetIff, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		syscall.Close(fd)
		t.Fatalf("TUNSETIFF %s: %v", name, e)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fd), name)
}

func newKernelNet(t *testing.T) *kernelNet {
	k := &kernelNet{
		t:      t,
		client: netip.MustParseAddr("10.0.0.2"),
		server: netip.MustParseAddr("10.0.1.2"),
		port:   20000,
	}
	k.tun[0] = openTUN(t, "ctk0")
	k.tun[1] = openTUN(t, "ctk1")
	run(t, "ip", "link", "set", "lo", "up")
	for i, dev := range []string{"ctk0", "ctk1"} {
		run(t, "ip", "link", "set", dev, "mtu", "65535", "up")
		run(t, "ip", "addr", "add", fmt.Sprintf("10.0.%d.1/24", i), "dev", dev)
	}
	run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.disable_ipv6=1",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
		"net.ipv4.conf.ctk0.rp_filter=0", "net.ipv4.conf.ctk1.rp_filter=0")
	for _, s := range kernelSysctls {
		run(t, "sysctl", "-qw", fmt.Sprintf("net.netfilter.%s=%d", s.name, s.val))
	}
	nft := exec.Command("nft", "-f", "-")
	nft.Stdin = strings.NewReader(`table inet ctk {
	counter invalid {}
	chain fwdchk {
		type filter hook forward priority 0; policy accept;
		ct state invalid counter name "invalid" drop
	}
}`)
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	return k
}

func (k *kernelNet) close() {
	k.tun[0].Close()
	k.tun[1].Close()
}

// reset starts a fresh connection: new client port, empty table.
func (k *kernelNet) reset(t *testing.T) {
	k.port++
	exec.Command("conntrack", "-F").Run()
	k.drain(0)
	k.drain(1)
}

func (k *kernelNet) setBool(t *testing.T, name string, v bool) {
	n := 0
	if v {
		n = 1
	}
	run(t, "sysctl", "-qw", fmt.Sprintf("net.netfilter.%s=%d", name, n))
}

func (k *kernelNet) newSim() *tcpSim {
	s := newTCPSim()
	s.cfg = kernelTCPConfig()
	return s
}

func (k *kernelNet) drain(i int) {
	buf := make([]byte, 10000)
	k.tun[i].SetReadDeadline(time.Now().Add(time.Millisecond))
	for {
		if _, err := k.tun[i].Read(buf); err != nil {
			return
		}
	}
}

func (k *kernelNet) invalidCount(t *testing.T) int {
	out := run(t, "nft", "list", "counter", "inet", "ctk", "invalid")
	i := strings.Index(out, "packets ")
	if i < 0 {
		t.Fatalf("no counter in %q", out)
	}
	f := strings.Fields(out[i+len("packets "):])
	n, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatalf("counter %q: %v", out, err)
	}
	return n
}

// send writes seg from endpoint from and reports whether the kernel found
// it INVALID (dropped by the nft rule).
func (k *kernelNet) send(t *testing.T, from tcpEnd, seg tcpSeg) bool {
	cp := netip.AddrPortFrom(k.client, k.port)
	sp := netip.AddrPortFrom(k.server, 80)
	r := rawTCP{src: cp, dst: sp, seq: seg.seq, ack: seg.ack, flags: seg.flags, win: seg.win,
		opts: tcpOptBytes(&seg), payloadLen: int(seg.dataLen)}
	if from == epServer {
		r.src, r.dst = sp, cp
	}
	before := k.invalidCount(t)
	if _, err := k.tun[from].Write(r.build()); err != nil {
		t.Fatalf("write: %v", err)
	}
	out := k.tun[from^1]
	buf := make([]byte, 70000)
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		out.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		n, err := out.Read(buf)
		if err == nil {
			var p packet.Parsed
			p.Decode(buf[:n])
			if p.Err == packet.ErrNone && p.Proto == packet.TCP && p.Seq == seg.seq && p.TCPFlags == seg.flags &&
				p.SrcPort == r.src.Port() {
				return false
			}
			continue
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %v", err)
		}
		if k.invalidCount(t) > before {
			return true
		}
	}
	t.Fatalf("packet %v neither forwarded nor counted invalid", seg)
	return false
}

// kernelEntry is one line of conntrack -L.
type kernelEntry struct {
	timeout   int
	state     string
	src       netip.Addr
	assured   bool
	unreplied bool
}

func (k *kernelNet) entry(t *testing.T) (kernelEntry, bool) {
	cmd := exec.Command("conntrack", "-L", "-p", "tcp")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Run(); err != nil {
		t.Fatalf("conntrack -L: %v", err)
	}
	var found []kernelEntry
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || f[0] != "tcp" {
			continue
		}
		var e kernelEntry
		e.timeout, _ = strconv.Atoi(f[2])
		e.state = f[3]
		for _, x := range f[4:] {
			switch {
			case strings.HasPrefix(x, "src=") && !e.src.IsValid():
				e.src = netip.MustParseAddr(x[4:])
			case x == "[ASSURED]":
				e.assured = true
			case x == "[UNREPLIED]":
				e.unreplied = true
			}
		}
		found = append(found, e)
	}
	if len(found) > 1 {
		t.Fatalf("%d TCP entries: %s", len(found), stdout.String())
	}
	if len(found) == 0 {
		return kernelEntry{}, false
	}
	return found[0], true
}

func (k *kernelNet) compare(t *testing.T, sim *tcpSim, i int, from tcpEnd, seg tcpSeg) {
	t.Helper()
	if !k.compareOK(t, sim, i, from, seg) {
		t.FailNow()
	}
}

// compareOK sends seg to both and reports whether they agree.
func (k *kernelNet) compareOK(t *testing.T, sim *tcpSim, i int, from tcpEnd, seg tcpSeg) bool {
	t.Helper()
	oldExp, oldExists := sim.expires, sim.exists
	sent := time.Now()
	st := sim.send(from, seg)
	if sim.exists && (sim.expires != oldExp || !oldExists || st.created) {
		k.refreshed = sent
	}
	kinv := k.send(t, from, seg)
	ke, kexists := k.entry(t)
	where := fmt.Sprintf("packet %d (%s %v)", i+1, from, seg)
	ok := true
	fail := func(format string, args ...any) {
		t.Errorf("%s: "+format, append([]any{where}, args...)...)
		ok = false
	}
	if kinv != (st.v == vInvalid) {
		fail("kernel invalid=%v, tracker %v (action %v, detail %q, reason %q)", kinv, st.v, st.out.action, st.out.detail, st.reason)
	}
	if kexists != sim.exists {
		fail("kernel entry exists=%v (%+v), tracker %v", kexists, ke, sim.exists)
		return false
	}
	if !kexists {
		return ok
	}
	if ke.state != sim.conn.state.String() {
		fail("kernel state %s, tracker %v (detail %q)", ke.state, sim.conn.state, st.out.detail)
	}
	if ke.assured != (sim.status&StatusAssured != 0) {
		fail("kernel assured=%v, tracker status %v", ke.assured, sim.status)
	}
	if ke.unreplied != (sim.status&StatusSeenReply == 0) {
		fail("kernel unreplied=%v, tracker status %v", ke.unreplied, sim.status)
	}
	wantSrc := k.client
	if sim.origin == epServer {
		wantSrc = k.server
	}
	if ke.src != wantSrc {
		fail("kernel original source %v, tracker origin %v", ke.src, sim.origin)
	}
	// The simulated clock does not move: the tracker's remaining time is
	// the last timeout it set; the kernel's has lost the real time since.
	simRem := int(sim.remaining() / time.Second)
	lost := int(time.Since(k.refreshed)/time.Second) + 1
	if ke.timeout > simRem || ke.timeout < simRem-lost {
		fail("kernel timeout %d s, tracker %d s (detail %q)", ke.timeout, simRem, st.out.detail)
	}
	return ok
}

type kernelSeq struct {
	name               string
	liberal, ignoreRST bool
	state              TCPState
	steps              []expectStep
}

// kernelScenarios are the section 9 scenarios (the steps of the scenario
// tests, without clock advances) plus a few sequences for the rules of 2.6.
func kernelScenarios() []kernelSeq {
	L, R := uint32(0x10000000), uint32(0xfffff000)
	var out []kernelSeq
	add := func(name string, steps []expectStep) { out = append(out, kernelSeq{name: name, steps: steps}) }
	add("9.1-rst-invalid", scenario91(L, R))
	add("9.2-inexact-rst", scenario92(L, R))
	add("9.3-syn-challenge-ack", scenario93(L, R))
	add("9.4-synack-old", scenario94(L, R))
	add("9.5-synack-reuse", scenario95(L, R))
	add("9.6-ack-loss-stall", scenario96(L, R))
	for _, sp := range specialSequences() {
		out = append(out, kernelSeq{name: sp.name, liberal: sp.liberal, ignoreRST: sp.ignoreRST, steps: sp.steps})
	}
	return out
}

// kernelPrefixes reach each state (except NONE) with ordinary packets.
func kernelPrefixes() []kernelSeq {
	const c, s = 7000, 900000
	syn := expectStep{from: epClient, seg: tseg(fS, c, 0, 64000, 0).wscale(2).sackPerm()}
	synack := expectStep{from: epServer, seg: tseg(fS|fA, s, c+1, 64000, 0).wscale(3).sackPerm()}
	ack := expectStep{from: epClient, seg: tseg(fA, c+1, s+1, 16000, 0)}
	cfin := expectStep{from: epClient, seg: tseg(fF|fA, c+1, s+1, 16000, 0)}
	sack := expectStep{from: epServer, seg: tseg(fA, s+1, c+2, 8000, 0)}
	sfin := expectStep{from: epServer, seg: tseg(fF|fA, s+1, c+2, 8000, 0)}
	clast := expectStep{from: epClient, seg: tseg(fA, c+2, s+2, 16000, 0)}
	crst := expectStep{from: epClient, seg: tseg(fR, c+1, 0, 0, 0)}
	ssyn := expectStep{from: epServer, seg: tseg(fS, s, 0, 64000, 0).wscale(3)}
	return []kernelSeq{
		{name: "SYN_SENT", state: TCPSynSent, steps: []expectStep{syn}},
		{name: "SYN_RECV", state: TCPSynRecv, steps: []expectStep{syn, synack}},
		{name: "ESTABLISHED", state: TCPEstablished, steps: []expectStep{syn, synack, ack}},
		{name: "FIN_WAIT", state: TCPFinWait, steps: []expectStep{syn, synack, ack, cfin}},
		{name: "CLOSE_WAIT", state: TCPCloseWait, steps: []expectStep{syn, synack, ack, cfin, sack}},
		{name: "LAST_ACK", state: TCPLastAck, steps: []expectStep{syn, synack, ack, cfin, sfin}},
		{name: "TIME_WAIT", state: TCPTimeWait, steps: []expectStep{syn, synack, ack, cfin, sfin, clast}},
		{name: "CLOSE", state: TCPClose, steps: []expectStep{syn, synack, ack, crst}},
		{name: "SYN_SENT2", state: TCPSynSent2, steps: []expectStep{syn, ssyn}},
	}
}
