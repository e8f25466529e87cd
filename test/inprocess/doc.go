// Package inprocess holds end-to-end tests of the router that run in one
// process and need no root: a gVisor netstack host (wireguard-go's
// tun/netstack) sits on each side of a pipeline, the client host on port
// "lan" and the server host on port "wan", and real TCP, UDP, ICMP, HTTP
// and FTP traffic crosses the router between them under the gateway's
// rule set.
//
// The package has no code outside its tests.
package inprocess
