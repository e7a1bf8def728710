// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "out_queue.h"

/* Buffer a queue starts with when it first gets data. */
#define OUT_QUEUE_INITIAL_BYTES 4096
/* A drained queue keeps its buffer only up to this size, so a burst to one
 * client does not pin memory for the rest of its connection. */
#define OUT_QUEUE_KEEP_BYTES (64 * 1024)
#define OUT_QUEUE_INITIAL_MARKS 64

void out_queue_clear(struct out_queue *q)
{
	free(q->data);
	free(q->marks);
	*q = (struct out_queue){ .sent_total = q->sent_total };
}

static int out_queue_reserve(struct out_queue *q, size_t n)
{
	size_t unsent = out_queue_unsent(q);
	size_t capacity;
	char *data;

	if (n <= q->capacity - q->tail)
		return 0;

	/* Move the unsent bytes to the start if that makes enough room. */
	if (q->head > 0 && unsent + n <= q->capacity) {
		memmove(q->data, q->data + q->head, unsent);
		q->head = 0;
		q->tail = unsent;
		return 0;
	}

	capacity = q->capacity ? q->capacity : OUT_QUEUE_INITIAL_BYTES;
	while (capacity < unsent + n)
		capacity *= 2;

	data = malloc(capacity);
	if (!data)
		return -ENOMEM;
	if (unsent > 0)
		memcpy(data, q->data + q->head, unsent);
	free(q->data);
	q->data = data;
	q->head = 0;
	q->tail = unsent;
	q->capacity = capacity;
	return 0;
}

static struct seq_mark *out_queue_mark(const struct out_queue *q, size_t i)
{
	return &q->marks[(q->marks_first + i) % q->marks_capacity];
}

static int out_queue_add_mark(struct out_queue *q, uint64_t end, uint64_t seq)
{
	if (q->marks_count == q->marks_capacity) {
		size_t capacity = q->marks_capacity * 2;
		struct seq_mark *marks;

		if (capacity == 0)
			capacity = OUT_QUEUE_INITIAL_MARKS;
		marks = malloc(capacity * sizeof(*marks));
		if (!marks)
			return -ENOMEM;
		for (size_t i = 0; i < q->marks_count; i++)
			marks[i] = *out_queue_mark(q, i);
		free(q->marks);
		q->marks = marks;
		q->marks_first = 0;
		q->marks_capacity = capacity;
	}

	q->marks_count++;
	*out_queue_mark(q, q->marks_count - 1) = (struct seq_mark){ .end = end, .seq = seq };
	return 0;
}

int out_queue_append(struct out_queue *q, const char *line, size_t n, uint64_t seq)
{
	int r;

	/* Reserve the mark first, so a failure leaves the queue unchanged. */
	if (seq != 0) {
		r = out_queue_add_mark(q, q->sent_total + out_queue_unsent(q) + n, seq);
		if (r < 0)
			return r;
	}

	r = out_queue_reserve(q, n);
	if (r < 0) {
		if (seq != 0)
			q->marks_count--;
		return r;
	}
	memcpy(q->data + q->tail, line, n);
	q->tail += n;
	return 0;
}

void out_queue_consume(struct out_queue *q, size_t n, uint64_t *last_seq)
{
	if (n == 0)
		return;

	q->head += n;
	q->sent_total += n;
	q->mid_line = q->data[q->head - 1] != '\n';

	while (q->marks_count > 0 && out_queue_mark(q, 0)->end <= q->sent_total) {
		*last_seq = out_queue_mark(q, 0)->seq;
		q->marks_first = (q->marks_first + 1) % q->marks_capacity;
		q->marks_count--;
	}

	if (q->head == q->tail) {
		q->head = q->tail = 0;
		if (q->capacity > OUT_QUEUE_KEEP_BYTES) {
			free(q->data);
			q->data = NULL;
			q->capacity = 0;
		}
	}
}

uint64_t out_queue_keep_partial_line(struct out_queue *q)
{
	size_t keep = 0;
	uint64_t end;

	if (out_queue_mid_line(q)) {
		const char *nl = memchr(q->data + q->head, '\n', out_queue_unsent(q));

		keep = nl ? (size_t)(nl - (q->data + q->head)) + 1 : out_queue_unsent(q);
	}
	q->tail = q->head + keep;
	end = q->sent_total + keep;

	/* Marks past the kept bytes belong to dropped lines. */
	while (q->marks_count > 0 && out_queue_mark(q, q->marks_count - 1)->end > end)
		q->marks_count--;

	if (keep > 0 && q->marks_count > 0 && out_queue_mark(q, q->marks_count - 1)->end == end)
		return out_queue_mark(q, q->marks_count - 1)->seq;
	return 0;
}
