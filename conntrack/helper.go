package conntrack

import "github.com/tunrouter/router/packet"

// ConnID identifies a connection entry for its whole life, across workers:
// the control plane deletes by it, an expected connection names its master
// by it, and expectations are removed with their master by it. Zero is no
// connection.
type ConnID uint64

// Helper is an application-level gateway (ALG) attached to connections by
// configuration (like nft's "ct helper set"): the FTP helper reads PORT,
// EPRT, 227 and 229 and announces the data connection as an expectation.
// Helpers live in their own packages (helpers/ftp) and import conntrack,
// never the reverse, so that new ones (TFTP, SIP, IRC) need no change here.
//
// Help is called on the owning worker's goroutine for each packet of a
// connection the helper is attached to, after the filter accepted the
// packet and before it is written, for every ctinfo except RELATED_REPLY
// (as the kernel does); the helper itself decides which packets it looks at.
// It must not retain h or h.Packet after returning, and must not allocate
// per packet on its common path.
type Helper interface {
	Name() string
	Help(h *HelperContext) HelperResult
}

// HelperContext is what a helper sees of one packet and its connection.
type HelperContext struct {
	Packet *packet.Parsed
	Info   CtInfo
	Now    int64 // nanoseconds, the pipeline's clock

	ConnID ConnID
	// Tuples of the connection: Tuple[Original] and Tuple[Reply].
	Tuple [2]packet.FlowKey
	// State is the helper's per-connection state, kept with the entry and
	// freed with it; it starts as nil.
	State *any
	// Expect is the shared expectation table.
	Expect *Expectations
}

// HelperResult is a helper's verdict on a packet.
type HelperResult struct {
	Drop bool
	// Why says why the packet was dropped ("ftp: partial PORT command");
	// a constant string, shown in traces and logs and used as a counter
	// label.
	Why string
}
