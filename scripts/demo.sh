#!/usr/bin/env bash
# A one-minute tour of the router: two network namespaces (a LAN host and
# an "Internet" server), the router between them on config.example.toml,
# then ping, HTTP, active and passive FTP through it, the tracked
# connections (with the FTP data connection RELATED to its control
# connection), and a crafted INVALID packet dropped and counted with its
# reason. Everything it creates is removed at the end.
#
#   sudo ./scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib/apt.sh
. scripts/lib/apt.sh
if [ "$(id -u)" != 0 ]; then
	echo "demo: needs root (network namespaces, TUN devices): sudo $0" >&2
	exit 1
fi
command -v go >/dev/null || { echo "demo: Go is not installed (https://go.dev/dl/, 1.26 or newer)" >&2; exit 1; }

need=()
for t in ping:iputils-ping curl:curl vsftpd:vsftpd hping3:hping3 python3:python3; do
	command -v "${t%%:*}" >/dev/null || need+=("${t##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
	echo "== installing ${need[*]}"
	install_packages "${need[@]}"
fi

mkdir -p bin
go build -o bin/router ./cmd/router
R=./bin/router
SOCK=/run/router/ctl.sock
work=$(mktemp -d)
pids=()
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	[ -n "${router:-}" ] && kill -TERM "$router" 2>/dev/null && wait "$router" 2>/dev/null
	ip netns del rt-lan 2>/dev/null
	ip netns del rt-wan 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

for ns in rt-lan rt-wan; do
	ip netns del "$ns" 2>/dev/null || true
	ip netns add "$ns"
	ip -n "$ns" link set lo up
done

say "starting the router on config.example.toml (log: $work/router.log)"
$R run --config config.example.toml >"$work/router.log" 2>&1 &
router=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat "$work/router.log"; echo "demo: the router did not start" >&2; exit 1; }
grep -E "device ready|router running" "$work/router.log" | sed 's/^/  /'

say "ping and ping6 from the LAN host (rt-lan) to the server (rt-wan)"
run ip netns exec rt-lan ping -c 2 -W 2 198.51.100.2
run ip netns exec rt-lan ping -6 -c 2 -W 2 2001:db8:100::2

say "HTTP download through the router"
mkdir -p "$work/www" "$work/ftp"
head -c 2000000 /dev/urandom >"$work/www/file.bin"
cp "$work/www/file.bin" "$work/ftp/file.bin"
ip netns exec rt-wan python3 -m http.server 8080 --bind 198.51.100.2 --directory "$work/www" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do ip netns exec rt-wan bash -c "exec 3<>/dev/tcp/198.51.100.2/8080" 2>/dev/null && break; sleep 0.1; done
run ip netns exec rt-lan curl -sS -o "$work/http.bin" -w '%{http_code} %{size_download} bytes\n' http://198.51.100.2:8080/file.bin
cmp "$work/www/file.bin" "$work/http.bin" && echo "  identical to the server's file"

say "FTP with vsftpd: active (PORT) and passive (PASV) transfers"
mkdir -p "$work/empty"
cat >"$work/vsftpd.conf" <<EOF
listen=YES
listen_address=198.51.100.2
anonymous_enable=YES
anon_root=$work/ftp
no_anon_password=YES
local_enable=NO
write_enable=NO
pasv_enable=YES
port_enable=YES
connect_from_port_20=NO
seccomp_sandbox=NO
background=NO
secure_chroot_dir=$work/empty
xferlog_enable=NO
EOF
chmod 755 "$work" "$work/ftp"
chmod 644 "$work/ftp/file.bin"
ip netns exec rt-wan vsftpd "$work/vsftpd.conf" &
pids+=($!)
for _ in $(seq 50); do ip netns exec rt-wan bash -c "exec 3<>/dev/tcp/198.51.100.2/21" 2>/dev/null && break; sleep 0.1; done
run ip netns exec rt-lan curl -sS --disable-eprt -P - -o "$work/active.bin" -w 'active  (PORT): %{size_download} bytes\n' ftp://198.51.100.2/file.bin
run ip netns exec rt-lan curl -sS --disable-epsv -o "$work/passive.bin" -w 'passive (PASV): %{size_download} bytes\n' ftp://198.51.100.2/file.bin
cmp "$work/ftp/file.bin" "$work/active.bin" && cmp "$work/ftp/file.bin" "$work/passive.bin" && echo "  both identical to the server's file"

say "the connection tracking table (router ct -L): the FTP data connections are [expected] children of the control connection"
run $R ct -L --socket "$SOCK"

say "a crafted INVALID packet: TCP with SYN and FIN set, from the LAN host"
run ip netns exec rt-lan hping3 -q -c 1 -S -F -p 80 198.51.100.2 2>&1 | grep -v "^$" || true
sleep 0.5
echo "-- the router's log line for it (rule 'INVALID packets are dropped and logged with the reason'):"
grep "DROP INVALID" "$work/router.log" | tail -1 | sed 's/^/  /'
echo "-- conntrack statistics (router ct -S): INVALID packets counted by reason"
run $R ct -S --socket "$SOCK"
echo "-- rule counters (router rules)"
run $R rules --socket "$SOCK"

say "stopping the router (SIGTERM): it drains, removes its devices and exits"
kill -TERM "$router"
wait "$router" || true
router=
tail -2 "$work/router.log" | sed 's/^/  /'
ip -n rt-lan link show lan0 >/dev/null 2>&1 && echo "demo: lan0 still exists!" >&2 || echo "  lan0 and wan0 are gone"
say "done"
