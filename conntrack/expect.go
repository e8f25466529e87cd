package conntrack

import (
	"errors"

	"github.com/tunrouter/router/packet"
)

// Expectation announces a connection that a helper expects (an FTP data
// connection): the tuple its first packet will have in the original
// direction, with the source address and/or port wildcarded.
type Expectation struct {
	Tuple       packet.FlowKey // expected original-direction tuple
	SrcAddrWild bool           // any source address matches
	SrcPortWild bool           // any source port matches (FTP: true)
	Master      ConnID         // the connection that announced it
	MasterTuple packet.FlowKey // the master's original tuple (for listings)
	Helper      string         // name of the helper that created it
	Class       uint8          // helper policy class (FTP: 0)
	Created     int64          // ns
	Expires     int64          // ns; never refreshed
}

// Errors returned by Expectations.Add.
var (
	ErrExpectClash     = errors.New("expectation clashes with another master's")
	ErrExpectTableFull = errors.New("expectation table full")
)

// Expectations is the expectation table shared by all workers (the data
// connection usually hashes to another worker than its master).
// TODO(ftp): implementation in progress.
type Expectations struct{}
