// Package egress holds end-to-end tests of the router's rootless egress:
// the router runs as an unprivileged user in a "host" network namespace
// (standing in for the host: its servers listen on 127.0.0.1), the client
// lives in a network namespace whose default route is the router's TUN
// device, and every flow the client opens is relayed by the router's
// egress device (package egress) through the host's sockets, tracked and
// filtered on the way:
//
//	client ns (10.0.2.100, user-owned) ──TUN──▶ router (uid routertest,
//	   in the host ns) ── conntrack, filter, FTP helper ──▶ egress
//	   ──▶ sockets on the host ns: HTTP, vsftpd, UDP and DNS servers on
//	   127.0.0.1 (reached as the gateway 10.0.2.2, or 10.0.2.3 for DNS)
//
// The three rootless ways to get the TUN device are tested: a namespace
// made by `unshare --user --map-root-user --net` that the router enters
// itself through nsenter (netns = "/proc/PID/ns/net"); a launcher started
// with `unshare --user --map-root-user --net router tun-launch --socket`
// that passes the device over launcher_socket; and a descriptor inherited
// from a launcher (fd = 3). The tests check HTTP and FTP in passive mode
// (EPSV and PASV, the data connection admitted only as RELATED), a host
// port forwarded to a server inside, a destination the filter denies,
// UDP, the DNS forwarder, ping, and the errors for a missing /dev/net/tun
// and a launcher outside a user namespace.
//
// The tests need root (to set up namespaces and switch to the test user),
// /dev/net/tun, user namespaces and the tools of scripts/egress-prereqs.sh
// (unshare, nsenter, setpriv, curl, vsftpd, ping). Without them they skip;
// with REQUIRE_E2E=1 (CI) they fail:
//
//	sudo scripts/egress-prereqs.sh && sudo REQUIRE_E2E=1 go test ./test/egress/
//
// /dev/net/tun must be usable by the test user (mode 0666, the usual
// default): a test that finds it otherwise makes it so for its duration.
package egress
