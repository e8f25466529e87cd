// Package routertest runs the router daemon (cmd/router) as a process for
// the tests that need a real one (test/e2e, test/egress,
// test/conformance): it builds the binary, starts it and the tests' helper
// processes in their own process groups, waits until the router runs,
// stops it with SIGTERM and reads its JSON trace file. It is a normal
// package, used only by tests.
package routertest
