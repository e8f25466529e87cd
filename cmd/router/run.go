package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/tunrouter/router/config"
	"github.com/tunrouter/router/daemon"
	"github.com/tunrouter/router/tundev"
)

func cmdRun(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file (TOML)")
	level := fs.String("log-level", "", "log level: debug, info, warn, error (overrides the file)")
	format := fs.String("log-format", "", "log format: text or json (overrides the file)")
	trace := fs.String("trace", "", "write a JSON line per packet to FILE ('-': stderr); overrides the file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" {
		fmt.Fprintln(os.Stderr, "router run: --config FILE is required")
		return 2
	}
	lf, err := peekLogSettings(*cfgPath)
	if err != nil {
		// The full load below reports the problem with its position.
		lf = logSettings{}
	}
	if *level != "" {
		lf.level = *level
	}
	if *format != "" {
		lf.format = *format
	}
	log, err := newLogger(lf)
	if err != nil {
		fmt.Fprintln(os.Stderr, "router run:", err)
		return 2
	}
	load := func(path string) (*daemon.Settings, []string, error) {
		s, warns, err := loadSettings(path)
		if err == nil && *trace != "" {
			s.TraceFile = *trace
		}
		if err == nil {
			benchKnobs(s)
		}
		return s, warns, err
	}
	startPprof(log)
	d, err := daemon.New(*cfgPath, load, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "router:", explain(err))
		return 1
	}
	if err := d.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "router:", err)
		return 1
	}
	return 0
}

// explain adds what to do about the common setup errors.
func explain(err error) string {
	msg := err.Error()
	if strings.Contains(msg, "hint:") {
		// The device layer already said what to do.
		return msg
	}
	switch {
	case errors.Is(err, tundev.ErrNoTUN):
		msg += "\n  /dev/net/tun is missing: load the tun module (modprobe tun) or, in a container, pass the device (--device /dev/net/tun)"
	case errors.Is(err, tundev.ErrPermission):
		msg += "\n  creating TUN devices needs CAP_NET_ADMIN: run as root, give the binary the capability (setcap cap_net_admin+ep), run it inside `unshare --user --map-root-user --net`, or let a launcher pass a TUN descriptor (fd = N)"
	case errors.Is(err, tundev.ErrDeviceBusy):
		msg += "\n  a link with that name already exists: remove it (ip link del NAME) or choose another name"
	case errors.Is(err, tundev.ErrNoNetns):
		msg += "\n  the network namespace does not exist: create it (ip netns add NAME) or fix the netns path"
	}
	return msg
}

func cmdCheck(args []string) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "configuration file (TOML)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" && fs.NArg() == 1 {
		*cfgPath = fs.Arg(0)
	}
	if *cfgPath == "" {
		fmt.Fprintln(os.Stderr, "router check: --config FILE is required")
		return 2
	}
	if !config.Check(os.Stdout, *cfgPath) {
		return 1
	}
	return 0
}

func cmdDoctor(args []string) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	netns := fs.String("netns", "", "check creating a TUN device in this network namespace")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	r := tundev.Preflight(*netns)
	fmt.Print(r.String())
	if !r.OK() {
		return 1
	}
	return 0
}

type logSettings struct{ level, format string }

func newLogger(s logSettings) (*slog.Logger, error) {
	var lv slog.Level
	switch strings.ToLower(s.level) {
	case "", "info":
		lv = slog.LevelInfo
	case "debug":
		lv = slog.LevelDebug
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, fmt.Errorf("unknown log level %q", s.level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch s.format {
	case "", "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("unknown log format %q", s.format)
}
