package conntrack

import (
	"time"

	"github.com/tunrouter/router/packet"
)

// fastEstablished is the tracker's steady state, decided without the
// general machinery: an ACK (with or without data and PSH, ECE, CWR) of an
// ESTABLISHED connection whose both directions are initialised, that
// passes the four window bounds. For such a packet the transition table
// keeps ESTABLISHED, no special case of 2.6 applies, and tcp_in_window
// accepts it; this function applies exactly the updates inWindow and commit
// would (window data, retransmission count, last packet, timeout choice)
// and returns the new timeout.
//
// Anything else — another state or flag, a first packet from one side, a
// failed bound (ignored, invalid, overshoot, liberal), an entry without
// SEEN_REPLY and ASSURED or with a fixed timeout (the caller checks those),
// a sequence adjustment — returns ok false having changed nothing, and the
// general tracker decides. TestTCPFastPathAgrees holds the two together.
func (c *tcpConn) fastEstablished(p *packet.Parsed, dir Dir, cfg *TCPConfig) (timeout time.Duration, ok bool) {
	if c.state != TCPEstablished || p.TCPFlags&^(packet.PSH|packet.ECE|packet.CWR) != packet.ACK || dir > Reply {
		return 0, false
	}
	sender := &c.dir[dir]
	receiver := &c.dir[dir^1]
	if sender.maxwin == 0 {
		return 0, false
	}
	seq, ack := p.Seq, p.Ack
	end := seq + uint32(p.PayloadLen())
	sack := ack
	if receiver.flags&tcpFlagSACKPerm != 0 {
		o := &p.TCPOpts
		for i := 0; i < int(o.NumSACK) && i < len(o.SACK); i++ {
			if r := o.SACK[i][1]; seqAfter(r, sack) {
				sack = r
			}
		}
	}
	// The bounds, in the kernel's order (I, III, II, IV); any failure goes
	// to the general path.
	if !seqBefore(seq, sender.maxend+1) || !seqBefore(sack, receiver.end+1) ||
		receiver.maxwin != 0 && !seqAfter(end, sender.end-receiver.maxwin-1) ||
		!seqAfter(sack, receiver.end-sender.maxAckWindow()-1) {
		return 0, false
	}

	// In window: the same updates as the general tracker.
	c.accepted(dir, seq, ack, sack, end, uint32(p.Window)<<sender.scale, p.Window, true, true)

	// Commit (2.8): the state stays ESTABLISHED.
	c.lastIndex = tcpAckSet
	c.lastDir = dir
	t := cfg.Timeouts[TCPEstablished]
	switch {
	case int(c.retrans) >= cfg.MaxRetrans && t > cfg.TimeoutRetrans:
		return cfg.TimeoutRetrans, true
	case (c.dir[0].flags|c.dir[1].flags)&tcpFlagDataUnack != 0 && t > cfg.TimeoutUnack:
		return cfg.TimeoutUnack, true
	case c.lastWin == 0 && t > cfg.TimeoutRetrans:
		return cfg.TimeoutRetrans, true
	}
	return t, true
}
