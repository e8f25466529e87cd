// Package daemon assembles the router from its settings: TUN devices,
// helpers, the compiled rule set, the pipeline, the trace writer and the
// control socket; it runs until told to stop, reloads the rules on SIGHUP
// and stops gracefully on SIGTERM.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"syscall"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/control"
	"github.com/tunrouter/router/defrag"
	"github.com/tunrouter/router/egress"
	"github.com/tunrouter/router/filter"
	"github.com/tunrouter/router/helpers/ftp"
	"github.com/tunrouter/router/pipeline"
	"github.com/tunrouter/router/tundev"
)

// Settings is everything the daemon needs, resolved from the
// configuration file.
type Settings struct {
	Devices []Device
	Routes  []Route
	Workers int
	PinCPUs bool

	Conntrack conntrack.Config
	// FTP configures the FTP helper; nil means the router has no FTP
	// helper (rules cannot attach it).
	FTP *ftp.Config
	// Rules is the rule set; the daemon fills Interfaces, Helpers and
	// Workers.
	Rules filter.Spec

	// LocalAddrs are the router's own addresses (input chain, ping).
	LocalAddrs []netip.Addr
	Defrag     defrag.Config

	// ControlSocket is the path of the control socket ("" for none).
	ControlSocket string
	// TraceFile, when set, receives one JSON line per packet ("-" for
	// standard error). Tracing costs: leave it off in production.
	TraceFile string
	// QueueDepth is the per-worker queue length in batches (0: default).
	QueueDepth int
	// SplitGSO: see pipeline.Config.SplitGSO (benchmarks, debugging).
	SplitGSO bool
	// StateFile, when set, is where the connections are saved on a
	// graceful stop and restored from on start, so that established
	// connections survive a restart.
	StateFile string
}

// Device is one TUN device and the router's addresses on its link.
type Device struct {
	tundev.Config
	// Addr4 and Addr6 are the source addresses of the ICMP errors the
	// router sends on this link (optional).
	Addr4, Addr6 netip.Addr
	// Egress, when set, makes this an egress device (package egress)
	// instead of a TUN device; of Config only Name is used.
	Egress *egress.Config
	// LauncherSocket: the TUN descriptor comes from `router tun-launch`
	// over this Unix socket (rootless; see launch_linux.go).
	LauncherSocket string
}

// Route sends a prefix to a device, by name.
type Route struct {
	Prefix netip.Prefix
	Device string
}

// Loader reads and validates a configuration file. Warnings are logged;
// an error (listing every problem with its file:line:column) aborts.
type Loader func(path string) (s *Settings, warnings []string, err error)

// Daemon is an assembled router.
type Daemon struct {
	path string
	load Loader
	log  *slog.Logger
	set  *Settings
	devs []*tundev.Device
	// devPorts[i] is the pipeline port of devs[i] (other kinds of device,
	// such as the egress, are ports too).
	devPorts []int
	others   []io.Closer // egress devices and TUN devices from launchers (egress.go)
	pipe     *pipeline.Pipeline
	ftp      *ftp.Helper
	ctl      *control.Server
	events   *control.EventHub
	trace    *traceWriter
	ifs      []string

	reloadMu sync.Mutex
}

// New loads the configuration and builds everything (devices are created
// here); Run starts it. On error nothing is left behind.
func New(path string, load Loader, log *slog.Logger) (*Daemon, error) {
	set, warns, err := load(path)
	if err != nil {
		return nil, err
	}
	for _, w := range warns {
		log.Warn("configuration", "warning", w)
	}
	d := &Daemon{path: path, load: load, log: log, set: set}
	if err := d.build(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Daemon) build() error {
	s := d.set
	if len(s.Devices) == 0 {
		return errors.New("no devices configured")
	}
	// Devices first: most setup errors (privileges, /dev/net/tun, names in
	// use) show up here.
	ports := make([]pipeline.Port, 0, len(s.Devices))
	index := map[string]int{}
	for i, dc := range s.Devices {
		if port, c, ok, err := d.openSpecial(dc); ok {
			if err != nil {
				return fmt.Errorf("device %s: %w", dc.Name, err)
			}
			d.others = append(d.others, c)
			ports = append(ports, port)
			index[dc.Name] = i
			d.ifs = append(d.ifs, dc.Name)
			continue
		}
		dev, err := tundev.Open(dc.Config)
		if err != nil {
			return fmt.Errorf("device %s: %w", dc.Name, err)
		}
		d.devs = append(d.devs, dev)
		d.devPorts = append(d.devPorts, len(ports))
		mtu, err := dev.MTU()
		if err != nil || mtu <= 0 {
			mtu = dc.MTU
		}
		qs := dev.Queues()
		port := pipeline.Port{Name: dev.Name(), MTU: mtu, Addr4: dc.Addr4, Addr6: dc.Addr6}
		for _, q := range qs {
			port.Queues = append(port.Queues, q)
		}
		ports = append(ports, port)
		index[dc.Name] = i
		d.ifs = append(d.ifs, dc.Name)
		d.log.Info("device ready", "name", dev.Name(), "netns", dc.Netns, "mtu", mtu,
			"queues", len(qs), "batch", dev.BatchSize())
	}
	var routes []pipeline.Route
	for _, r := range s.Routes {
		i, ok := index[r.Device]
		if !ok {
			return fmt.Errorf("route %v: unknown device %q", r.Prefix, r.Device)
		}
		routes = append(routes, pipeline.Route{Prefix: r.Prefix, Dev: i})
	}
	rt, err := pipeline.NewRoutes(routes)
	if err != nil {
		return err
	}

	var helpers []conntrack.Helper
	if s.FTP != nil {
		fc := *s.FTP
		fc.Log = func(e ftp.Event) {
			d.log.Info("ftp helper", "reason", e.Reason, "conn", uint64(e.Conn), "dir", e.Dir.String(),
				"kind", e.Cmd.Kind.String(), "err", e.Err)
		}
		d.ftp = ftp.New(fc)
		helpers = append(helpers, d.ftp)
	}
	workers := s.Workers
	if workers <= 0 {
		workers = pipeline.DefaultWorkers()
	}
	rs, err := d.compile(s, workers)
	if err != nil {
		return err
	}
	var tracer pipeline.Tracer
	if s.TraceFile != "" {
		tw, err := newTraceWriter(s.TraceFile, ports)
		if err != nil {
			return err
		}
		d.trace = tw
		tracer = tw
	}
	d.events = control.NewEventHub()
	pc := pipeline.Config{
		Ports:      ports,
		Routes:     rt,
		Workers:    workers,
		PinCPUs:    s.PinCPUs,
		Conntrack:  s.Conntrack,
		Helpers:    helpers,
		Rules:      rs,
		LocalAddrs: s.LocalAddrs,
		Defrag:     s.Defrag,
		QueueDepth: s.QueueDepth,
		SplitGSO:   s.SplitGSO,
		Tracer:     tracer,
		Events:     d.events,
		Logger:     d.log,
	}
	d.pipe, err = pipeline.New(pc)
	if err != nil {
		return err
	}
	if s.StateFile != "" {
		snaps, down, err := loadState(s.StateFile, s.Conntrack.Max)
		if err != nil {
			d.log.Warn("not restoring connections", "err", err)
		}
		if len(snaps) > 0 {
			n, rerr := d.pipe.Restore(snaps)
			d.log.Info("connections restored", "restored", n, "saved", len(snaps), "downtime", down.Round(time.Millisecond), "first_refusal", rerr)
		}
	}
	if s.ControlSocket != "" {
		d.ctl, err = control.Listen(s.ControlSocket, control.Backend{
			Pipeline: d.pipe,
			Events:   d.events,
			Reload:   d.Reload,
			Rules:    func() any { return rulesView(d.pipe.Rules()) },
			Devices:  d.deviceStats,
			Logger:   d.log,
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// compile compiles the rule set for the daemon's devices and helpers.
func (d *Daemon) compile(s *Settings, workers int) (*filter.Ruleset, error) {
	spec := s.Rules
	spec.Interfaces = d.ifs
	spec.Helpers = nil
	if s.FTP != nil {
		spec.Helpers = []string{ftp.Name}
	}
	spec.Workers = workers
	if spec.Logger == nil {
		spec.Logger = d.log
	}
	rs, warns, err := filter.Compile(spec)
	if err != nil {
		return nil, err
	}
	for _, w := range warns {
		d.log.Warn("rules", "warning", w.String())
	}
	return rs, nil
}

// Run starts the pipeline and serves until ctx ends or SIGTERM/SIGINT;
// SIGHUP reloads. It stops gracefully: readers stop, queued packets are
// written, then the devices are closed (and removed).
func (d *Daemon) Run(ctx context.Context) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	d.pipe.Start()
	for i, dev := range d.devs {
		go d.watch(d.devPorts[i], dev)
	}
	d.log.Info("router running", "workers", d.pipe.Workers(), "devices", len(d.ifs), "gso_passthrough", d.pipe.Offload(),
		"control_socket", d.set.ControlSocket, "config", d.path)
	sdnotify.SdNotify(false, sdnotify.SdNotifyReady)
	for {
		select {
		case <-ctx.Done():
			d.log.Info("stopping", "why", ctx.Err())
			d.shutdown()
			return nil
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				sdnotify.SdNotify(false, fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
				if err := d.Reload(); err != nil {
					d.log.Error("reload failed, keeping the running configuration", "err", err)
				}
				sdnotify.SdNotify(false, sdnotify.SdNotifyReady)
			default:
				d.log.Info("stopping", "signal", sig.String())
				d.shutdown()
				return nil
			}
		}
	}
}

// deviceStats returns the kernel's counters of the TUN devices: tx_dropped
// counts the packets the kernel dropped because the router did not read
// them in time (the pipeline applies backpressure instead of queueing).
func (d *Daemon) deviceStats() any {
	out := map[string]any{}
	for _, dev := range d.devs {
		st, err := dev.LinkStats()
		if err != nil {
			out[dev.Name()] = map[string]string{"error": err.Error()}
			continue
		}
		out[dev.Name()] = map[string]uint64{
			"kernel_to_router_packets": st.TxPackets, "kernel_dropped_unread": st.TxDropped,
			"router_to_kernel_packets": st.RxPackets, "kernel_rx_dropped": st.RxDropped,
		}
	}
	return out
}

// watch logs a device's link events and follows its MTU.
func (d *Daemon) watch(port int, dev *tundev.Device) {
	for ev := range dev.Events() {
		switch ev.Kind {
		case tundev.EventMTU:
			d.pipe.SetMTU(port, ev.MTU)
			d.log.Info("device MTU changed", "device", dev.Name(), "mtu", ev.MTU)
		case tundev.EventDown:
			d.log.Warn("device is down", "device", dev.Name())
		case tundev.EventUp:
			d.log.Info("device is up", "device", dev.Name(), "mtu", ev.MTU)
		case tundev.EventRemoved:
			d.log.Error("device was removed: its packets are lost until the router restarts", "device", dev.Name())
		}
	}
}

func (d *Daemon) shutdown() {
	sdnotify.SdNotify(false, sdnotify.SdNotifyStopping)
	if d.ctl != nil {
		d.ctl.Close()
		d.ctl = nil
	}
	d.pipe.Close()
	if d.set.StateFile != "" {
		if n, err := saveState(d.set.StateFile, d.pipe); err != nil {
			d.log.Error("saving connections", "file", d.set.StateFile, "err", err)
		} else {
			d.log.Info("connections saved", "file", d.set.StateFile, "entries", n)
		}
	}
	st := d.pipe.Stats()
	drops := st.Drops()
	var contended uint64
	for _, r := range st.Readers {
		contended += r.Contended
	}
	d.log.Info("pipeline stopped", "entries", st.Conntrack.Entries, "packets", sumPackets(&st),
		"invalid", st.Conntrack.Invalid, "dropped_queue_full", drops[pipeline.DropQueueFull],
		"reader_waits", contended)
	d.Close()
}

func sumPackets(st *pipeline.Stats) uint64 {
	var n uint64
	for _, w := range st.Workers {
		n += w.Packets
	}
	return n
}

// Reload re-reads the configuration and swaps the rule set atomically;
// conntrack state is kept and the tables take the new timeouts. Settings
// that need a restart (devices, routes, workers, the FTP helper) are
// reported. A broken file changes nothing.
func (d *Daemon) Reload() error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	s, warns, err := d.load(d.path)
	if err != nil {
		return err
	}
	for _, w := range warns {
		d.log.Warn("configuration", "warning", w)
	}
	old := d.set
	rs, err := d.compile(s, d.pipe.Workers())
	if err != nil {
		return err
	}
	if err := s.Conntrack.Validate(); err != nil {
		return err
	}
	var restart []string
	if !reflect.DeepEqual(old.Devices, s.Devices) {
		restart = append(restart, "devices")
	}
	if !reflect.DeepEqual(old.Routes, s.Routes) {
		restart = append(restart, "routes")
	}
	if old.Workers != s.Workers || old.PinCPUs != s.PinCPUs {
		restart = append(restart, "workers")
	}
	if !reflect.DeepEqual(old.FTP, s.FTP) {
		restart = append(restart, "helpers")
	}
	if old.Conntrack.Max != s.Conntrack.Max || old.Conntrack.ExpectMax != s.Conntrack.ExpectMax {
		restart = append(restart, "conntrack max/expect_max")
	}
	d.pipe.SetRules(rs)
	ct := s.Conntrack
	d.pipe.DoAll(func(_ int, t *conntrack.Table, _ int64) {
		c := ct
		c.Max = t.Max()
		t.SetConfig(c)
	})
	// Keep the settings that did not change live, so that the next
	// reload compares against what runs.
	ns := *s
	ns.Devices, ns.Routes, ns.Workers, ns.PinCPUs, ns.FTP = old.Devices, old.Routes, old.Workers, old.PinCPUs, old.FTP
	d.set = &ns
	n := 0
	for c := filter.Chain(0); c < filter.NumChains; c++ {
		n += rs.NumRules(c)
	}
	if len(restart) > 0 {
		d.log.Warn("reloaded rules; some changed settings need a restart", "settings", restart)
	}
	d.log.Info("configuration reloaded", "rules", n)
	return nil
}

// Pipeline returns the running pipeline (for tests and tools).
func (d *Daemon) Pipeline() *pipeline.Pipeline { return d.pipe }

// Close releases everything: control socket, trace file, devices.
func (d *Daemon) Close() {
	if d.ctl != nil {
		d.ctl.Close()
		d.ctl = nil
	}
	if d.pipe != nil {
		d.pipe.Close()
	}
	for _, dev := range d.devs {
		if err := dev.Close(); err != nil {
			d.log.Warn("closing device", "name", dev.Name(), "err", err)
		}
	}
	d.devs = nil
	for _, c := range d.others {
		c.Close()
	}
	d.others = nil
	if d.trace != nil {
		d.trace.Close()
		d.trace = nil
	}
}

func monotonicUsec() int64 {
	var ts syscall.Timespec
	if err := clockGettime(&ts); err != nil {
		return time.Now().UnixMicro()
	}
	return ts.Sec*1e6 + ts.Nsec/1e3
}
