package egress

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunrouter/router/packet"
)

// isEchoRequest reports whether p is an unfragmented ICMP or ICMPv6 echo
// request with a plain IP header (the ping relay's input).
func isEchoRequest(p []byte) bool {
	switch {
	case len(p) >= 28 && p[0] == 0x45 && p[9] == 1:
		// No fragment offset and no more-fragments bit.
		return binary.BigEndian.Uint16(p[6:])&0x3fff == 0 && p[20] == packet.ICMPEchoRequest && p[21] == 0
	case len(p) >= 48 && p[0]>>4 == 6 && p[6] == 58:
		return p[40] == packet.ICMPv6EchoRequest && p[41] == 0
	}
	return false
}

// echo is a parsed echo request.
type echo struct {
	src, dst netip.Addr
	id, seq  uint16
	data     []byte // the payload after the 8-byte ICMP header
}

func parseEcho(p []byte) (e echo, ok bool) {
	if p[0]>>4 == 4 {
		total := int(binary.BigEndian.Uint16(p[2:]))
		if total < 28 || total > len(p) {
			return e, false
		}
		e.src = netip.AddrFrom4([4]byte(p[12:16]))
		e.dst = netip.AddrFrom4([4]byte(p[16:20]))
		m := p[20:total]
		e.id, e.seq, e.data = binary.BigEndian.Uint16(m[4:]), binary.BigEndian.Uint16(m[6:]), m[8:]
		return e, true
	}
	plen := int(binary.BigEndian.Uint16(p[4:]))
	if plen < 8 || 40+plen > len(p) {
		return e, false
	}
	e.src = netip.AddrFrom16([16]byte(p[8:24]))
	e.dst = netip.AddrFrom16([16]byte(p[24:40]))
	m := p[40 : 40+plen]
	e.id, e.seq, e.data = binary.BigEndian.Uint16(m[4:]), binary.BigEndian.Uint16(m[6:]), m[8:]
	return e, true
}

// buildEchoReply builds an echo reply from `from` to `to`.
func buildEchoReply(dst []byte, from, to netip.Addr, id, seq uint16, data []byte) []byte {
	if from.Is4() {
		n := 28 + len(data)
		b := dst[:n]
		clear(b[:28])
		b[0], b[8], b[9] = 0x45, 64, 1
		binary.BigEndian.PutUint16(b[2:], uint16(n))
		f, t := from.As4(), to.As4()
		copy(b[12:], f[:])
		copy(b[16:], t[:])
		packet.SetIPv4Checksum(b)
		m := b[20:]
		m[0] = packet.ICMPEchoReply
		binary.BigEndian.PutUint16(m[4:], id)
		binary.BigEndian.PutUint16(m[6:], seq)
		copy(m[8:], data)
		binary.BigEndian.PutUint16(m[2:], ^packet.Checksum(m, 0))
		return b
	}
	n := 48 + len(data)
	b := dst[:n]
	clear(b[:48])
	b[0], b[6], b[7] = 0x60, 58, 64
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(data)))
	f, t := from.As16(), to.As16()
	copy(b[8:], f[:])
	copy(b[24:], t[:])
	m := b[40:]
	m[0] = packet.ICMPv6EchoReply
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], data)
	sum := packet.PseudoHeaderSum(6, &f, &t, packet.ICMPv6, len(m))
	binary.BigEndian.PutUint16(m[2:], ^packet.Checksum(m, sum))
	return b
}

// pinger relays ICMP echo: requests to the egress's own addresses are
// answered at once; others go out through the host's unprivileged ping
// sockets (SOCK_DGRAM, IPPROTO_ICMP: allowed for the groups in
// net.ipv4.ping_group_range), one socket per client, destination and
// identifier, and the replies come back with the client's identifier.
type pinger struct {
	d *Device

	mu       sync.Mutex
	sessions map[pingKey]*pingSession
	closed   bool
	// deniedUntil: ping sockets were refused; don't try again before.
	deniedUntil time.Time
	warned      atomic.Bool
}

type pingKey struct {
	src, dst netip.Addr
	id       uint16
}

type pingSession struct {
	key  pingKey
	file *os.File
	rc   syscall.RawConn
	last atomic.Int64
}

// pingRetry is how long after the host refused a ping socket the relay
// tries again (it drops echo requests meanwhile).
const pingRetry = 5 * time.Second

func newPinger(d *Device) *pinger {
	return &pinger{d: d, sessions: map[pingKey]*pingSession{}}
}

// request handles one echo request from inside (called by Queue.Write).
func (pg *pinger) request(p []byte) {
	e, ok := parseEcho(p)
	if !ok {
		pg.d.st.pingDropped.Add(1)
		return
	}
	d := pg.d
	if d.isGateway(e.dst) || d.isDNS(e.dst) {
		var buf [MaxMTU]byte
		if 48+len(e.data) > len(buf) {
			return
		}
		d.sendRaw(buildEchoReply(buf[:], e.dst, e.src, e.id, e.seq, e.data))
		return
	}
	if !usableInside(e.dst) {
		d.st.pingDropped.Add(1)
		return
	}
	s := pg.session(pingKey{e.src, e.dst, e.id})
	if s == nil {
		d.st.pingDropped.Add(1)
		return
	}
	s.last.Store(time.Now().UnixNano())
	var hdr [8]byte
	hdr[0] = packet.ICMPEchoRequest
	if e.dst.Is6() {
		hdr[0] = packet.ICMPv6EchoRequest
	}
	binary.BigEndian.PutUint16(hdr[6:], e.seq)
	// The kernel sets the identifier (the socket's) and the checksum.
	s.rc.Write(func(fd uintptr) bool {
		unix.Writev(int(fd), [][]byte{hdr[:], e.data})
		return true
	})
}

// session returns the session for k, opening its socket if needed (nil if
// ping sockets are not allowed, or the flow limit is reached).
func (pg *pinger) session(k pingKey) *pingSession {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if pg.closed {
		return nil
	}
	if s := pg.sessions[k]; s != nil {
		return s
	}
	if time.Now().Before(pg.deniedUntil) {
		return nil
	}
	if !pg.d.acquire() {
		return nil
	}
	f, err := openPingSocket(k.dst)
	if err != nil {
		pg.d.release()
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EPROTONOSUPPORT) {
			pg.deniedUntil = time.Now().Add(pingRetry)
			if !pg.warned.Swap(true) {
				pg.d.log.Warn("egress: the host does not allow unprivileged ping sockets (sysctl net.ipv4.ping_group_range); ICMP echo to other hosts is not relayed", "err", err)
			}
		}
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		pg.d.release()
		return nil
	}
	s := &pingSession{key: k, file: f, rc: rc}
	s.last.Store(time.Now().UnixNano())
	id, ok := pg.d.register(func() { f.Close() })
	if !ok {
		f.Close()
		pg.d.release()
		return nil
	}
	pg.sessions[k] = s
	pg.d.st.pingSessions.Add(1)
	go func() {
		defer pg.d.unregister(id)
		defer pg.d.release()
		pg.readReplies(s)
		pg.mu.Lock()
		delete(pg.sessions, k)
		pg.mu.Unlock()
		f.Close()
	}()
	return s
}

// openPingSocket opens a ping socket connected to dst.
func openPingSocket(dst netip.Addr) (*os.File, error) {
	family, proto := unix.AF_INET, unix.IPPROTO_ICMP
	var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: dst.As4()}
	if dst.Is6() {
		family, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
		sa = &unix.SockaddrInet6{Addr: dst.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "ping "+dst.String()), nil
}

// readReplies passes the echo replies of a session to the client until it
// has been idle for ICMPTimeout or the device closes.
func (pg *pinger) readReplies(s *pingSession) {
	var buf [MaxMTU]byte
	var out [MaxMTU + 48]byte
	timeout := pg.d.cfg.ICMPTimeout
	for {
		s.file.SetReadDeadline(time.Unix(0, s.last.Load()).Add(timeout))
		n, err := s.file.Read(buf[:])
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, s.last.Load())) < timeout {
				continue
			}
			return
		}
		if n < 8 {
			continue
		}
		m := buf[:n]
		want := uint8(packet.ICMPEchoReply)
		if s.key.dst.Is6() {
			want = packet.ICMPv6EchoReply
		}
		if m[0] != want {
			continue
		}
		s.last.Store(time.Now().UnixNano())
		seq := binary.BigEndian.Uint16(m[6:])
		pg.d.sendRaw(buildEchoReply(out[:], s.key.dst, s.key.src, s.key.id, seq, m[8:]))
	}
}

func (pg *pinger) close() {
	pg.mu.Lock()
	pg.closed = true
	pg.mu.Unlock()
}
