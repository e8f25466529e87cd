#!/usr/bin/env bash
# Runs the router on config.example.toml: creates the two network
# namespaces the example names (rt-lan, rt-wan) if they are missing,
# builds the router and runs it in the foreground. Ctrl-C stops it; the
# namespaces this script created are removed again.
#
#   sudo ./scripts/run-example.sh
#
# Then, from another terminal:
#   sudo ip netns exec rt-lan ping 198.51.100.2
#   sudo ./bin/router ct -L --socket /run/router/ctl.sock
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "run-example: needs root (it creates network namespaces and TUN devices): sudo $0" >&2
	exit 1
fi
command -v go >/dev/null || { echo "run-example: Go is not installed (https://go.dev/dl/, 1.26 or newer)" >&2; exit 1; }
mkdir -p bin
go build -o bin/router ./cmd/router
created=()
for ns in rt-lan rt-wan; do
	if ! ip netns list | grep -qw "^$ns"; then
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		created+=("$ns")
	fi
done
cleanup() {
	for ns in "${created[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
echo "run-example: router on config.example.toml (LAN host: ip netns exec rt-lan ..., server: rt-wan); Ctrl-C to stop" >&2
./bin/router run --config config.example.toml "$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' INT TERM
wait $pid || true
wait $pid 2>/dev/null || true
