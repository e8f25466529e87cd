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

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
if [ -n "$missing" ]; then
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these packages by hand:$missing"
	export DEBIAN_FRONTEND=noninteractive
	# Keep package scripts from starting services (vsftpd on port 21).
	policy=/usr/sbin/policy-rc.d
	own_policy=""
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		own_policy=1
	fi
	cleanup() { [ -z "$own_policy" ] || rm -f "$policy"; }
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	echo "egress-prereqs: installing$missing" >&2
	apt-get update -qq >/dev/null || die "apt-get update failed"
	# shellcheck disable=SC2086 # word splitting of the package list is intended
	apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
		die "apt-get install failed:$missing"
fi

for tool in unshare nsenter setpriv ip curl ping iperf3 slirp4netns pasta; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found in PATH after installing$PACKAGES"
done
[ -x /usr/sbin/vsftpd ] || command -v vsftpd >/dev/null 2>&1 || die "vsftpd not found after installing it"
getent passwd ftp >/dev/null 2>&1 || die "user ftp missing: reinstall vsftpd (apt-get install --reinstall vsftpd)"

# The unprivileged user the router runs as in the tests.
if ! getent passwd "$TEST_USER" >/dev/null 2>&1; then
	useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$TEST_USER" ||
		die "cannot create user $TEST_USER"
fi

# TUN: the module and the node.
if [ ! -c /dev/net/tun ]; then
	modprobe tun 2>/dev/null || true
	if [ ! -c /dev/net/tun ]; then
		mkdir -p /dev/net
		mknod /dev/net/tun c 10 200 2>/dev/null && chmod 666 /dev/net/tun
	fi
	[ -c /dev/net/tun ] || die "/dev/net/tun is missing and cannot be created (in a container, pass --device /dev/net/tun)"
fi
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
