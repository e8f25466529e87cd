// Package conntrack tracks connections with the semantics of Linux's
// nf_conntrack: for every IP packet it decides which connection the packet
// belongs to and its ctinfo (NEW, ESTABLISHED, RELATED, their reply forms,
// UNTRACKED), or that it is INVALID and why (an enumerated Reason).
//
// A Table is owned by one pipeline worker: it takes no lock and no atomic
// read-modify-write on the per-packet path, never reads the clock (the
// caller passes now), and runs no goroutine. The pipeline steers both
// directions of a connection, and ICMP errors about it, to the same worker
// by the key's symmetric hash. Expectations (RELATED data connections
// announced by helpers such as FTP) are the one structure shared between
// workers; it is consulted only when a packet misses the table.
//
// The control plane (listing, deleting, flushing, saving and restoring
// entries) calls a Table's methods on its owner's goroutine: the pipeline
// runs such requests between batches.
package conntrack
