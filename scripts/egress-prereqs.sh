#!/bin/sh
# egress-prereqs.sh: install what the rootless egress tests (test/egress)
# and benchmarks (scripts/bench-router-egress.sh with the harness's
# slirp4netns and pasta columns) need on Debian or Ubuntu, create the
# unprivileged test user, then check the rest (root, /dev/net/tun, user
# namespaces for that user). Idempotent and quiet: apt runs only when a
# package is missing. Exits non-zero, naming the problem, when a
# prerequisite cannot be met.
#
#   sudo scripts/egress-prereqs.sh && sudo REQUIRE_E2E=1 go test ./test/egress/
set -eu
# shellcheck source-path=SCRIPTDIR source=lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"
# shellcheck source-path=SCRIPTDIR source=lib/prereqs.sh
. "$(dirname "$0")/lib/prereqs.sh"

# Debian packages: util-linux (unshare, nsenter, setpriv), uidmap
# (newuidmap/newgidmap for rootless container tools), iproute2, curl,
# vsftpd, ping, iperf3, and the rootless stacks the benchmark compares
# with: slirp4netns, passt (pasta).
PACKAGES="util-linux uidmap iproute2 curl vsftpd iputils-ping iperf3 slirp4netns passt"
TEST_USER=routertest

die() {
	echo "egress-prereqs: $*" >&2
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root (the tests create namespaces and switch to the test user)"

# shellcheck disable=SC2086 # word splitting of the package list is intended
install_missing $PACKAGES

require_tools "$PACKAGES" unshare nsenter setpriv ip curl ping iperf3 slirp4netns pasta
require_vsftpd

# The unprivileged user the router runs as in the tests.
if ! getent passwd "$TEST_USER" >/dev/null 2>&1; then
	useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$TEST_USER" ||
		die "cannot create user $TEST_USER"
fi

# TUN: the module and the node.
ensure_tun_device
# Rootless use needs the node usable by the user (mode 0666, the usual
# default); the tests set that for their duration if it is not.
case "$(stat -c %a /dev/net/tun)" in
*66) ;;
*) echo "egress-prereqs: note: /dev/net/tun is mode $(stat -c %a /dev/net/tun), not 0666: rootless users cannot open it (the tests make it 0666 while they run)" >&2 ;;
esac

# User namespaces for unprivileged users.
if [ -e /proc/sys/kernel/unprivileged_userns_clone ] && [ "$(cat /proc/sys/kernel/unprivileged_userns_clone)" = 0 ]; then
	sysctl -qw kernel.unprivileged_userns_clone=1 || die "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone=0) and cannot be enabled"
fi
[ "$(cat /proc/sys/user/max_user_namespaces)" -gt 0 ] || die "user namespaces are disabled (user.max_user_namespaces=0)"
setpriv --reuid="$TEST_USER" --regid="$(id -g "$TEST_USER")" --clear-groups unshare --user --map-root-user --net true 2>/dev/null ||
	die "user $TEST_USER cannot create a user and network namespace (unshare --user --map-root-user --net): check kernel.apparmor_restrict_unprivileged_userns, user.max_user_namespaces"
exit 0
