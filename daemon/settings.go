package daemon

import (
	"errors"
	"net/netip"

	"github.com/tunrouter/router/config"
	"github.com/tunrouter/router/defrag"
	"github.com/tunrouter/router/helpers/ftp"
	"github.com/tunrouter/router/pipeline"
	"github.com/tunrouter/router/tundev"
)

// LoadSettings reads a configuration file and resolves it into Settings;
// it is the daemon's Loader. The error lists every problem with its
// file:line:column.
func LoadSettings(path string) (*Settings, []string, error) {
	c, err := config.Load(path)
	var warns []string
	if c != nil {
		for _, w := range c.Warnings {
			warns = append(warns, w.String())
		}
	}
	if err != nil {
		return nil, warns, err
	}
	s, err := FromConfig(c)
	return s, warns, err
}

// FromConfig maps a loaded configuration onto Settings.
func FromConfig(c *config.Config) (*Settings, error) {
	if c == nil {
		return nil, errors.New("no configuration")
	}
	workers := c.Router.Workers
	if workers <= 0 {
		workers = pipeline.DefaultWorkers()
	}
	s := &Settings{
		Workers:       c.Router.Workers,
		PinCPUs:       c.Router.PinCPUs,
		Conntrack:     c.Conntrack,
		Rules:         c.Filter,
		ControlSocket: c.Router.ControlSocket,
		QueueDepth:    c.Router.QueueDepth,
		StateFile:     c.Router.StateFile,
		Defrag: defrag.Config{MaxBytes: c.Defrag.MaxBytes, MaxDatagrams: c.Defrag.MaxDatagrams,
			Timeout: c.Defrag.Timeout, Timeout6: c.Defrag.Timeout6},
	}
	if c.Router.Trace {
		s.TraceFile = c.Router.TraceFile
		if s.TraceFile == "" {
			s.TraceFile = "-"
		}
	}
	// The FTP helper exists whenever rules or ports can attach it.
	s.FTP = &ftp.Config{Loose: c.FTP.Loose, ExpectTimeout: c.ExpectTimeout, MaxExpected: c.FTP.MaxExpected}

	explicit := map[netip.Prefix]bool{}
	for _, r := range c.Routes {
		explicit[r.To] = true
		s.Routes = append(s.Routes, Route{Prefix: r.To, Device: r.Device})
	}
	// Default queues per TUN device: enough for one reader per worker
	// over all the TUN devices (a reader runs the workers of what it
	// reads); more readers than workers only add wake-ups and migrations
	// (BENCHMARKS.md: on 2 CPUs and 2 devices one queue each beats two).
	tuns := 0
	for _, d := range c.Devices {
		if d.Egress == nil {
			tuns++
		}
	}
	autoQueues := 1
	if tuns > 0 {
		autoQueues = max(1, (workers+tuns-1)/tuns)
	}
	for _, d := range c.Devices {
		if d.Egress != nil {
			e := egressSettings(c, d, workers)
			s.Devices = append(s.Devices, Device{Config: tundev.Config{Name: d.Name, MTU: e.MTU}, Egress: e})
			for _, r := range egressRoutes(d.Name, e) {
				if !explicit[r.Prefix] {
					explicit[r.Prefix] = true
					s.Routes = append(s.Routes, r)
				}
			}
			continue
		}
		queues := d.Queues
		if queues <= 0 {
			queues = autoQueues
		}
		if d.FD != 0 || d.LauncherSocket != "" {
			queues = 1
		}
		queues = min(queues, tundev.MaxQueues)
		dev := Device{Config: tundev.Config{
			Name:      d.Name,
			Netns:     d.Netns,
			MTU:       d.MTU,
			Addresses: d.Addresses,
			Routes:    d.NSRoutes,
			Queues:    queues,
			NoOffload: !d.Offload,
			FD:        d.FD,
			Up:        true,
		}, LauncherSocket: d.LauncherSocket}
		for _, a := range d.RouterAddrs {
			if a.Is4() && !dev.Addr4.IsValid() {
				dev.Addr4 = a
			}
			if a.Is6() && !dev.Addr6.IsValid() {
				dev.Addr6 = a
			}
			s.LocalAddrs = append(s.LocalAddrs, a)
		}
		s.Devices = append(s.Devices, dev)
		// Connected networks route to their device.
		for _, p := range d.Addresses {
			m := p.Masked()
			if !explicit[m] {
				explicit[m] = true
				s.Routes = append(s.Routes, Route{Prefix: m, Device: d.Name})
			}
		}
	}
	return s, nil
}
