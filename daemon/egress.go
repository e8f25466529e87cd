package daemon

import (
	"fmt"
	"io"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/tunrouter/router/config"
	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/egress"
	"github.com/tunrouter/router/pipeline"
)

// egressSettings maps a kind = "egress" device of the configuration onto
// the egress package's configuration. Its timeouts follow conntrack's
// (UDP, UDP stream, ICMP, TCP FIN_WAIT); MTU 0 becomes the largest MTU of
// the other devices, so that whatever they carry fits.
func egressSettings(c *config.Config, d config.Device, workers int) *egress.Config {
	e := d.Egress
	ec := &egress.Config{
		Gateways:             e.Gateways,
		HostLoopback:         e.HostLoopback,
		DNS:                  e.DNS,
		DNSUpstream:          e.DNSUpstream,
		MTU:                  d.MTU,
		Queues:               d.Queues,
		MaxFlows:             e.MaxFlows,
		TCPBuffer:            e.TCPBuffer,
		SocketBuffer:         e.SocketBuffer,
		DialTimeout:          e.DialTimeout,
		UDPTimeout:           c.Conntrack.UDPTimeout,
		UDPStreamTimeout:     c.Conntrack.UDPStreamTimeout,
		ICMPTimeout:          c.Conntrack.ICMPTimeout,
		TCPHalfClosedTimeout: e.HalfClosedTimeout,
		NoPing:               !e.Ping,
	}
	if ec.TCPHalfClosedTimeout == 0 {
		ec.TCPHalfClosedTimeout = c.Conntrack.TCP.Timeouts[conntrack.TCPFinWait]
	}
	if ec.Queues <= 0 {
		ec.Queues = workers
	}
	ec.Queues = min(ec.Queues, 64)
	if ec.MTU == 0 {
		for _, o := range c.Devices {
			if o.Egress == nil {
				ec.MTU = max(ec.MTU, o.MTU)
			}
		}
		ec.MTU = min(max(ec.MTU, 1500), egress.MaxMTU)
	}
	for _, f := range e.Forwards {
		ec.Forwards = append(ec.Forwards, egress.Forward{Proto: f.Proto, Host: f.Host, Inside: f.Inside})
	}
	return ec
}

// egressRoutes are the host routes of an egress device's own addresses:
// they usually lie in the connected network of the TUN device inside,
// and must reach the egress instead.
func egressRoutes(name string, e *egress.Config) []Route {
	var rs []Route
	for _, a := range append(append([]netip.Addr{}, e.Gateways...), e.DNS...) {
		rs = append(rs, Route{Prefix: netip.PrefixFrom(a, a.BitLen()), Device: name})
	}
	return rs
}

// openEgress builds an egress device and its pipeline port.
func (d *Daemon) openEgress(dc Device) (pipeline.Port, io.Closer, error) {
	dev, err := egress.New(*dc.Egress, d.log)
	if err != nil {
		return pipeline.Port{}, nil, err
	}
	port := pipeline.Port{Name: dc.Name, MTU: dev.MTU()}
	for _, q := range dev.Queues() {
		port.Queues = append(port.Queues, q)
	}
	d.log.Info("egress device ready", "name", dc.Name, "gateways", fmt.Sprint(dc.Egress.Gateways),
		"host_loopback", dc.Egress.HostLoopback, "dns", fmt.Sprint(dc.Egress.DNS), "forwards", len(dc.Egress.Forwards),
		"mtu", dev.MTU(), "queues", len(port.Queues))
	return port, egressCloser{dev, d}, nil
}

// egressCloser logs the device's counters when it closes.
type egressCloser struct {
	dev *egress.Device
	d   *Daemon
}

func (c egressCloser) Close() error {
	err := c.dev.Close()
	st := c.dev.Stats()
	c.d.log.Info("egress device closed", "tcp_flows", st.TCPFlows, "udp_flows", st.UDPFlows,
		"ping_sessions", st.PingSessions, "forwarded", st.Forwarded, "refused", st.TCPRefused+st.UDPRefused,
		"dial_failed", st.TCPDialFailed, "flow_limit", st.FlowLimit, "bytes_to_host", st.BytesToHost,
		"bytes_from_host", st.BytesFromHost, "queue_full", st.QueueFull, "bad_checksum", st.BadChecksum)
	return err
}

// openSpecial opens the devices the TUN path does not handle: egress
// devices, TUN devices whose descriptor comes from a launcher
// (launcher_socket, or a namespace the router may not enter itself), and
// inherited descriptors an unprivileged router cannot configure. ok is
// false for an ordinary TUN device.
func (d *Daemon) openSpecial(dc Device) (port pipeline.Port, c io.Closer, ok bool, err error) {
	if dc.Egress != nil {
		port, c, err = d.openEgress(dc)
		return port, c, true, err
	}
	if dc.FD == 0 && (dc.LauncherSocket != "" || needsJoin(dc.Netns)) {
		port, c, err = d.openLaunched(dc)
		return port, c, true, err
	}
	if dc.FD != 0 && !hasCap(unix.CAP_NET_ADMIN) {
		port, c, err = adoptInherited(dc, d.log)
		if err == nil {
			d.log.Info("device ready (adopted, unprivileged)", "name", dc.Name, "fd", dc.FD, "mtu", port.MTU)
		}
		return port, c, true, err
	}
	return pipeline.Port{}, nil, false, nil
}
