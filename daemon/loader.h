/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_LOADER_H
#define TCPTAP_LOADER_H

#include <stdbool.h>
#include <stdint.h>

#include <linux/types.h>

#include "../bpf/tcptap_event.h"
#include "cookie_set.h"

/* Opens, configures, loads and attaches the BPF programs of one backend, and
 * owns the per-CPU sync perf events. */

enum backend {
	BACKEND_AUTO = 0,
	BACKEND_TRACEPOINT = 1,
	BACKEND_FENTRY = 2,
	BACKEND_KPROBE = 3,
};

struct loader_config {
	enum backend backend;
	uint32_t conn_map_entries;	/* sockets tracked in the kernel at once */
	uint64_t sync_interval_ns;	/* period of the per-CPU sync perf events */
	uint32_t batch_records;		/* records per sample, 1 to TCPTAP_BATCH_MAX */
	/* test only: busy-wait between timestamp and output, see tcptap.bpf.c */
	uint64_t test_stall_ns;
	uint32_t test_stall_cpu;
	uint32_t test_stall_netns;
	/* test only: pause after attaching the state-change program */
	uint64_t test_attach_gap_ns;
};

struct loader;

int backend_from_string(const char *s, enum backend *ret_backend);
const char *backend_to_string(enum backend b);

/* Choose and load a backend. With BACKEND_AUTO every backend is probed and the
 * reasons for each verdict are logged at notice level. */
int loader_open(const struct loader_config *cfg, struct loader **ret_loader);

/* Attach the event programs of the loaded backend. */
int loader_attach(struct loader *l);
void loader_free(struct loader *l);

enum backend loader_backend(const struct loader *l);
int loader_events_fd(const struct loader *l);

/* Register the owner of a connection found by the start-up dump in the BPF
 * side's seeded map, or remove it again. */
int loader_add_seed(struct loader *l, uint64_t cookie, const struct tcptap_owner *owner);
int loader_remove_seed(struct loader *l, uint64_t cookie);

/* (Re)attach the periodic sync perf event of cpu, e.g. after it came online. */
int loader_attach_sync(struct loader *l, unsigned int cpu);
void loader_detach_sync(struct loader *l, unsigned int cpu);

/* Report the accept() calls of threads tids, found blocked in accept when the
 * backend was attached: fentry and kprobe programs miss calls entered before
 * attach. A no-op for the tracepoint backend. */
int loader_watch_accept_waiters(struct loader *l, const uint32_t *tids, size_t count);
/* Detach what loader_watch_accept_waiters() attached once every such thread
 * has returned from its accept. */
void loader_check_accept_waiters(struct loader *l);

/* Write a sync record into cpu's ring now (BPF_PROG_TEST_RUN on that CPU). */
int loader_sync_now(struct loader *l, unsigned int cpu);

/* Records waiting in the per-CPU batches, which a sync writes out: in all, and
 * in cpu's batch if ret_cpu_count is not NULL. The counts can be stale by the
 * time they return. */
int loader_batched_records(const struct loader *l, unsigned int cpu, uint64_t *ret_count,
			   uint64_t *ret_cpu_count);

/* Add to set the cookies of every connection the BPF side still tracks as
 * introduced: live in its conns map, or registered by the start-up dump. */
int loader_tracked_cookies(const struct loader *l, struct cookie_set *set);

/* Sum over CPUs of the BPF side's counters (enum tcptap_bpf_counter). */
int loader_read_counters(const struct loader *l, uint64_t ret_totals[TCPTAP_CNT_MAX]);

/* Runs of the event programs the kernel skipped because one was already
 * running on that CPU (bpf_prog_info.recursion_misses, Linux 5.12+). */
uint64_t loader_recursion_misses(const struct loader *l);

#endif /* TCPTAP_LOADER_H */
