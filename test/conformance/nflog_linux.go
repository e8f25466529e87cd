package conformance

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// A minimal nfnetlink_log (NFLOG) client: it binds groups and reads the
// prefix and the packet of every logged packet. The kernel runner uses it to
// learn, per packet, the ct state (a log rule per state after conntrack),
// the forward chain's verdict (a log rule per filter rule) and conntrack's
// own INVALID reasons (nf_conntrack_log_invalid, routed to nfnetlink_log
// group 0 through the per-namespace nf_log binding).

// Constants from <linux/netfilter/nfnetlink.h> and nfnetlink_log.h.
const (
	nfnlSubsysULOG = 4

	nfulnlMsgPacket = 0
	nfulnlMsgConfig = 1

	nfulaCfgCmd     = 1
	nfulaCfgMode    = 2
	nfulaCfgQThresh = 5
	nfulaCfgTimeout = 4

	nfulnlCfgCmdBind   = 1
	nfulnlCfgCmdPFBind = 3

	nfulnlCopyPacket = 2

	nfulaPayload = 9
	nfulaPrefix  = 10
)

// nflogMsg is one logged packet.
type nflogMsg struct {
	Group  uint16
	Prefix string
	Packet []byte
	At     time.Time
}

// nflog is a netlink socket bound to some NFLOG groups, in the namespace
// it was created in.
type nflog struct {
	fd     int
	seq    uint32
	closed atomic.Bool
	stop   chan struct{}
	done   chan struct{}
}

// openNflog opens an NFLOG socket in the calling thread's namespace and
// binds groups (each copying whole packets, delivered at once).
func openNflog(groups ...uint16) (*nflog, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("nflog socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("nflog bind: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	n := &nflog{fd: fd}
	for _, pf := range []uint8{unix.AF_INET, unix.AF_INET6} {
		// Binding the family is a no-op on current kernels, kept for
		// older ones.
		_ = n.config(pf, 0, nlAttr(nfulaCfgCmd, []byte{nfulnlCfgCmdPFBind}))
	}
	for _, g := range groups {
		if err := n.config(unix.AF_UNSPEC, g, nlAttr(nfulaCfgCmd, []byte{nfulnlCfgCmdBind})); err != nil {
			n.Close()
			return nil, fmt.Errorf("nflog bind group %d: %w", g, err)
		}
		mode := make([]byte, 6)
		binary.BigEndian.PutUint32(mode, 0xffff)
		mode[4] = nfulnlCopyPacket
		if err := n.config(unix.AF_UNSPEC, g, nlAttr(nfulaCfgMode, mode)); err != nil {
			n.Close()
			return nil, fmt.Errorf("nflog mode group %d: %w", g, err)
		}
		one := binary.BigEndian.AppendUint32(nil, 1)
		if err := n.config(unix.AF_UNSPEC, g, nlAttr(nfulaCfgQThresh, one)); err != nil {
			n.Close()
			return nil, fmt.Errorf("nflog qthresh group %d: %w", g, err)
		}
	}
	return n, nil
}

// Close stops the read loop (if one runs) and closes the socket.
func (n *nflog) Close() error {
	if n.closed.Swap(true) {
		return nil
	}
	if n.done != nil {
		close(n.stop)
		<-n.done
	}
	return unix.Close(n.fd)
}

// nlAttr encodes one netlink attribute (padded to 4 bytes).
func nlAttr(typ uint16, data []byte) []byte {
	l := 4 + len(data)
	b := make([]byte, (l+3)&^3)
	binary.NativeEndian.PutUint16(b[0:], uint16(l))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[4:], data)
	return b
}

// config sends one NFULNL_MSG_CONFIG request and waits for its ack.
func (n *nflog) config(family uint8, group uint16, attrs ...[]byte) error {
	n.seq++
	body := []byte{family, 0, byte(group >> 8), byte(group)}
	for _, a := range attrs {
		body = append(body, a...)
	}
	msg := make([]byte, 16, 16+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(16+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], nfnlSubsysULOG<<8|nfulnlMsgConfig)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], n.seq)
	msg = append(msg, body...)
	if err := unix.Sendto(n.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	for {
		m, _, err := unix.Recvfrom(n.fd, buf, 0)
		if err != nil {
			return err
		}
		for b := buf[:m]; len(b) >= 16; {
			l := int(binary.NativeEndian.Uint32(b))
			if l < 16 || l > len(b) {
				break
			}
			typ := binary.NativeEndian.Uint16(b[4:])
			seq := binary.NativeEndian.Uint32(b[8:])
			if typ == unix.NLMSG_ERROR && seq == n.seq && l >= 20 {
				if e := int32(binary.NativeEndian.Uint32(b[16:])); e != 0 {
					return unix.Errno(-e)
				}
				return nil
			}
			b = b[(l+3)&^3:]
		}
	}
}

// start runs the read loop on its own goroutine: every logged packet is
// sent on out, which is closed when Close stops the loop.
func (n *nflog) start(out chan<- nflogMsg) {
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	_ = unix.SetsockoptTimeval(n.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	n.done = make(chan struct{})
	n.stop = make(chan struct{})
	go n.readLoop(out)
}

func (n *nflog) readLoop(out chan<- nflogMsg) {
	defer close(n.done)
	defer close(out)
	buf := make([]byte, 1<<17)
	for !n.closed.Load() {
		m, _, err := unix.Recvfrom(n.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			if errors.Is(err, unix.ENOBUFS) {
				fmt.Fprintln(os.Stderr, "conformance: nflog: receive buffer overrun (messages lost)")
				continue
			}
			return
		}
		now := time.Now()
		for b := buf[:m]; len(b) >= 16; {
			l := int(binary.NativeEndian.Uint32(b))
			if l < 16 || l > len(b) {
				break
			}
			typ := binary.NativeEndian.Uint16(b[4:])
			if typ == nfnlSubsysULOG<<8|nfulnlMsgPacket && l >= 20 {
				msg := nflogMsg{At: now, Group: binary.BigEndian.Uint16(b[18:])}
				for a := b[20:l]; len(a) >= 4; {
					al := int(binary.NativeEndian.Uint16(a))
					at := binary.NativeEndian.Uint16(a[2:]) & 0x3fff
					if al < 4 || al > len(a) {
						break
					}
					v := a[4:al]
					switch at {
					case nfulaPrefix:
						if i := indexByte(v, 0); i >= 0 {
							v = v[:i]
						}
						msg.Prefix = string(v)
					case nfulaPayload:
						msg.Packet = append([]byte(nil), v...)
					}
					a = a[min((al+3)&^3, len(a)):]
				}
				select {
				case out <- msg:
				case <-n.stop:
					return
				}
			}
			b = b[min((l+3)&^3, len(b)):]
		}
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
