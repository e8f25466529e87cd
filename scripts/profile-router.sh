#!/usr/bin/env bash
# profile-router.sh: CPU-profile the router while one traffic test of the
# benchmark harness's topology runs through it (the harness's own namespaces
# and tools, driven by hand so that the profile covers exactly one test).
#
#   scripts/profile-router.sh TEST [SECONDS] [OUT.pprof]
#
# TEST: tcp1 | tcp4 | udp64 | cps. Needs root, the bench tools built by one
# run of bench/run.sh (RB_WORK/bin: connrate), iperf3, and bin/router.
# Knobs for the router are the environment variables of bench-router.sh
# (ROUTER_WORKERS, ROUTER_QUEUES, ROUTER_CHECKSUM, ...). Use RB_PREFIX to
# keep away from a harness run in progress (default here: "pp").
set -euo pipefail
test=${1:?usage: profile-router.sh tcp1|tcp4|udp64|cps [SECONDS] [OUT]}
secs=${2:-10}
out=${3:-/tmp/router-$test.pprof}
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/bench.sh
. "$here/scripts/lib/bench.sh"
bench=${RB_BENCH_DIR:-/work/shared/bench}
export RB_PREFIX=${RB_PREFIX:-pp}
work=${RB_WORK:-/tmp/routerbench}
connrate=$work/bin/connrate
[ -x "$connrate" ] || { echo "profile-router: $connrate missing: run bench/run.sh once (RB_WORK=$work)" >&2; exit 1; }
set -a; eval "$("$bench/topo.sh" env)"; set +a
export RB_TOPOLOGY=tun RB_BIN=$work/bin ROUTER_PPROF=127.0.0.1:6060

start_tun_topology "/tmp/profile-router.$RB_PREFIX.log" 300 "$here/scripts/bench-router.sh"
sleep 1
run=$((secs + 4))
case $test in
  tcp1)  cmd=(iperf3 -c "$RB_ADDR_B" -t "$run" -P 1) ;;
  tcp4)  cmd=(iperf3 -c "$RB_ADDR_B" -t "$run" -P 4) ;;
  udp64) cmd=(iperf3 -c "$RB_ADDR_B" -t "$run" -u -b 0 -l 64) ;;
  cps)   cmd=("$connrate" -connect "$RB_ADDR_B:5300" -duration "${run}s" -workers 8) ;;
  *) echo "profile-router: unknown test $test" >&2; exit 2 ;;
esac
ip netns exec "$RB_NS_A" "${cmd[@]}" >"/tmp/profile-router.$test.txt" 2>&1 &
client=$!
sleep 2
ip netns exec "$RB_NS_R" curl -sS -o "$out" "http://127.0.0.1:6060/debug/pprof/profile?seconds=$secs"
wait "$client" || true
tail -4 "/tmp/profile-router.$test.txt"
echo "profile-router: wrote $out (go tool pprof -top $here/bin/router $out)"
