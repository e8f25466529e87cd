#!/bin/sh
# e2e-prereqs.sh: install what the end-to-end tests (test/e2e) need on
# Debian or Ubuntu, then check the rest (root, /dev/net/tun, network
# namespaces). Idempotent and quiet: packages already installed are left
# alone, and apt runs only when one is missing. Exits non-zero, naming
# the problem, when a prerequisite cannot be met.
#
#   sudo scripts/e2e-prereqs.sh && sudo REQUIRE_E2E=1 go test ./test/e2e/
set -eu
# shellcheck source-path=SCRIPTDIR source=lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"
# shellcheck source-path=SCRIPTDIR source=lib/prereqs.sh
. "$(dirname "$0")/lib/prereqs.sh"

# Debian packages and the tool each one provides (test/e2e's toolPackages).
PACKAGES="iproute2 iputils-ping curl vsftpd iperf3"

die() {
	echo "e2e-prereqs: $*" >&2
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root (the tests create TUN devices and network namespaces)"

# shellcheck disable=SC2086 # word splitting of the package list is intended
install_missing $PACKAGES

# The tools themselves (a package can be installed yet broken).
require_tools "$PACKAGES" ip ss ping curl iperf3
require_vsftpd

# TUN: load the module if the device node is missing, create the node if
# the module is built in (containers may need --device /dev/net/tun).
ensure_tun_device

# Network namespaces: create and delete a throw-away one.
ns="e2e-prereqs-$$"
ip netns add "$ns" 2>/dev/null || die "cannot create network namespaces (ip netns add): CAP_SYS_ADMIN needed"
ip netns del "$ns"
exit 0
