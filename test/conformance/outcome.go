package conformance

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
)

// Outcome is what one runner observed for one packet.
type Outcome struct {
	Delivered bool   // the packet came out on the other link
	State     string // ct state (StateNew, ...), StateNone if conntrack never saw it
	Reason    string // why it is INVALID, in the runner's own words ("" if unknown)
	Detail    string // verdict and extras, for the report
}

// Short renders the compared part: "delivered established" or "dropped invalid".
func (o Outcome) Short() string {
	d := "dropped"
	if o.Delivered {
		d = "delivered"
	}
	return d + " " + o.State
}

// ident identifies a packet on the wire: its mark (IPv4 ID or IPv6 flow
// label), addresses and protocol number. Routers change the TTL and
// checksums but none of these.
type ident struct {
	mark     uint32
	src, dst netip.Addr
	proto    uint8
}

func identOf(b []byte) (ident, bool) {
	src, dst, ok := ipAddrs(b)
	if !ok {
		return ident{}, false
	}
	m, _ := markOf(b)
	id := ident{mark: m, src: src, dst: dst}
	if b[0]>>4 == 4 {
		id.proto = b[9]
	} else {
		id.proto = b[6]
	}
	return id, true
}

func (id ident) String() string {
	return fmt.Sprintf("%v->%v proto %d mark %#x", id.src, id.dst, id.proto, id.mark)
}

// payloadSame reports whether a captured packet carries the same transport
// bytes as the injected one (it checks the router did not rewrite the
// packet beyond TTL, checksums... it compares everything after the IP
// header except for IPv4's TTL/checksum and IPv6's hop limit).
func payloadSame(sent, got []byte) bool {
	if len(sent) != len(got) || len(sent) < 20 {
		return false
	}
	a, b := bytes.Clone(sent), bytes.Clone(got)
	if a[0]>>4 == 4 {
		a[8], b[8] = 0, 0
		a[10], a[11], b[10], b[11] = 0, 0, 0, 0
	} else if len(a) >= 40 {
		a[7], b[7] = 0, 0
	}
	return bytes.Equal(a, b)
}

// describe summarises a packet for the report.
func describe(b []byte) string {
	src, dst, ok := ipAddrs(b)
	if !ok {
		return fmt.Sprintf("%d bytes", len(b))
	}
	return fmt.Sprintf("%v -> %v (%d bytes)", src, dst, len(b))
}

func joinNonEmpty(sep string, parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, sep)
}
