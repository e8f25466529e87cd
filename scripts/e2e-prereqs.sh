#!/bin/sh
# e2e-prereqs.sh: install what the end-to-end tests (test/e2e) need on
# Debian or Ubuntu, then check the rest (root, /dev/net/tun, network
# namespaces). Idempotent and quiet: packages already installed are left
# alone, and apt runs only when one is missing. Exits non-zero, naming
# the problem, when a prerequisite cannot be met.
#
#   sudo scripts/e2e-prereqs.sh && sudo REQUIRE_E2E=1 go test ./test/e2e/
set -eu

# Debian packages and the tool each one provides (test/e2e's toolPackages).
PACKAGES="iproute2 iputils-ping curl vsftpd iperf3"

die() {
	echo "e2e-prereqs: $*" >&2
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root (the tests create TUN devices and network namespaces)"

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done

if [ -n "$missing" ]; then
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these packages by hand:$missing"
	export DEBIAN_FRONTEND=noninteractive
	# Keep package scripts from starting services (vsftpd would start
	# listening on port 21 of this host): the tests run their own.
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
	echo "e2e-prereqs: installing$missing" >&2
	apt-get update -qq >/dev/null || die "apt-get update failed"
	# shellcheck disable=SC2086 # word splitting of the package list is intended
	apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
		die "apt-get install failed:$missing"
fi

# The tools themselves (a package can be installed yet broken).
for tool in ip ss ping curl iperf3; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found in PATH after installing$PACKAGES"
done
[ -x /usr/sbin/vsftpd ] || command -v vsftpd >/dev/null 2>&1 || die "vsftpd not found after installing it"
# vsftpd serves anonymous users as "ftp" (its package creates the user).
getent passwd ftp >/dev/null 2>&1 || die "user ftp missing: reinstall vsftpd (apt-get install --reinstall vsftpd)"

# TUN: load the module if the device node is missing, create the node if
# the module is built in (containers may need --device /dev/net/tun).
if [ ! -c /dev/net/tun ]; then
	modprobe tun 2>/dev/null || true
	if [ ! -c /dev/net/tun ]; then
		mkdir -p /dev/net
		mknod /dev/net/tun c 10 200 2>/dev/null && chmod 666 /dev/net/tun
	fi
	[ -c /dev/net/tun ] || die "/dev/net/tun is missing and cannot be created (in a container, pass --device /dev/net/tun)"
fi

# Network namespaces: create and delete a throw-away one.
ns="e2e-prereqs-$$"
ip netns add "$ns" 2>/dev/null || die "cannot create network namespaces (ip netns add): CAP_SYS_ADMIN needed"
ip netns del "$ns"
exit 0
