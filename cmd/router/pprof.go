package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"

	"github.com/tunrouter/router/daemon"
)

// pprofEnv names the environment variable that turns on the profiling
// endpoint: ROUTER_PPROF=127.0.0.1:6060 serves net/http/pprof there (off
// when unset). It is for measuring (scripts/bench-router.sh sets it on
// request); the endpoint has no authentication, so bind it to loopback.
const pprofEnv = "ROUTER_PPROF"

// startPprof serves the profiling handlers on the address in ROUTER_PPROF,
// if set. Errors are logged, never fatal.
func startPprof(log *slog.Logger) {
	addr := os.Getenv(pprofEnv)
	if addr == "" {
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Warn("pprof endpoint not started", "addr", addr, "err", err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("pprof endpoint", "addr", ln.Addr().String())
	go http.Serve(ln, mux)
}

// benchKnobs applies the measuring knobs of the environment to the
// settings: ROUTER_SPLIT_GSO=1 turns GSO pass-through off (see
// pipeline.Config.SplitGSO), for before/after comparisons.
func benchKnobs(s *daemon.Settings) {
	if os.Getenv("ROUTER_SPLIT_GSO") != "" {
		s.SplitGSO = true
	}
}
