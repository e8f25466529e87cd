// Package config reads the router's TOML configuration file: router
// settings, devices, routes, conntrack options, helpers, named sets and the
// filter's chains and rules, and converts it into the values the daemon
// consumes (conntrack.Config, filter.Spec and a compiled *filter.Ruleset,
// and plain structs for the router, devices and routes).
//
// Load reports every problem it finds, each as
//
//	FILE:LINE:COL: key "chains.forward.rules[3].dport": port 70000 out of range 0..65535
//
// (array indexes count from 0; columns are in bytes), and warns about rules
// that can never match. Check prints them for `router check --config FILE`.
//
// Load is pure: it reads the file and returns values. The daemon applies
// them. On SIGHUP it calls Load again; when that succeeds it publishes the
// new Config.Ruleset through its atomic.Pointer[filter.Ruleset] (workers
// pick it up at their next batch; conntrack state is untouched) and reports
// Config.RestartRequired for settings a reload cannot change; when Load
// fails it keeps the running rules and logs every error.
//
// The file format is documented by config.example.toml at the repository
// root, which a test loads and checks packet by packet.
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/tunrouter/router/conntrack"
	"github.com/tunrouter/router/filter"
)

// Config is a loaded, validated configuration.
type Config struct {
	File      string
	Router    Router
	Devices   []Device
	Routes    []Route
	Conntrack conntrack.Config
	// ExpectTimeout is the lifetime of an expectation (the FTP helper's
	// policy timeout in the kernel: 300 s).
	ExpectTimeout time.Duration
	FTP           FTPHelper
	Defrag        Defrag
	// Filter is the rule set as a spec (interfaces are the devices, in
	// file order; Workers is Router.NumWorkers()). Ruleset is it compiled
	// (logging to slog.Default(); the daemon may set Filter.Logger and
	// compile again).
	Filter  filter.Spec
	Ruleset *filter.Ruleset
	// Warnings are rules that can never match.
	Warnings []Warning
}

// Router holds the daemon's own settings.
type Router struct {
	Workers       int        // 0: one per CPU
	PinCPUs       bool       // pin each worker to a CPU
	LogLevel      slog.Level // debug, info, warn, error
	LogFormat     string     // "text" or "json"
	Trace         bool       // per-packet trace (costly; off by default)
	TraceFile     string     // where the trace goes ("" = the log)
	ControlSocket string     // "" disables the control socket
	QueueDepth    int        // unused since readers run their workers (pipeline.Config.QueueDepth)
	StateFile     string     // connections saved here on stop, restored on start ("" = none)
}

// NumWorkers resolves Workers: 0 means one per CPU.
func (r Router) NumWorkers() int {
	if r.Workers > 0 {
		return r.Workers
	}
	return runtime.NumCPU()
}

// Device is one TUN device the router reads and writes.
//
// A TUN device is a point-to-point link between the network namespace it
// lives in (the "host side": the kernel there owns Addresses and routes
// NSRoutes into the device) and the router. The connected networks of
// Addresses are routed by the router to this device.
type Device struct {
	Name      string
	Kind      string // "tun"
	Netns     string // namespace to create it in: a path or a name under /run/netns ("" = current)
	MTU       int
	Addresses []netip.Prefix // host-side addresses with their connected prefix length
	// NSRoutes are prefixes the host side routes into the device (for
	// example its default route through the router).
	NSRoutes []netip.Prefix
	// RouterAddrs are the router's own addresses on this link: the source
	// of the ICMP errors it sends there, and answered to ping (input
	// chain).
	RouterAddrs []netip.Addr
	Queues      int  // 0: automatic (the daemon divides the workers among the TUN devices)
	Offload     bool // GSO/GRO offloads (virtio-net header)
	FD          int  // an inherited, already open TUN fd to adopt; 0 = create by name
	// LauncherSocket: wait for `router tun-launch` to pass the TUN
	// descriptor over this Unix socket (rootless; see egress.go).
	LauncherSocket string
	// Egress is set for kind = "egress" (egress.go); MTU 0 then means
	// the largest MTU of the TUN devices.
	Egress *Egress
}

// Route sends a destination prefix to a device (longest prefix wins).
type Route struct {
	To     netip.Prefix
	Device string
}

// FTPHelper is the FTP helper's configuration.
type FTPHelper struct {
	// Ports: the helper is attached to new TCP connections to these ports
	// (a prerouting "helper" rule is synthesized for them). Empty: only
	// rules attach it, as with Linux >= 4.7's nf_conntrack_helper=0.
	Ports []uint16
	// Loose accepts announced addresses that differ from the sender's
	// (nf_conntrack_ftp's loose=1).
	Loose bool
	// MaxExpected is the number of pending expectations per control
	// connection; 0 means the helper's default (1, as the kernel).
	MaxExpected int
}

// Defrag bounds IP reassembly. Zero fields mean the defrag package's
// defaults (the daemon fills them in).
type Defrag struct {
	MaxBytes     int           // memory for datagrams being reassembled
	MaxDatagrams int           // datagrams being reassembled at once
	Timeout      time.Duration // IPv4 reassembly timeout
	Timeout6     time.Duration // IPv6 reassembly timeout
}

// KnownHelpers are the helpers the router implements.
var KnownHelpers = []string{"ftp"}

// Defaults for settings the file leaves out.
const (
	DefaultControlSocket = "/run/router/ctl.sock"
	DefaultMTU           = 1500
	DefaultExpectTimeout = 300 * time.Second
)

// The file's structure. Field tags are the TOML keys.
type fileConfig struct {
	Router    fileRouter         `toml:"router"`
	Devices   []fileDevice       `toml:"device"`
	Routes    []fileRoute        `toml:"route"`
	Conntrack fileConntrack      `toml:"conntrack"`
	Helpers   fileHelpers        `toml:"helpers"`
	Defrag    fileDefrag         `toml:"defrag"`
	Filter    fileFilter         `toml:"filter"`
	Sets      map[string]strList `toml:"sets"`
	Chains    fileChains         `toml:"chains"`
}

type fileRouter struct {
	Workers       int     `toml:"workers"`
	PinCPUs       bool    `toml:"pin_cpus"`
	LogLevel      string  `toml:"log_level"`
	LogFormat     string  `toml:"log_format"`
	Trace         bool    `toml:"trace"`
	TraceFile     string  `toml:"trace_file"`
	ControlSocket *string `toml:"control_socket"`
	QueueDepth    int     `toml:"queue_depth"`
	StateFile     string  `toml:"state_file"`
}

type fileDevice struct {
	Name            string   `toml:"name"`
	Kind            string   `toml:"kind"`
	Netns           string   `toml:"netns"`
	MTU             *int     `toml:"mtu"`
	Addresses       []string `toml:"addresses"`
	Routes          []string `toml:"routes"`
	RouterAddresses []string `toml:"router_addresses"`
	Queues          int      `toml:"queues"`
	Offload         *bool    `toml:"offload"`
	FD              *int     `toml:"fd"`
	LauncherSocket  string   `toml:"launcher_socket"`
	// kind = "egress" (egress.go)
	Gateway           strList       `toml:"gateway"`
	HostLoopback      *bool         `toml:"host_loopback"`
	DNS               strList       `toml:"dns"`
	DNSUpstream       strList       `toml:"dns_upstream"`
	MaxFlows          *int          `toml:"max_flows"`
	TCPBuffer         *int          `toml:"tcp_buffer"`
	SocketBuffer      *int          `toml:"socket_buffer"`
	Ping              *bool         `toml:"ping"`
	DialTimeout       duration      `toml:"dial_timeout"`
	HalfClosedTimeout duration      `toml:"half_closed_timeout"`
	Forward           []fileForward `toml:"forward"`
}

type fileRoute struct {
	To     string `toml:"to"`
	Device string `toml:"device"`
}

type fileConntrack struct {
	Max                 *int         `toml:"max"`
	Checksum            *bool        `toml:"checksum"`
	TCPLoose            *bool        `toml:"tcp_loose"`
	TCPBeLiberal        *bool        `toml:"tcp_be_liberal"`
	TCPIgnoreInvalidRST *bool        `toml:"tcp_ignore_invalid_rst"`
	TCPMaxRetrans       *int         `toml:"tcp_max_retrans"`
	ExpectMax           *int         `toml:"expect_max"`
	ExpectTimeout       duration     `toml:"expect_timeout"`
	Timeouts            fileTimeouts `toml:"timeouts"`
}

type fileTimeouts struct {
	TCPSynSent   duration `toml:"tcp_syn_sent"`
	TCPSynRecv   duration `toml:"tcp_syn_recv"`
	TCPEstab     duration `toml:"tcp_established"`
	TCPFinWait   duration `toml:"tcp_fin_wait"`
	TCPCloseWait duration `toml:"tcp_close_wait"`
	TCPLastAck   duration `toml:"tcp_last_ack"`
	TCPTimeWait  duration `toml:"tcp_time_wait"`
	TCPClose     duration `toml:"tcp_close"`
	TCPSynSent2  duration `toml:"tcp_syn_sent2"`
	TCPRetrans   duration `toml:"tcp_retrans"`
	TCPUnack     duration `toml:"tcp_unacknowledged"`
	UDP          duration `toml:"udp"`
	UDPStream    duration `toml:"udp_stream"`
	ICMP         duration `toml:"icmp"`
	ICMPv6       duration `toml:"icmpv6"`
	Generic      duration `toml:"generic"`
}

type fileHelpers struct {
	FTP *fileFTP `toml:"ftp"`
}

type fileFTP struct {
	Ports       []int `toml:"ports"`
	Loose       bool  `toml:"loose"`
	MaxExpected int   `toml:"max_expected"`
}

type fileDefrag struct {
	MaxBytes     int      `toml:"max_bytes"`
	MaxDatagrams int      `toml:"max_datagrams"`
	Timeout      duration `toml:"timeout"`
	Timeout6     duration `toml:"timeout6"`
}

type fileFilter struct {
	LogRate     *float64 `toml:"log_rate"`
	LogBurst    *int     `toml:"log_burst"`
	RejectRate  *float64 `toml:"reject_rate"`
	RejectBurst *int     `toml:"reject_burst"`
}

type fileChains struct {
	Prerouting *fileChain `toml:"prerouting"`
	Input      *fileChain `toml:"input"`
	Forward    *fileChain `toml:"forward"`
	Output     *fileChain `toml:"output"`
}

type fileChain struct {
	Policy string     `toml:"policy"`
	Rules  []fileRule `toml:"rules"`
}

type fileRule struct {
	Comment     string  `toml:"comment"`
	Family      strList `toml:"family"`
	Proto       strList `toml:"proto"`
	SAddr       strList `toml:"saddr"`
	DAddr       strList `toml:"daddr"`
	SPort       strList `toml:"sport"`
	DPort       strList `toml:"dport"`
	IIf         strList `toml:"iif"`
	OIf         strList `toml:"oif"`
	CtState     strList `toml:"ct_state"`
	CtDirection string  `toml:"ct_direction"`
	CtStatus    strList `toml:"ct_status"`
	CtReason    strList `toml:"ct_reason"`
	CtHelper    string  `toml:"ct_helper"`
	ICMPType    strList `toml:"icmp_type"`
	ICMPCode    strList `toml:"icmp_code"`
	ICMPv6Type  strList `toml:"icmpv6_type"`
	ICMPv6Code  strList `toml:"icmpv6_code"`
	TCPFlags    string  `toml:"tcp_flags"`
	Action      string  `toml:"action"`
	RejectWith  string  `toml:"reject_with"`
	Helper      string  `toml:"helper"`
	Log         *bool   `toml:"log"`
	LogPrefix   string  `toml:"log_prefix"`
	LogLevel    string  `toml:"log_level"`
}

// list returns the rule's list field named by a filter field name.
func (r *fileRule) list(field string) *strList {
	switch field {
	case filter.FieldFamily:
		return &r.Family
	case filter.FieldProto:
		return &r.Proto
	case filter.FieldSAddr:
		return &r.SAddr
	case filter.FieldDAddr:
		return &r.DAddr
	case filter.FieldSPort:
		return &r.SPort
	case filter.FieldDPort:
		return &r.DPort
	case filter.FieldIIf:
		return &r.IIf
	case filter.FieldOIf:
		return &r.OIf
	case filter.FieldCtState:
		return &r.CtState
	case filter.FieldCtStatus:
		return &r.CtStatus
	case filter.FieldCtReason:
		return &r.CtReason
	case filter.FieldICMPType:
		return &r.ICMPType
	case filter.FieldICMPCode:
		return &r.ICMPCode
	case filter.FieldICMPv6Type:
		return &r.ICMPv6Type
	case filter.FieldICMPv6Code:
		return &r.ICMPv6Code
	}
	return nil
}

// ruleOrigin maps a filter.Spec rule back to the file.
type ruleOrigin struct {
	path string    // "chains.forward.rules[3]", or the key it was made from
	rule *fileRule // nil for synthesized rules
}

// Load reads and validates the configuration file at path. On failure the
// error is an ErrorList naming every problem (or an I/O error).
func Load(path string) (*Config, error) {
	cfg, err := load(path)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

func load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load for a file already read; name is used in messages. When
// it fails it still returns the warnings it found in the Config (whose
// other fields are then incomplete); the error is an ErrorList.
func Parse(name string, data []byte) (*Config, error) {
	c := &collector{file: name, idx: &posIndex{lineStarts: []int{0}, offsets: map[string]int{}}}
	var tree map[string]any
	if _, err := toml.Decode(string(data), &tree); err != nil {
		var pe toml.ParseError
		e := &Error{File: name, Line: 1, Col: 1, Msg: err.Error()}
		if errors.As(err, &pe) {
			// toml's line comes from its lexer, which may already have
			// counted the newline it stopped at; the byte offset is exact.
			p := newLineIndex(data).pos(pe.Position.Start)
			e.Line, e.Col, e.Msg = p.Line, p.Col, "syntax error: "+pe.Message
		}
		return nil, ErrorList{e}
	}
	c.idx = newPosIndex(data)
	var f fileConfig
	d := &decoder{c: c}
	d.decodeStruct("", tree, reflect.ValueOf(&f).Elem())
	cfg := &Config{File: name}
	c.convert(&f, cfg)
	c.sort()
	cfg.Warnings = c.warns
	if len(c.errs) > 0 {
		return cfg, c.errs
	}
	return cfg, nil
}

// Check loads the file and prints every error and warning to w, one per
// line, then a summary; it reports whether the file is valid. It is the
// body of `router check --config FILE` (which exits non-zero when it
// returns false).
func Check(w io.Writer, path string) bool {
	cfg, err := load(path)
	if cfg != nil {
		for _, wn := range cfg.Warnings {
			fmt.Fprintln(w, wn)
		}
	}
	if err != nil {
		var el ErrorList
		if errors.As(err, &el) {
			for _, e := range el {
				fmt.Fprintln(w, e)
			}
			fmt.Fprintf(w, "%s: %d error(s)\n", path, len(el))
		} else {
			fmt.Fprintln(w, err)
		}
		return false
	}
	n := 0
	for ch := filter.Chain(0); ch < filter.NumChains; ch++ {
		n += cfg.Ruleset.NumRules(ch)
	}
	fmt.Fprintf(w, "%s: OK: %d device(s), %d route(s), %d rule(s), %d warning(s)\n",
		path, len(cfg.Devices), len(cfg.Routes), n, len(cfg.Warnings))
	return true
}

// RestartRequired lists the settings that differ between old and c and
// that a reload cannot apply (the daemon keeps running with the old ones
// and says so): worker count and pinning, the control socket, devices.
// Rules, sets, routes, helpers, conntrack timeouts and limits reload.
func (c *Config) RestartRequired(old *Config) []string {
	var out []string
	if c.Router.Workers != old.Router.Workers {
		out = append(out, "router.workers")
	}
	if c.Router.PinCPUs != old.Router.PinCPUs {
		out = append(out, "router.pin_cpus")
	}
	if c.Router.ControlSocket != old.Router.ControlSocket {
		out = append(out, "router.control_socket")
	}
	if !reflect.DeepEqual(c.Devices, old.Devices) {
		out = append(out, "device")
	}
	return out
}

func (c *collector) convert(f *fileConfig, cfg *Config) {
	c.router(&f.Router, cfg)
	c.devices(f.Devices, cfg)
	c.routes(f.Routes, cfg)
	c.conntrack(&f.Conntrack, cfg)
	c.helpers(&f.Helpers, cfg)
	c.defrag(&f.Defrag, cfg)
	c.filter(f, cfg)
}

func (c *collector) defrag(f *fileDefrag, cfg *Config) {
	if f.MaxBytes < 0 {
		c.errorf("defrag.max_bytes", "max_bytes %d must not be negative (0 = default)", f.MaxBytes)
	}
	if f.MaxDatagrams < 0 {
		c.errorf("defrag.max_datagrams", "max_datagrams %d must not be negative (0 = default)", f.MaxDatagrams)
	}
	cfg.Defrag = Defrag{MaxBytes: max(f.MaxBytes, 0), MaxDatagrams: max(f.MaxDatagrams, 0), Timeout: f.Timeout.D, Timeout6: f.Timeout6.D}
}

func (c *collector) router(r *fileRouter, cfg *Config) {
	out := Router{Workers: r.Workers, PinCPUs: r.PinCPUs, Trace: r.Trace, TraceFile: r.TraceFile, LogFormat: r.LogFormat, ControlSocket: DefaultControlSocket}
	if r.Workers < 0 || r.Workers > 1024 {
		c.errorf("router.workers", "workers %d out of range 0..1024 (0 = one per CPU)", r.Workers)
	}
	switch strings.ToLower(r.LogLevel) {
	case "debug":
		out.LogLevel = slog.LevelDebug
	case "", "info":
		out.LogLevel = slog.LevelInfo
	case "warn", "warning":
		out.LogLevel = slog.LevelWarn
	case "error":
		out.LogLevel = slog.LevelError
	default:
		c.errorf("router.log_level", "unknown log level %q (want debug, info, warn or error)", r.LogLevel)
	}
	switch r.LogFormat {
	case "":
		out.LogFormat = "text"
	case "text", "json":
	default:
		c.errorf("router.log_format", "unknown log format %q (want text or json)", r.LogFormat)
	}
	out.QueueDepth = r.QueueDepth
	out.StateFile = r.StateFile
	if r.StateFile != "" && !strings.HasPrefix(r.StateFile, "/") {
		c.errorf("router.state_file", "state file %q must be an absolute path", r.StateFile)
	}
	if r.QueueDepth < 0 || r.QueueDepth > 1024 {
		c.errorf("router.queue_depth", "queue_depth %d out of range 0..1024 (0 = default)", r.QueueDepth)
	}
	if r.ControlSocket != nil {
		out.ControlSocket = *r.ControlSocket
		if out.ControlSocket != "" && !strings.HasPrefix(out.ControlSocket, "/") && !strings.HasPrefix(out.ControlSocket, "@") {
			c.errorf("router.control_socket", "control socket %q must be an absolute path (or \"@name\" for an abstract socket, or \"\" for none)", out.ControlSocket)
		}
	}
	cfg.Router = out
}

func (c *collector) devices(ds []fileDevice, cfg *Config) {
	names := map[string]string{} // name -> path of its first definition
	type conn struct {
		p    netip.Prefix
		dev  string
		path string
	}
	var conns []conn
	var routerAddrs []netip.Addr
	for i, fd := range ds {
		path := pathIndex("device", i)
		d := Device{Name: fd.Name, Kind: fd.Kind, Netns: fd.Netns, MTU: DefaultMTU, Queues: fd.Queues, Offload: true}
		switch {
		case fd.Name == "":
			c.errorf(path, "device needs a name (rules and routes refer to it)")
		case len(fd.Name) > 15:
			c.errorf(pathJoin(path, "name"), "device name %q is longer than 15 bytes (IFNAMSIZ)", fd.Name)
		case !validDevName(fd.Name):
			c.errorf(pathJoin(path, "name"), "invalid device name %q (no '/', ':', '%%', spaces or control characters)", fd.Name)
		}
		if prev, dup := names[fd.Name]; dup && fd.Name != "" {
			c.errorf(pathJoin(path, "name"), "device name %q is already used by %s (line %d)", fd.Name, prev, c.idx.lookup(prev).Line)
		} else if fd.Name != "" {
			names[fd.Name] = path
		}
		switch fd.Kind {
		case "":
			d.Kind = "tun"
		case "tun", "egress":
		default:
			c.errorf(pathJoin(path, "kind"), "unknown device kind %q (want tun or egress)", fd.Kind)
		}
		if fd.Netns != "" && !strings.HasPrefix(fd.Netns, "/") && strings.Contains(fd.Netns, "/") {
			c.errorf(pathJoin(path, "netns"), "netns %q must be an absolute path (/run/netns/NAME, /proc/PID/ns/net) or a name under /run/netns", fd.Netns)
		}
		if fd.Queues < 0 || fd.Queues > 256 {
			c.errorf(pathJoin(path, "queues"), "queues %d out of range 0..256 (0 = automatic)", fd.Queues)
		}
		if fd.Offload != nil {
			d.Offload = *fd.Offload
		}
		if fd.FD != nil {
			d.FD = *fd.FD
			switch {
			case d.FD < 3:
				c.errorf(pathJoin(path, "fd"), "fd %d is not an inherited descriptor (0, 1 and 2 are standard input, output and error)", d.FD)
			case fd.Queues > 1:
				c.errorf(pathJoin(path, "queues"), "queues = %d conflicts with fd: an adopted descriptor is a single queue", fd.Queues)
			}
		}
		hasV6 := false
		for j, a := range fd.Addresses {
			ap := pathIndex(pathJoin(path, "addresses"), j)
			p, err := netip.ParsePrefix(a)
			if err != nil {
				if ad, err2 := netip.ParseAddr(a); err2 == nil {
					c.errorf(ap, "address %s needs its prefix length (e.g. %s/%d)", a, a, map[bool]int{true: 24, false: 64}[ad.Is4()])
				} else {
					c.errorf(ap, "invalid address %q: want an address with its prefix length, like 10.1.0.1/24", a)
				}
				continue
			}
			if p.Addr().Zone() != "" {
				c.errorf(ap, "address %q must not have a zone", a)
				continue
			}
			if p.Addr().Is6() {
				hasV6 = true
			}
			for _, o := range conns {
				if o.p.Addr() == p.Addr() {
					c.errorf(ap, "address %s is already assigned at %s (line %d)", p.Addr(), o.path, c.idx.lookup(o.path).Line)
				} else if o.dev != fd.Name && o.p.Masked().Overlaps(p.Masked()) {
					c.errorf(ap, "network %s overlaps %s of device %q (%s, line %d)", p.Masked(), o.p.Masked(), o.dev, o.path, c.idx.lookup(o.path).Line)
				}
			}
			conns = append(conns, conn{p, fd.Name, ap})
			d.Addresses = append(d.Addresses, p)
		}
		for j, r := range fd.Routes {
			rp := pathIndex(pathJoin(path, "routes"), j)
			p, err := netip.ParsePrefix(r)
			if err != nil {
				c.errorf(rp, "invalid route %q: want a prefix like 0.0.0.0/0 or 10.2.0.0/16", r)
				continue
			}
			if p.Masked() != p {
				c.errorf(rp, "route %s has host bits set (did you mean %s?)", p, p.Masked())
				continue
			}
			if p.Addr().Is6() {
				hasV6 = true
			}
			d.NSRoutes = append(d.NSRoutes, p)
		}
		for j, r := range fd.RouterAddresses {
			rp := pathIndex(pathJoin(path, "router_addresses"), j)
			a, err := netip.ParseAddr(r)
			if err != nil || a.Zone() != "" {
				c.errorf(rp, "invalid router address %q: want an address without prefix length, like 10.1.0.1", r)
				continue
			}
			for _, p := range d.Addresses {
				if p.Addr() == a {
					c.errorf(rp, "router address %s is also one of the device's host-side addresses: the host's kernel would answer for it", a)
				}
			}
			for _, o := range routerAddrs {
				if o == a {
					c.errorf(rp, "router address %s is given twice", a)
				}
			}
			routerAddrs = append(routerAddrs, a)
			d.RouterAddrs = append(d.RouterAddrs, a)
		}
		if fd.MTU != nil {
			d.MTU = *fd.MTU
			switch {
			case d.MTU < 68 || d.MTU > 65535:
				c.errorf(pathJoin(path, "mtu"), "mtu %d out of range 68..65535", d.MTU)
			case hasV6 && d.MTU < 1280:
				c.errorf(pathJoin(path, "mtu"), "mtu %d is below 1280, the IPv6 minimum, but the device has IPv6 addresses", d.MTU)
			}
		}
		c.deviceKind(path, &fd, &d)
		cfg.Devices = append(cfg.Devices, d)
	}
	if len(ds) == 0 {
		c.errorf("device", "no [[device]] is defined; the router needs at least one")
	}
	c.egressChecks(cfg)
	// Routes are checked against the connected networks here too.
	c.connected = nil
	for _, o := range conns {
		c.connected = append(c.connected, connNet{o.p.Masked(), o.dev, o.path})
	}
}

// validDevName: what the kernel accepts as a link name, without tundev's
// "%d" templates (rules and routes must know the name).
func validDevName(n string) bool {
	if n == "." || n == ".." {
		return false
	}
	for i := 0; i < len(n); i++ {
		if b := n[i]; b == '/' || b == ':' || b == '%' || b <= ' ' || b == 0x7f {
			return false
		}
	}
	return true
}

// connNet is a device's connected network, for route checks.
type connNet struct {
	p    netip.Prefix
	dev  string
	path string
}

func (c *collector) routes(rs []fileRoute, cfg *Config) {
	var devs []string
	for _, d := range cfg.Devices {
		devs = append(devs, d.Name)
	}
	seen := map[netip.Prefix]string{}
	for i, fr := range rs {
		path := pathIndex("route", i)
		p, err := netip.ParsePrefix(fr.To)
		switch {
		case fr.To == "":
			c.errorf(path, "route needs a destination (to = \"10.2.0.0/16\")")
			continue
		case err != nil:
			c.errorf(pathJoin(path, "to"), "invalid prefix %q: want a network like 10.2.0.0/16 or ::/0", fr.To)
			continue
		case p.Masked() != p:
			c.errorf(pathJoin(path, "to"), "prefix %s has host bits set (did you mean %s?)", fr.To, p.Masked())
			continue
		}
		if prev, dup := seen[p]; dup {
			c.errorf(pathJoin(path, "to"), "a route to %s is already defined at %s (line %d)", p, prev, c.idx.lookup(prev).Line)
			continue
		}
		seen[p] = path
		switch {
		case fr.Device == "":
			c.errorf(path, "route needs a device")
		case !slices.Contains(devs, fr.Device):
			c.errorf(pathJoin(path, "device"), "unknown device %q%s", fr.Device, suggestKey(fr.Device, devs))
		}
		for _, cn := range c.connected {
			if cn.dev != fr.Device && cn.p == p {
				c.errorf(pathJoin(path, "to"), "route to %s via %q conflicts with the connected network of device %q (%s, line %d)", p, fr.Device, cn.dev, cn.path, c.idx.lookup(cn.path).Line)
			}
		}
		cfg.Routes = append(cfg.Routes, Route{To: p, Device: fr.Device})
	}
}

func (c *collector) conntrack(f *fileConntrack, cfg *Config) {
	ct := conntrack.DefaultConfig()
	intOpt := func(key string, v *int, dst *int, lo, hi int) {
		if v == nil {
			return
		}
		if *v < lo || *v > hi {
			c.errorf(key, "%d out of range %d..%d", *v, lo, hi)
			return
		}
		*dst = *v
	}
	boolOpt := func(v *bool, dst *bool) {
		if v != nil {
			*dst = *v
		}
	}
	intOpt("conntrack.max", f.Max, &ct.Max, 0, 1<<30)
	intOpt("conntrack.expect_max", f.ExpectMax, &ct.ExpectMax, 0, 1<<20)
	intOpt("conntrack.tcp_max_retrans", f.TCPMaxRetrans, &ct.TCP.MaxRetrans, 0, 255)
	boolOpt(f.Checksum, &ct.Checksum)
	boolOpt(f.TCPLoose, &ct.TCP.Loose)
	boolOpt(f.TCPBeLiberal, &ct.TCP.BeLiberal)
	boolOpt(f.TCPIgnoreInvalidRST, &ct.TCP.IgnoreInvalidRST)
	t := &f.Timeouts
	for _, o := range []struct {
		d   duration
		dst *time.Duration
	}{
		{t.TCPSynSent, &ct.TCP.Timeouts[conntrack.TCPSynSent]},
		{t.TCPSynRecv, &ct.TCP.Timeouts[conntrack.TCPSynRecv]},
		{t.TCPEstab, &ct.TCP.Timeouts[conntrack.TCPEstablished]},
		{t.TCPFinWait, &ct.TCP.Timeouts[conntrack.TCPFinWait]},
		{t.TCPCloseWait, &ct.TCP.Timeouts[conntrack.TCPCloseWait]},
		{t.TCPLastAck, &ct.TCP.Timeouts[conntrack.TCPLastAck]},
		{t.TCPTimeWait, &ct.TCP.Timeouts[conntrack.TCPTimeWait]},
		{t.TCPClose, &ct.TCP.Timeouts[conntrack.TCPClose]},
		{t.TCPSynSent2, &ct.TCP.Timeouts[conntrack.TCPSynSent2]},
		{t.TCPRetrans, &ct.TCP.TimeoutRetrans},
		{t.TCPUnack, &ct.TCP.TimeoutUnack},
		{t.UDP, &ct.UDPTimeout},
		{t.UDPStream, &ct.UDPStreamTimeout},
		{t.ICMP, &ct.ICMPTimeout},
		{t.ICMPv6, &ct.ICMPv6Timeout},
		{t.Generic, &ct.GenericTimeout},
	} {
		if o.d.Set && o.d.D > 0 {
			*o.dst = o.d.D
		}
	}
	if f.Timeouts.UDP.Set && f.Timeouts.UDPStream.Set && ct.UDPStreamTimeout < ct.UDPTimeout {
		c.errorf("conntrack.timeouts.udp_stream", "udp_stream (%v) is shorter than udp (%v): a stream would expire before a single exchange", ct.UDPStreamTimeout, ct.UDPTimeout)
	}
	if err := ct.Validate(); err != nil && len(c.errs) == 0 {
		c.errorf("conntrack", "%v", err)
	}
	cfg.Conntrack = ct
	cfg.ExpectTimeout = DefaultExpectTimeout
	if f.ExpectTimeout.Set && f.ExpectTimeout.D > 0 {
		cfg.ExpectTimeout = f.ExpectTimeout.D
	}
}

func (c *collector) helpers(h *fileHelpers, cfg *Config) {
	if h.FTP == nil {
		return
	}
	cfg.FTP.Loose = h.FTP.Loose
	cfg.FTP.MaxExpected = h.FTP.MaxExpected
	if h.FTP.MaxExpected < 0 || h.FTP.MaxExpected > 64 {
		c.errorf("helpers.ftp.max_expected", "max_expected %d out of range 0..64 (0 = 1, as the kernel)", h.FTP.MaxExpected)
	}
	for i, p := range h.FTP.Ports {
		if p < 1 || p > 65535 {
			c.errorf(pathIndex("helpers.ftp.ports", i), "port %d out of range 1..65535", p)
			continue
		}
		cfg.FTP.Ports = append(cfg.FTP.Ports, uint16(p))
	}
	if len(cfg.FTP.Ports) > 0 && cfg.Conntrack.ExpectMax == 0 {
		c.errorf("helpers.ftp.ports", "the FTP helper needs expectations, but conntrack.expect_max is 0")
	}
}

// filter builds the filter spec, compiles it and maps its errors and
// warnings back to the file.
func (c *collector) filter(f *fileConfig, cfg *Config) {
	spec := filter.Spec{Helpers: KnownHelpers, Workers: cfg.Router.NumWorkers()}
	seen := map[string]bool{}
	for _, d := range cfg.Devices {
		if d.Name != "" && !seen[d.Name] {
			seen[d.Name] = true
			spec.Interfaces = append(spec.Interfaces, d.Name)
		}
	}
	ff := &f.Filter
	if ff.LogRate != nil {
		spec.LogRate = *ff.LogRate
	}
	if ff.LogBurst != nil {
		spec.LogBurst = *ff.LogBurst
		if *ff.LogBurst < 1 {
			c.errorf("filter.log_burst", "burst %d must be at least 1", *ff.LogBurst)
		}
	}
	if ff.RejectRate != nil {
		spec.RejectRate = *ff.RejectRate
	}
	if ff.RejectBurst != nil {
		spec.RejectBurst = *ff.RejectBurst
		if *ff.RejectBurst < 1 {
			c.errorf("filter.reject_burst", "burst %d must be at least 1", *ff.RejectBurst)
		}
	}

	// Sets, in file order.
	setNames := make([]string, 0, len(f.Sets))
	for n := range f.Sets {
		setNames = append(setNames, n)
	}
	slices.SortFunc(setNames, func(a, b string) int {
		pa, pb := c.idx.lookup(pathJoin("sets", a)), c.idx.lookup(pathJoin("sets", b))
		if pa.Line != pb.Line {
			return pa.Line - pb.Line
		}
		return pa.Col - pb.Col
	})
	sets := map[string]strList{}
	for _, n := range setNames {
		l := f.Sets[n]
		sets[n] = l
		spec.Sets = append(spec.Sets, filter.SetSpec{Name: n, Elems: l.Vals})
	}

	// Chains, with a rule synthesized for helpers.ftp.ports.
	origins := [filter.NumChains][]ruleOrigin{}
	chains := [filter.NumChains]*fileChain{f.Chains.Prerouting, f.Chains.Input, f.Chains.Forward, f.Chains.Output}
	for ch := filter.Chain(0); ch < filter.NumChains; ch++ {
		fc := chains[ch]
		var synth []filter.RuleSpec
		if ch == filter.Prerouting && len(cfg.FTP.Ports) > 0 {
			var ports []string
			for _, p := range cfg.FTP.Ports {
				ports = append(ports, fmt.Sprint(p))
			}
			synth = append(synth, filter.RuleSpec{Comment: "helpers.ftp.ports", Proto: []string{"tcp"}, DPort: ports, Action: "helper", Helper: "ftp"})
			origins[ch] = append(origins[ch], ruleOrigin{path: "helpers.ftp.ports"})
		}
		if fc == nil && len(synth) == 0 {
			continue
		}
		cs := filter.ChainSpec{Chain: ch, Rules: synth}
		if fc != nil {
			cs.Policy = fc.Policy
			for i := range fc.Rules {
				fr := &fc.Rules[i]
				path := pathIndex(optPath("chains", ch.String(), "rules"), i)
				origins[ch] = append(origins[ch], ruleOrigin{path: path, rule: fr})
				cs.Rules = append(cs.Rules, c.rule(path, fr))
			}
		}
		spec.Chains = append(spec.Chains, cs)
	}
	cfg.Filter = spec

	rs, warns, err := filter.Compile(spec)
	var ferrs filter.Errors
	if errors.As(err, &ferrs) {
		for _, e := range ferrs {
			c.filterError(e, sets, &origins)
		}
	} else if err != nil {
		c.errorf("chains", "%v", err)
	}
	for _, w := range warns {
		if w.Rule < 0 || w.Rule >= len(origins[w.Chain]) {
			continue
		}
		msg := w.Msg
		if w.ShadowedBy >= 0 && w.ShadowedBy < len(origins[w.Chain]) {
			by := origins[w.Chain][w.ShadowedBy].path
			msg += fmt.Sprintf(" (%s, line %d)", by, c.idx.lookup(by).Line)
		}
		c.warnf(origins[w.Chain][w.Rule].path, "%s", msg)
	}
	cfg.Ruleset = rs
}

// rule converts one file rule, checking the options that conflict in the
// file's terms.
func (c *collector) rule(path string, r *fileRule) filter.RuleSpec {
	rs := filter.RuleSpec{
		Comment: r.Comment, Family: r.Family.Vals, Proto: r.Proto.Vals,
		SAddr: r.SAddr.Vals, DAddr: r.DAddr.Vals, SPort: r.SPort.Vals, DPort: r.DPort.Vals,
		IIf: r.IIf.Vals, OIf: r.OIf.Vals,
		CtState: r.CtState.Vals, CtDirection: r.CtDirection, CtStatus: r.CtStatus.Vals,
		CtReason: r.CtReason.Vals, CtHelper: r.CtHelper,
		ICMPType: r.ICMPType.Vals, ICMPCode: r.ICMPCode.Vals, ICMPv6Type: r.ICMPv6Type.Vals, ICMPv6Code: r.ICMPv6Code.Vals,
		TCPFlags: r.TCPFlags, Action: r.Action, RejectWith: r.RejectWith, Helper: r.Helper,
		LogPrefix: r.LogPrefix, LogLevel: r.LogLevel,
	}
	for _, l := range []struct {
		key string
		sl  *strList
	}{{"family", &r.Family}, {"proto", &r.Proto}, {"saddr", &r.SAddr}, {"daddr", &r.DAddr}, {"sport", &r.SPort},
		{"dport", &r.DPort}, {"iif", &r.IIf}, {"oif", &r.OIf}, {"ct_state", &r.CtState}, {"ct_status", &r.CtStatus},
		{"ct_reason", &r.CtReason}, {"icmp_type", &r.ICMPType}, {"icmp_code", &r.ICMPCode},
		{"icmpv6_type", &r.ICMPv6Type}, {"icmpv6_code", &r.ICMPv6Code}} {
		if l.sl.Set && len(l.sl.Vals) == 0 {
			c.errorf(pathJoin(path, l.key), "empty list: leave the key out to match anything")
		}
	}
	if r.Log != nil {
		rs.Log = *r.Log
		if !*r.Log {
			switch {
			case r.LogPrefix != "":
				c.errorf(pathJoin(path, "log_prefix"), "log_prefix is set but log = false")
			case r.LogLevel != "":
				c.errorf(pathJoin(path, "log_level"), "log_level is set but log = false")
			case strings.EqualFold(r.Action, "log"):
				c.errorf(pathJoin(path, "log"), "action = \"log\" but log = false")
			}
		}
	}
	return rs
}

func (c *collector) filterError(e *filter.Error, sets map[string]strList, origins *[filter.NumChains][]ruleOrigin) {
	switch {
	case e.Set != "":
		key := pathJoin("sets", e.Set)
		if l, ok := sets[e.Set]; ok {
			key = l.elemPath(key, e.Elem)
		}
		c.errorf(key, "%s", e.Msg)
	case e.Chain >= filter.NumChains:
		c.errorf("device", "%s", e.Msg)
	case e.Rule < 0:
		c.errorf(pathJoin(optPath("chains", e.Chain.String()), e.Field), "%s", e.Msg)
	case e.Rule < len(origins[e.Chain]):
		o := origins[e.Chain][e.Rule]
		if o.rule == nil {
			c.errorf(o.path, "%s", e.Msg)
			return
		}
		key := pathJoin(o.path, e.Field)
		if l := o.rule.list(e.Field); l != nil {
			key = l.elemPath(key, e.Elem)
		}
		c.errorf(key, "%s", e.Msg)
	default:
		c.errorf("chains", "%s", e.Error())
	}
}
