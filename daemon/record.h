/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_RECORD_H
#define TCPTAP_RECORD_H

#include <stdbool.h>
#include <stdint.h>
#include <linux/types.h>

#include "../bpf/tcptap_event.h"

/* Record kinds that exist only in the daemon, numbered after enum tcptap_event_type. */
enum record_kind {
	RECORD_LOST = 100,	/* the kernel dropped records on one CPU's ring */
};

/* Cause of a RECORD_LOST record. */
enum record_lost_reason {
	/* The kernel dropped records because ev.cpu's perf ring was full. */
	RECORD_LOST_RING_FULL = 0,
	/* The kernel skipped event program runs that would have nested inside
	 * a run of the same program on one CPU (bpf_prog_info.recursion_misses).
	 * The CPU is not known. */
	RECORD_LOST_NESTED = 1,
};

/* Source of a table entry: the record that introduced the connection. */
enum record_origin {
	RECORD_ORIGIN_NONE = 0,
	RECORD_ORIGIN_CONNECT = 1,
	RECORD_ORIGIN_ACCEPT = 2,
	RECORD_ORIGIN_SEEDED = 3,	/* found by the start-up dump, no event seen */
};

/*
 * One entry of the merged stream. ev.type is an enum tcptap_event_type value
 * or RECORD_LOST. For RECORD_LOST, lost_count is the number of records lost,
 * lost_reason is the cause and, for RECORD_LOST_RING_FULL, ev.cpu is the ring.
 */
struct record {
	uint64_t seq;		/* position in the merged stream; 0 until published */
	uint64_t lost_count;	/* RECORD_LOST only */
	bool late;		/* released behind already published records */
	uint8_t lost_reason;	/* RECORD_LOST only: enum record_lost_reason */
	bool inferred;		/* close only: not observed, inferred after lost records */
	uint8_t origin;		/* enum record_origin, for table entries */
	struct tcptap_event ev;
};

#endif /* TCPTAP_RECORD_H */
