/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_MERGER_H
#define TCPTAP_MERGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "record.h"

/*
 * Merges the records of all per-CPU rings into one stream ordered by ts_ns.
 * No kernel dependency: the ring reader pushes records and sync proofs, the
 * daemon calls merger_release() on every tick with the current
 * CLOCK_MONOTONIC time. merger.c explains why the release rule keeps the
 * stream in order and what it requires from the BPF programs.
 */

enum merger_rule {
	/* Release a record once every online CPU proved, by a sync record
	 * written with no event program in flight, that nothing older can
	 * still arrive from it. */
	MERGER_RULE_SYNC = 0,
	/* Release everything older than the clock reading taken before the
	 * last drain. Kept to demonstrate the inversion it allows. */
	MERGER_RULE_CLOCK = 1,
};

struct merger_config {
	unsigned int ncpus;		/* rings 0 .. ncpus-1 (possible CPUs), at least 1 */
	enum merger_rule rule;
	uint64_t max_hold_ns;		/* frontier lag after which a CPU is stalled */
	/* Maximum number of records held after a merger_release(); past it the
	 * oldest are forced out. Checked at release, so between two releases
	 * the merger also holds what one drain of the rings pushed. At least 1. */
	size_t max_pending;
	/* Called once when a CPU's stall episode begins (stalled = true, lag_ns is
	 * its frontier's lag) and once when it ends. May be NULL. */
	void (*on_stall)(unsigned int cpu, bool stalled, uint64_t lag_ns, void *userdata);
	void *userdata;
};

struct merger_cpu_stats {
	bool online;
	bool stalled;			/* stall episode open, as of the last merger_release() */
	bool has_frontier;
	uint64_t frontier_ns;		/* last proven frontier */
	uint64_t lag_ns;		/* now - frontier (or now - online time without a frontier); 0 offline */
	uint64_t events;		/* records pushed from this CPU */
	uint64_t syncs;			/* sync records received */
	uint64_t syncs_busy;		/* sync records that proved nothing (inflight > 0) */
	uint64_t stalls;		/* stall episodes declared */
	uint64_t late;			/* records released with late = true */
	uint64_t lost;			/* samples the kernel reported lost */
};

struct merger_stats {
	uint64_t pending;		/* records held now */
	uint64_t released;		/* records handed to the emit callback */
	uint64_t forced;		/* records released early because max_pending was hit */
	uint64_t last_released_ts;	/* ts_ns of the newest record released so far */
};

struct merger;

typedef void (*merger_emit_fn)(const struct record *r, void *userdata);

/* Returns -EINVAL for ncpus == 0, max_pending == 0 or an unknown rule, -ENOMEM. */
int merger_new(const struct merger_config *cfg, struct merger **ret_merger);
void merger_free(struct merger *m);

/* Add one event record; r->ev.cpu names its ring. A record older than what was
 * already released gets late = true (whatever r->late says) and goes out at the
 * next merger_release(). Returns -EINVAL for a CPU out of range or a record of
 * type TCPTAP_EV_SYNC or RECORD_LOST (those have their own calls), -ENOMEM. */
int merger_push(struct merger *m, const struct record *r);

/* Add a sync record read from CPU cpu's ring. inflight > 0 proves nothing.
 * The BPF sync program must read the clock before it reads the in-flight
 * counter (see merger.c). A stall episode that the new frontier ends is
 * reported at the next merger_release(). Returns -EINVAL for a bad cpu. */
int merger_push_sync(struct merger *m, unsigned int cpu, uint64_t ts_ns, uint32_t inflight);

/* Note count samples lost on cpu's ring: queues a RECORD_LOST record placed so
 * that it never goes out of order. Returns -EINVAL for a bad cpu or count == 0,
 * -ENOMEM. */
int merger_push_lost(struct merger *m, unsigned int cpu, uint64_t count);

/* Mark cpu online or offline at now_ns. An offline CPU holds nothing back; a
 * CPU coming online starts without a frontier. All CPUs start online, and
 * their grace period without a frontier counts from the first
 * merger_release(). Push what is left in a CPU's ring before marking it
 * offline, or those records may come out late. Taking a CPU offline ends its
 * stall episode. Returns -EINVAL for a bad cpu. */
int merger_set_online(struct merger *m, unsigned int cpu, bool online, uint64_t now_ns);

/* MERGER_RULE_CLOCK only: the CLOCK_MONOTONIC reading taken before the drain
 * that preceded this release. The watermark never moves back. */
void merger_set_watermark(struct merger *m, uint64_t clock_ns);

/* Release every record the rule allows at now_ns, in ts_ns order, through
 * emit: first the late records pushed since the last release, then the held
 * records the rule allows, then the oldest held records past max_pending.
 * Returns the number released. */
size_t merger_release(struct merger *m, uint64_t now_ns, merger_emit_fn emit, void *userdata);

/* Fill ret_cpus with the online CPUs whose frontier holds back the oldest held
 * record (candidates for an on-demand sync). Returns how many were written,
 * at most size; 0 when nothing is held. */
size_t merger_cpus_behind(const struct merger *m, unsigned int *ret_cpus, size_t size);

/* Visit every held record, in no particular order. */
void merger_foreach_pending(const struct merger *m, merger_emit_fn visit, void *userdata);

/* Returns -EINVAL for a bad cpu. */
int merger_cpu_stats(const struct merger *m, unsigned int cpu, uint64_t now_ns,
		     struct merger_cpu_stats *ret_stats);
void merger_get_stats(const struct merger *m, struct merger_stats *ret_stats);

#endif /* TCPTAP_MERGER_H */
