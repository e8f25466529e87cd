#!/usr/bin/env bash
# bench-router.sh: start the router as the "router" column of the side-by-side
# benchmark harness (/work/shared/bench, README "Router column interface").
#
#   bench/run.sh -R 'exec /path/to/router/scripts/bench-router.sh'
#
# The harness runs this inside the router namespace with RB_NS_A/B(_PATH),
# RB_TUN_A/B, RB_NET_A/B, RB_ADDR_A/B and RB_MTU set. It writes a router
# configuration from them and execs `router run`: TUN RB_TUN_A in namespace A
# and RB_TUN_B in namespace B, RB_NET_A routed to A and RB_NET_B to B, and the
# forward chain of the harness's kernel-ct column:
#
#   ct state established,related accept; ct state invalid drop;
#   ct state new accept; policy drop
#
# Knobs (environment, all optional; put them before `exec` in the -R command):
#   ROUTER_BIN       router binary (default: bin/router of this checkout,
#                    built on first use; rebuild it yourself after changes)
#   ROUTER_WORKERS   [router] workers        (default 0: one per CPU)
#   ROUTER_QUEUES    [[device]] queues       (default 0: one per worker)
#   ROUTER_OFFLOAD   [[device]] offload      (default true)
#   ROUTER_CHECKSUM  [conntrack] checksum    (default true)
#   ROUTER_PIN       [router] pin_cpus       (default false)
#   ROUTER_QDEPTH    [router] queue_depth    (default 0)
#   ROUTER_PPROF     address for net/http/pprof (e.g. 127.0.0.1:6060; off by
#                    default). The router runs in the harness's router
#                    namespace, so fetch profiles from there:
#                    ip netns exec rbrtr curl -so cpu.pprof \
#                      'http://127.0.0.1:6060/debug/pprof/profile?seconds=5'
#   ROUTER_LOG_LEVEL log level (default info)
#   ROUTER_CONF_OUT  where to write the configuration (default:
#                    ${TMPDIR:-/tmp}/bench-router.$RB_TUN_A.toml, rewritten
#                    at every start)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/bench.sh
. "$(dirname "$0")/lib/bench.sh"
bin=$(router_binary)
require_env "bench/run.sh -R" RB_NS_A_PATH RB_NS_B_PATH RB_TUN_A RB_TUN_B RB_NET_A RB_NET_B
if [ "${RB_TOPOLOGY:-tun}" != tun ]; then
  bench_fail "topology ${RB_TOPOLOGY} is not supported here (see scripts/bench-router-egress.sh)"
fi

conf=${ROUTER_CONF_OUT:-${TMPDIR:-/tmp}/bench-router.$RB_TUN_A.toml}
{
  cat <<CONF
# Written by scripts/bench-router.sh for the benchmark harness.
[router]
workers = ${ROUTER_WORKERS:-0}
pin_cpus = ${ROUTER_PIN:-false}
queue_depth = ${ROUTER_QDEPTH:-0}
log_level = "${ROUTER_LOG_LEVEL:-info}"
control_socket = ""

[[device]]
name = "${RB_TUN_A}"
netns = "${RB_NS_A_PATH}"
mtu = ${RB_MTU:-1500}
queues = ${ROUTER_QUEUES:-0}
offload = ${ROUTER_OFFLOAD:-true}

[[device]]
name = "${RB_TUN_B}"
netns = "${RB_NS_B_PATH}"
mtu = ${RB_MTU:-1500}
queues = ${ROUTER_QUEUES:-0}
offload = ${ROUTER_OFFLOAD:-true}

[[route]]
to = "${RB_NET_A}"
device = "${RB_TUN_A}"

[[route]]
to = "${RB_NET_B}"
device = "${RB_TUN_B}"

CONF
  forward_chain_conf
} >"$conf"

exec_router "$bin" "$conf"
