// SPDX-License-Identifier: LGPL-2.1-or-later
#include <errno.h>
#include <linux/perf_event.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/libbpf.h>

#include "ring_reader.h"

struct ring_reader {
	struct perf_buffer *pb;
	struct merger *merger;
	struct ring_reader_stats stats;
};

/* Layout of the records the kernel writes for sample_type PERF_SAMPLE_RAW. */
struct raw_sample {
	struct perf_event_header header;
	uint32_t size;
	char data[];
};

struct lost_notice {
	struct perf_event_header header;
	uint64_t id;
	uint64_t lost;
};

static void handle_record(struct ring_reader *r, int cpu, const struct tcptap_event *ev)
{
	struct record rec = { 0 };

	memcpy(&rec.ev, ev, sizeof(rec.ev));
	if (rec.ev.cpu != (uint32_t)cpu) {
		/* A record is always written into its own CPU's ring. */
		r->stats.bad_type++;
		return;
	}

	switch (rec.ev.type) {
	case TCPTAP_EV_SYNC:
		r->stats.syncs++;
		/* The records of dropped batches beyond the one lost sample per
		 * batch that PERF_RECORD_LOST counted. */
		if (rec.ev.batch_lost) {
			r->stats.lost += rec.ev.batch_lost;
			(void)merger_push_lost(r->merger, (unsigned int)cpu, rec.ev.batch_lost);
		}
		(void)merger_push_sync(r->merger, (unsigned int)cpu, rec.ev.ts_ns,
				       rec.ev.inflight);
		break;
	case TCPTAP_EV_CONNECT:
	case TCPTAP_EV_ACCEPT:
	case TCPTAP_EV_CLOSE:
	case TCPTAP_EV_CONNECT_FAILED:
		r->stats.samples++;
		(void)merger_push(r->merger, &rec);
		break;
	default:
		r->stats.bad_type++;
	}
}

/* A sample contains 1 to TCPTAP_BATCH_MAX records back to back. The kernel pads
 * raw data to 8 bytes, which is less than a record. */
static void handle_sample(struct ring_reader *r, int cpu, const struct raw_sample *s)
{
	size_t n = s->size / sizeof(struct tcptap_event);

	if (n == 0 || n > TCPTAP_BATCH_MAX || s->size - n * sizeof(struct tcptap_event) >= 8) {
		r->stats.bad_size++;
		return;
	}
	for (size_t i = 0; i < n; i++)
		handle_record(r, cpu, (const struct tcptap_event *)(s->data +
								    i * sizeof(struct tcptap_event)));
}

static enum bpf_perf_event_ret handle_event(void *ctx, int cpu, struct perf_event_header *event)
{
	struct ring_reader *r = ctx;

	switch (event->type) {
	case PERF_RECORD_SAMPLE: {
		const struct raw_sample *s = (const struct raw_sample *)event;

		if (event->size < sizeof(*s) || s->size > event->size - sizeof(*s)) {
			r->stats.bad_size++;
			break;
		}
		handle_sample(r, cpu, s);
		break;
	}
	case PERF_RECORD_LOST: {
		const struct lost_notice *lost = (const struct lost_notice *)event;

		r->stats.lost += lost->lost;
		(void)merger_push_lost(r->merger, (unsigned int)cpu, lost->lost);
		break;
	}
	default:
		break;
	}
	return LIBBPF_PERF_EVENT_CONT;
}

int ring_reader_new(int events_fd, size_t pages, struct merger *merger,
		    struct ring_reader **ret_reader)
{
	long page_size = sysconf(_SC_PAGESIZE);
	struct perf_event_attr attr = {
		.type = PERF_TYPE_SOFTWARE,
		.size = sizeof(attr),
		.config = PERF_COUNT_SW_BPF_OUTPUT,
		.sample_type = PERF_SAMPLE_RAW,
		.sample_period = 1,
		/* Wake the reader when a ring is half full instead of on every
		 * sample: per-sample wakeups cost more than the tracing itself. */
		.watermark = 1,
		.wakeup_watermark = (uint32_t)(pages * (size_t)page_size / 2),
	};
	struct ring_reader *r;

	if (pages == 0 || (pages & (pages - 1)) != 0)
		return -EINVAL;

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->merger = merger;
	r->pb = perf_buffer__new_raw(events_fd, pages, &attr, handle_event, r, NULL);
	if (!r->pb) {
		int err = -errno;

		free(r);
		return err;
	}
	*ret_reader = r;
	return 0;
}

void ring_reader_free(struct ring_reader *r)
{
	if (!r)
		return;
	perf_buffer__free(r->pb);
	free(r);
}

int ring_reader_fd(const struct ring_reader *r)
{
	return perf_buffer__epoll_fd(r->pb);
}

int ring_reader_drain(struct ring_reader *r)
{
	int err = perf_buffer__consume(r->pb);

	return err < 0 ? err : 0;
}

void ring_reader_get_stats(const struct ring_reader *r, struct ring_reader_stats *ret_stats)
{
	*ret_stats = r->stats;
}
