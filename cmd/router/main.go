// Command router is a userspace IP router with Linux-conntrack-compatible
// stateful filtering.
//
//	router run    --config FILE     run the router
//	router check  --config FILE     validate a configuration file
//	router ct     -L|-E|-S|-D|-F    connection tracking table (like conntrack-tools)
//	router rules                    rules with their counters
//	router stats                    device and drop counters
//	router reload                   reload the running router's configuration
//	router doctor [--netns PATH]    check that this machine can run the router
//	router tun-launch --socket PATH -- CMD   create a TUN device for a rootless router
//	router version
package main

import (
	"fmt"
	"os"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		usage()
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(rest)
	case "check":
		return cmdCheck(rest)
	case "ct", "conntrack":
		return cmdCT(rest)
	case "rules":
		return cmdRules(rest)
	case "stats":
		return cmdStats(rest)
	case "reload":
		return cmdReload(rest)
	case "doctor":
		return cmdDoctor(rest)
	case "tun-launch":
		return cmdTunLaunch(rest)
	case "version", "-version", "--version":
		fmt.Println("router", version)
		return 0
	case "help", "-h", "--help":
		usage()
		return 0
	}
	fmt.Fprintf(os.Stderr, "router: unknown command %q\n", cmd)
	usage()
	return 2
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: router COMMAND [OPTIONS]

  run    --config FILE [--log-level LEVEL] [--log-format text|json] [--trace FILE]
  check  --config FILE
  ct     -L [expect] | -E | -S | -D (--id N | FILTERS) | -F   [--socket PATH] [-o json]
         FILTERS: -p PROTO -s ADDR[/LEN] -d ADDR[/LEN] --sport N --dport N --state STATE --status LIST
  rules  [--socket PATH]
  stats  [--socket PATH]
  reload [--socket PATH]
  doctor [--netns PATH]
  tun-launch --socket PATH [-- COMMAND [ARGS]]   (rootless: inside the namespace, see README)
  version
`)
}
