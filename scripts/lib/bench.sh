# shellcheck shell=bash disable=SC2154 # $bench: the harness directory, set by the scripts using start_tun_topology
# bench.sh: what the scripts around the benchmark harness share: the
# router wrappers (bench-router.sh, bench-router-egress.sh) and the
# scripts that drive the harness's topology by hand (ab-router.sh,
# profile-router.sh). Source it from bash; messages start with the
# script's name without .sh.

# router_binary: print the router binary to run: $ROUTER_BIN, default
# bin/router of this checkout, built on first use.
router_binary() {
  local here bin
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  bin=${ROUTER_BIN:-$here/bin/router}
  if [ ! -x "$bin" ]; then
    (cd "$here" && go build -o "$bin" ./cmd/router) >&2 || return
  fi
  echo "$bin"
}

# bench_fail MESSAGE: print it, prefixed with the script's name, and exit 2.
bench_fail() {
  local who=${0##*/}
  echo "${who%.sh}: $*" >&2
  exit 2
}

# require_env HOW VAR...: exit 2 when one of VAR... is unset or empty,
# saying that the script is to be run through HOW.
require_env() {
  local how=$1 v
  shift
  for v in "$@"; do
    if [ -z "${!v:-}" ]; then
      bench_fail "$v is not set (run me through $how)"
    fi
  done
}

# forward_chain_conf: print the [conntrack] section (checksum from
# ROUTER_CHECKSUM, default true) and the forward chain of the harness's
# kernel-ct column:
#   ct state established,related accept; ct state invalid drop;
#   ct state new accept; policy drop
forward_chain_conf() {
  cat <<CONF
[conntrack]
checksum = ${ROUTER_CHECKSUM:-true}

[chains.forward]
policy = "drop"

[[chains.forward.rules]]
ct_state = ["established", "related"]
action = "accept"

[[chains.forward.rules]]
ct_state = "invalid"
action = "drop"

[[chains.forward.rules]]
ct_state = "new"
action = "accept"
CONF
}

# exec_router BIN CONF: replace the script with `BIN run --config CONF`,
# passing ROUTER_PPROF on when it is set.
exec_router() {
  local who=${0##*/}
  if [ -n "${ROUTER_PPROF:-}" ]; then
    export ROUTER_PPROF
  fi
  echo "${who%.sh}: $1 run --config $2" >&2
  exec "$1" run --config "$2"
}

# start_tun_topology LOG SECS FORWARDER...: for ab-router.sh and
# profile-router.sh. (Re)create the harness's tun topology with topo.sh,
# run FORWARDER... in the router namespace, an iperf3 and a connrate
# server in namespace B, and wait until a connrate probe from A gets
# through the forwarder. Needs $bench (the harness's directory) and the
# variables of `topo.sh env` with RB_BIN (the harness's tools). Each
# process runs in its own session under `timeout SECS`, its output
# appended to LOG; at exit they are stopped and the topology removed.
bench_pids=()
start_tun_topology() {
  local log=$1 secs=$2
  shift 2
  trap stop_tun_topology EXIT
  "$bench/topo.sh" down
  "$bench/topo.sh" up tun
  bench_bg "$log" "$secs" ip netns exec "$RB_NS_R" "$@"
  "$bench/topo.sh" tun-config
  bench_bg "$log" "$secs" ip netns exec "$RB_NS_B" iperf3 -s -B "$RB_ADDR_B"
  bench_bg "$log" "$secs" ip netns exec "$RB_NS_B" "$RB_BIN/connrate" -server -listen "$RB_ADDR_B:5300" -max-runtime "${secs}s"
  ip netns exec "$RB_NS_A" "$RB_BIN/connrate" -connect "$RB_ADDR_B:5300" -probe 10s
}

# bench_bg LOG SECS CMD...: start CMD... for start_tun_topology.
bench_bg() {
  local log=$1 secs=$2
  shift 2
  setsid timeout "$secs" "$@" >>"$log" 2>&1 &
  bench_pids+=("$!")
}

# stop_tun_topology: stop what start_tun_topology started (SIGTERM, then
# SIGKILL a second later) and remove the topology.
stop_tun_topology() {
  local p
  for p in "${bench_pids[@]+"${bench_pids[@]}"}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  sleep 1
  for p in "${bench_pids[@]+"${bench_pids[@]}"}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  "$bench/topo.sh" down || true
}
