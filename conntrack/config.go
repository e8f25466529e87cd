package conntrack

import (
	"fmt"
	"time"
)

// Config holds conntrack's tunables, with the names and defaults of the
// Linux sysctls (net.netfilter.nf_conntrack_*). DefaultConfig returns the
// kernel's defaults.
type Config struct {
	// Max is the maximum number of entries in one Table (nf_conntrack_max
	// divided among the pipeline's workers). 0 means unlimited.
	Max int
	// Checksum verifies transport checksums of packets before tracking
	// (nf_conntrack_checksum).
	Checksum bool

	TCP TCPConfig

	UDPTimeout       time.Duration // nf_conntrack_udp_timeout
	UDPStreamTimeout time.Duration // nf_conntrack_udp_timeout_stream
	ICMPTimeout      time.Duration // nf_conntrack_icmp_timeout
	ICMPv6Timeout    time.Duration // nf_conntrack_icmpv6_timeout
	GenericTimeout   time.Duration // nf_conntrack_generic_timeout

	// ExpectMax is the maximum number of pending expectations in the
	// shared expectation table (nf_conntrack_expect_max).
	ExpectMax int
}

// TCPConfig holds the TCP tracker's tunables.
type TCPConfig struct {
	Loose            bool // nf_conntrack_tcp_loose: pick up connections mid-stream
	BeLiberal        bool // nf_conntrack_tcp_be_liberal: window failures are not INVALID
	IgnoreInvalidRST bool // nf_conntrack_tcp_ignore_invalid_rst
	MaxRetrans       int  // nf_conntrack_tcp_max_retrans

	// Timeouts per state, indexed by TCPState (NONE unused), plus
	// TimeoutRetrans and TimeoutUnack.
	Timeouts       [numTCPStates]time.Duration
	TimeoutRetrans time.Duration // nf_conntrack_tcp_timeout_max_retrans
	TimeoutUnack   time.Duration // nf_conntrack_tcp_timeout_unacknowledged
}

// DefaultConfig returns the Linux defaults.
func DefaultConfig() Config {
	c := Config{
		Max:              262144,
		Checksum:         true,
		UDPTimeout:       30 * time.Second,
		UDPStreamTimeout: 120 * time.Second,
		ICMPTimeout:      30 * time.Second,
		ICMPv6Timeout:    30 * time.Second,
		GenericTimeout:   600 * time.Second,
		ExpectMax:        4096,
	}
	c.TCP = TCPConfig{
		Loose:          true,
		MaxRetrans:     3,
		TimeoutRetrans: 300 * time.Second,
		TimeoutUnack:   300 * time.Second,
	}
	c.TCP.Timeouts = [numTCPStates]time.Duration{
		TCPSynSent:     120 * time.Second,
		TCPSynRecv:     60 * time.Second,
		TCPEstablished: 432000 * time.Second,
		TCPFinWait:     120 * time.Second,
		TCPCloseWait:   60 * time.Second,
		TCPLastAck:     30 * time.Second,
		TCPTimeWait:    120 * time.Second,
		TCPClose:       10 * time.Second,
		TCPSynSent2:    120 * time.Second,
	}
	return c
}

// Validate reports the first nonsensical value.
func (c *Config) Validate() error {
	if c.Max < 0 {
		return fmt.Errorf("max entries %d is negative", c.Max)
	}
	if c.ExpectMax < 0 {
		return fmt.Errorf("expectation max %d is negative", c.ExpectMax)
	}
	if c.TCP.MaxRetrans < 0 || c.TCP.MaxRetrans > 255 {
		return fmt.Errorf("tcp max_retrans %d out of range 0..255", c.TCP.MaxRetrans)
	}
	check := func(name string, d time.Duration) error {
		if d <= 0 {
			return fmt.Errorf("timeout %s must be positive, not %v", name, d)
		}
		return nil
	}
	for s := TCPSynSent; s < numTCPStates; s++ {
		if err := check("tcp "+s.String(), c.TCP.Timeouts[s]); err != nil {
			return err
		}
	}
	for _, t := range []struct {
		n string
		d time.Duration
	}{
		{"tcp retrans", c.TCP.TimeoutRetrans}, {"tcp unacknowledged", c.TCP.TimeoutUnack},
		{"udp", c.UDPTimeout}, {"udp stream", c.UDPStreamTimeout}, {"icmp", c.ICMPTimeout},
		{"icmpv6", c.ICMPv6Timeout}, {"generic", c.GenericTimeout},
	} {
		if err := check(t.n, t.d); err != nil {
			return err
		}
	}
	return nil
}
