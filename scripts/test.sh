#!/usr/bin/env bash
# Runs the whole test suite on a fresh Linux machine:
#
#   sudo ./scripts/test.sh
#
# As root it first installs what the end-to-end tests need (Debian/Ubuntu
# packages: nftables, conntrack, iperf3, vsftpd, curl, ...), then runs
#   1. gofmt and go vet over the whole tree,
#   2. every package's tests with the race detector, including the
#      end-to-end tests with real TUN devices and network namespaces
#      (test/e2e, test/egress), the in-process netstack tests
#      (test/inprocess) and the kernel differential tests (conntrack's TCP
#      tracker, the FTP helper and IP reassembly against this machine's
#      Linux),
#   3. the conformance suite: the same packets through Linux's nf_conntrack
#      and through the router, which must agree ("N scenarios, N packets,
#      N agree").
#
# As root, REQUIRE_E2E defaults to 1: a missing prerequisite then fails the
# run instead of skipping tests. Without root the privileged tests skip.
# Environment: GO (go binary), TEST_TIMEOUT (per package, default 30m),
# SKIP_INSTALL=1 (do not apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."
APT_WHO=test.sh # the prefix of apt.sh's messages
# shellcheck source-path=SCRIPTDIR source=lib/apt.sh
. scripts/lib/apt.sh
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
TEST_TIMEOUT=${TEST_TIMEOUT:-30m}
[ -x "$GO" ] || command -v "$GO" >/dev/null || { echo "test.sh: Go is not installed (https://go.dev/dl/, 1.26 or newer)" >&2; exit 1; }

if [ "$(id -u)" = 0 ]; then
	export REQUIRE_E2E=${REQUIRE_E2E:-1}
	export CT_KERNEL_TEST=${CT_KERNEL_TEST:-1} ROUTER_KERNEL_FTP=${ROUTER_KERNEL_FTP:-1} ROUTER_KERNEL_DEFRAG=${ROUTER_KERNEL_DEFRAG:-1}
	if [ "${SKIP_INSTALL:-0}" != 1 ]; then
		echo "== installing test prerequisites"
		# The conformance suite and the kernel differential tests drive
		# nftables and read the kernel's conntrack table.
		missing=$(missing_packages nftables conntrack util-linux)
		if [ -n "$missing" ]; then
			echo "installing$missing"
			# shellcheck disable=SC2086 # word splitting of the package list is intended
			install_packages $missing
		fi
		for s in scripts/e2e-prereqs.sh scripts/egress-prereqs.sh; do
			if [ -x "$s" ]; then "$s"; fi
		done
	fi
else
	echo "== not root: end-to-end, conformance and kernel tests will skip (run with sudo for the whole suite)" >&2
fi

echo "== gofmt"
# shellcheck disable=SC2046 # one argument per file is intended
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*'))
if [ -n "$bad" ]; then
	echo "gofmt would change:" >&2
	echo "$bad" >&2
	exit 1
fi

echo "== go vet"
"$GO" vet ./...

echo "== go test -race (unit, end-to-end, kernel differential)"
pkgs=$("$GO" list ./... | grep -v '/test/conformance$')
# shellcheck disable=SC2086 # one argument per package is intended
"$GO" test -race -count=1 -timeout "$TEST_TIMEOUT" $pkgs

echo "== conformance suite (Linux nf_conntrack vs. the router)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! "$GO" test -count=1 -timeout "$TEST_TIMEOUT" -v -run 'TestConformance$' ./test/conformance/ >"$log" 2>&1; then
	cat "$log"
	echo "test.sh: conformance suite FAILED" >&2
	exit 1
fi
grep -E 'conformance: [0-9]+ scenarios|--- SKIP|^ok|^PASS' "$log" || true
echo "== all tests passed"
