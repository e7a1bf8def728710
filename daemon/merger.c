// SPDX-License-Identifier: LGPL-2.1-or-later
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "merger.h"

#define MERGER_INITIAL_CAPACITY 256

/* A held record and its push order, which breaks ties between equal ts_ns. */
struct merger_entry {
	uint64_t arrival;
	struct record r;
};

/*
 * A growable array of entries, entries[head .. head + len). Each CPU keeps its
 * held records in one, in (ts_ns, arrival) order. A ring delivers its records
 * in timestamp order except where a program was interrupted or preempted
 * between its clock read and its output, so almost every record is appended
 * at the end. The late records wait in one in push order.
 */
struct merger_queue {
	struct merger_entry *entries;
	size_t head;
	size_t len;
	size_t capacity;
};

struct merger_cpu {
	bool online;
	bool online_since_known;	/* false until the first release for CPUs online from the start */
	bool has_frontier;
	bool stalled;
	bool has_pushed;
	uint64_t online_since_ns;
	uint64_t frontier_ns;		/* ts_ns of the newest sync with inflight == 0 */
	uint64_t stall_floor_ns;	/* now - max_hold at the last release, while stalled */
	uint64_t newest_pushed_ts;	/* max ts_ns pushed from this CPU */
	uint64_t events;
	uint64_t syncs;
	uint64_t syncs_busy;
	uint64_t stalls;
	uint64_t late;
	uint64_t lost;
	struct merger_queue queue;	/* held records of this CPU's ring */
};

struct merger {
	struct merger_config cfg;
	struct merger_cpu *cpus;
	unsigned int *order;		/* release scratch: min-heap of CPUs by queue front */
	size_t held;			/* records in all queues */
	struct merger_queue late;	/* late records in push order, released first at the next release */
	uint64_t next_arrival;
	uint64_t watermark_ns;
	uint64_t released;
	uint64_t forced;
	uint64_t last_released_ts;
};

int merger_new(const struct merger_config *cfg, struct merger **ret_merger)
{
	struct merger *m;

	assert(cfg);
	assert(ret_merger);

	if (cfg->ncpus == 0 || cfg->max_pending == 0)
		return -EINVAL;
	if (cfg->rule != MERGER_RULE_SYNC && cfg->rule != MERGER_RULE_CLOCK)
		return -EINVAL;

	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;

	m->cfg = *cfg;
	m->cpus = calloc(cfg->ncpus, sizeof(*m->cpus));
	m->order = calloc(cfg->ncpus, sizeof(*m->order));
	if (!m->cpus || !m->order) {
		free(m->cpus);
		free(m->order);
		free(m);
		return -ENOMEM;
	}

	for (unsigned int i = 0; i < cfg->ncpus; i++)
		m->cpus[i].online = true;

	*ret_merger = m;
	return 0;
}

void merger_free(struct merger *m)
{
	if (!m)
		return;

	for (unsigned int i = 0; i < m->cfg.ncpus; i++)
		free(m->cpus[i].queue.entries);
	free(m->late.entries);
	free(m->order);
	free(m->cpus);
	free(m);
}

static bool merger_entry_before(const struct merger_entry *a, const struct merger_entry *b)
{
	if (a->r.ev.ts_ns != b->r.ev.ts_ns)
		return a->r.ev.ts_ns < b->r.ev.ts_ns;
	return a->arrival < b->arrival;
}

/* Make room for one entry at the end of q. */
static int merger_queue_reserve(struct merger_queue *q)
{
	struct merger_entry *entries;
	size_t capacity;

	if (q->head + q->len < q->capacity)
		return 0;

	/* Released entries left at least half of the array free at the front. */
	if (q->head > 0 && q->head >= q->capacity / 2) {
		memmove(q->entries, q->entries + q->head, q->len * sizeof(*q->entries));
		q->head = 0;
		return 0;
	}

	capacity = q->capacity ? q->capacity * 2 : MERGER_INITIAL_CAPACITY;
	if (capacity < q->capacity || capacity > SIZE_MAX / sizeof(*entries))
		return -ENOMEM;

	entries = realloc(q->entries, capacity * sizeof(*entries));
	if (!entries)
		return -ENOMEM;

	q->entries = entries;
	q->capacity = capacity;
	return 0;
}

static struct merger_entry *merger_queue_front(const struct merger_queue *q)
{
	assert(q->len > 0);
	return &q->entries[q->head];
}

/* Insert e behind every entry it does not come before. */
static int merger_queue_insert(struct merger_queue *q, const struct merger_entry *e)
{
	struct merger_entry *base;
	size_t lo = 0, hi;
	int r;

	r = merger_queue_reserve(q);
	if (r < 0)
		return r;

	base = q->entries + q->head;
	hi = q->len;
	if (hi > 0 && merger_entry_before(e, &base[hi - 1])) {
		/* Out of ring order: find the first entry e comes before. */
		hi--;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;

			if (merger_entry_before(e, &base[mid]))
				hi = mid;
			else
				lo = mid + 1;
		}
		memmove(&base[lo + 1], &base[lo], (q->len - lo) * sizeof(*base));
	} else {
		lo = hi;
	}

	base[lo] = *e;
	q->len++;
	return 0;
}

static void merger_queue_pop(struct merger_queue *q)
{
	assert(q->len > 0);

	q->len--;
	q->head = q->len ? q->head + 1 : 0;
}

static int merger_enqueue(struct merger *m, const struct record *r)
{
	struct merger_entry e = {
		.arrival = m->next_arrival,
		.r = *r,
	};
	int ret;

	/* Equal to the newest released ts_ns is still in order: the contract is
	 * non-decreasing ts_ns. */
	e.r.late = r->ev.ts_ns < m->last_released_ts;
	if (e.r.late) {
		ret = merger_queue_reserve(&m->late);
		if (ret < 0)
			return ret;
		m->late.entries[m->late.head + m->late.len++] = e;
	} else {
		ret = merger_queue_insert(&m->cpus[r->ev.cpu].queue, &e);
		if (ret < 0)
			return ret;
		m->held++;
	}

	m->next_arrival++;
	return 0;
}

int merger_push(struct merger *m, const struct record *r)
{
	struct merger_cpu *c;
	int ret;

	assert(m);
	assert(r);

	if (r->ev.cpu >= m->cfg.ncpus)
		return -EINVAL;
	if (r->ev.type == TCPTAP_EV_SYNC || r->ev.type == RECORD_LOST)
		return -EINVAL;

	ret = merger_enqueue(m, r);
	if (ret < 0)
		return ret;

	c = &m->cpus[r->ev.cpu];
	c->events++;
	if (!c->has_pushed || r->ev.ts_ns > c->newest_pushed_ts) {
		c->newest_pushed_ts = r->ev.ts_ns;
		c->has_pushed = true;
	}
	return 0;
}

int merger_push_sync(struct merger *m, unsigned int cpu, uint64_t ts_ns, uint32_t inflight)
{
	struct merger_cpu *c;

	assert(m);

	if (cpu >= m->cfg.ncpus)
		return -EINVAL;

	c = &m->cpus[cpu];
	c->syncs++;
	if (inflight > 0) {
		c->syncs_busy++;
		return 0;
	}

	/* Syncs of one ring arrive in ring order, but nesting or preemption can
	 * put a sync with an older ts_ns behind a newer one. A frontier never
	 * moves back. */
	if (!c->has_frontier || ts_ns > c->frontier_ns) {
		c->frontier_ns = ts_ns;
		c->has_frontier = true;
	}
	return 0;
}

int merger_push_lost(struct merger *m, unsigned int cpu, uint64_t count)
{
	struct merger_cpu *c;
	struct record r = {};
	int ret;

	assert(m);

	if (cpu >= m->cfg.ncpus || count == 0)
		return -EINVAL;

	/* The records were dropped after the newest record that made it through
	 * this ring. Placing the marker there, or at the newest released record
	 * if that is newer, keeps it in order and never late. */
	c = &m->cpus[cpu];
	r.ev.type = RECORD_LOST;
	r.ev.cpu = cpu;
	r.lost_count = count;
	r.ev.ts_ns = m->last_released_ts;
	if (c->has_pushed && c->newest_pushed_ts > r.ev.ts_ns)
		r.ev.ts_ns = c->newest_pushed_ts;

	ret = merger_enqueue(m, &r);
	if (ret < 0)
		return ret;

	c->lost += count;
	return 0;
}

static uint64_t merger_cpu_lag(const struct merger_cpu *c, uint64_t now_ns)
{
	uint64_t base = c->has_frontier ? c->frontier_ns : c->online_since_ns;

	return now_ns > base ? now_ns - base : 0;
}

int merger_set_online(struct merger *m, unsigned int cpu, bool online, uint64_t now_ns)
{
	struct merger_cpu *c;

	assert(m);

	if (cpu >= m->cfg.ncpus)
		return -EINVAL;

	c = &m->cpus[cpu];
	if (c->online == online)
		return 0;

	if (!online) {
		if (c->stalled) {
			c->stalled = false;
			if (m->cfg.on_stall)
				m->cfg.on_stall(cpu, false, merger_cpu_lag(c, now_ns), m->cfg.userdata);
		}
		c->online = false;
		return 0;
	}

	c->online = true;
	c->online_since_known = true;
	c->online_since_ns = now_ns;
	c->has_frontier = false;
	return 0;
}

void merger_set_watermark(struct merger *m, uint64_t clock_ns)
{
	assert(m);

	if (clock_ns > m->watermark_ns)
		m->watermark_ns = clock_ns;
}

/*
 * Why releasing up to the minimum frontier keeps the stream in order.
 *
 * Protocol on the BPF side. An event program on CPU n increments n's in-flight
 * counter, reads the clock for its ts_ns, writes its record into n's ring or
 * into n's batch, and decrements the counter, in that order. A sync program on
 * n reads the clock for its ts_ns and then reads the counter. If it read 0, it
 * writes the batch into n's ring. Then it writes its own record. All of it
 * runs on n: BPF programs cannot migrate, and the counter and the batch are
 * per CPU.
 *
 * Claim: a sync S of CPU n with inflight == 0 proves that every event record E
 * of n with E.ts < S.ts is ahead of S in n's ring.
 * Proof: CLOCK_MONOTONIC does not go back, so E.ts < S.ts means E read the
 * clock before S did. E incremented the counter before that, so before S read
 * the counter. If E had not decremented yet, S would have read at least 1.
 * So E had decremented, which it does after writing its record into the ring
 * or the batch, and S writes the batch and then itself after its read. E's
 * record took its place in the ring first, directly or with the batch.
 *
 * The proof uses only the order of steps on CPU n, so it holds however E and
 * S interleave. E may be a softirq program nested inside a task-context
 * program, or S nested inside E: then S reads at least 1 and proves nothing.
 * Many program types run with only migration disabled, so a task-context
 * program can be preempted between any two steps by another task that runs
 * programs on the same CPU, and a vCPU can stall for tens of milliseconds
 * between E's clock read and its write. Both only keep the counter above 0
 * for longer, which makes syncs busy and the CPU's frontier fall behind.
 *
 * The order inside the sync matters. If S read the counter first and the
 * clock second, an event could start between the two, read the clock before
 * S, be preempted before writing, and land behind S with E.ts < S.ts. That
 * order is sound only if nothing can preempt S between its two reads, so
 * that such an E runs to completion inside S.
 *
 * Equal timestamps: E.ts == S.ts is not covered, and such an E may come after
 * S. Releasing up to S.ts inclusive is still safe, because E is then equal to
 * the newest released ts_ns, not older, and the contract is non-decreasing.
 *
 * Release: F is the minimum over online CPUs of their frontier. Every record
 * with ts_ns < F from any online CPU was pushed already, so every record
 * pushed from now on has ts_ns >= F. The merge releases in (ts_ns, arrival)
 * order up to F, so the output never decreases, and a later record can be
 * older than a released one only if the proof did not cover it. Those are
 * the cases below, and each such record is marked late instead of being
 * reordered.
 *
 * Offline CPUs run no programs and write nothing, so they hold nothing back.
 * The caller pushes what is left in an offline CPU's ring before marking it
 * offline. A CPU coming back has no frontier, because its old one says
 * nothing about what it writes now, and it holds everything back until it
 * syncs or stalls.
 *
 * Stalled CPUs: a CPU whose frontier lags more than max_hold gets now -
 * max_hold instead. That is a bound on waiting, not a proof: a record of the
 * stalled CPU older than that can still arrive, and it comes out late.
 */
static bool merger_cpu_effective_frontier(const struct merger_cpu *c, uint64_t *ret_frontier)
{
	uint64_t f;

	if (!c->stalled) {
		if (!c->has_frontier)
			return false;
		*ret_frontier = c->frontier_ns;
		return true;
	}

	f = c->stall_floor_ns;
	if (c->has_frontier && c->frontier_ns > f)
		f = c->frontier_ns;
	*ret_frontier = f;
	return true;
}

/* Open or close stall episodes at now_ns. */
static void merger_update_stalls(struct merger *m, uint64_t now_ns)
{
	uint64_t floor = now_ns > m->cfg.max_hold_ns ? now_ns - m->cfg.max_hold_ns : 0;

	for (unsigned int i = 0; i < m->cfg.ncpus; i++) {
		struct merger_cpu *c = &m->cpus[i];
		uint64_t lag;

		if (!c->online)
			continue;
		if (!c->online_since_known) {
			c->online_since_ns = now_ns;
			c->online_since_known = true;
		}

		lag = merger_cpu_lag(c, now_ns);
		if (lag > m->cfg.max_hold_ns) {
			c->stall_floor_ns = floor;
			if (c->stalled)
				continue;
			c->stalled = true;
			c->stalls++;
			if (m->cfg.on_stall)
				m->cfg.on_stall(i, true, lag, m->cfg.userdata);
		} else if (c->stalled) {
			c->stalled = false;
			if (m->cfg.on_stall)
				m->cfg.on_stall(i, false, lag, m->cfg.userdata);
		}
	}
}

/* Compute the sync rule's release limit. Returns false while an online CPU without a
 * frontier holds everything back. */
static bool merger_sync_limit(const struct merger *m, uint64_t *ret_limit)
{
	uint64_t limit = UINT64_MAX;

	for (unsigned int i = 0; i < m->cfg.ncpus; i++) {
		const struct merger_cpu *c = &m->cpus[i];
		uint64_t f;

		if (!c->online)
			continue;
		if (!merger_cpu_effective_frontier(c, &f))
			return false;
		if (f < limit)
			limit = f;
	}

	*ret_limit = limit;
	return true;
}

static int merger_entry_compare(const void *a, const void *b)
{
	const struct merger_entry *x = a, *y = b;

	if (merger_entry_before(x, y))
		return -1;
	if (merger_entry_before(y, x))
		return 1;
	return 0;
}

/* Release the late records, oldest first. They are already behind the stream and holding them
 * longer would only make them later. */
static size_t merger_release_late(struct merger *m, merger_emit_fn emit, void *userdata)
{
	size_t n = m->late.len;

	if (n == 0)
		return 0;

	qsort(m->late.entries + m->late.head, n, sizeof(m->late.entries[0]), merger_entry_compare);
	for (size_t i = 0; i < n; i++) {
		const struct record *r = &m->late.entries[m->late.head + i].r;

		m->cpus[r->ev.cpu].late++;
		emit(r, userdata);
	}

	m->late.head = 0;
	m->late.len = 0;
	m->released += n;
	return n;
}

static bool merger_cpu_front_before(const struct merger *m, unsigned int a, unsigned int b)
{
	return merger_entry_before(merger_queue_front(&m->cpus[a].queue),
				   merger_queue_front(&m->cpus[b].queue));
}

/* Restore the min-heap property of order[0 .. n) below position i. */
static void merger_order_sift_down(struct merger *m, size_t n, size_t i)
{
	unsigned int cpu = m->order[i];

	for (;;) {
		size_t child = 2 * i + 1;

		if (child >= n)
			break;
		if (child + 1 < n && merger_cpu_front_before(m, m->order[child + 1], m->order[child]))
			child++;
		if (!merger_cpu_front_before(m, m->order[child], cpu))
			break;
		m->order[i] = m->order[child];
		i = child;
	}
	m->order[i] = cpu;
}

size_t merger_release(struct merger *m, uint64_t now_ns, merger_emit_fn emit, void *userdata)
{
	uint64_t limit = 0;
	bool has_limit;
	size_t n, ncpus = 0;

	assert(m);
	assert(emit);

	n = merger_release_late(m, emit, userdata);

	if (m->cfg.rule == MERGER_RULE_SYNC) {
		merger_update_stalls(m, now_ns);
		has_limit = merger_sync_limit(m, &limit);
	} else {
		limit = m->watermark_ns;
		has_limit = true;
	}

	/* order is a min-heap of the CPUs with held records, keyed by their
	 * oldest record, so its top CPU has the oldest record of all. That
	 * record goes out while the rule allows it, then while more than
	 * max_pending records are held. */
	for (unsigned int i = 0; i < m->cfg.ncpus; i++)
		if (m->cpus[i].queue.len > 0)
			m->order[ncpus++] = i;
	for (size_t i = ncpus / 2; i-- > 0;)
		merger_order_sift_down(m, ncpus, i);

	while (ncpus > 0) {
		struct merger_queue *q = &m->cpus[m->order[0]].queue;
		const struct record *r = &merger_queue_front(q)->r;

		if (!has_limit || r->ev.ts_ns > limit) {
			if (m->held <= m->cfg.max_pending)
				break;
			m->forced++;
		}

		m->last_released_ts = r->ev.ts_ns;
		m->released++;
		n++;
		emit(r, userdata);

		merger_queue_pop(q);
		m->held--;
		if (q->len == 0)
			m->order[0] = m->order[--ncpus];
		if (ncpus > 0)
			merger_order_sift_down(m, ncpus, 0);
	}

	return n;
}

/* The oldest held record, or NULL when nothing is held. Late records are
 * not held: the next release sends them first. */
static const struct record *merger_oldest(const struct merger *m)
{
	const struct merger_entry *oldest = NULL;

	for (unsigned int i = 0; i < m->cfg.ncpus; i++) {
		const struct merger_queue *q = &m->cpus[i].queue;

		if (q->len == 0)
			continue;
		if (!oldest || merger_entry_before(merger_queue_front(q), oldest))
			oldest = merger_queue_front(q);
	}
	return oldest ? &oldest->r : NULL;
}

size_t merger_cpus_behind(const struct merger *m, unsigned int *ret_cpus, size_t size)
{
	const struct record *oldest_record;
	uint64_t oldest;
	size_t n = 0;

	assert(m);
	assert(ret_cpus || size == 0);

	oldest_record = merger_oldest(m);
	if (!oldest_record)
		return 0;

	oldest = oldest_record->ev.ts_ns;
	for (unsigned int i = 0; i < m->cfg.ncpus && n < size; i++) {
		const struct merger_cpu *c = &m->cpus[i];
		uint64_t f;

		if (!c->online)
			continue;
		if (merger_cpu_effective_frontier(c, &f) && f >= oldest)
			continue;
		ret_cpus[n++] = i;
	}

	return n;
}

int merger_cpu_stats(const struct merger *m, unsigned int cpu, uint64_t now_ns,
		     struct merger_cpu_stats *ret_stats)
{
	const struct merger_cpu *c;

	assert(m);
	assert(ret_stats);

	if (cpu >= m->cfg.ncpus)
		return -EINVAL;

	c = &m->cpus[cpu];
	*ret_stats = (struct merger_cpu_stats) {
		.online = c->online,
		.stalled = c->stalled,
		.has_frontier = c->has_frontier,
		.frontier_ns = c->frontier_ns,
		.lag_ns = c->online && (c->has_frontier || c->online_since_known) ?
			  merger_cpu_lag(c, now_ns) : 0,
		.events = c->events,
		.syncs = c->syncs,
		.syncs_busy = c->syncs_busy,
		.stalls = c->stalls,
		.late = c->late,
		.lost = c->lost,
	};
	return 0;
}

void merger_get_stats(const struct merger *m, struct merger_stats *ret_stats)
{
	assert(m);
	assert(ret_stats);

	*ret_stats = (struct merger_stats) {
		.pending = m->held + m->late.len,
		.released = m->released,
		.forced = m->forced,
		.last_released_ts = m->last_released_ts,
	};
}

void merger_foreach_pending(const struct merger *m, merger_emit_fn visit, void *userdata)
{
	for (size_t i = 0; i < m->late.len; i++)
		visit(&m->late.entries[m->late.head + i].r, userdata);
	for (unsigned int i = 0; i < m->cfg.ncpus; i++) {
		const struct merger_queue *q = &m->cpus[i].queue;

		for (size_t j = 0; j < q->len; j++)
			visit(&q->entries[q->head + j].r, userdata);
	}
}
