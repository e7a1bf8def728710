/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_RING_READER_H
#define TCPTAP_RING_READER_H

#include <stddef.h>
#include <stdint.h>

#include "merger.h"

/* Reads every CPU's perf ring and feeds the merger: event records, sync
 * records and the kernel's lost-sample notices. */
struct ring_reader;

struct ring_reader_stats {
	uint64_t samples;		/* event records read */
	uint64_t syncs;			/* sync records read */
	uint64_t lost;			/* records lost on full rings */
	uint64_t bad_size;		/* samples rejected for their size */
	uint64_t bad_type;		/* samples rejected for their type */
};

/* events_fd is the BPF_MAP_TYPE_PERF_EVENT_ARRAY; pages is the size of each
 * CPU's ring in pages (a power of two). The kernel wakes the reader only when
 * a ring is half full; the daemon drains on its tick. */
int ring_reader_new(int events_fd, size_t pages, struct merger *merger,
		    struct ring_reader **ret_reader);
void ring_reader_free(struct ring_reader *r);

/* The epoll fd that becomes readable when a ring passes its watermark. */
int ring_reader_fd(const struct ring_reader *r);

/* Read everything currently in every ring. */
int ring_reader_drain(struct ring_reader *r);

void ring_reader_get_stats(const struct ring_reader *r, struct ring_reader_stats *ret_stats);

#endif /* TCPTAP_RING_READER_H */
