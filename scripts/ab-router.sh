#!/usr/bin/env bash
# ab-router.sh: run one traffic test of the benchmark harness's topology
# through one forwarder, N times, and print one line per run: for quick,
# interleavable A/B comparisons (the harness itself runs every test of every
# column; use it for the record).
#
#   scripts/ab-router.sh tcp1|tcp4|udp64|cps N [router|tunfwd]
#
# router runs scripts/bench-router.sh (its ROUTER_* knobs apply); tunfwd is
# the harness's bare forwarder with offloads. Needs root, iperf3, bin/router
# and the harness's tools built once by bench/run.sh in RB_WORK (default
# /tmp/routerbench). Namespaces are prefixed with RB_PREFIX (default "ab").
set -euo pipefail
test=${1:?usage: ab-router.sh tcp1|tcp4|udp64|cps N [router|tunfwd]}
n=${2:-3}
fwd=${3:-router}
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/bench.sh
. "$here/scripts/lib/bench.sh"
bench=${RB_BENCH_DIR:-/work/shared/bench}
export RB_PREFIX=${RB_PREFIX:-ab} RB_WORK=${RB_WORK:-/tmp/routerbench}
set -a; eval "$("$bench/topo.sh" env)"; set +a
export RB_TOPOLOGY=tun RB_BIN=$RB_WORK/bin
log=${TMPDIR:-/tmp}/ab-router.$RB_PREFIX.log
case $fwd in
  router) fwdcmd=("$here/scripts/bench-router.sh") ;;
  tunfwd) fwdcmd=("$RB_BIN/tunfwd" -offload=true -mtu "$RB_MTU" -max-runtime 600s) ;;
  *) echo "ab-router: unknown forwarder $fwd" >&2; exit 2 ;;
esac
start_tun_topology "$log" 600 "${fwdcmd[@]}"
gbit='import json,sys; d=json.load(sys.stdin); print("%.2f Gbit/s" % (d["end"]["sum_received"]["bits_per_second"]/1e9))'
kpps='import json,sys; d=json.load(sys.stdin); r=d["end"]["sum_received"]; s=d["end"]["sum_sent"]; print("recv %.1f kpps sent %.1f kpps" % ((r["packets"]-r["lost_packets"])/r["seconds"]/1e3, s["packets"]/s["seconds"]/1e3))'
for _ in $(seq 1 "$n"); do
  sleep 1
  case $test in
    tcp1)  ip netns exec "$RB_NS_A" iperf3 -c "$RB_ADDR_B" -t 5 -O 1 -J | python3 -c "$gbit" ;;
    tcp4)  ip netns exec "$RB_NS_A" iperf3 -c "$RB_ADDR_B" -t 5 -O 1 -P 4 -J | python3 -c "$gbit" ;;
    udp64) ip netns exec "$RB_NS_A" iperf3 -c "$RB_ADDR_B" -t 5 -u -b 0 -l 64 -J | python3 -c "$kpps" ;;
    cps)   ip netns exec "$RB_NS_A" "$RB_BIN/connrate" -connect "$RB_ADDR_B:5300" -duration 5s -workers 8 | head -1 ;;
    *) echo "ab-router: unknown test $test" >&2; exit 2 ;;
  esac
done
