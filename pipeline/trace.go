package pipeline

import (
	"strconv"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter"
	"github.com/tunrouter/router/packet"
)

// TraceRecord describes what happened to one packet. The pipeline fills it
// only when a Tracer is configured (tracing is off by default).
type TraceRecord struct {
	Time    int64 // the pipeline's clock, ns
	Worker  int
	In, Out int // port indexes (-1: none)
	Packet  *packet.Parsed
	Ct      conntrack.CtInfo
	Reason  conntrack.Reason // INVALID reason
	Status  conntrack.Status
	TCP     conntrack.TCPState
	Chain   filter.Chain
	Rule    int    // index of the deciding rule in Chain, -1 for the policy
	Verdict string // "accept", "drop", "reject", "drop: no route", ...
	Why     string // a helper's drop reason
}

// Tracer receives one record per packet, on the worker's goroutine. It
// must not retain the record or its packet.
type Tracer interface {
	Trace(w int, r *TraceRecord)
}

func (w *worker) traceDone(p *packet.Parsed, r conntrack.Result, verdict string) {
	t := &w.trace
	t.Worker = w.id
	t.Packet = p
	t.Ct = r.Info
	t.Reason = r.Reason
	t.Status = r.Status
	t.TCP = r.TCPState
	t.Verdict = verdict
	w.p.cfg.Tracer.Trace(w.id, t)
}

// AppendJSON appends the record as one JSON object (no newline), with the
// packet summarised: family, proto, addresses, ports, TCP flags, seq, ack,
// payload length, ICMP type and code, IP ID.
func (t *TraceRecord) AppendJSON(b []byte, ports []Port) []byte {
	p := t.Packet
	b = append(b, `{"t":`...)
	b = strconv.AppendInt(b, t.Time, 10)
	b = append(b, `,"worker":`...)
	b = strconv.AppendInt(b, int64(t.Worker), 10)
	b = append(b, `,"in":`...)
	b = appendPortName(b, ports, t.In)
	b = append(b, `,"out":`...)
	b = appendPortName(b, ports, t.Out)
	if p != nil && p.Family != 0 {
		b = append(b, `,"family":`...)
		b = strconv.AppendUint(b, uint64(p.Family), 10)
		b = append(b, `,"proto":"`...)
		b = append(b, p.Proto.String()...)
		b = append(b, `","src":"`...)
		b = p.Key.SrcAddr().AppendTo(b)
		b = append(b, `","dst":"`...)
		b = p.Key.DstAddr().AppendTo(b)
		b = append(b, '"')
		b = append(b, `,"len":`...)
		b = strconv.AppendInt(b, int64(p.Length), 10)
		b = append(b, `,"ipid":`...)
		b = strconv.AppendUint(b, uint64(p.IPID), 10)
		switch p.Proto {
		case packet.TCP, packet.UDP, packet.UDPLite, packet.SCTP:
			b = append(b, `,"sport":`...)
			b = strconv.AppendUint(b, uint64(p.SrcPort), 10)
			b = append(b, `,"dport":`...)
			b = strconv.AppendUint(b, uint64(p.DstPort), 10)
		case packet.ICMP, packet.ICMPv6:
			b = append(b, `,"icmp_type":`...)
			b = strconv.AppendUint(b, uint64(p.ICMPType), 10)
			b = append(b, `,"icmp_code":`...)
			b = strconv.AppendUint(b, uint64(p.ICMPCode), 10)
			b = append(b, `,"icmp_id":`...)
			b = strconv.AppendUint(b, uint64(p.ICMPID), 10)
		}
		if p.Proto == packet.TCP {
			b = append(b, `,"flags":"`...)
			b = append(b, p.TCPFlags.String()...)
			b = append(b, `","seq":`...)
			b = strconv.AppendUint(b, uint64(p.Seq), 10)
			b = append(b, `,"ack":`...)
			b = strconv.AppendUint(b, uint64(p.Ack), 10)
			b = append(b, `,"win":`...)
			b = strconv.AppendUint(b, uint64(p.Window), 10)
			b = append(b, `,"payload":`...)
			b = strconv.AppendInt(b, int64(p.PayloadLen()), 10)
		}
	}
	b = append(b, `,"ct":"`...)
	b = append(b, t.Ct.String()...)
	b = append(b, `","state":"`...)
	b = append(b, t.Ct.State().String()...)
	b = append(b, '"')
	if t.Reason != conntrack.ReasonNone {
		b = append(b, `,"reason":"`...)
		b = append(b, t.Reason.String()...)
		b = append(b, '"')
	}
	if t.Status != 0 {
		b = append(b, `,"status":"`...)
		b = append(b, t.Status.String()...)
		b = append(b, '"')
	}
	if p != nil && p.Proto == packet.TCP && t.Ct != conntrack.Invalid && t.Ct != conntrack.Untracked {
		b = append(b, `,"tcp_state":"`...)
		b = append(b, t.TCP.String()...)
		b = append(b, '"')
	}
	b = append(b, `,"chain":"`...)
	b = append(b, t.Chain.String()...)
	b = append(b, `","rule":`...)
	b = strconv.AppendInt(b, int64(t.Rule), 10)
	b = append(b, `,"verdict":`...)
	b = strconv.AppendQuote(b, t.Verdict)
	if t.Why != "" {
		b = append(b, `,"why":`...)
		b = strconv.AppendQuote(b, t.Why)
	}
	b = append(b, '}')
	return b
}

func appendPortName(b []byte, ports []Port, i int) []byte {
	if i < 0 || i >= len(ports) {
		return append(b, "null"...)
	}
	return strconv.AppendQuote(b, ports[i].Name)
}
