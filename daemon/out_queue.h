/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef TCPTAP_OUT_QUEUE_H
#define TCPTAP_OUT_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Bytes of whole JSON lines waiting for one client's socket, with the seq of
 * every line that carries one, so the server can tell which seq a client has
 * fully received after any partial send. Zero-initialized is an empty queue.
 */

/* End position of a line that carries a stream seq, in its queue's byte stream. */
struct seq_mark {
	uint64_t end;		/* sent_total once the line is fully sent */
	uint64_t seq;
};

struct out_queue {
	char *data;
	size_t head;		/* first unsent byte */
	size_t tail;		/* end of the queued bytes */
	size_t capacity;
	uint64_t sent_total;	/* bytes consumed since the queue was created */
	bool mid_line;		/* the byte at head continues a line partly sent */

	struct seq_mark *marks;	/* ring, oldest first */
	size_t marks_first;
	size_t marks_count;
	size_t marks_capacity;
};

static inline size_t out_queue_unsent(const struct out_queue *q)
{
	return q->tail - q->head;
}

static inline const char *out_queue_unsent_data(const struct out_queue *q)
{
	return q->data + q->head;
}

/* True if the unsent bytes start in the middle of a line partly sent. */
static inline bool out_queue_mid_line(const struct out_queue *q)
{
	return q->mid_line && q->head < q->tail;
}

/* Free the buffers and drop every unsent byte; sent_total is kept. */
void out_queue_clear(struct out_queue *q);

/* Queue one whole line ending in '\n'. seq 0 means the line carries no seq. */
int out_queue_append(struct out_queue *q, const char *line, size_t n, uint64_t seq);

/* Drop n bytes that were sent. If that completes lines carrying a seq,
 * *last_seq becomes the newest of them; otherwise it is left alone. */
void out_queue_consume(struct out_queue *q, size_t n, uint64_t *last_seq);

/* Drop every unsent byte except the rest of a line already partly sent,
 * which must still go out so the reader gets no torn line. Returns the seq
 * of that line, or 0 if it carries none or no line was partly sent. */
uint64_t out_queue_keep_partial_line(struct out_queue *q);

#endif /* TCPTAP_OUT_QUEUE_H */
