package filter

import (
	"bufio"
	"os"
	"testing"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter/filtertest"
	"github.com/tunrouter/router/packet"
)

// kernelLogPackets are the packets whose kernel log lines are recorded in
// testdata/kernel_log.txt: each was written into a TUN device (tunlog0) in
// a private network namespace whose prerouting hook had the nft rule
// `log prefix "KLOG: "` (Linux 6.18, nf_log_all_netns=1); the lines are
// the kernel's, from dmesg, with the timestamp and trailing space removed.
// kernellog_linux_test.go (build tag klogtest) repeats the capture.
func kernelLogPackets() [][]byte {
	syn := filtertest.Build(filtertest.IP{Src: mustAddr("10.1.0.5"), Dst: mustAddr("192.0.2.10"), Proto: packet.TCP, TOS: 0xb8, DF: true, ID: 4321, TTL: 63},
		filtertest.Segment(filtertest.TCPHeader{SrcPort: 40000, DstPort: 22, Flags: packet.SYN | packet.ECE | packet.CWR, Window: 29200, Reserved: 1, Urgent: 5}, nil))
	ptb6 := filtertest.ICMPError("2001:db8::1", "fd00:1::5", packet.ICMPv6PacketTooBig, 0, 1280, tcpSyn6)
	frag6 := filtertest.Build(filtertest.IP{Src: mustAddr("fd00:1::5"), Dst: mustAddr("2001:db8::53"), Proto: packet.UDP, MF: true, ID: 0x1234},
		filtertest.Datagram(5000, 53, make([]byte, 10)))
	param6 := filtertest.ICMPError("2001:db8::1", "fd00:1::5", 4, 0, 40, udp6)
	redirect4 := filtertest.ICMPError("192.0.2.1", "10.1.0.5", 5, 1, 0xc0000263, tcpSyn4)
	firstFrag4 := filtertest.Build(filtertest.IP{Src: mustAddr("10.1.0.5"), Dst: mustAddr("192.0.2.10"), Proto: packet.UDP, MF: true, ID: 77},
		filtertest.Datagram(1, 2, make([]byte, 16)))
	timestamp := filtertest.ICMP("10.1.0.5", "192.0.2.1", 13, 0, 1, 2)
	return [][]byte{syn, tcpAck4, udp6, echo4, unreach4, ptb6, frag4, frag6, gre4, sctp4, echo6, param6, redirect4, firstFrag4, timestamp}
}

// TestLogMatchesKernel compares AppendLogLine with what the kernel's LOG
// code printed for the same packets.
func TestLogMatchesKernel(t *testing.T) {
	f, err := os.Open("testdata/kernel_log.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var want []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		want = append(want, sc.Text())
	}
	pkts := kernelLogPackets()
	if len(want) != len(pkts) {
		t.Fatalf("%d kernel lines for %d packets", len(want), len(pkts))
	}
	for i, p := range pkts {
		got := string(AppendLogLine(nil, "KLOG: ", "tunlog0", "", &Packet{P: filtertest.Decode(p), Ct: conntrack.New}, false))
		if got != want[i] {
			t.Errorf("packet %d:\n ours   %q\n kernel %q", i, got, want[i])
		}
	}
}
