#!/usr/bin/env bash
# bench-router-egress.sh: start the router in egress mode as the
# "router-egress" columns of the side-by-side benchmark harness
# (/work/shared/bench, README "Egress interface"):
#
#   bench/run.sh -T egress -R 'exec /path/to/router/scripts/bench-router-egress.sh'
#
# The harness runs this inside its "host" namespace RB_NS_R with RB_NS_A_PATH,
# RB_TUN_A, RB_MTU, RB_EGRESS_ADDR (10.0.2.100), RB_EGRESS_GW (10.0.2.2) and
# RB_EGRESS_HOST (127.0.0.1) set. It writes a configuration and execs
# `router run`: TUN RB_TUN_A in namespace A (the client's: its address, its
# default route into the TUN), an egress device whose gateway RB_EGRESS_GW
# maps to the host's loopback, the default route to the egress, and the
# forward chain of the harness's kernel-ct column, so that every relayed
# flow is tracked and filtered:
#
#   ct state established,related accept; ct state invalid drop;
#   ct state new accept; policy drop
#
# Knobs (environment, all optional; put them before `exec` in the -R command):
#   ROUTER_BIN        router binary (default: bin/router of this checkout,
#                     built on first use; rebuild it yourself after changes)
#   ROUTER_WORKERS    [router] workers              (default 0: one per CPU)
#   ROUTER_OFFLOAD    TUN offload                   (default true)
#   ROUTER_SPLIT_GSO  1: cut GSO packets in the pipeline (comparisons)
#   ROUTER_CHECKSUM   [conntrack] checksum          (default true)
#   ROUTER_EGRESS_QUEUES egress queues              (default 0: one per worker)
#   ROUTER_LOG_LEVEL  log level (default info)
#   ROUTER_CONF_OUT   where to write the configuration (default: a temp file)
#   ROUTER_PPROF      address for net/http/pprof (see bench-router.sh)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/bench.sh
. "$(dirname "$0")/lib/bench.sh"
bin=$(router_binary)
require_env "bench/run.sh -T egress -R" RB_NS_A_PATH RB_TUN_A RB_EGRESS_ADDR RB_EGRESS_GW
if [ "${RB_TOPOLOGY:-}" != egress ]; then
  bench_fail "topology ${RB_TOPOLOGY:-?} is not supported here (see scripts/bench-router.sh)"
fi
if [ "${RB_EGRESS_HOST:-127.0.0.1}" != 127.0.0.1 ]; then
  bench_fail "RB_EGRESS_HOST must be 127.0.0.1 (the egress maps its gateway to the host's loopback)"
fi
net=${RB_EGRESS_NET:-10.0.2.0/24}

conf=${ROUTER_CONF_OUT:-$(mktemp /tmp/bench-router-egress.XXXXXX.toml)}
{
  cat <<CONF
# Written by scripts/bench-router-egress.sh for the benchmark harness.
[router]
workers = ${ROUTER_WORKERS:-0}
log_level = "${ROUTER_LOG_LEVEL:-info}"
control_socket = ""

[[device]]
name = "${RB_TUN_A}"
netns = "${RB_NS_A_PATH}"
mtu = ${RB_MTU:-1500}
addresses = ["${RB_EGRESS_ADDR}/${net#*/}"]
routes = ["0.0.0.0/0"]
offload = ${ROUTER_OFFLOAD:-true}

[[device]]
name = "egress"
kind = "egress"
gateway = "${RB_EGRESS_GW}"
queues = ${ROUTER_EGRESS_QUEUES:-0}

[[route]]
to = "0.0.0.0/0"
device = "egress"

CONF
  forward_chain_conf
} >"$conf"

if [ "${ROUTER_SPLIT_GSO:-}" = 1 ]; then
  export ROUTER_SPLIT_GSO
fi
exec_router "$bin" "$conf"
