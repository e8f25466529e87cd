package defrag_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunrouter/router/defrag"
	"github.com/tunrouter/router/packet"
	pt "github.com/tunrouter/router/packet/packettest"
)

// TestKernelDifferential sends the same fragment sequences through Linux's
// conntrack defragmentation (nf_defrag_ipv4 / nf_defrag_ipv6, enabled by an
// nft rule using ct state) and through a Table, and compares how many
// times each datagram is delivered and what is delivered: duplicates,
// overlaps (the kernel's runs), inconsistent ends, trimming, zero-length
// fragments, and random fragment sets.
//
// It needs root, nft and unshare, and runs only when
// ROUTER_KERNEL_DEFRAG=1. It re-executes the test binary in a new network
// namespace (unshare -n) and uses only loopback addresses there; the
// namespace vanishes with the child process. Fragments are sent from raw
// sockets to 127.0.0.1 / ::1 and received by UDP sockets.
//
// Cases where this package deliberately differs from the kernel are left
// out: IPv6 fragments that the kernel passes through unreassembled (a
// non-last fragment whose length is not a multiple of 8, a first fragment
// without its upper-layer header), and IPv6 atomic fragments (offset 0, M
// clear), which nf_defrag_ipv6 puts in the queue of their identification,
// where they can complete, or be dropped by, the fragments of another
// datagram. Here they are whole packets, processed in isolation as RFC 6946
// and RFC 8200 4.5 require (and as the kernel's own IPv6 input does).
func TestKernelDifferential(t *testing.T) {
	if os.Getenv("ROUTER_KERNEL_DEFRAG_CHILD") == "1" {
		kernelChild(t)
		return
	}
	if os.Getenv("ROUTER_KERNEL_DEFRAG") != "1" {
		t.Skip("set ROUTER_KERNEL_DEFRAG=1 (root, nft, unshare) to compare with the kernel's defragmentation")
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
	cmd := exec.Command("unshare", "-n", exe, "-test.run=^TestKernelDifferential$", "-test.v")
	cmd.Env = append(os.Environ(), "ROUTER_KERNEL_DEFRAG_CHILD=1")
	out, err := cmd.CombinedOutput()
	t.Logf("child output:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
}

const kernelRules = `
table inet defragtest {
	chain out {
		type filter hook output priority 0; policy accept;
		ct state new,established,related,invalid accept
	}
}
`

// fspec is one fragment: payload bytes [off, off+n) of the datagram (from
// the UDP header on), with the more-fragments flag.
type fspec struct {
	off, n int
	more   bool
}

type dcase struct {
	name  string
	v6    bool
	size  int // UDP payload bytes
	frags []fspec
}

const kernelUDPPort = 9999

func (c *dcase) base(i int) []byte {
	p := payload(c.size, byte(i))
	if len(p) >= 4 {
		binary.BigEndian.PutUint32(p, uint32(i)) // which case a datagram belongs to
	}
	src := fmt.Sprintf("127.0.0.1:%d", 10000+i%50000)
	dst := fmt.Sprintf("127.0.0.1:%d", kernelUDPPort)
	if c.v6 {
		src = fmt.Sprintf("[::1]:%d", 10000+i%50000)
		dst = fmt.Sprintf("[::1]:%d", kernelUDPPort)
		return pt.UDP6(src, dst, p)
	}
	return pt.UDP(src, dst, pt.UDPOpts{Payload: p, ID: uint16(i + 1)})
}

func (c *dcase) fragments(i int) [][]byte {
	b := c.base(i)
	var out [][]byte
	for _, f := range c.frags {
		if c.v6 {
			out = append(out, pt.FragmentAt6(b, uint32(i+1), f.off, f.n, f.more))
		} else {
			out = append(out, pt.FragmentAt4(b, f.off, f.n, f.more))
		}
	}
	return out
}

func kernelCases() []dcase {
	var cs []dcase
	for _, v6 := range []bool{false, true} {
		// 64 bytes of UDP payload: 72 bytes of fragmentable data.
		hand := []dcase{
			{"in-order", v6, 64, []fspec{{0, 24, true}, {24, 24, true}, {48, 24, false}}},
			{"reverse", v6, 64, []fspec{{48, 24, false}, {24, 24, true}, {0, 24, true}}},
			{"duplicate-first", v6, 64, []fspec{{0, 24, true}, {0, 24, true}, {24, 24, true}, {48, 24, false}}},
			{"duplicate-last", v6, 64, []fspec{{48, 24, false}, {48, 24, false}, {0, 24, true}, {24, 24, true}}},
			{"tail-overlap", v6, 64, []fspec{{0, 24, true}, {16, 24, true}, {24, 24, true}, {48, 24, false}}},
			{"head-overlap", v6, 64, []fspec{{24, 24, true}, {16, 16, true}, {0, 24, true}, {48, 24, false}}},
			{"inside-a-run", v6, 64, []fspec{{0, 24, true}, {24, 24, true}, {8, 32, true}, {48, 24, false}}},
			{"across-two-runs", v6, 64, []fspec{{24, 24, true}, {0, 24, true}, {8, 32, true}, {48, 24, false}}},
			{"two-different-ends", v6, 64, []fspec{{48, 24, false}, {0, 24, true}, {48, 16, false}, {24, 24, true}}},
			{"data-past-the-end", v6, 64, []fspec{{48, 24, false}, {72, 8, true}, {0, 24, true}, {24, 24, true}}},
			{"zero-length", v6, 64, []fspec{{0, 24, true}, {24, 0, true}, {24, 24, true}, {48, 24, false}}},
			{"sent-twice", v6, 64, []fspec{{0, 24, true}, {24, 24, true}, {48, 24, false}, {0, 24, true}, {24, 24, true}, {48, 24, false}}},
			{"overlap-after-completion", v6, 64, []fspec{{0, 24, true}, {24, 48, false}, {16, 16, true}}},
			{"covering-fragment", v6, 64, []fspec{{24, 8, true}, {16, 24, true}, {0, 16, true}, {40, 32, false}}},
			{"last-padded-past-udp-length", v6, 64, []fspec{{0, 32, true}, {32, 48, false}}},
		}
		if !v6 {
			hand = append(hand,
				dcase{"trimmed-non-last", v6, 64, []fspec{{0, 20, true}, {16, 40, true}, {56, 16, false}}},
				dcase{"trimmed-leaves-a-gap", v6, 64, []fspec{{0, 20, true}, {24, 48, false}}},
				dcase{"trimmed-to-zero", v6, 64, []fspec{{0, 24, true}, {24, 5, true}, {24, 48, false}}},
			)
		}
		cs = append(cs, hand...)
	}
	r := rand.New(rand.NewPCG(11, 12))
	for i := 0; i < 400; i++ {
		v6 := i%2 == 1
		size := 8 + r.IntN(300)
		total := 8 + size
		k := 2 + r.IntN(7)
		c := dcase{name: fmt.Sprintf("random-%d", i), v6: v6, size: size}
		for j := 0; j < k; j++ {
			off := 8 * r.IntN((total+7)/8)
			if j == 0 && r.IntN(2) == 0 {
				off = 0
			}
			var f fspec
			if r.IntN(4) == 0 {
				// A last fragment ends at (or, padded, past) the end.
				f = fspec{off, total - off + 8*r.IntN(2), false}
			} else {
				n := r.IntN(total - off + 16)
				if v6 {
					n = 8 * (1 + r.IntN((total-off+15)/8))
				}
				f = fspec{off, n, true}
			}
			if v6 && f.off == 0 && f.n < 8 {
				f.n = 8
			}
			if v6 && f.off == 0 && !f.more {
				// An atomic fragment: see the doc comment.
				f.more = true
				f.n = 8 * max(1, f.n/8)
			}
			c.frags = append(c.frags, f)
		}
		cs = append(cs, c)
	}
	// Complete sets (a random partition, shuffled) with a random extra
	// piece inserted somewhere: a duplicate, a piece inside or across
	// earlier ones, or a piece past the end.
	for i := 0; i < 600; i++ {
		v6 := i%2 == 1
		size := 8 + r.IntN(400)
		total := 8 + size
		c := dcase{name: fmt.Sprintf("partition-%d", i), v6: v6, size: size}
		var cuts []int
		for off := 0; off < total; {
			n := 8 * (1 + r.IntN(12))
			if off+n >= total {
				n = total - off
				if off == 0 { // never the whole datagram in one piece
					n = 8 * ((total - 1) / 8)
				}
			}
			cuts = append(cuts, off)
			c.frags = append(c.frags, fspec{off, n, off+n < total})
			off += n
		}
		r.Shuffle(len(c.frags), func(a, b int) { c.frags[a], c.frags[b] = c.frags[b], c.frags[a] })
		if r.IntN(4) != 0 {
			off := cuts[r.IntN(len(cuts))]
			if r.IntN(2) == 0 {
				off = 8 * r.IntN((total+7)/8)
			}
			n := 8 * (1 + r.IntN(6))
			extra := fspec{off, n, true}
			if off+n >= total {
				extra = fspec{off, total - off, false}
			}
			if off == 0 && !extra.more {
				extra.more, extra.n = true, 8*max(1, (total-8)/8) // no atomic fragments
			}
			at := r.IntN(len(c.frags) + 1)
			c.frags = append(c.frags[:at], append([]fspec{extra}, c.frags[at:]...)...)
		}
		cs = append(cs, c)
	}
	return cs
}

func kernelChild(t *testing.T) {
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link: %v %s", err, out)
	}
	nft := exec.Command("nft", "-f", "-")
	nft.Stdin = strings.NewReader(kernelRules)
	if out, err := nft.CombinedOutput(); err != nil {
		t.Skipf("nft unavailable: %v %s", err, out)
	}
	// The incomplete datagrams of a thousand cases would exceed the
	// kernel's 4 MB reassembly memory (counted as socket buffer truesize)
	// and make it drop fragments of later cases; this namespace's limits
	// are raised so that only the reassembly rules are compared.
	for _, f := range []string{"/proc/sys/net/ipv4/ipfrag_high_thresh", "/proc/sys/net/netfilter/nf_conntrack_frag6_high_thresh"} {
		if err := os.WriteFile(f, []byte("268435456"), 0o644); err != nil {
			t.Fatalf("raise %s: %v", f, err)
		}
	}
	var recv [2]*net.UDPConn
	for i, addr := range []string{"127.0.0.1", "::1"} {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(addr), Port: kernelUDPPort})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		recv[i] = c
	}
	raw4, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(raw4)
	raw6, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(raw6)

	cases := kernelCases()
	// Ours: how many times each case's datagram is reassembled, and that
	// it is the whole original datagram each time.
	ours := make([]int, len(cases))
	tb := defrag.New(defrag.Config{})
	for i := range cases {
		c := &cases[i]
		orig := c.base(i)
		for _, f := range c.fragments(i) {
			var p packet.Parsed
			p.Decode(f)
			whole, _, st := tb.AddStatus(&p, 0)
			if st == defrag.NotFragment {
				// Offset 0 without MF (for IPv6 an atomic fragment): a
				// whole packet, which the pipeline tracks as it is.
				whole = f
			} else if st != defrag.Reassembled {
				continue
			}
			var w packet.Parsed
			w.Decode(whole)
			if w.Err != packet.ErrNone || !bytes.Equal(w.Payload(), orig[len(orig)-c.size:]) {
				t.Errorf("case %d %s: reassembled a wrong datagram (%v)", i, c.name, w.Err)
			}
			ours[i]++
		}
	}
	// The kernel's: send a batch of cases, then count what arrives (in
	// batches, so that the receive buffers never overflow).
	kernel := make([]int, len(cases))
	buf := make([]byte, 70000)
	drain := func() {
		for fam, c := range recv {
			for {
				c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				n, _, err := c.ReadFromUDP(buf)
				if err != nil {
					break
				}
				if n < 4 {
					t.Errorf("short datagram")
					continue
				}
				i := int(binary.BigEndian.Uint32(buf))
				if i >= len(cases) || cases[i].v6 != (fam == 1) {
					t.Errorf("datagram of unknown case %d", i)
					continue
				}
				if orig := cases[i].base(i); !bytes.Equal(buf[:n], orig[len(orig)-cases[i].size:]) {
					t.Errorf("case %d: the kernel delivered different data", i)
				}
				kernel[i]++
			}
		}
	}
	for i := range cases {
		c := &cases[i]
		for _, f := range c.fragments(i) {
			var err error
			if c.v6 {
				err = syscall.Sendto(raw6, f, 0, &syscall.SockaddrInet6{Addr: [16]byte{15: 1}})
			} else {
				err = syscall.Sendto(raw4, f, 0, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
			}
			// EPERM: netfilter dropped the fragment on output (nf_defrag
			// refused it), which is an outcome, not a failure.
			if err != nil && err != syscall.EPERM {
				t.Fatalf("case %d: send: %v", i, err)
			}
		}
		if i%32 == 31 || i == len(cases)-1 {
			drain()
		}
	}
	mismatches, delivered := 0, 0
	for i := range cases {
		delivered += kernel[i]
		if ours[i] != kernel[i] {
			mismatches++
			t.Errorf("case %d %s (v6=%v, %d bytes, fragments %v): kernel delivered %d, we reassembled %d",
				i, cases[i].name, cases[i].v6, cases[i].size, cases[i].frags, kernel[i], ours[i])
		}
	}
	t.Logf("%d cases, %d datagrams delivered by the kernel, %d mismatches", len(cases), delivered, mismatches)
}
