# shellcheck shell=sh
# apt.sh: install Debian packages for the test and demo scripts. Source it
# (POSIX sh or bash):
#
#   . "$(dirname "$0")/lib/apt.sh"
#   install_missing iproute2 curl vsftpd
#
# Messages and errors start with $APT_WHO (default: the script's name
# without .sh) and go to stderr; a failure exits the calling script with 1.

# apt_say MESSAGE: print "$APT_WHO: MESSAGE" to stderr.
apt_say() {
	_apt_who=${0##*/}
	echo "${APT_WHO:-${_apt_who%.sh}}: $*" >&2
}

# apt_die MESSAGE: apt_say MESSAGE and exit 1.
apt_die() {
	apt_say "$@"
	exit 1
}

# missing_packages PKG...: print those of PKG... that dpkg does not list
# as installed, each preceded by a space (nothing when all are).
missing_packages() {
	for _apt_pkg in "$@"; do
		if ! dpkg-query -W -f='${Status}' "$_apt_pkg" 2>/dev/null | grep -q "install ok installed"; then
			printf ' %s' "$_apt_pkg"
		fi
	done
}

# require_apt_get PKG...: exit, naming PKG..., when there is no apt-get.
require_apt_get() {
	command -v apt-get >/dev/null 2>&1 || apt_die "apt-get not found; install these packages by hand: $*"
}

# install_packages PKG...: apt-get update, then install PKG... quietly,
# without recommended packages, non-interactively, and with a temporary
# /usr/sbin/policy-rc.d that keeps package scripts from starting services
# (vsftpd would start listening on port 21 of this host; the tests run
# their own). The policy file is removed again unless it was there before.
install_packages() {
	[ $# -gt 0 ] || return 0
	require_apt_get "$@"
	# A subshell, so that the traps that remove the policy file neither
	# replace the caller's nor outlive the installation.
	(
		policy=/usr/sbin/policy-rc.d
		own_policy=""
		if [ ! -e "$policy" ]; then
			{ printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"; } ||
				apt_die "cannot write $policy"
			own_policy=1
		fi
		trap '[ -z "$own_policy" ] || rm -f "$policy"' EXIT
		trap 'exit 130' INT TERM
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >/dev/null || apt_die "apt-get update failed"
		apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
			apt_die "apt-get install failed: $*"
	) || exit $?
}

# install_missing PKG...: install those of PKG... that are not installed
# yet (see install_packages), saying which; nothing when all are.
install_missing() {
	_apt_missing=$(missing_packages "$@")
	[ -n "$_apt_missing" ] || return 0
	# shellcheck disable=SC2086 # word splitting of the package list is intended
	require_apt_get $_apt_missing
	apt_say "installing$_apt_missing"
	# shellcheck disable=SC2086
	install_packages $_apt_missing
}
