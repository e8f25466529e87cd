package conformance

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// pktSock is an AF_PACKET socket bound to one interface: it injects exact
// IP packets below the host stack (they leave through the interface as if
// the host had sent them, without passing its IP layer or netfilter) and
// captures the IP packets the interface receives.
type pktSock struct {
	fd      int
	ifindex int
	peerMAC net.HardwareAddr // destination MAC for injected frames (nil on TUN)
	closed  atomic.Bool
	stop    chan struct{}
	done    chan struct{}
}

// captured is one packet received on a pktSock's interface.
type captured struct {
	Packet []byte
	At     time.Time
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openPktSock opens the socket in the calling thread's namespace, on the
// interface named ifname. peer is the MAC address frames are sent to
// (Ethernet links) or nil (TUN).
func openPktSock(ifname string, peer net.HardwareAddr) (*pktSock, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("af_packet: %s: %w", ifname, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, fmt.Errorf("af_packet socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("af_packet bind %s: %w", ifname, err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	return &pktSock{fd: fd, ifindex: ifi.Index, peerMAC: peer}, nil
}

// send injects one IP packet (version taken from its first nibble).
func (s *pktSock) send(pkt []byte) error {
	proto := uint16(unix.ETH_P_IP)
	if len(pkt) > 0 && pkt[0]>>4 == 6 {
		proto = unix.ETH_P_IPV6
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: s.ifindex}
	if s.peerMAC != nil {
		sa.Halen = uint8(len(s.peerMAC))
		copy(sa.Addr[:], s.peerMAC)
	}
	return unix.Sendto(s.fd, pkt, 0, sa)
}

// start runs the capture loop: every packet the interface receives (not
// the ones it sends) goes to out, which is closed when the socket closes.
func (s *pktSock) start(out chan<- captured) {
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	_ = unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	s.stop = make(chan struct{})
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		defer close(out)
		buf := make([]byte, 65536+64)
		for !s.closed.Load() {
			n, from, err := unix.Recvfrom(s.fd, buf, 0)
			if err != nil {
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
					continue
				}
				return
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			c := captured{Packet: append([]byte(nil), buf[:n]...), At: time.Now()}
			select {
			case out <- c:
			case <-s.stop:
				return
			}
		}
	}()
}

// Close stops the capture loop and closes the socket.
func (s *pktSock) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.done != nil {
		close(s.stop)
		<-s.done
	}
	return unix.Close(s.fd)
}
