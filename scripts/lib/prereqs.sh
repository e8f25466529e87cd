# shellcheck shell=sh
# prereqs.sh: checks shared by e2e-prereqs.sh and egress-prereqs.sh. Source
# lib/apt.sh first: a failed check exits through apt_die.

# require_tools PACKAGES TOOL...: exit when a TOOL is not in PATH (a
# package can be installed yet broken), naming the PACKAGES that should
# have provided it.
require_tools() {
	_pr_packages=$1
	shift
	for _pr_tool in "$@"; do
		command -v "$_pr_tool" >/dev/null 2>&1 || apt_die "$_pr_tool not found in PATH after installing $_pr_packages"
	done
}

# require_vsftpd: vsftpd and the user "ftp" it serves anonymous users as
# (its package creates the user).
require_vsftpd() {
	[ -x /usr/sbin/vsftpd ] || command -v vsftpd >/dev/null 2>&1 || apt_die "vsftpd not found after installing it"
	getent passwd ftp >/dev/null 2>&1 || apt_die "user ftp missing: reinstall vsftpd (apt-get install --reinstall vsftpd)"
}

# ensure_tun_device: load the tun module if /dev/net/tun is missing, create
# the node if the module is built in (containers may need --device
# /dev/net/tun); exit when there is still none.
ensure_tun_device() {
	[ ! -c /dev/net/tun ] || return 0
	modprobe tun 2>/dev/null || true
	if [ ! -c /dev/net/tun ]; then
		mkdir -p /dev/net
		mknod /dev/net/tun c 10 200 2>/dev/null && chmod 666 /dev/net/tun
	fi
	[ -c /dev/net/tun ] || apt_die "/dev/net/tun is missing and cannot be created (in a container, pass --device /dev/net/tun)"
}
