package ftp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tunrouter/router/conntrack"
)

// TestKernelDifferential runs the same control-channel segments through
// Linux's own FTP helper (nf_conntrack_ftp, attached with nft's "ct helper
// set" to TCP port 21) and through this package, and compares the outcome
// of every segment: dropped, accepted without expectation, or accepted with
// an expectation (its source, destination and port).
//
// It needs root, nft and a kernel with the FTP helper, and runs only when
// ROUTER_KERNEL_FTP=1. It re-executes the test binary in a new network
// namespace (unshare -n), where it uses only the loopback addresses
// 127.0.0.1, 127.0.0.2 and ::1; the namespace and its rules vanish with the
// child process.
func TestKernelDifferential(t *testing.T) {
	if os.Getenv("ROUTER_KERNEL_FTP_CHILD") == "1" {
		kernelChild(t)
		return
	}
	if os.Getenv("ROUTER_KERNEL_FTP") != "1" {
		t.Skip("set ROUTER_KERNEL_FTP=1 (root, nft, unshare) to compare with the kernel's FTP helper")
	}
	for _, tool := range []string{"unshare", "nft", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found", tool)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-n", exe, "-test.run=^TestKernelDifferential$", "-test.v"}
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(os.Environ(), "ROUTER_KERNEL_FTP_CHILD=1")
	out, err := cmd.CombinedOutput()
	t.Logf("child output:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
}

const kernelRules = `
table inet ftptest {
	ct helper ftp-std { type "ftp" protocol tcp; }
	chain pre { type filter hook prerouting priority 0; tcp dport 21 ct helper set "ftp-std"; }
	chain out { type filter hook output priority 0; tcp dport 21 ct helper set "ftp-std"; }
}
`

type kcase struct {
	v6   bool
	dir  conntrack.Dir
	data string
}

func kernelChild(t *testing.T) {
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link: %v %s", err, out)
	}
	nft := exec.Command("nft", "-f", "-")
	nft.Stdin = strings.NewReader(kernelRules)
	if out, err := nft.CombinedOutput(); err != nil {
		t.Skipf("kernel FTP helper unavailable: %v %s", err, out)
	}
	k := newKernelFTP(t)
	cases := kernelCases()
	mismatches := 0
	counts := map[string]int{}
	for i, c := range cases {
		got := k.run(c)
		want := predict(t, c)
		counts[strings.Fields(got)[0]]++
		if got != want {
			mismatches++
			t.Errorf("case %d v6=%v dir=%v %q: kernel %q, ours %q", i, c.v6, c.dir, c.data, got, want)
		}
	}
	t.Logf("%d cases, outcomes %v, %d mismatches", len(cases), counts, mismatches)
}

type kernelFTP struct {
	t      *testing.T
	ln     [2]net.Listener
	accept [2]chan net.Conn
}

func newKernelFTP(t *testing.T) *kernelFTP {
	k := &kernelFTP{t: t}
	for i, addr := range []string{"127.0.0.1:21", "[::1]:21"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		k.ln[i] = ln
		ch := make(chan net.Conn, 1)
		k.accept[i] = ch
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					close(ch)
					return
				}
				ch <- c
			}
		}()
	}
	return k
}

// run plays one case against the kernel and describes the outcome.
func (k *kernelFTP) run(c kcase) string {
	t := k.t
	fam, srv, local := 0, "127.0.0.1:21", &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}
	if c.v6 {
		fam, srv, local = 1, "[::1]:21", &net.TCPAddr{IP: net.ParseIP("::1")}
	}
	if out, err := exec.Command("conntrack", "-F", "expect").CombinedOutput(); err != nil {
		t.Fatalf("conntrack -F expect: %v %s", err, out)
	}
	d := net.Dialer{LocalAddr: local, Timeout: time.Second}
	cl, err := d.Dial("tcp", srv)
	if err != nil {
		t.Fatal(err)
	}
	sv := <-k.accept[fam]
	defer func() {
		for _, x := range []net.Conn{cl, sv} {
			x.(*net.TCPConn).SetLinger(0)
			x.Close()
		}
	}()
	// The first segment of each direction is never parsed and ends with
	// a newline, so the next one in either direction is.
	exchange(t, sv, cl, "220 ready\r\n")
	exchange(t, cl, sv, "USER anonymous\r\n")
	from, to := cl, sv
	if c.dir == conntrack.Reply {
		from, to = sv, cl
	}
	if _, err := from.Write([]byte(c.data)); err != nil {
		t.Fatal(err)
	}
	to.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, len(c.data))
	if _, err := io.ReadFull(to, buf); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return "drop"
		}
		t.Fatal(err)
	}
	xs := readKernelExpectations(t)
	switch len(xs) {
	case 0:
		return "accept"
	case 1:
		return "expect " + xs[0]
	}
	t.Fatalf("kernel has %d expectations: %v", len(xs), xs)
	return ""
}

func exchange(t *testing.T, from, to net.Conn, line string) {
	t.Helper()
	if _, err := from.Write([]byte(line)); err != nil {
		t.Fatal(err)
	}
	to.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(to, make([]byte, len(line))); err != nil {
		t.Fatalf("%q not delivered: %v", line, err)
	}
}

// readKernelExpectations returns "src dst dport" for each line of
// /proc/net/nf_conntrack_expect.
func readKernelExpectations(t *testing.T) []string {
	f, err := os.Open("/proc/net/nf_conntrack_expect")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var xs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var src, dst, dport string
		for _, w := range strings.Fields(sc.Text()) {
			switch {
			case strings.HasPrefix(w, "src="):
				src = w[4:]
			case strings.HasPrefix(w, "dst="):
				dst = w[4:]
			case strings.HasPrefix(w, "dport="):
				dport = w[6:]
			}
		}
		xs = append(xs, canonAddr(src)+" "+canonAddr(dst)+" "+dport)
	}
	return xs
}

// canonAddr rewrites the kernel's full IPv6 form ("0000:...:0001") the way
// netip prints it.
func canonAddr(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.String()
	}
	return s
}

// predict runs the case through our helper with the same addresses.
func predict(t *testing.T, c kcase) string {
	client, server := "127.0.0.2:40000", "127.0.0.1:21"
	if c.v6 {
		client, server = "[::1]:40000", "[::1]:21"
	}
	s := newSession(t, Config{}, client, server)
	s.h.cfg.Log = nil
	s.login()
	if res := s.send(c.dir, c.data); res.Drop {
		return "drop"
	}
	xs := s.expectations()
	switch len(xs) {
	case 0:
		return "accept"
	case 1:
		x := xs[0].Tuple
		return fmt.Sprintf("expect %v %v %d", x.SrcAddr(), x.DstAddr(), x.DstPort)
	}
	return fmt.Sprintf("%d expectations", len(xs))
}

// kernelCases returns hand-written cases for every rule the parsers
// implement, plus seeded random mutations of them.
func kernelCases() []kcase {
	orig4 := []string{
		"PORT 127,0,0,2,4,1\r\n", "port 127,0,0,2,4,1\r\n", "PORT 127,000,0,02,4,1\r\n",
		"PORT 127,0,0,2,4,1 \r\n", "PORT 127, 0,0,2,4,1\r\n", "PORT  127,0,0,2,4,1\r\n",
		"PORT 127,0,0,2,4\r\n", "PORT 127,0,0,2,4,1,7\r\n", "PORT 127,0,0,2,4,1\n", "PORT 127,0,0,2,4,1",
		"PORT 127,0,0,2,256,1\r\n", "PORT 127,0,0,2,5,70000\r\n", "PORT 127,,0,2,4,1\r\n",
		"PORT 126,256,0,2,4,1\r\n", "PORT 127,0,0,2,0,0\r\n", "PORT 10,0,0,5,4,1\r\n",
		"PORT\r\n", "PO", "P", "PORT", "PORTABLE 127,0,0,2,4,1\r\n", "POST 127,0,0,2,4,1\r\n",
		"PORT 127,0,0,2,4,1\r\nPORT 127,0,0,2,4,2\r\n", "PASV\r\n", "EPSV\r\n", "EPSV ALL\r\n",
		"LPRT 4,4,127,0,0,2,2,4,1\r\n",
		"EPRT |1|127.0.0.2|1025|\r\n", "eprt !1!127.0.0.2!1025!\r\n", "EPRT |1|127.0.0.2|0|\r\n",
		"EPRT |1|127.0.0.2|65536|\r\n", "EPRT |1|127.0.0.2|65537|\r\n", "EPRT |1|127.0.0.2||\r\n",
		"EPRT |1|127..0.2|1025|\r\n", "EPRT |1|127.0.0.2.1|1025|\r\n", "EPRT |1|127.0.0|1025|\r\n",
		"EPRT |2|::1|1025|\r\n", "EPRT |3|127.0.0.2|1025|\r\n", "EPRT 1112710021025\r\n",
		"EPRT  |1|127.0.0.2|1025|\r\n", "EPRT |1!127.0.0.2|1025|\r\n", "EPRT |1|127.0.0.2|1025\r\n",
		"EPRT .1.127.0.0.2.1025.\r\n", "EPRT a1a127.0.0.2a1025a\r\n", "EPRT |1|", "EP",
		"EPRT |1|127.0.0.2|1025|", "EPRT |1|127.0.0.2\x001025|\r\n",
	}
	reply := []string{
		"227 Entering Passive Mode (127,0,0,1,19,137).\r\n", "227 Entering Passive Mode 127,0,0,1,19,137\r\n",
		"227 =127,0,0,1,19,137\r\n", "227 Mode 2 (127,0,0,1,19,137)\r\n", "227 Entering Passive Mode\r\n",
		"227 (127,0,0,1,19,137", "227 (127,0,0,1,19)\r\n", "227 (127,0,0,1,19,137,1)\r\n", "227 ", "227", "22", "2",
		"227-Entering (127,0,0,1,19,137)\r\n", "227 (10,0,0,1,4,1)\r\n", "227 (127,0,0,1,256,1).\r\n",
		"229 Entering Extended Passive Mode (|||6446|)\r\n", "229 (!!!6446!)\r\n", "229 (|||6446|\r\n",
		"229 (|||0|)\r\n", "229 (|||65536|)\r\n", "229 (|||65537|)\r\n", "229 |||6446|\r\n", "229 (|||6446)\r\n",
		"229 (||6446|)\r\n", "229 (|!|6446|)\r\n", "229 (1116446|)\r\n", "229 (|||", "229 ", "229",
		"230 Logged in\r\n", "PORT 127,0,0,1,4,1\r\n",
	}
	orig6 := []string{
		"EPRT |2|::1|2000|\r\n", "EPRT |2|0:0:0:0:0:0:0:1|2000|\r\n", "EPRT |2|0::1|2000|\r\n",
		"EPRT |2|::0:1|2000|\r\n", "EPRT |2|00000::1|2000|\r\n", "EPRT |2|::0001|2000|\r\n",
		"EPRT |2|::00001|2000|\r\n", "EPRT |2|::0.0.0.1|2000|\r\n", "EPRT |2|::000.0.00.1|2000|\r\n",
		"EPRT |2|0:0:0:0:0:0:0.0.0.1|2000|\r\n", "EPRT |2|::0.0.0.1:2000|\r\n", "EPRT |2|::1\x002000|\r\n",
		"EPRT |2|::1%lo|2000|\r\n", "EPRT |2|::1|0|\r\n", "EPRT |2|:::1|2000|\r\n", "EPRT |2|::1::|2000|\r\n",
		"EPRT |2|0:0:0:0:0:0:0:0:1|2000|\r\n", "EPRT |2|0:0:0:0:0:0:1|2000|\r\n", "EPRT |2|0:0:0:0:0:0:0::1|2000|\r\n",
		"EPRT |2|::0.0.0.256|2000|\r\n", "EPRT |2|::0.0.1|2000|\r\n", "EPRT |2|1::|2000|\r\n",
		"EPRT |2|0:0:0:0:0:0:0:1:|2000|\r\n", "EPRT |2|::1:|2000|\r\n", "EPRT :2:::1:2000:\r\n",
		"EPRT .2.::0.0.0.1.2000.\r\n", "EPRT a2a::1a2000a\r\n", "EPRT |1|127.0.0.1|2000|\r\n",
		"EPRT |2|::ffff:127.0.0.1|2000|\r\n", "EPRT |2|::1", "PORT 0,0,0,0,4,1\r\n", "PORT 127,0,0,1,4,1\r\n",
	}
	reply6 := []string{
		"229 Entering Extended Passive Mode (|||6446|)\r\n", "227 Entering Passive Mode (0,0,0,0,4,1)\r\n",
		"227 Entering Passive Mode (127,0,0,1,4,1)\r\n",
	}
	var cases []kcase
	add := func(v6 bool, dir conntrack.Dir, list []string) {
		for _, s := range list {
			cases = append(cases, kcase{v6, dir, s})
		}
	}
	add(false, conntrack.Original, orig4)
	add(false, conntrack.Reply, reply)
	add(true, conntrack.Original, orig6)
	add(true, conntrack.Reply, reply6)

	// Seeded mutations: replace, insert or delete bytes from an alphabet
	// of the characters the parsers care about.
	rng := rand.New(rand.NewPCG(2026, 11))
	const alphabet = "0123456789,.:|!()aAfF \r\n\x00%-"
	mutate := func(s string) string {
		b := []byte(s)
		for range 1 + rng.IntN(3) {
			i := rng.IntN(len(b) + 1)
			ch := alphabet[rng.IntN(len(alphabet))]
			switch rng.IntN(3) {
			case 0:
				if i < len(b) {
					b[i] = ch
				}
			case 1:
				b = append(b[:i], append([]byte{ch}, b[i:]...)...)
			default:
				if i < len(b) {
					b = append(b[:i], b[i+1:]...)
				}
			}
		}
		if len(b) == 0 {
			b = []byte("x")
		}
		return string(b)
	}
	n := 150
	if s := os.Getenv("ROUTER_KERNEL_FTP_MUTATIONS"); s != "" {
		fmt.Sscan(s, &n)
	}
	for range n {
		cases = append(cases,
			kcase{false, conntrack.Original, mutate(orig4[rng.IntN(len(orig4))])},
			kcase{false, conntrack.Reply, mutate(reply[rng.IntN(len(reply))])},
			kcase{true, conntrack.Original, mutate(orig6[rng.IntN(len(orig6))])})
	}
	return cases
}
