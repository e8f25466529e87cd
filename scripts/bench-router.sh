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

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${ROUTER_BIN:-$here/bin/router}
if [ ! -x "$bin" ]; then
  (cd "$here" && go build -o "$bin" ./cmd/router)
fi

for v in RB_NS_A_PATH RB_NS_B_PATH RB_TUN_A RB_TUN_B RB_NET_A RB_NET_B; do
  if [ -z "${!v:-}" ]; then
    echo "bench-router: $v is not set (run me through bench/run.sh -R)" >&2
    exit 2
  fi
done
if [ "${RB_TOPOLOGY:-tun}" != tun ]; then
  echo "bench-router: topology ${RB_TOPOLOGY} is not supported here (see scripts/bench-router-egress.sh)" >&2
  exit 2
fi

conf=${ROUTER_CONF_OUT:-${TMPDIR:-/tmp}/bench-router.$RB_TUN_A.toml}
cat >"$conf" <<CONF
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

if [ -n "${ROUTER_PPROF:-}" ]; then
  export ROUTER_PPROF
fi
echo "bench-router: $bin run --config $conf" >&2
exec "$bin" run --config "$conf"
