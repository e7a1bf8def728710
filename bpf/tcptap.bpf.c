// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include "vmlinux_min.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "tcptap_event.h"

/*
 * One program logic, three ways to attach it:
 *   tracepoint: tp_btf/inet_sock_set_state, tp_btf/tcp_destroy_sock and the
 *               syscalls:sys_exit_accept{,4} tracepoints;
 *   fentry:     fentry/tcp_set_state, fentry/tcp_v4_destroy_sock, fexit/inet_csk_accept;
 *   kprobe:     kprobe/tcp_set_state, kprobe/tcp_v4_destroy_sock, kretprobe/inet_csk_accept.
 * tcptapd enables the programs of one backend before loading.
 */

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define ECONNABORTED 103

enum {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT = 2,
	TCP_SYN_RECV = 3,
	TCP_CLOSE = 7,
	TCP_CLOSE_WAIT = 8,
};

/* Test-only knobs, set by tcptapd before load. With test_stall_ns == 0 (the
 * default) the verifier removes the stall code as dead. */
const volatile __u64 test_stall_ns = 0;
const volatile __u32 test_stall_cpu = 0;
const volatile __u32 test_stall_netns = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

/* Event programs between taking a timestamp and writing their record on this
 * CPU; see write_sync() for why the sync proof needs it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCPTAP_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* max_entries is set by tcptapd before load. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn_state);
} conns SEC(".maps");

/* Sockets found by the start-up dump, keyed by socket cookie and written by
 * tcptapd: established ones, so their close is reported with the dumped
 * owner, and connecting ones, so their connect is attributed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct tcptap_owner);
} seeded SEC(".maps");

/*
 * Smallest and largest cookie tcptapd ever inserted into seeded, both 0 until
 * the first insert. tcptapd widens the range before each insert and never
 * narrows it, so a cookie outside it has no entry and its lookup skips the
 * map. That spares tp_destroy a cold hash bucket for every socket. The kernel
 * hands out cookies in per-CPU batches (include/linux/cookie.h), so cookies
 * generated after the start-up dump lie above the range once each CPU has used
 * up the batch it held then.
 */
__u64 seeded_cookie_min = 0;
__u64 seeded_cookie_max = 0;

static __always_inline struct tcptap_owner *seeded_lookup(__u64 *cookie)
{
	if (*cookie < *(volatile __u64 *)&seeded_cookie_min ||
	    *cookie > *(volatile __u64 *)&seeded_cookie_max)
		return 0;
	return bpf_map_lookup_elem(&seeded, cookie);
}

static __always_inline void count(__u32 slot)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &slot);

	if (value)
		__sync_fetch_and_add(value, 1);
}

static __always_inline __u64 *inflight_slot(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&inflight, &zero);
}

/*
 * The increment must come before the program reads the clock, and the
 * decrement after its record is in the ring or in the batch. Both are atomic
 * instructions, which the compiler does not move across the helper calls
 * around them.
 */
static __always_inline void inflight_enter(__u64 *slot)
{
	__sync_fetch_and_add(slot, 1);
}

static __always_inline void inflight_exit(__u64 *slot)
{
	__sync_fetch_and_sub(slot, 1);
}

static long stall_step(__u32 index, void *ctx)
{
	__u64 *deadline = ctx;

	return bpf_ktime_get_ns() >= *deadline;
}

static __always_inline void test_stall(const struct tcptap_event *ev)
{
	__u64 deadline;

	if (!test_stall_ns || ev->cpu != test_stall_cpu)
		return;
	if (test_stall_netns && ev->netns != test_stall_netns)
		return;

	deadline = bpf_ktime_get_ns() + test_stall_ns;
	/* bpf_loop caps one call at 2^23 iterations; four calls cover stalls of
	 * well over a second. */
	for (int i = 0; i < 4; i++)
		bpf_loop(1 << 23, stall_step, &deadline, 0);
}

/*
 * Records wait in their CPU's batch until it contains batch_records of them or
 * a sync writes it out, so most records share a sample and its fixed cost in
 * bpf_perf_event_output(). Only the outermost event program on a CPU, or a
 * sync that found no event program in flight, touches the batch, as
 * write_sync() explains. tcptapd sets batch_records before load, from 1 (every
 * record is its own sample) to TCPTAP_BATCH_MAX.
 */
const volatile __u32 batch_records = TCPTAP_BATCH_MAX;

/* One batch per CPU, at the CPU's index. tcptapd sets max_entries to the
 * number of possible CPUs before load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct tcptap_batch);
} batches SEC(".maps");

static __always_inline struct tcptap_batch *batch_slot(void)
{
	__u32 cpu = bpf_get_smp_processor_id();

	return bpf_map_lookup_elem(&batches, &cpu);
}

/* The kernel counts a dropped sample as one lost sample whatever it held, so
 * batch->lost keeps the rest for the next sync to report. */
static __always_inline void flush_batch(void *ctx, struct tcptap_batch *b)
{
	__u32 n = b->count;

	if (n == 0 || n > TCPTAP_BATCH_MAX)
		return;
	if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, b->records,
				  n * sizeof(b->records[0])) < 0) {
		count(TCPTAP_CNT_OUTPUT_FAILED);
		b->lost += n - 1;
	}
	b->count = 0;
}

/* inflight is this CPU's in-flight counter, which the caller incremented. */
static __always_inline void emit(void *ctx, struct tcptap_event *ev, const __u64 *inflight)
{
	struct tcptap_batch *b = 0;
	__u32 n;

	ev->cpu = bpf_get_smp_processor_id();
	test_stall(ev);
	/* Above 1, this run interrupted another program on this CPU, which may
	 * be writing the batch: the record goes to the ring on its own. */
	if (batch_records > 1 && *(volatile const __u64 *)inflight == 1)
		b = batch_slot();
	if (!b) {
		if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, ev, sizeof(*ev)) < 0)
			count(TCPTAP_CNT_OUTPUT_FAILED);
		return;
	}
	n = b->count;
	/* Never true: a full batch is written out at once. The bound is for
	 * the verifier. */
	if (n >= TCPTAP_BATCH_MAX)
		n = 0;
	b->records[n] = *ev;
	b->count = n + 1;
	if (n + 1 >= batch_records)
		flush_batch(ctx, b);
}

static __always_inline void fill_owner(struct tcptap_owner *owner)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	owner->pid = pid_tgid >> 32;
	owner->tid = (__u32)pid_tgid;
	owner->uid = (__u32)bpf_get_current_uid_gid();
	owner->cgroup = bpf_get_current_cgroup_id();
	bpf_get_current_comm(owner->comm, sizeof(owner->comm));
}

static __always_inline void set_owner(struct tcptap_event *ev, const struct tcptap_owner *owner)
{
	ev->pid = owner->pid;
	ev->tid = owner->tid;
	ev->uid = owner->uid;
	ev->cgroup = owner->cgroup;
	__builtin_memcpy(ev->comm, owner->comm, sizeof(ev->comm));
}

static __always_inline bool ipv6_is_v4mapped(const struct in6_addr *a)
{
	return a->in6_u.u6_addr32[0] == 0 && a->in6_u.u6_addr32[1] == 0 &&
	       a->in6_u.u6_addr32[2] == bpf_htonl(0xffff);
}

/*
 * Reads a field of sk. Where sk is a BTF pointer (btf_sk: the arguments of
 * tp_btf and fentry programs), the read is a plain load that the JIT guards
 * against faults. bpf_probe_read_kernel() costs a helper call per field and
 * was the largest part of the event programs' time. kprobe arguments and
 * sockets found through the fd table are plain integers to the verifier and
 * need the helper. btf_sk is a constant in every program, so the compiler
 * drops the other branch.
 */
#define SK_READ(btf_sk, sk, field) ((btf_sk) ? (sk)->field : BPF_CORE_READ(sk, field))

/*
 * The first bytes of the struct sock_common of a socket that is not a BTF
 * pointer, read with one bpf_probe_read_kernel() instead of one call per
 * field. The copy ends with the last field that SKC_READ() takes from it, at
 * byte 96 on Linux 6.18 x86-64. NOTE: on a kernel where those fields end
 * beyond SKC_COPY_MAX_BYTES, the verifier rejects the programs at load.
 */
#define SKC_COPY_MAX_BYTES 128

struct skc_copy {
	__u8 bytes[SKC_COPY_MAX_BYTES];
};

#define SKC_END(field) \
	(bpf_core_field_offset(struct sock_common, field) + \
	 bpf_core_field_size(struct sock_common, field))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Copies sk's sock_common up to the end of the fields SKC_READ() takes. The
 * offsets are constants after relocation, so the verifier tracks size as a
 * constant and checks it against the buffer. */
static __always_inline int skc_copy_read(struct skc_copy *copy, const struct sock *sk)
{
	__u32 size = SKC_END(skc_daddr);

	size = MAX(size, SKC_END(skc_rcv_saddr));
	size = MAX(size, SKC_END(skc_dport));
	size = MAX(size, SKC_END(skc_num));
	size = MAX(size, SKC_END(skc_family));
	size = MAX(size, SKC_END(skc_net.net));
	size = MAX(size, SKC_END(skc_v6_daddr));
	size = MAX(size, SKC_END(skc_v6_rcv_saddr));
	size = MAX(size, SKC_END(skc_cookie.counter));
	return bpf_probe_read_kernel(copy->bytes, size, sk);
}

/* A field of sk's struct sock_common: a plain load where sk is a BTF pointer,
 * else taken from copy at the running kernel's offset of the field. */
#define SKC_READ(btf_sk, sk, copy, field) \
	((btf_sk) ? (sk)->__sk_common.field : \
		    *(__typeof__((sk)->__sk_common.field) *)((copy)->bytes + \
			bpf_core_field_offset(struct sock_common, field)))

/* Endpoints, ports and namespace of sk. The addresses stay in network byte
 * order; the ports are converted to host order here and nowhere else. */
static __always_inline void fill_sock(struct tcptap_event *ev, struct sock *sk, bool btf_sk,
				      const struct skc_copy *copy)
{
	__u16 family = SKC_READ(btf_sk, sk, copy, skc_family);
	__be32 saddr4, daddr4;

	/* The transition to CLOSE releases the local port before the
	 * tracepoint runs, zeroing skc_num; inet_sport still holds it. */
	ev->sport = SKC_READ(btf_sk, sk, copy, skc_num);
	if (!ev->sport)
		ev->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	ev->dport = bpf_ntohs(SKC_READ(btf_sk, sk, copy, skc_dport));
	if (btf_sk) {
		ev->netns = sk->__sk_common.skc_net.net->ns.inum;
	} else {
		/* Outside BPF_CORE_READ(), which would relocate the copy's
		 * own field access too. */
		struct net *net = SKC_READ(btf_sk, sk, copy, skc_net.net);

		ev->netns = BPF_CORE_READ(net, ns.inum);
	}

	if (family == AF_INET6) {
		struct in6_addr saddr6, daddr6;

		saddr6 = SKC_READ(btf_sk, sk, copy, skc_v6_rcv_saddr);
		daddr6 = SKC_READ(btf_sk, sk, copy, skc_v6_daddr);
		if (!ipv6_is_v4mapped(&daddr6)) {
			ev->family = TCPTAP_FAMILY_INET6;
			__builtin_memcpy(ev->saddr_be, &saddr6, sizeof(saddr6));
			__builtin_memcpy(ev->daddr_be, &daddr6, sizeof(daddr6));
			return;
		}
		/* An IPv6 socket talking to an IPv4-mapped address is an IPv4
		 * connection; the IPv4 fields of sock_common hold its ends. */
	}

	ev->family = TCPTAP_FAMILY_INET;
	saddr4 = SKC_READ(btf_sk, sk, copy, skc_rcv_saddr);
	daddr4 = SKC_READ(btf_sk, sk, copy, skc_daddr);
	__builtin_memcpy(ev->saddr_be, &saddr4, sizeof(saddr4));
	__builtin_memcpy(ev->daddr_be, &daddr4, sizeof(daddr4));
}

static __always_inline bool is_tcp_inet(struct sock *sk, bool btf_sk, const struct skc_copy *copy)
{
	__u16 family = SKC_READ(btf_sk, sk, copy, skc_family);

	if (family != AF_INET && family != AF_INET6)
		return false;
	return SK_READ(btf_sk, sk, sk_protocol) == IPPROTO_TCP;
}

static __always_inline __u64 read_cookie(struct sock *sk, bool btf_sk)
{
	return SK_READ(btf_sk, sk, __sk_common.skc_cookie.counter);
}

/* Next tcptap-assigned cookie, see cookie_or_synthetic(). */
__u64 synthetic_cookie_next = 0;

/*
 * kprobes cannot call bpf_get_socket_cookie(), and a socket's cookie stays 0
 * until some caller generates it. Such a socket gets a cookie of tcptap's own,
 * with bit 63 set so it can never equal a kernel cookie (those count up from
 * 1), stored with the socket's state and reused by its later records. It
 * differs from what SO_COOKIE would return for that socket.
 */
static __always_inline __u64 cookie_or_synthetic(__u64 cookie)
{
	if (cookie)
		return cookie;
	return TCPTAP_SYNTHETIC_COOKIE_BIT | __sync_fetch_and_add(&synthetic_cookie_next, 1);
}

/* Program flavors: TRACING programs (tp_btf, fentry) may call
 * bpf_get_socket_cookie(), which assigns a cookie if the socket has none.
 * kprobes read the cookie and fall back to a synthetic one. */
#define GEN_COOKIE(sk, can_generate) \
	((can_generate) ? bpf_get_socket_cookie(sk) : \
			  cookie_or_synthetic(read_cookie(sk, false)))

static __always_inline void on_connecting(struct sock *sk)
{
	struct conn_state state = { .phase = PHASE_CONNECTING };
	__u64 key = (__u64)sk;

	fill_owner(&state.owner);
	if (bpf_map_update_elem(&conns, &key, &state, BPF_ANY))
		count(TCPTAP_CNT_CONNECTING_MAP_FULL);
}

static __always_inline void on_connect_done(void *ctx, struct sock *sk, bool btf_sk,
					    const struct skc_copy *copy, bool established,
					    __u64 cookie)
{
	struct tcptap_owner owner = {};
	struct tcptap_event ev = {};
	struct conn_state *state;
	__u64 key = (__u64)sk;
	__u64 *slot = inflight_slot();

	if (!slot)
		return;
	inflight_enter(slot);

	state = bpf_map_lookup_elem(&conns, &key);
	if (state && state->phase == PHASE_CONNECTING) {
		owner = state->owner;
	} else {
		/* connect() was called before the programs were attached: the
		 * current context is not necessarily the connecting process,
		 * but the start-up dump registered the socket's owner if it
		 * was still connecting then. */
		struct tcptap_owner *seed = seeded_lookup(&cookie);

		if (seed) {
			owner = *seed;
			bpf_map_delete_elem(&seeded, &cookie);
		} else {
			count(TCPTAP_CNT_UNATTRIBUTED);
		}
	}
	set_owner(&ev, &owner);

	if (established) {
		if (state && state->phase == PHASE_CONNECTING) {
			/* In place: the owner is already there, and replacing
			 * the element would take the bucket lock and a free
			 * element. Transitions of one socket are serialized by
			 * its lock, so nothing reads the entry meanwhile. */
			state->cookie = cookie;
			state->phase = PHASE_LIVE;
		} else {
			struct conn_state live = { .owner = owner, .phase = PHASE_LIVE,
						   .cookie = cookie };

			if (bpf_map_update_elem(&conns, &key, &live, BPF_ANY))
				count(TCPTAP_CNT_OWNER_MAP_FULL);
		}
		ev.type = TCPTAP_EV_CONNECT;
	} else {
		int err = SK_READ(btf_sk, sk, sk_err);

		bpf_map_delete_elem(&conns, &key);
		ev.type = TCPTAP_EV_CONNECT_FAILED;
		/* sk_err is 0 when the application closed or disconnected the
		 * socket before the handshake finished. */
		ev.error = err ? err : ECONNABORTED;
	}

	ev.cookie = cookie;
	fill_sock(&ev, sk, btf_sk, copy);
	ev.ts_ns = bpf_ktime_get_ns();
	emit(ctx, &ev, slot);
	inflight_exit(slot);
}

/*
 * The child joins the accept queue before this transition runs, so accept()
 * on another CPU can return it first and on_accepted() then inserts it as
 * LIVE. That entry must stay: replacing it with PENDING would hide the
 * close. Any other entry was left by an earlier socket at the same address
 * and is replaced.
 */
static __always_inline void on_passive_established(struct sock *sk, __u64 cookie)
{
	struct conn_state state = { .phase = PHASE_PENDING_ACCEPT, .cookie = cookie };
	struct conn_state *existing;
	__u64 key = (__u64)sk;

	if (bpf_map_update_elem(&conns, &key, &state, BPF_NOEXIST) == 0)
		return;
	existing = bpf_map_lookup_elem(&conns, &key);
	if (existing && existing->phase == PHASE_LIVE)
		return;
	if (bpf_map_update_elem(&conns, &key, &state, BPF_ANY))
		count(TCPTAP_CNT_OWNER_MAP_FULL);
}

/*
 * An introduced connection left ESTABLISHED/CLOSE_WAIT. The state of a socket
 * that still waits in the accept queue is moved to CLOSED_UNACCEPTED with a
 * compare-and-swap that races only with on_accepted()'s PENDING -> LIVE swap:
 * exactly one of the two wins, so the close is reported either here or by
 * on_accepted(), never twice and never before its accept. The timestamp is
 * taken after the swap, so it is later than the accept record's timestamp,
 * which on_accepted() takes before its own swap.
 *
 * accept() sets sk_socket when it grafts the child to its new file. A
 * PENDING entry whose socket has sk_socket set belongs to a connection
 * accepted before the accept programs were attached. That happens because
 * the programs are attached one by one, and because the handshake completion
 * can run after accept() returned the child. If the start-up dump registered
 * such a connection, its close is reported as a seeded connection's.
 */
static __always_inline void on_closed(void *ctx, struct sock *sk, bool btf_sk,
				      const struct skc_copy *copy)
{
	struct tcptap_event ev = { .type = TCPTAP_EV_CLOSE };
	struct conn_state *state;
	struct tcptap_owner *seed;
	__u64 key = (__u64)sk;
	__u64 *slot = inflight_slot();
	__u64 cookie;

	if (!slot)
		return;
	inflight_enter(slot);

	state = bpf_map_lookup_elem(&conns, &key);
	if (state) {
		if (state->phase == PHASE_PENDING_ACCEPT &&
		    __sync_val_compare_and_swap(&state->phase, PHASE_PENDING_ACCEPT,
						PHASE_CLOSED_UNACCEPTED) == PHASE_PENDING_ACCEPT) {
			if (!SK_READ(btf_sk, sk, sk_socket))
				goto out;
			goto seeded_close;
		}
		if (state->phase != PHASE_LIVE)
			goto out;
		set_owner(&ev, &state->owner);
		ev.cookie = state->cookie;
		if (bpf_map_delete_elem(&conns, &key))
			goto out;
		goto output;
	}

seeded_close:
	cookie = read_cookie(sk, btf_sk);
	if (!cookie)
		goto out;
	seed = seeded_lookup(&cookie);
	if (!seed)
		goto out;
	set_owner(&ev, seed);
	ev.cookie = cookie;
	if (bpf_map_delete_elem(&seeded, &cookie))
		goto out;

output:
	fill_sock(&ev, sk, btf_sk, copy);
	ev.ts_ns = bpf_ktime_get_ns();
	emit(ctx, &ev, slot);
out:
	inflight_exit(slot);
}

/* The transitions on_state_change() acts on. About half of a connection's
 * state changes are other ones, which return before reading the socket. */
static __always_inline bool is_tracked_transition(int oldstate, int newstate)
{
	if (newstate == TCP_SYN_SENT || oldstate == TCP_SYN_SENT)
		return true;
	if (oldstate == TCP_SYN_RECV)
		return newstate == TCP_ESTABLISHED;
	return (oldstate == TCP_ESTABLISHED || oldstate == TCP_CLOSE_WAIT) &&
	       newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE_WAIT;
}

static __always_inline void on_state_change(void *ctx, struct sock *sk, int oldstate,
					    int newstate, bool btf_sk)
{
	struct skc_copy copy;

	if (!is_tracked_transition(oldstate, newstate))
		return;
	if (!btf_sk && skc_copy_read(&copy, sk))
		return;
	if (!is_tcp_inet(sk, btf_sk, &copy))
		return;

	if (newstate == TCP_SYN_SENT) {
		on_connecting(sk);
		return;
	}
	if (oldstate == TCP_SYN_SENT) {
		bool established = newstate == TCP_ESTABLISHED;

		on_connect_done(ctx, sk, btf_sk, &copy, established, GEN_COOKIE(sk, btf_sk));
		return;
	}
	if (oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED) {
		on_passive_established(sk, GEN_COOKIE(sk, btf_sk));
		return;
	}
	if ((oldstate == TCP_ESTABLISHED || oldstate == TCP_CLOSE_WAIT) &&
	    newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE_WAIT)
		on_closed(ctx, sk, btf_sk, &copy);
}

/*
 * accept() returned sk to the current process. Runs in process context, so
 * the current task is the accepting one.
 */
static __always_inline void on_accepted(void *ctx, struct sock *sk)
{
	struct tcptap_event ev = { .type = TCPTAP_EV_ACCEPT };
	struct conn_state *state;
	struct tcptap_owner owner;
	struct skc_copy copy;
	__u64 key = (__u64)sk;
	__u64 *slot;
	bool closed = false;

	if (!sk || skc_copy_read(&copy, sk) || !is_tcp_inet(sk, false, &copy))
		return;
	slot = inflight_slot();
	if (!slot)
		return;
	inflight_enter(slot);

	ev.ts_ns = bpf_ktime_get_ns();
	fill_owner(&owner);
	state = bpf_map_lookup_elem(&conns, &key);
	if (!state) {
		/* Established before the programs were attached, or accept()
		 * returned the child before its transition to ESTABLISHED ran
		 * on another CPU. NOTE: in the second case the cookie may not
		 * exist yet, and the connection gets a synthetic one. If the
		 * connection closes concurrently with this accept, the close
		 * can be missed; the window is a few instructions wide. */
		struct conn_state live = { .owner = owner, .phase = PHASE_LIVE };
		unsigned char skstate;

		live.cookie = cookie_or_synthetic(read_cookie(sk, false));
		ev.cookie = live.cookie;
		if (bpf_map_update_elem(&conns, &key, &live, BPF_NOEXIST) == 0) {
			skstate = BPF_CORE_READ(sk, __sk_common.skc_state);
			/* SYN_RECV: the handshake completion is still running. */
			if (skstate != TCP_SYN_RECV && skstate != TCP_ESTABLISHED &&
			    skstate != TCP_CLOSE_WAIT)
				closed = bpf_map_delete_elem(&conns, &key) == 0;
			goto output;
		}
		/* The transition to ESTABLISHED inserted its entry meanwhile:
		 * take it over below, or its close would never be reported. */
		state = bpf_map_lookup_elem(&conns, &key);
		if (!state) {
			count(TCPTAP_CNT_OWNER_MAP_FULL);
			goto output;
		}
	}
	{
		__u32 old;

		if (state->phase != PHASE_PENDING_ACCEPT && state->phase != PHASE_CLOSED_UNACCEPTED)
			goto out;
		/* Written before the swap that publishes it to on_closed(). */
		state->owner = owner;
		ev.cookie = state->cookie;
		old = __sync_val_compare_and_swap(&state->phase, PHASE_PENDING_ACCEPT, PHASE_LIVE);
		if (old == PHASE_CLOSED_UNACCEPTED) {
			closed = bpf_map_delete_elem(&conns, &key) == 0;
			if (!closed)
				goto out;
		} else if (old != PHASE_PENDING_ACCEPT) {
			goto out;
		}
	}

output:
	set_owner(&ev, &owner);
	fill_sock(&ev, sk, false, &copy);
	emit(ctx, &ev, slot);
	if (closed) {
		ev.type = TCPTAP_EV_CLOSE;
		ev.ts_ns = bpf_ktime_get_ns();
		emit(ctx, &ev, slot);
	}
out:
	inflight_exit(slot);
}

static __always_inline void on_destroy(struct sock *sk, bool btf_sk)
{
	__u64 key = (__u64)sk;
	__u64 cookie;

	/* Drops what a socket that was never accepted left behind. Almost
	 * every socket has no entry left by now, and a lookup takes no lock
	 * where a delete takes the hash bucket's lock even for a missing key.
	 * Nothing inserts a key of a socket that is being destroyed, so the
	 * entry cannot appear between the lookup and the delete. */
	if (bpf_map_lookup_elem(&conns, &key))
		bpf_map_delete_elem(&conns, &key);
	cookie = read_cookie(sk, btf_sk);
	if (cookie && seeded_lookup(&cookie))
		bpf_map_delete_elem(&seeded, &cookie);
}

/*
 * Maps the fd accept() returned to its struct sock through the current task's
 * file table. The task, its files_struct and the fdtable are BTF pointers, so
 * the walk down to the fd array uses plain loads that the JIT guards against
 * faults. The verifier types a loaded pointer only if it points to a struct,
 * and fdtable.fd points to an array of pointers, so the file, the socket and
 * the sock are read with the helper.
 */
static __always_inline struct sock *sock_from_fd(long fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct file **fds;
	struct file *file;
	struct socket *sock;

	if (fd < 0 || fd >= fdt->max_fds)
		return 0;
	fds = fdt->fd;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	if (!sock)
		return 0;
	return BPF_CORE_READ(sock, sk);
}

/* ---- sync records ---- */

/*
 * Why a sync record with inflight == 0 proves CPU N's frontier:
 * an event program on CPU N increments CPU N's inflight counter before it
 * reads the clock and decrements it after its record is in CPU N's ring or
 * in CPU N's batch. BPF programs run with migration disabled, so all of it
 * happens on CPU N. write_sync() reads the clock first and the counter
 * second, and writes out the batch before its own record when the counter was
 * 0. Take an event E on CPU N with timestamp t < the sync's timestamp s:
 * CLOCK_MONOTONIC does not go back, so E read the clock before the sync did,
 * and E incremented the counter before that, so before the sync read the
 * counter. If E had not decremented yet, the sync reads at least 1 and proves
 * nothing. Otherwise E's record is in the ring, or in the batch that goes to
 * the ring ahead of the sync record. The argument uses only the order of
 * steps on CPU N, so it holds for nested programs, such as softirq work inside
 * a task-context program or a perf_event sync inside an event program, whose
 * syncs read a count above 0. It also holds for preemption or a vCPU stall
 * between any two steps, which only keep the counter above 0 longer. The
 * merger's comment next to its release rule gives the other half.
 *
 * The sync counts itself in flight while it writes, because tcptapd's
 * on-demand sync on its own CPU runs with interrupts enabled. An event
 * program in softirq work inside it then reads a count above 1 and leaves the
 * batch alone.
 */
static __always_inline int write_sync(void *ctx)
{
	struct tcptap_event ev = { .type = TCPTAP_EV_SYNC };
	__u64 *slot = inflight_slot();
	struct tcptap_batch *b = 0;

	if (!slot)
		return 0;
	ev.ts_ns = bpf_ktime_get_ns();
	ev.inflight = __sync_fetch_and_add(slot, 1);
	ev.cpu = bpf_get_smp_processor_id();
	if (ev.inflight) {
		count(TCPTAP_CNT_SYNC_BUSY);
	} else {
		b = batch_slot();
		if (b) {
			flush_batch(ctx, b);
			ev.batch_lost = b->lost;
		}
	}
	if (bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &ev, sizeof(ev)) < 0)
		count(TCPTAP_CNT_OUTPUT_FAILED);
	else if (b)
		b->lost -= ev.batch_lost;
	inflight_exit(slot);
	return 0;
}

/*
 * Periodic sync: attached by tcptapd to one CPU-clock software perf event per
 * CPU, which fires at the set period on idle and busy CPUs alike.
 */
SEC("perf_event")
int tcptap_sync_timer(void *ctx)
{
	return write_sync(ctx);
}

/*
 * On-demand sync, never attached. tcptapd runs it with BPF_PROG_TEST_RUN and
 * BPF_F_TEST_RUN_ON_CPU, which executes it on the chosen CPU, so the record
 * lands in that CPU's ring before the syscall returns.
 */
SEC("raw_tp")
int tcptap_sync_now(void *ctx)
{
	return write_sync(ctx);
}

/* ---- tracepoint backend ---- */

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_state, struct sock *sk, int oldstate, int newstate)
{
	on_state_change(ctx, sk, oldstate, newstate, true);
	return 0;
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tp_destroy, struct sock *sk)
{
	on_destroy(sk, true);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int tp_accept4_exit(struct syscall_exit_ctx *ctx)
{
	if (ctx->ret >= 0)
		on_accepted(ctx, sock_from_fd(ctx->ret));
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tp_accept_exit(struct syscall_exit_ctx *ctx)
{
	if (ctx->ret >= 0)
		on_accepted(ctx, sock_from_fd(ctx->ret));
	return 0;
}

/*
 * fexit and kretprobe programs do not run for a function entered before they
 * were attached, so an accept() that was already blocked when tcptapd started
 * is invisible to the fentry and kprobe backends. tcptapd puts the threads it
 * finds blocked in accept into accept_waiters and attaches this program to
 * the raw sys_exit tracepoint until they have all returned: each one's next
 * syscall exit is that accept's. An accept the fexit or kretprobe program
 * reported already finds its socket LIVE and is not reported twice.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} accept_waiters SEC(".maps");

#define X86_64_NR_ACCEPT 43
#define X86_64_NR_ACCEPT4 288

SEC("raw_tp/sys_exit")
int accept_waiter_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pt_regs *regs;
	long ret, nr;

	if (!bpf_map_lookup_elem(&accept_waiters, &tid))
		return 0;
	bpf_map_delete_elem(&accept_waiters, &tid);

	regs = (struct pt_regs *)ctx->args[0];
	ret = (long)ctx->args[1];
	nr = BPF_CORE_READ(regs, orig_ax);
	if ((nr == X86_64_NR_ACCEPT || nr == X86_64_NR_ACCEPT4) && ret >= 0)
		on_accepted(ctx, sock_from_fd(ret));
	return 0;
}

/* ---- fentry backend ---- */

SEC("fentry/tcp_set_state")
int BPF_PROG(fentry_state, struct sock *sk, int newstate)
{
	on_state_change(ctx, sk, BPF_CORE_READ(sk, __sk_common.skc_state), newstate, true);
	return 0;
}

SEC("fentry/tcp_v4_destroy_sock")
int BPF_PROG(fentry_destroy, struct sock *sk)
{
	on_destroy(sk, true);
	return 0;
}

/* inet_csk_accept() has two arguments since Linux 6.10 and four before, so
 * the return value is read with bpf_get_func_ret() rather than by position. */
SEC("fexit/inet_csk_accept")
int fexit_accept(void *ctx)
{
	__u64 ret = 0;

	bpf_get_func_ret(ctx, &ret);
	on_accepted(ctx, (struct sock *)ret);
	return 0;
}

/* ---- kprobe backend ---- */

SEC("kprobe/tcp_set_state")
int BPF_KPROBE(kprobe_state, struct sock *sk, int newstate)
{
	on_state_change(ctx, sk, BPF_CORE_READ(sk, __sk_common.skc_state), newstate, false);
	return 0;
}

SEC("kprobe/tcp_v4_destroy_sock")
int BPF_KPROBE(kprobe_destroy, struct sock *sk)
{
	on_destroy(sk, false);
	return 0;
}

SEC("kretprobe/inet_csk_accept")
int BPF_KRETPROBE(kprobe_accept_ret, struct sock *sk)
{
	on_accepted(ctx, sk);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
