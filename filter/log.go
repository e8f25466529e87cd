package filter

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"

	"github.com/tunrouter/router/conntrack"
)

// logState serialises the "messages suppressed" summaries.
type logState struct {
	mu       sync.Mutex
	reported uint64 // suppressed messages already summarised
}

// logRule writes a rule's log line, or counts it as suppressed when the
// rate limit is exceeded (no allocation on that path).
func (rs *Ruleset) logRule(c Chain, r *rule, pkt *Packet, worker int) {
	if rs.logLim != nil && !rs.logLim.AllowN(rs.now(), 1) {
		if uint(worker) < uint(rs.workers) {
			s := &rs.suppress[worker]
			s.n.Store(s.n.Load() + 1)
		} else {
			rs.suppress[rs.workers].n.Add(1)
		}
		return
	}
	lg := rs.log()
	rs.summarize(lg)
	line := rs.AppendLog(make([]byte, 0, 256), c, r.logPrefix, pkt)
	lg.LogAttrs(context.Background(), r.logLevel, string(line),
		slog.String("chain", c.String()), slog.Int("rule", r.pos), slog.String("action", r.action.String()))
}

func (rs *Ruleset) log() *slog.Logger {
	if rs.logger != nil {
		return rs.logger
	}
	return slog.Default()
}

// LogSuppressed returns how many log lines the rate limit suppressed so
// far.
func (rs *Ruleset) LogSuppressed() uint64 {
	var n uint64
	for i := range rs.suppress {
		n += rs.suppress[i].n.Load()
	}
	return n
}

// FlushLogSummary writes the "N log messages suppressed" line if messages
// were suppressed since the last summary. Eval writes it before the next
// line it lets through; the daemon may also call this periodically so that
// the summary of a flood that stopped is not held back.
func (rs *Ruleset) FlushLogSummary() { rs.summarize(rs.log()) }

func (rs *Ruleset) summarize(lg *slog.Logger) {
	total := rs.LogSuppressed()
	st := rs.logState
	st.mu.Lock()
	n := total - st.reported
	st.reported = total
	st.mu.Unlock()
	if n > 0 {
		lg.LogAttrs(context.Background(), slog.LevelWarn, "filter: "+strconv.FormatUint(n, 10)+" log messages suppressed",
			slog.Uint64("suppressed", n))
	}
}

// AppendLog appends the log line for pkt as AppendLogLine does, naming the
// interfaces by the ruleset's interface list. The ct fields are printed
// except in the prerouting chain (which runs before tracking).
func (rs *Ruleset) AppendLog(dst []byte, c Chain, prefix string, pkt *Packet) []byte {
	if pkt == nil {
		pkt = &nilPacket
	}
	return AppendLogLine(dst, prefix, rs.ifname(pkt.IIf), rs.ifname(pkt.OIf), pkt, c != Prerouting)
}

func (rs *Ruleset) ifname(i int) string {
	if i < 0 || i >= len(rs.ifnames) {
		return ""
	}
	return rs.ifnames[i]
}

// AppendLogLine appends one log line for pkt in the key=value format of the
// kernel's LOG target (nf_log_syslog), without MAC decoding, TCP sequence
// numbers, options or UID, which the kernel prints only on request:
//
//	<prefix>IN=<in> OUT=<out> MAC= SRC=... DST=... LEN= TOS=0x00 PREC=0x00 TTL= ID= DF PROTO=TCP SPT= DPT= WINDOW= RES=0x00 SYN URGP=0
//
// ("MAC=" only when there is an input interface; IPv6 has LEN= TC=
// HOPLIMIT= FLOWLBL= and prints addresses uncompressed as the kernel
// does; ICMP errors show the quoted packet in brackets). When ct is true
// the conntrack fields follow: CT=<ctinfo> and, for INVALID packets,
// REASON="<reason>". The trailing space of the kernel's lines is dropped.
// It allocates only to grow dst.
func AppendLogLine(dst []byte, prefix, in, out string, pkt *Packet, ct bool) []byte {
	start := len(dst)
	dst = append(dst, prefix...)
	dst = append(dst, "IN="...)
	dst = append(dst, in...)
	dst = append(dst, " OUT="...)
	dst = append(dst, out...)
	dst = append(dst, ' ')
	if in != "" {
		dst = append(dst, "MAC= "...)
	}
	if pkt == nil {
		pkt = &nilPacket
	}
	if pkt.P != nil {
		b := pkt.P.Buf()
		switch {
		case len(b) > 0 && b[0]>>4 == 4:
			dst = appendIPv4(dst, b, 0, true)
		case len(b) > 0 && b[0]>>4 == 6:
			dst = appendIPv6(dst, b, 0, true)
		default:
			dst = append(dst, "TRUNCATED "...)
		}
	}
	if ct {
		dst = append(dst, "CT="...)
		dst = append(dst, pkt.Ct.String()...)
		dst = append(dst, ' ')
		if pkt.Ct == conntrack.Invalid && pkt.Reason != conntrack.ReasonNone {
			dst = append(dst, `REASON="`...)
			dst = append(dst, pkt.Reason.String()...)
			dst = append(dst, `" `...)
		}
	}
	if len(dst) > start && dst[len(dst)-1] == ' ' {
		dst = dst[:len(dst)-1]
	}
	return dst
}

func appendUint(dst []byte, v uint64) []byte { return strconv.AppendUint(dst, v, 10) }

const hexUpper = "0123456789ABCDEF"
const hexLower = "0123456789abcdef"

func appendHex2(dst []byte, v uint8, digits string) []byte {
	return append(dst, '0', 'x', digits[v>>4], digits[v&15])
}

func appendHex32(dst []byte, v uint32, width int) []byte {
	var buf [8]byte
	for i := 7; i >= 0; i-- {
		buf[i] = hexLower[v&15]
		v >>= 4
	}
	if width == 0 {
		i := 0
		for i < 7 && buf[i] == '0' {
			i++
		}
		return append(dst, buf[i:]...)
	}
	return append(dst, buf[8-width:]...)
}

func appendIncomplete(dst []byte, n int) []byte {
	dst = append(dst, "INCOMPLETE ["...)
	dst = appendUint(dst, uint64(max(n, 0)))
	return append(dst, " bytes] "...)
}

func remaining(b []byte, off int) int {
	if off > len(b) {
		return 0
	}
	return len(b) - off
}

// appendAddr4 appends a dotted quad.
func appendAddr4(dst []byte, a []byte) []byte {
	return netip.AddrFrom4([4]byte(a[:4])).AppendTo(dst)
}

// appendAddr6Full appends an IPv6 address as eight groups of four hex
// digits, the form of the kernel's %pI6.
func appendAddr6Full(dst []byte, a []byte) []byte {
	for i := 0; i < 16; i += 2 {
		if i > 0 {
			dst = append(dst, ':')
		}
		dst = append(dst, hexLower[a[i]>>4], hexLower[a[i]&15], hexLower[a[i+1]>>4], hexLower[a[i+1]&15])
	}
	return dst
}

// icmpRequiredLen is the number of ICMP bytes the kernel wants before it
// prints a type's details.
var icmpRequiredLen = [19]int{0: 4, 3: 28, 4: 28, 5: 28, 8: 4, 11: 28, 12: 28, 13: 20, 14: 20, 17: 12, 18: 12}

func appendIPv4(dst, b []byte, off int, recurse bool) []byte {
	if remaining(b, off) < 20 {
		return append(dst, "TRUNCATED "...)
	}
	h := b[off:]
	dst = append(dst, "SRC="...)
	dst = appendAddr4(dst, h[12:16])
	dst = append(dst, " DST="...)
	dst = appendAddr4(dst, h[16:20])
	dst = append(dst, " LEN="...)
	dst = appendUint(dst, uint64(binary.BigEndian.Uint16(h[2:4])))
	dst = append(dst, " TOS="...)
	dst = appendHex2(dst, h[1]&0x1e, hexUpper)
	dst = append(dst, " PREC="...)
	dst = appendHex2(dst, h[1]&0xe0, hexUpper)
	dst = append(dst, " TTL="...)
	dst = appendUint(dst, uint64(h[8]))
	dst = append(dst, " ID="...)
	dst = appendUint(dst, uint64(binary.BigEndian.Uint16(h[4:6])))
	dst = append(dst, ' ')
	fo := binary.BigEndian.Uint16(h[6:8])
	if fo&0x8000 != 0 {
		dst = append(dst, "CE "...)
	}
	if fo&0x4000 != 0 {
		dst = append(dst, "DF "...)
	}
	if fo&0x2000 != 0 {
		dst = append(dst, "MF "...)
	}
	frag := fo&0x1fff != 0
	if frag {
		dst = append(dst, "FRAG:"...)
		dst = appendUint(dst, uint64(fo&0x1fff))
		dst = append(dst, ' ')
	}
	l4 := off + int(h[0]&0x0f)*4
	switch h[9] {
	case 6:
		dst = appendTCP(dst, b, l4, frag)
	case 17, 136:
		dst = appendUDP(dst, b, l4, frag, h[9] == 136)
	case 1:
		dst = append(dst, "PROTO=ICMP "...)
		if frag {
			break
		}
		n := remaining(b, l4)
		if n < 8 {
			dst = appendIncomplete(dst, n)
			break
		}
		ic := b[l4:]
		t, code := ic[0], ic[1]
		dst = append(dst, "TYPE="...)
		dst = appendUint(dst, uint64(t))
		dst = append(dst, " CODE="...)
		dst = appendUint(dst, uint64(code))
		dst = append(dst, ' ')
		if int(t) < len(icmpRequiredLen) && icmpRequiredLen[t] > 0 && n < icmpRequiredLen[t] {
			dst = appendIncomplete(dst, n)
			break
		}
		switch t {
		case 0, 8:
			dst = append(dst, "ID="...)
			dst = appendUint(dst, uint64(binary.BigEndian.Uint16(ic[4:6])))
			dst = append(dst, " SEQ="...)
			dst = appendUint(dst, uint64(binary.BigEndian.Uint16(ic[6:8])))
			dst = append(dst, ' ')
		case 12:
			dst = append(dst, "PARAMETER="...)
			dst = appendUint(dst, uint64(ic[4]))
			dst = append(dst, ' ')
		case 3, 4, 5, 11:
			if t == 5 {
				dst = append(dst, "GATEWAY="...)
				dst = appendAddr4(dst, ic[4:8])
				dst = append(dst, ' ')
			}
			if recurse {
				dst = append(dst, '[')
				dst = appendIPv4(dst, b, l4+8, false)
				dst = append(dst, "] "...)
			}
			if t == 3 && code == 4 {
				dst = append(dst, "MTU="...)
				dst = appendUint(dst, uint64(binary.BigEndian.Uint16(ic[6:8])))
				dst = append(dst, ' ')
			}
		}
	case 51:
		if frag {
			break
		}
		dst = append(dst, "PROTO=AH "...)
		if n := remaining(b, l4); n < 12 {
			dst = appendIncomplete(dst, n)
			break
		}
		dst = append(dst, "SPI=0x"...)
		dst = appendHex32(dst, binary.BigEndian.Uint32(b[l4+4:]), 0)
		dst = append(dst, ' ')
	case 50:
		dst = append(dst, "PROTO=ESP "...)
		if frag {
			break
		}
		if n := remaining(b, l4); n < 8 {
			dst = appendIncomplete(dst, n)
			break
		}
		dst = append(dst, "SPI=0x"...)
		dst = appendHex32(dst, binary.BigEndian.Uint32(b[l4:]), 0)
		dst = append(dst, ' ')
	default:
		dst = append(dst, "PROTO="...)
		dst = appendUint(dst, uint64(h[9]))
		dst = append(dst, ' ')
	}
	return dst
}

func appendTCP(dst, b []byte, off int, frag bool) []byte {
	dst = append(dst, "PROTO=TCP "...)
	if frag {
		return dst
	}
	n := remaining(b, off)
	if n < 20 {
		return appendIncomplete(dst, n)
	}
	t := b[off:]
	dst = append(dst, "SPT="...)
	dst = appendUint(dst, uint64(binary.BigEndian.Uint16(t[0:2])))
	dst = append(dst, " DPT="...)
	dst = appendUint(dst, uint64(binary.BigEndian.Uint16(t[2:4])))
	dst = append(dst, " WINDOW="...)
	dst = appendUint(dst, uint64(binary.BigEndian.Uint16(t[14:16])))
	// RES is the reserved bits above AE (the kernel left AE out of them
	// when it gave the bit a name).
	dst = append(dst, " RES="...)
	dst = appendHex2(dst, (t[12]&0x0e)<<2, hexLower)
	dst = append(dst, ' ')
	if t[12]&0x01 != 0 {
		dst = append(dst, "AE "...)
	}
	for _, f := range [...]struct {
		bit  uint8
		name string
	}{{0x80, "CWR "}, {0x40, "ECE "}, {0x20, "URG "}, {0x10, "ACK "}, {0x08, "PSH "}, {0x04, "RST "}, {0x02, "SYN "}, {0x01, "FIN "}} {
		if t[13]&f.bit != 0 {
			dst = append(dst, f.name...)
		}
	}
	dst = append(dst, "URGP="...)
	dst = appendUint(dst, uint64(binary.BigEndian.Uint16(t[18:20])))
	return append(dst, ' ')
}

func appendUDP(dst, b []byte, off int, frag, lite bool) []byte {
	if lite {
		dst = append(dst, "PROTO=UDPLITE "...)
	} else {
		dst = append(dst, "PROTO=UDP "...)
	}
	if frag {
		return dst
	}
	n := remaining(b, off)
	if n < 8 {
		return appendIncomplete(dst, n)
	}
	u := b[off:]
	dst = append(dst, "SPT="...)
	dst = appendUint(dst, uint64(binary.BigEndian.Uint16(u[0:2])))
	dst = append(dst, " DPT="...)
	dst = appendUint(dst, uint64(binary.BigEndian.Uint16(u[2:4])))
	dst = append(dst, " LEN="...)
	dst = appendUint(dst, uint64(binary.BigEndian.Uint16(u[4:6])))
	return append(dst, ' ')
}

func appendIPv6(dst, b []byte, off int, recurse bool) []byte {
	if remaining(b, off) < 40 {
		return append(dst, "TRUNCATED "...)
	}
	h := b[off:]
	w := binary.BigEndian.Uint32(h[0:4])
	dst = append(dst, "SRC="...)
	dst = appendAddr6Full(dst, h[8:24])
	dst = append(dst, " DST="...)
	dst = appendAddr6Full(dst, h[24:40])
	dst = append(dst, " LEN="...)
	dst = appendUint(dst, uint64(binary.BigEndian.Uint16(h[4:6]))+40)
	dst = append(dst, " TC="...)
	dst = appendUint(dst, uint64(w>>20&0xff))
	dst = append(dst, " HOPLIMIT="...)
	dst = appendUint(dst, uint64(h[7]))
	dst = append(dst, " FLOWLBL="...)
	dst = appendUint(dst, uint64(w&0xfffff))
	dst = append(dst, ' ')

	frag := false
	ptr := off + 40
	cur := h[6]
	for cur != 59 && isExtHeader(cur) {
		if remaining(b, ptr) < 2 {
			return append(dst, "TRUNCATED "...)
		}
		var hl int
		switch cur {
		case 44:
			dst = append(dst, "FRAG:"...)
			if remaining(b, ptr) < 8 {
				return append(dst, "TRUNCATED "...)
			}
			fo := binary.BigEndian.Uint16(b[ptr+2:])
			dst = appendUint(dst, uint64(fo&0xfff8))
			dst = append(dst, ' ')
			if fo&1 != 0 {
				dst = append(dst, "INCOMPLETE "...)
			}
			dst = append(dst, "ID:"...)
			dst = appendHex32(dst, binary.BigEndian.Uint32(b[ptr+4:]), 8)
			dst = append(dst, ' ')
			if fo&0xfff8 != 0 {
				frag = true
			}
			hl = 8
		case 0, 43, 60:
			if frag {
				return dst
			}
			hl = (int(b[ptr+1]) + 1) * 8
		case 51:
			hl = (int(b[ptr+1]) + 2) * 4
		default: // ESP: nothing readable after it
			return dst
		}
		cur = b[ptr]
		ptr += hl
	}
	switch cur {
	case 6:
		dst = appendTCP(dst, b, ptr, frag)
	case 17, 136:
		dst = appendUDP(dst, b, ptr, frag, cur == 136)
	case 58:
		dst = append(dst, "PROTO=ICMPv6 "...)
		if frag {
			break
		}
		n := remaining(b, ptr)
		if n < 8 {
			return appendIncomplete(dst, n)
		}
		ic := b[ptr:]
		t := ic[0]
		dst = append(dst, "TYPE="...)
		dst = appendUint(dst, uint64(t))
		dst = append(dst, " CODE="...)
		dst = appendUint(dst, uint64(ic[1]))
		dst = append(dst, ' ')
		switch t {
		case 128, 129:
			dst = append(dst, "ID="...)
			dst = appendUint(dst, uint64(binary.BigEndian.Uint16(ic[4:6])))
			dst = append(dst, " SEQ="...)
			dst = appendUint(dst, uint64(binary.BigEndian.Uint16(ic[6:8])))
			dst = append(dst, ' ')
		case 1, 2, 3, 4:
			if t == 4 {
				dst = append(dst, "POINTER="...)
				dst = appendHex32(dst, binary.BigEndian.Uint32(ic[4:8]), 8)
				dst = append(dst, ' ')
			}
			if recurse {
				dst = append(dst, '[')
				dst = appendIPv6(dst, b, ptr+8, false)
				dst = append(dst, "] "...)
			}
			if t == 2 {
				dst = append(dst, "MTU="...)
				dst = appendUint(dst, uint64(binary.BigEndian.Uint32(ic[4:8])))
				dst = append(dst, ' ')
			}
		}
	default:
		dst = append(dst, "PROTO="...)
		dst = appendUint(dst, uint64(cur))
		dst = append(dst, ' ')
	}
	return dst
}

// isExtHeader reports the IPv6 extension headers the kernel's logger walks
// (hop-by-hop, routing, fragment, ESP, AH, no-next, destination options).
func isExtHeader(h uint8) bool {
	switch h {
	case 0, 43, 44, 50, 51, 59, 60:
		return true
	}
	return false
}
