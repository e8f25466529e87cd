// Package e2e holds end-to-end tests of the router daemon with real TUN
// devices and network namespaces: the router binary is built once, run as
// a child process with a generated configuration whose two devices live in
// a client namespace ("LAN", lan0) and a server namespace ("Internet",
// wan0), and real tools (ping, curl, vsftpd, iperf3) and in-process
// servers talk through it. The router is inspected through its control
// socket (`router ct`, `router rules`) and its per-packet trace.
//
// The tests need root, /dev/net/tun, iproute2 and the tools each test
// names; scripts/e2e-prereqs.sh installs them on Debian. Without them the
// tests skip, and with REQUIRE_E2E=1 (CI) they fail instead:
//
//	sudo scripts/e2e-prereqs.sh && sudo REQUIRE_E2E=1 go test ./test/e2e/
//
// The package has no code outside its tests.
package e2e
