// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <stdlib.h>

#include "history.h"

/* A ring of the last max_records published records, stored by value. */
struct history {
	struct record *ring;
	size_t max_records;
	size_t first;		/* ring position of the oldest held record */
	size_t count;
	uint64_t evicted_seq;	/* seq of the newest record pushed out, 0 if none */
};

int history_new(size_t max_records, struct history **ret_history)
{
	struct history *h;

	if (max_records == 0)
		return -EINVAL;

	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;

	h->ring = calloc(max_records, sizeof(*h->ring));
	if (!h->ring) {
		free(h);
		return -ENOMEM;
	}
	h->max_records = max_records;

	*ret_history = h;
	return 0;
}

void history_free(struct history *h)
{
	if (!h)
		return;
	free(h->ring);
	free(h);
}

/* The i-th held record, 0 being the oldest. */
static const struct record *history_at(const struct history *h, size_t i)
{
	return &h->ring[(h->first + i) % h->max_records];
}

void history_append(struct history *h, const struct record *r)
{
	if (h->count == h->max_records) {
		h->evicted_seq = h->ring[h->first].seq;
		h->ring[h->first] = *r;
		h->first = (h->first + 1) % h->max_records;
		return;
	}
	h->ring[(h->first + h->count) % h->max_records] = *r;
	h->count++;
}

uint64_t history_oldest_seq(const struct history *h)
{
	return h->count ? history_at(h, 0)->seq : 0;
}

uint64_t history_newest_seq(const struct history *h)
{
	return h->count ? history_at(h, h->count - 1)->seq : 0;
}

/*
 * A client at seq has seen every record up to seq. It can be served from here
 * if no record after seq was evicted, that is when seq is at least the seq of
 * the newest evicted record. A seq beyond the newest held record was
 * never published in this run. With contiguous seqs this is the same as
 * oldest_seq <= seq + 1 <= newest_seq + 1, but it stays exact across gaps.
 */
bool history_covers(const struct history *h, uint64_t seq)
{
	return seq >= h->evicted_seq && seq <= history_newest_seq(h);
}

size_t history_foreach_after(const struct history *h, uint64_t after, history_visit_fn visit,
			     void *userdata)
{
	size_t lo = 0, hi = h->count;

	/* Binary search for the first held record with seq > after: seqs grow
	 * strictly from the oldest to the newest. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (history_at(h, mid)->seq <= after)
			lo = mid + 1;
		else
			hi = mid;
	}

	for (size_t i = lo; i < h->count; i++)
		visit(history_at(h, i), userdata);
	return h->count - lo;
}
