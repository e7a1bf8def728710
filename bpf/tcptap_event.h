/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
#ifndef TCPTAP_EVENT_H
#define TCPTAP_EVENT_H

/*
 * Record layout shared by the BPF programs and tcptapd. Only fixed-width kernel
 * types, no libc, so both sides compile it unchanged. Every perf sample the
 * programs write contains 1 to TCPTAP_BATCH_MAX records of struct
 * tcptap_event, back to back. The reader rejects and counts samples of any
 * other size.
 */

/* Records an event program collects on its CPU before it writes them to the
 * ring as one sample. */
#define TCPTAP_BATCH_MAX 8

enum tcptap_event_type {
	TCPTAP_EV_CONNECT = 1,		/* active open reached ESTABLISHED */
	TCPTAP_EV_ACCEPT = 2,		/* accept()/accept4() returned the socket */
	TCPTAP_EV_CLOSE = 3,		/* introduced connection left ESTABLISHED/CLOSE_WAIT */
	TCPTAP_EV_CONNECT_FAILED = 4,	/* active open closed before ESTABLISHED */
	TCPTAP_EV_SYNC = 5,		/* per-CPU frontier proof, never published */
};

/* Address families as the kernel numbers them (AF_INET, AF_INET6). */
enum tcptap_family {
	TCPTAP_FAMILY_INET = 2,
	TCPTAP_FAMILY_INET6 = 10,
};

/* Slots of the per-CPU counter map that the daemon reports. */
enum tcptap_bpf_counter {
	TCPTAP_CNT_OUTPUT_FAILED = 0,	/* bpf_perf_event_output() returned an error */
	TCPTAP_CNT_OWNER_MAP_FULL = 1,	/* introduced connection not tracked: close would be missed */
	TCPTAP_CNT_CONNECTING_MAP_FULL = 2, /* connecting socket not tracked: connect unattributed */
	TCPTAP_CNT_SYNC_BUSY = 3,	/* sync written while an event program was in flight */
	TCPTAP_CNT_UNATTRIBUTED = 4,	/* connect seen without its connect() call: pid 0 */
	TCPTAP_CNT_MAX = 5,
};

/* Set in cookies the kprobe backend assigns to sockets without one. */
#define TCPTAP_SYNTHETIC_COOKIE_BIT (1ULL << 63)

#define TCPTAP_COMM_LEN 16
#define TCPTAP_ADDR_LEN 16

struct tcptap_event {
	__u64 ts_ns;		/* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 cookie;		/* socket cookie; 0 on sync records */
	__u64 cgroup;		/* cgroup v2 id of the attributed process */
	__u32 netns;		/* network namespace inode */
	__u32 pid;		/* tgid of the attributed process */
	__u32 tid;		/* thread id of the attributed process */
	__u32 uid;
	__u32 cpu;		/* CPU whose ring carries the record */
	__u32 inflight;		/* sync only: event programs in flight on this CPU */
	__s32 error;		/* connect_failed only: positive errno */
	__u32 batch_lost;	/* sync only: records that batches the kernel dropped
				 * held beyond one each, since the last sync */
	__u16 sport;		/* host byte order, this host's end */
	__u16 dport;		/* host byte order, the peer's end */
	__u8 type;		/* enum tcptap_event_type */
	__u8 family;		/* enum tcptap_family */
	__u8 pad[2];
	__u8 saddr_be[TCPTAP_ADDR_LEN];	/* network byte order; IPv4 in the first 4 bytes */
	__u8 daddr_be[TCPTAP_ADDR_LEN];
	char comm[TCPTAP_COMM_LEN];
};

/* One CPU's records waiting to go to its ring as one sample: the value at the
 * CPU's index in the BPF side's batches map, which tcptapd maps read-only to
 * see whether any batch contains records. The padding keeps each CPU's batch in
 * cache lines of its own. */
struct tcptap_batch {
	__u32 count;		/* records held */
	__u32 lost;		/* records dropped with batches, minus one per batch */
	struct tcptap_event records[TCPTAP_BATCH_MAX];
	__u8 pad[56];
};

#define TCPTAP_EVENT_SIZE 112

_Static_assert(sizeof(struct tcptap_event) == TCPTAP_EVENT_SIZE,
	       "struct tcptap_event must keep its ABI size");

/*
 * Attribution kept by the BPF programs for every connection they introduced,
 * so the close record names the process even when the closing transition runs
 * in softirq context or in another process. tcptapd writes the same value into
 * the seed map for connections found at start-up.
 */
struct tcptap_owner {
	__u64 cgroup;
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u32 pad;
	char comm[TCPTAP_COMM_LEN];
};

/* Life of a socket in the BPF side's conns map, keyed by its struct sock
 * address. tcptapd reads the map to find connections whose close was lost. */
enum tcptap_conn_phase {
	PHASE_CONNECTING = 1,		/* SYN sent; owner is the connecting thread */
	PHASE_PENDING_ACCEPT = 2,	/* passive open established, accept() not returned yet */
	PHASE_LIVE = 3,			/* introduced by a connect or accept record */
	PHASE_CLOSED_UNACCEPTED = 4,	/* closed while waiting in the accept queue */
};

struct conn_state {
	struct tcptap_owner owner;
	__u64 cookie;
	__u32 phase;			/* enum tcptap_conn_phase */
	__u32 pad;
};

#endif /* TCPTAP_EVENT_H */
